"""The evaluate stage: real canonical dataset + synthetic canonical dataset -> evaluation.json
and a self-contained report.html. Every number carries the identities it depends on: the real
and synthetic datasets' content hashes, the generator recorded in the synthetic manifest, and the
reference encoder's id."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthgate import __version__
from synthgate.data.canonical import CanonicalDataset, load_dataset, write_dataset
from synthgate.devices import resolve_device
from synthgate.errors import DataError
from synthgate.evaluation.config import EvaluateConfig
from synthgate.progress import NullReporter, Reporter
from synthgate.utils import atomic_directory, utc_now, write_json_atomic

log = logging.getLogger(__name__)
FORMAT = "synthgate.evaluation/v1"


@dataclass
class EvaluationResult:
    path: Path
    report_html: Path
    data: dict[str, Any]

    @property
    def evaluation_hash(self) -> str:
        return str(self.data["evaluation_hash"])


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if not isinstance(v, np.ndarray)}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def evaluation_hash(data: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of an evaluation without its own hash and timings."""
    body = {k: v for k, v in data.items() if k not in ("evaluation_hash", "timings", "created")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_compatible(real: CanonicalDataset, syn: CanonicalDataset) -> None:
    """Refuse pairs of datasets whose numbers would not mean anything."""
    if np.asarray(syn.images[:1]).dtype != np.uint8 or np.asarray(real.images[:1]).dtype != np.uint8:
        raise DataError(f"{syn.root}: images must be uint8 (found {syn.images.dtype})",
                        hint="write datasets with synthgate (prepare or sample)")
    if real.images.shape[1:3] != syn.images.shape[1:3]:
        raise DataError(
            f"{syn.root}: synthetic images are {syn.images.shape[1]}x{syn.images.shape[2]} but the real ones are "
            f"{real.images.shape[1]}x{real.images.shape[2]}",
            hint="sample at the real dataset's resolution (or prepare the real data at the generator's)")
    if real.channels != syn.channels:
        raise DataError(f"{syn.root}: synthetic images have {syn.channels} channel(s), the real ones {real.channels}",
                        hint="prepare both with the same prepare.channels")
    extra = [c for c in syn.classes if c not in real.classes]
    if extra:
        raise DataError(f"{syn.root}: synthetic class(es) {extra} do not exist in the real dataset {real.classes}",
                        hint="evaluate against the real dataset the generator was trained on")
    for ds in (real, syn):
        nan = ds.meta["nan_fraction"].to_numpy() if "nan_fraction" in ds.meta else np.zeros(len(ds.meta))
        bad = np.flatnonzero(~np.isfinite(nan) | (nan > 0))
        if len(bad):
            raise DataError(
                f"{ds.root}: {len(bad)} image(s) had NaN pixels, e.g. {ds.meta['source'].iloc[int(bad[0])]}",
                hint="drop or regenerate them (a generator that produced NaN diverged)")
    if len(syn.meta) == 0:
        raise DataError(f"{syn.root}: the synthetic dataset is empty")


def _relabel(syn: CanonicalDataset, real: CanonicalDataset) -> np.ndarray:
    names = np.asarray(syn.classes)[syn.labels()]
    index = {c: i for i, c in enumerate(real.classes)}
    return np.array([index[n] for n in names], dtype=np.int64)


def _sub(idx: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    if n is None or len(idx) <= n:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))


def make_standin(real_dir: Path, out_real: Path, out_synthetic: Path, seed: int = 0) -> tuple[Path, Path]:
    """Real held-out images standing in for a generator's output, for testing the evaluation.

    The real test split is halved per class: one half becomes the "synthetic" dataset, the other
    stays the real test split (so no image is both trained on and tested on).
    """
    real = load_dataset(real_dir, mmap=False)
    rng = np.random.default_rng(seed)
    test = real.split_indices("test")
    labels = real.labels()
    standin = []
    for k in np.unique(labels[test]):
        members = rng.permutation(test[labels[test] == k])
        standin.append(members[: len(members) // 2])
    s_idx = np.sort(np.concatenate(standin))
    keep = np.setdiff1d(np.arange(len(labels)), s_idx)
    meta_s = real.meta.iloc[s_idx].copy()
    meta_s["split"] = "train"
    manifest_extra = {"synthetic": True, "standin": f"real test images of {real.root} ({real.content_hash[:16]})"}
    write_dataset(out_synthetic, np.asarray(real.images)[s_idx], meta_s, real.classes, stage="standin",
                  config={"seed": seed}, inputs=[{"path": str(real_dir), "content_hash": real.content_hash}],
                  extra=manifest_extra)
    write_dataset(out_real, np.asarray(real.images)[keep], real.meta.iloc[keep].copy(), real.classes,
                  stage="standin-real", config={"seed": seed},
                  inputs=[{"path": str(real_dir), "content_hash": real.content_hash}])
    return out_real, out_synthetic


def evaluate(
    real_dir: Path,
    synthetic_dir: Path,
    cfg: EvaluateConfig,
    out: Path,
    reporter: Reporter | None = None,
    retrain_encoder: bool = False,
) -> EvaluationResult:
    """Evaluate ``synthetic_dir`` against ``real_dir``; write evaluation.json and report.html to ``out``."""
    from synthgate.data.complexity import delentropy
    from synthgate.evaluation import fidelity as fid_mod
    from synthgate.evaluation import memorization as mem
    from synthgate.evaluation.encoder import get_encoder
    from synthgate.evaluation.realism import realism
    from synthgate.evaluation.report import render_report
    from synthgate.evaluation.utility import utility
    from synthgate.evaluation.variety import complexity, variety

    reporter = reporter or NullReporter()
    timings: dict[str, float] = {}

    @contextmanager
    def part(name: str, label: str):
        start = time.perf_counter()
        with reporter.task(label, None):
            yield
        timings[name] = round(time.perf_counter() - start, 3)

    device = resolve_device(cfg.device, "evaluate.device")
    if cfg.inception_weights is not None:
        check_inception_weights(cfg.inception_weights)  # before the expensive parts
    real = load_dataset(real_dir)
    syn = load_dataset(synthetic_dir)
    check_compatible(real, syn)
    classes = real.classes
    n_classes = len(classes)
    y_real = real.labels()
    y_syn = _relabel(syn, real)
    train_idx, val_idx, test_idx = (real.split_indices(s) for s in ("train", "val", "test"))
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DataError(f"{real.root}: the real dataset needs train and test splits to evaluate against",
                        hint="prepare it with split.test > 0")
    syn_images = np.asarray(syn.images)

    with part("encoder", "Reference encoder"):
        enc = get_encoder(real, cfg.encoder, device, retrain=retrain_encoder, reporter=reporter)

    fc = cfg.fidelity
    ref_idx = _sub(train_idx, fc.max_images, cfg.seed)
    s_idx = _sub(np.arange(len(syn_images)), fc.max_images, cfg.seed)
    with part("features", "Encoder features"):
        f_train_all = enc.features(np.asarray(real.images[train_idx]))
        pos = {int(i): j for j, i in enumerate(train_idx)}
        f_ref = f_train_all[[pos[int(i)] for i in ref_idx]]
        f_test = enc.features(np.asarray(real.images[test_idx]))
        f_syn = enc.features(syn_images)
    with part("fidelity", "Fidelity (FID, KID, precision/recall, density/coverage)"):
        overall = fid_mod.fidelity_metrics(f_ref, f_syn[s_idx], fc.k, fc.kid_subset_size, fc.kid_subsets, cfg.seed)
        baseline = fid_mod.fidelity_metrics(f_ref, f_test, fc.k, fc.kid_subset_size, fc.kid_subsets, cfg.seed)
        per_class: dict[str, Any] = {}
        for k, c in enumerate(classes):
            r = f_ref[y_real[ref_idx] == k]
            s = f_syn[s_idx][y_syn[s_idx] == k]
            if len(r) > fc.k and len(s) > fc.k:
                per_class[c] = {"fid": fid_mod.fid(r, s), **fid_mod.prdc(r, s, fc.k), "n_synthetic": int(len(s))}
            else:
                per_class[c] = {"fid": None, "n_synthetic": int(len(s)),
                                "note": f"fewer than k+1={fc.k + 1} images of this class"}
        fidelity = {"overall": overall, "real_test_vs_train": baseline, "per_class": per_class}
        if cfg.inception_weights is not None:
            fidelity["inception_fid"] = _inception_fid(real, ref_idx, syn_images[s_idx], cfg.inception_weights,
                                                       test_idx)

    with part("variety", "Variety and complexity"):
        var = variety(np.asarray(real.images[train_idx]), y_real[train_idx], syn_images, y_syn, classes)
        comp = complexity(np.asarray(real.images[train_idx]), y_real[train_idx], syn_images, y_syn, classes,
                          real_de=real.meta["delentropy"].to_numpy()[train_idx], syn_de=delentropy(syn_images))

    mc = cfg.memorization
    m_train = _sub(train_idx, mc.max_train, cfg.seed)
    m_syn = _sub(np.arange(len(syn_images)), mc.max_synthetic, cfg.seed)
    train_imgs = np.asarray(real.images[m_train])
    test_imgs = np.asarray(real.images[test_idx])
    with part("memorization_pixel", "Memorization: pixel correlation over 8 rotations/flips"):
        px_syn = mem.pixel_nn(syn_images[m_syn], train_imgs, device, mc.chunk)
        px_base = mem.pixel_nn(test_imgs, train_imgs, device, mc.chunk)
        pixel = mem.compare(px_syn, px_base, mc.baseline_quantile, y_syn[m_syn], y_real[test_idx], classes)
    with part("memorization_feature", "Memorization: encoder-feature nearest neighbours"):
        f_mtrain = f_train_all[[pos[int(i)] for i in m_train]]
        ft_syn = mem.cosine_nn(f_syn[m_syn], f_mtrain, device)
        ft_base = mem.cosine_nn(f_test, f_mtrain, device)
        feature = mem.compare(ft_syn, ft_base, mc.baseline_quantile, y_syn[m_syn], y_real[test_idx], classes)
    with part("membership", "Membership inference"):
        members = _sub(np.arange(len(m_train)), len(test_idx), cfg.seed + 1)
        f_auc, f_p = mem.membership_auc(f_mtrain[members], f_test, f_syn[m_syn], device)
        p_auc, p_p = mem.membership_auc_pixels(train_imgs[members], test_imgs, syn_images[m_syn], device, mc.chunk)
        mia = {"feature_auc": f_auc, "feature_p": f_p, "pixel_auc": p_auc, "pixel_p": p_p,
               "members": int(len(members)), "non_members": int(len(test_idx))}
    planted: dict[str, Any] = {}
    if mc.planted > 0:
        with part("planted", "Detection power on planted copies"):
            copies, _ = mem.plant_copies(train_imgs, mc.planted, cfg.seed)
            for kind, imgs in copies.items():
                p = mem.pixel_nn(imgs, train_imgs, device, mc.chunk)
                f = mem.cosine_nn(enc.features(imgs), f_mtrain, device)
                planted[kind] = {"pixel": float((p.best > pixel["threshold"]).mean()),
                                 "feature": float((f.best > feature["threshold"]).mean()),
                                 "n": int(len(imgs))}
    order = np.argsort(-px_syn.best)[: mc.top_k]
    top_pairs = [{"synthetic_index": int(m_syn[i]), "train_index": int(m_train[px_syn.index[i]]),
                  "correlation": float(px_syn.best[i]), "transform": int(px_syn.transform[i]),
                  "train_source": str(real.meta["source"].iloc[int(m_train[px_syn.index[i]])])} for i in order]
    memorization = {"pixel": pixel, "feature": feature, "membership": mia, "planted_detection": planted,
                    "top_pairs": top_pairs, "train_compared": int(len(m_train)), "synthetic_compared": int(len(m_syn))}

    util: dict[str, Any] | None = None
    if cfg.utility.enabled:
        with part("utility", "Utility (TRTR, TSTR, augmentation, transfer)"):
            xv = np.asarray(real.images[val_idx]) if len(val_idx) else test_imgs
            yv = y_real[val_idx] if len(val_idx) else y_real[test_idx]
            util = utility((np.asarray(real.images[train_idx]), y_real[train_idx]), (xv, yv),
                           (test_imgs, y_real[test_idx]), (syn_images, y_syn), n_classes, cfg.utility, device,
                           reporter)
    real_res: dict[str, Any] | None = None
    if cfg.realism.enabled:
        with part("realism", "Realism scores"):
            real_res = realism(f_ref, y_real[ref_idx], f_syn, y_syn, classes, cfg.realism.k, cfg.realism.per_class)

    summary = _summary(fidelity, util, memorization, cfg)
    data: dict[str, Any] = {
        "format": FORMAT,
        "created": utc_now(),
        "synthgate_version": __version__,
        "real": {"path": str(real_dir), "content_hash": real.content_hash, "counts": real.counts(),
                 "classes": classes},
        "synthetic": {"path": str(synthetic_dir), "content_hash": syn.content_hash,
                      "num_images": int(len(syn_images)), "generator": syn.manifest.get("generator"),
                      "standin": syn.manifest.get("standin"),
                      "counts": {c: int((y_syn == k).sum()) for k, c in enumerate(classes)}},
        "encoder": enc.identity(),
        "device": str(device),
        "config": cfg.model_dump(mode="json"),
        "fidelity": fidelity,
        "variety": var,
        "complexity": {"per_class": comp["per_class"]},
        "memorization": memorization,
        "utility": util,
        "realism": real_res,
        "summary": summary,
    }
    data = _jsonable(data)
    data["evaluation_hash"] = evaluation_hash(data)
    start = time.perf_counter()
    arrays = {"real_images": real, "train_idx": train_idx, "test_idx": test_idx, "syn_images": syn_images,
              "y_real": y_real, "y_syn": y_syn, "px_syn": px_syn, "px_base": px_base, "ft_syn": ft_syn,
              "ft_base": ft_base, "f_ref": f_ref, "f_syn": f_syn[s_idx], "y_ref": y_real[ref_idx],
              "y_syn_sub": y_syn[s_idx], "m_syn": m_syn, "m_train": m_train, "comp": comp, "realism": real_res}
    with atomic_directory(Path(out)) as tmp:
        write_json_atomic(tmp / "evaluation.json", data)
        html = render_report(data, arrays)
        (tmp / "report.html").write_text(html)
        if real_res is not None and cfg.realism.filter != "none":
            keep = np.flatnonzero(real_res["scores"]["global" if cfg.realism.filter == "global" else "per_class"] >= 1)
            write_dataset(tmp / "filtered", syn_images[keep], syn.meta.iloc[keep].copy(), syn.classes,
                          stage="realism-filter", config={"filter": cfg.realism.filter, "k": cfg.realism.k},
                          inputs=[{"path": str(synthetic_dir), "content_hash": syn.content_hash}],
                          extra={k: v for k, v in syn.manifest.items() if k in ("synthetic", "generator")})
    timings["report"] = round(time.perf_counter() - start, 3)
    data["timings"] = timings
    write_json_atomic(Path(out) / "evaluation.json", data)
    return EvaluationResult(Path(out) / "evaluation.json", Path(out) / "report.html", data)


def _summary(fidelity: dict[str, Any], util: dict[str, Any] | None, memo: dict[str, Any],
             cfg: EvaluateConfig) -> dict[str, Any]:
    """Headline numbers, and whether fidelity and utility tell the same story (xing2023's lesson)."""
    o, b = fidelity["overall"], fidelity["real_test_vs_train"]
    fid_ratio = o["fid"] / b["fid"] if b["fid"] and b["fid"] > 0 else None
    fidelity_good = bool(o["precision"] >= 0.5 and (fid_ratio is None or fid_ratio <= 3.0))
    out: dict[str, Any] = {
        "fid": o["fid"], "fid_real_baseline": b["fid"], "fid_ratio_to_baseline": fid_ratio,
        "precision": o["precision"], "recall": o["recall"], "f1": o["f1"],
        "density": o["density"], "coverage": o["coverage"],
        "pixel_near_copy_fraction": memo["pixel"]["near_copy_fraction"],
        "feature_near_copy_fraction": memo["feature"]["near_copy_fraction"],
        "pixel_threshold": memo["pixel"]["threshold"],
        "membership_auc": memo["membership"]["feature_auc"],
        "membership_auc_pixel": memo["membership"]["pixel_auc"],
        "fidelity_good": fidelity_good,
    }
    if util is not None and "auc_gap" in util["stats"]:
        gap = util["stats"]["auc_gap"]
        utility_good = bool(gap <= cfg.fidelity_utility_gap)
        out.update({"auc_real": util["settings"]["real"]["auroc_mean"],
                    "auc_synthetic": util["settings"]["synthetic"]["auroc_mean"],
                    "auc_gap": gap, "delta_syn": util["stats"].get("delta_syn"),
                    "augmented_gain": util["stats"].get("augmented_gain"), "utility_good": utility_good})
        if fidelity_good != utility_good:
            out["fidelity_utility_disagree"] = True
            out["fidelity_utility_note"] = (
                "fidelity and utility disagree: " + ("high fidelity but poor utility" if fidelity_good
                                                     else "low fidelity but good utility")
                + " (xing2023: fidelity does not imply utility); judge release on utility and privacy")
        else:
            out["fidelity_utility_disagree"] = False
    return out


INCEPTION_HINT = ("use the CUDA image (ghcr.io/synthgate/synthgate:VERSION-cuda: torchvision and torch-fidelity "
                  "installed), or unset evaluate.inception_weights; the reference-encoder FID is computed either way")


def check_inception_weights(weights: Path) -> str:
    """Refuse, before any work, an Inception-FID that cannot run: no weights file, a file that is not a
    plain state dict (read with ``weights_only=True``; torch-fidelity itself unpickles it fully), or
    an environment without torch-fidelity (it needs torchvision, which the CPU environment must not
    have). Returns the file's sha256: the identity recorded next to the score."""
    import torch

    from synthgate.errors import ConfigError
    from synthgate.utils import sha256_file

    weights = Path(weights)
    if not weights.is_file():
        raise DataError(f"{weights}: Inception weights file not found",
                        hint="unset evaluate.inception_weights, or put the pt_inception-2015-12-05 weights there")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"{weights}: not a PyTorch weights file ({str(e).splitlines()[0][:200]})",
                        hint="give the FID Inception weights (pt_inception-2015-12-05-6726825d.pth)") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{weights}: not a state dict of tensors",
                        hint="give the FID Inception weights (pt_inception-2015-12-05-6726825d.pth)")
    try:
        import torch_fidelity.feature_extractor_inceptionv3  # noqa: F401
    except Exception as e:  # ImportError, or torchvision failing to load next to this torch
        raise ConfigError(
            "evaluate.inception_weights: standard Inception-FID needs torch-fidelity (and torchvision), which this "
            f"environment does not have ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})",
            hint=INCEPTION_HINT) from None
    return sha256_file(weights)


def _inception_fid(real: CanonicalDataset, idx: np.ndarray, syn: np.ndarray, weights: Path,
                   test_idx: np.ndarray | None = None) -> dict[str, Any]:
    """Standard Inception-FID (torchmetrics with torch-fidelity's FID Inception network, weights from a
    local file: ``feature_extractor_weights_path``) of ``syn`` against ``real.images[idx]``, and, as
    the baseline, of the real ``test_idx`` images against the same reference. Grey images are repeated
    to 3 channels; torch-fidelity resizes to 299x299 as the TF original does."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    sha = check_inception_weights(weights)
    try:
        m = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights),
                                     reset_real_features=False)
    except RuntimeError as e:  # load_state_dict: missing/unexpected keys, shapes
        raise DataError(f"{weights}: not the FID Inception-v3 weights ({str(e).splitlines()[0][:200]})",
                        hint="give pt_inception-2015-12-05-6726825d.pth (torch-fidelity's FID Inception)") from None

    def rgb(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        return t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t

    def fake_fid(images: np.ndarray) -> float:
        m.reset()  # keeps the real statistics (reset_real_features=False)
        for i in range(0, len(images), 256):
            m.update(rgb(images[i : i + 256]), real=False)
        return float(m.compute())

    for i in range(0, len(idx), 256):
        m.update(rgb(np.asarray(real.images[idx[i : i + 256]])), real=True)
    out: dict[str, Any] = {"fid": fake_fid(syn), "weights": str(weights), "weights_sha256": sha,
                           "n_real": int(len(idx)), "n_synthetic": int(len(syn))}
    if test_idx is not None and len(test_idx) >= 2:
        out["real_test_vs_train"] = fake_fid(np.asarray(real.images[test_idx]))
    return out
