"""The reference encoder: a classifier trained on the real training split whose penultimate
features feed every feature-space metric (FID, KID, PRDC, nearest neighbours, realism score).

Inception weights cannot be downloaded here and are a poor fit for medical images (niehues2024,
Limitations), so, as in dumontschutte2021 (S.6: a DenseNet-121 trained on the real data), the
encoder is trained on the real data itself. It is cached by the dataset's content hash and its
config, and its identity (``encoder_id``) is recorded with every result: scores computed with
different encoders are not comparable.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthgate.data.canonical import CanonicalDataset
from synthgate.errors import ConfigError, DataError
from synthgate.evaluation.classifier import (
    Net,
    auroc,
    build_classifier,
    per_class_subsample,
    predict,
    train_classifier,
)
from synthgate.evaluation.config import EncoderConfig
from synthgate.progress import NullReporter, Reporter
from synthgate.utils import atomic_directory, read_json, sha256_file, utc_now, write_json_atomic

log = logging.getLogger(__name__)
WEIGHTS = "encoder.pt"
INFO = "encoder.json"


@dataclass
class Encoder:
    model: Net
    info: dict[str, Any]
    path: Path
    device: torch.device

    @property
    def encoder_id(self) -> str:
        return str(self.info["encoder_id"])

    def features(self, images: np.ndarray, batch: int = 512) -> np.ndarray:
        return predict(self.model, images, self.device, batch, what="features").astype(np.float32)

    def proba(self, images: np.ndarray, batch: int = 512) -> np.ndarray:
        return predict(self.model, images, self.device, batch)

    def identity(self) -> dict[str, Any]:
        keys = ("encoder_id", "arch", "dataset_content_hash", "weights_sha256", "val_auroc", "feature_dim")
        return {k: self.info.get(k) for k in keys}


def _config_key(cfg: EncoderConfig) -> str:
    relevant = cfg.model_dump(mode="json", exclude={"cache_dir", "weights"})
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


def load_encoder(path: Path, device: torch.device, expect_dataset: str | None = None) -> Encoder:
    """Open a trained encoder directory; refuse one trained on another dataset version."""
    path = Path(path)
    if not (path / INFO).exists() or not (path / WEIGHTS).exists():
        raise DataError(f"{path}: not a synthgate encoder ({INFO} or {WEIGHTS} missing)",
                        hint="point evaluate.encoder.weights at an encoder directory, or leave it unset to train one")
    info = read_json(path / INFO)
    if expect_dataset is not None and info.get("dataset_content_hash") != expect_dataset:
        raise ConfigError(
            f"{path}: encoder was trained on dataset {str(info.get('dataset_content_hash'))[:16]}, but the real "
            f"dataset is {expect_dataset[:16]}: its features would not be comparable",
            hint="retrain it: unset evaluate.encoder.weights (or pass --retrain-encoder)",
        )
    if sha256_file(path / WEIGHTS) != info.get("weights_sha256"):
        raise DataError(f"{path / WEIGHTS}: weights do not match the sha256 in {INFO}",
                        hint="the encoder was modified; retrain it with --retrain-encoder")
    model = build_classifier(info["arch"], info["in_channels"], info["n_classes"])
    model.load_state_dict(torch.load(path / WEIGHTS, map_location="cpu", weights_only=True))
    model.to(device).eval()
    return Encoder(model, info, path, device)


def get_encoder(
    real: CanonicalDataset,
    cfg: EncoderConfig,
    device: torch.device,
    retrain: bool = False,
    reporter: Reporter | None = None,
) -> Encoder:
    """The encoder for ``real``: the configured weights, the cached one, or a newly trained one."""
    reporter = reporter or NullReporter()
    if cfg.weights is not None and not retrain:
        return load_encoder(cfg.weights, device, expect_dataset=real.content_hash)
    cache = Path(cfg.cache_dir) / f"{real.content_hash[:16]}-{cfg.arch}-{_config_key(cfg)}"
    if cache.exists() and not retrain:
        try:
            return load_encoder(cache, device, expect_dataset=real.content_hash)
        except (DataError, ConfigError) as e:
            log.warning("cached encoder unusable (%s); retraining", e.message)
    labels = real.labels()
    n_classes = len(real.classes)
    tr = per_class_subsample(real.split_indices("train"), labels, cfg.max_train_per_class, cfg.seed)
    va = real.split_indices("val")
    if len(va) == 0:
        va = real.split_indices("test")
    if len(tr) == 0:
        raise DataError(f"{real.root}: no training images to train the reference encoder on")
    x, y = np.asarray(real.images[tr]), labels[tr]
    xv, yv = np.asarray(real.images[va]), labels[va]
    with reporter.task(f"Training reference encoder ({cfg.arch}, {len(tr)} images, {cfg.epochs} epochs)", None):
        trained = train_classifier(x, y, xv, yv, arch=cfg.arch, n_classes=n_classes, epochs=cfg.epochs,
                                   batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, device=device)
    val_acc = float((predict(trained.model, xv, device).argmax(1) == yv).mean()) if len(xv) else None
    with atomic_directory(cache) as tmp:
        torch.save(trained.model.state_dict(), tmp / WEIGHTS)
        weights_sha = sha256_file(tmp / WEIGHTS)
        info = {
            "encoder_id": f"{cfg.arch}-{real.content_hash[:12]}-{weights_sha[:12]}",
            "arch": cfg.arch,
            "in_channels": real.channels,
            "n_classes": n_classes,
            "classes": real.classes,
            "feature_dim": trained.model.num_features,
            "dataset_content_hash": real.content_hash,
            "weights_sha256": weights_sha,
            "config": cfg.model_dump(mode="json"),
            "train_images": int(len(tr)),
            "val_auroc": trained.val_auroc,
            "val_accuracy": val_acc,
            "best_epoch": trained.best_epoch,
            "history": trained.history,
            "created": utc_now(),
        }
        write_json_atomic(tmp / INFO, info)
    log.info("reference encoder %s: val AUROC %.4f", info["encoder_id"], trained.val_auroc)
    return load_encoder(cache, device, expect_dataset=real.content_hash)


def encoder_auroc(enc: Encoder, images: np.ndarray, labels: np.ndarray) -> float:
    return auroc(labels, enc.proba(images), int(enc.info["n_classes"]))
