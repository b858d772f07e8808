"""Reflow (Liu et al. 2023, "Flow straight and fast"): a second rectified-flow round on the first model's couplings.

With ``generator.flow.reflow_from: <model folder>`` and ``reflow_pairs: N`` a diffusion or latent run with
``objective: rectified_flow``

1. opens the first model (the *parent*): it must be a rectified-flow model of the same family, size and
   network settings, trained on the same dataset version (resolution, channels, classes; the latent family: the
   same autoencoder), else ConfigError naming what differs;
2. draws N pairs from it: noise ``x1`` (seeded per pair, ``reflow_seed``), a label (the train split's class mix)
   and the image (pixel family) or latent the parent's ODE takes it to (``reflow_sampler``, ``reflow_steps``,
   ``reflow_guidance_scale``), unclipped. They are kept in ``reflow_cache_dir/<parent sha256>-<settings>/``
   (``pairs.pt``, ``pairs.json`` with the parent's weights hash and the pairs' own), so a resumed run or another
   rank reads them instead of drawing them again; pairs drawn from another model than the parent are refused;
3. starts from the parent's weights and trains on random pairs (the step's generator picks them, so a resumed
   run is identical) with the flow loss, ``x_t = (1 - t) x0 + t x1`` for the pair's own ``x1``.

The model records its parent (weights sha256, folder, step), the pairs and its round (the parent's + 1) in
``synthgate_generator.json`` → ``reflow``; its checkpoints hold the parent's hash, and resuming with another
parent is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from synthgate.errors import ConfigError, DataError
from synthgate.generators.common import make_generator, mix_seed, per_image_noise
from synthgate.generators.config import FlowConfig, GeneratorConfig, SampleConfig
from synthgate.generators.flow import FLOW
from synthgate.progress import NullReporter, Reporter
from synthgate.utils import atomic_directory, read_json, sha256_file, utc_now, write_json_atomic

if TYPE_CHECKING:
    from synthgate.data.canonical import CanonicalDataset
    from synthgate.generators.model import LoadedGenerator
    from synthgate.generators.task import TrainTask

PAIRS = "pairs.pt"
PAIRS_INFO = "pairs.json"
PAIRS_FORMAT = "synthgate.reflow_pairs/v1"
FIELD = "generator.flow.reflow_from"


@dataclass
class Reflow:
    """The pairs a reflow run trains on, and where they come from."""

    folder: Path
    info: dict[str, Any]
    noise: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor

    @property
    def parent_sha256(self) -> str:
        return str(self.info["parent"]["weights_sha256"])

    @property
    def pairs_sha256(self) -> str:
        return str(self.info["sha256"])

    def draw(self, n: int, gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` random pairs (noise, image or latent, label), picked with the step's generator."""
        idx = torch.randint(0, len(self.labels), (n,), generator=gen, device=gen.device).cpu()
        return self.noise[idx].to(device), self.targets[idx].to(device), self.labels[idx].to(device)

    def lineage(self) -> dict[str, Any]:
        """``synthgate_generator.json`` → ``reflow``: the round, the parent and the pairs."""
        parent = self.info["parent"]
        return {"round": int(parent.get("round", 1)) + 1, "parent": parent,
                "pairs": {"count": int(len(self.labels)), **self.info["settings"], "sha256": self.pairs_sha256,
                          "folder": str(self.folder)}}

    def state(self) -> dict[str, Any]:
        return {"reflow_parent_sha256": self.parent_sha256}

    def check_state(self, state: dict[str, Any]) -> None:
        saved = state.get("reflow_parent_sha256")
        if saved != self.parent_sha256:
            raise ConfigError(
                f"the checkpoint's reflow round started from model {str(saved)[:16]}, but {FIELD} "
                f"({self.info['parent']['model_dir']}) now holds model {self.parent_sha256[:16]}",
                hint="point reflow_from at the model the run started from, or train without resuming")


def start_reflow(task: TrainTask, net: nn.Module, ds: CanonicalDataset, reporter: Reporter | None = None,
                 autoencoder_sha256: str | None = None) -> Reflow:
    """Open the parent, copy its weights into ``net`` and return its pairs (drawn now or read from the cache).
    ``autoencoder_sha256``: the latent family's autoencoder, which the parent must have been trained on."""
    reporter = reporter or NullReporter()
    gcfg = task.gcfg
    folder = Path(gcfg.flow.reflow_from or "")
    parent = open_parent(folder, gcfg, ds, task.device, autoencoder_sha256)
    net.load_state_dict(parent.module.state_dict())
    with torch.random.fork_rng(devices=[task.device] if task.device.type == "cuda" else []):
        return pairs_of(parent, ds, gcfg.flow, task.amp, reporter)


def open_parent(folder: Path, gcfg: GeneratorConfig, ds: CanonicalDataset, device: torch.device,
                autoencoder_sha256: str | None = None) -> LoadedGenerator:
    """The first-round model, checked against this run: ConfigError naming what differs."""
    from synthgate.generators import autoencoder as ae_mod
    from synthgate.generators.checkpoints import fingerprint
    from synthgate.generators.model import load_generator, read_generator_info

    info = read_generator_info(folder)
    if info["type"] != gcfg.type:
        raise ConfigError(f"{FIELD}: {folder} is a {info['type']} model; this run trains a {gcfg.type} model",
                          hint="reflow a model of the same family")
    pcfg = GeneratorConfig.model_validate(info["generator"])
    if pcfg.objective != FLOW:
        raise ConfigError(f"{FIELD}: {folder} is a {pcfg.objective} model; reflow draws its pairs from a "
                          f"rectified-flow model (generator.objective: {FLOW})",
                          hint="train a first round with generator.objective: rectified_flow and point reflow_from "
                               "at its model folder")

    def network(fp: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in fp.items() if not k.startswith(("generator.flow.", "generator.objective"))}

    theirs = network(fingerprint(pcfg, info["resolution"], info["channels"], info["classes"],
                                 info["dataset_content_hash"]))
    ours = network(fingerprint(gcfg, ds.resolution, ds.channels, ds.classes, ds.content_hash))
    diffs = [f"{k}: {folder} {theirs.get(k)!r}, this run {v!r}" for k, v in ours.items() if theirs.get(k) != v]
    their_ae = (info.get("files") or {}).get(f"vae/{ae_mod.WEIGHTS}")
    if autoencoder_sha256 is not None and their_ae != autoencoder_sha256:
        diffs.append(f"autoencoder: {folder} {str(their_ae)[:16]}, this run {autoencoder_sha256[:16]}")
    if diffs:
        raise ConfigError(f"{FIELD}: {folder} is not a first round of this model; mismatching fields:\n  "
                          + "\n  ".join(diffs),
                          hint="reflow with the first model's generator settings, on the dataset it was trained on")
    return load_generator(folder, device)


def pair_settings(fcfg: FlowConfig) -> dict[str, Any]:
    return {"sampler": fcfg.reflow_sampler, "steps": fcfg.reflow_steps, "guidance_scale": fcfg.reflow_guidance_scale,
            "seed": fcfg.reflow_seed}


def pairs_of(parent: LoadedGenerator, ds: CanonicalDataset, fcfg: FlowConfig, amp: bool,
             reporter: Reporter) -> Reflow:
    """The parent's ``fcfg.reflow_pairs`` pairs: from the cache, or drawn now and cached."""
    sha = sha256_file(parent.model_dir / parent.family.weights)
    settings = {**pair_settings(fcfg), "count": fcfg.reflow_pairs, "dataset_content_hash": ds.content_hash}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(fcfg.reflow_cache_dir) / f"{sha[:16]}-{key}"
    if not (folder / PAIRS_INFO).exists():
        train_labels = ds.labels()[ds.split_indices("train")]
        rng = np.random.default_rng(mix_seed(fcfg.reflow_seed, "reflow-labels"))
        labels = train_labels[rng.permutation(len(train_labels))][np.arange(fcfg.reflow_pairs) % len(train_labels)]
        make_pairs(parent, labels, fcfg, folder, dataset_hash=ds.content_hash, amp=amp, reporter=reporter)
    return load_pairs(folder, parent, fcfg)


def make_pairs(parent: LoadedGenerator, labels: np.ndarray, fcfg: FlowConfig, folder: Path, *, dataset_hash: str,
               amp: bool = False, reporter: Reporter | None = None) -> Path:
    """Draw one (noise, endpoint) pair per label with the parent's ODE and write them to ``folder`` atomically."""
    from synthgate.generators.diffusion import denoise

    reporter = reporter or NullReporter()
    net, device = parent.module, parent.device
    scheduler_config = parent.context[0] if isinstance(parent.context, tuple) else parent.context  # latent: + vae
    shape = (int(net.config.in_channels), int(net.config.sample_size), int(net.config.sample_size))
    cfg = SampleConfig(sampler=fcfg.reflow_sampler, steps=fcfg.reflow_steps, guidance_scale=fcfg.reflow_guidance_scale,
                       seed=fcfg.reflow_seed, per_class=1)
    noise, targets = [], []
    with reporter.task(f"Reflow: drawing {len(labels)} pairs from {parent.name} ({cfg.sampler}, {cfg.steps} steps)",
                       len(labels)) as advance:
        for start in range(0, len(labels), cfg.batch_size):
            y = torch.as_tensor(labels[start: start + cfg.batch_size], dtype=torch.long, device=device)
            x1 = per_image_noise(shape, cfg.seed, start, len(y), "reflow")
            x0 = denoise(net, scheduler_config, x1.to(device), y, cfg, null_class=len(parent.classes), device=device,
                         amp=amp, generator=make_generator(device, cfg.seed, "reflow-step", start))
            noise.append(x1)
            targets.append(x0.float().cpu())
            advance(len(y))
    with atomic_directory(folder) as tmp:
        torch.save({"noise": torch.cat(noise), "targets": torch.cat(targets),
                    "labels": torch.as_tensor(labels, dtype=torch.long)}, tmp / PAIRS)
        write_json_atomic(tmp / PAIRS_INFO, {
            "format": PAIRS_FORMAT, "sha256": sha256_file(tmp / PAIRS), "count": len(labels),
            "settings": pair_settings(fcfg), "dataset_content_hash": dataset_hash, "created": utc_now(),
            "parent": {"model_dir": str(parent.model_dir), "name": parent.name, "step": int(parent.info["step"]),
                       "weights_sha256": sha256_file(parent.model_dir / parent.family.weights),
                       "round": int((parent.info.get("reflow") or {}).get("round", 1))}})
    reporter.info(f"reflow pairs: {len(labels)} drawn from {parent.name} into {folder}")
    return folder


def load_pairs(folder: Path, parent: LoadedGenerator, fcfg: FlowConfig) -> Reflow:
    """The pairs in ``folder``, refused (DataError) unless drawn from ``parent`` with these settings, unmodified."""
    try:
        info = read_json(folder / PAIRS_INFO)
    except Exception as e:
        raise DataError(f"{folder / PAIRS_INFO}: cannot read the reflow pairs' record ({e})",
                        hint=f"delete {folder} to draw the pairs again") from None
    expected = sha256_file(parent.model_dir / parent.family.weights)
    made_by = str((info.get("parent") or {}).get("weights_sha256"))
    if made_by != expected:
        raise DataError(
            f"{folder}: these reflow pairs were drawn from model {made_by[:16]} "
            f"({(info.get('parent') or {}).get('model_dir')}), not from {FIELD} {parent.model_dir} ({expected[:16]})",
            hint=f"delete {folder} to draw them again from {parent.model_dir}")
    wanted = {**pair_settings(fcfg), "count": fcfg.reflow_pairs}
    if {**info.get("settings", {}), "count": info.get("count")} != wanted:
        raise DataError(f"{folder}: the pairs were drawn with {info.get('settings')} ({info.get('count')} pairs), "
                        f"this run asks for {wanted}", hint=f"delete {folder} to draw them again")
    if not (folder / PAIRS).exists() or sha256_file(folder / PAIRS) != info.get("sha256"):
        raise DataError(f"{folder / PAIRS}: missing or modified since it was drawn (sha256 differs from {PAIRS_INFO})",
                        hint=f"delete {folder} to draw the pairs again")
    data = torch.load(folder / PAIRS, map_location="cpu", weights_only=True)
    return Reflow(folder, info, data["noise"], data["targets"], data["labels"])
