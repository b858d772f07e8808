"""The generator model format: a directory that alone can sample.

- the family's own files (:attr:`~synthgate.generators.family.GeneratorFamily.files`; diffusion:
  ``unet/`` and ``scheduler/``, gan: ``generator.pt``), written and read by the family
- every family: ``synthgate_generator.json`` (format, type, generator config, resolution, channels,
  classes, the training dataset's content hash, training step, synthgate version, file hashes, and what the
  family adds (:meth:`~synthgate.generators.family.GeneratorFamily.describe`; diffusion and latent: the
  objective, its samplers, a reflow model's parent))

Written through :func:`synthgate.utils.atomic_directory`: readers see a whole model or none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synthgate import __version__
from synthgate.errors import ConfigError, DataError
from synthgate.generators.common import resolve_device
from synthgate.generators.config import GeneratorConfig, SampleConfig
from synthgate.generators.family import FAMILIES, GeneratorFamily, get_family
from synthgate.progress import Reporter
from synthgate.utils import atomic_directory, read_json, sha256_file, utc_now, write_json_atomic

FORMAT = "synthgate.generator/v1"
INFO = "synthgate_generator.json"


def weights_path(model_dir: Path, gtype: str) -> Path:
    """The file whose sha256 identifies the weights of a ``gtype`` model in ``model_dir``."""
    return Path(model_dir) / get_family(gtype).weights


def save_generator(
    model_dir: Path, module: nn.Module, gcfg: GeneratorConfig, *, resolution: int, channels: int,
    classes: list[str], dataset_hash: str, step: int, extras: dict[str, Any] | None = None, name: str | None = None,
    selection: dict[str, Any] | None = None,
) -> Path:
    """Write ``module`` (the EMA network) and its description to ``model_dir`` atomically;
    ``extras``: what the family writes beside the network (a training task's ``save_extras()``)."""
    model_dir = Path(model_dir)
    family = get_family(gcfg.type)
    with atomic_directory(model_dir) as tmp:
        family.write(tmp, module, extras or {})
        info = {
            "format": FORMAT,
            "name": name or f"{gcfg.type}-{gcfg.size}-step{step}",
            "type": gcfg.type,
            "generator": gcfg.model_dump(mode="json"),
            "resolution": int(resolution),
            "channels": int(channels),
            "classes": list(classes),
            "dataset_content_hash": dataset_hash,
            "step": int(step),
            "parameters": int(sum(p.numel() for p in module.parameters())),
            "synthgate_version": __version__,
            "created": utc_now(),
            "files": {f: sha256_file(tmp / f) for f in family.files},
            **family.describe(gcfg, extras or {}),
        }
        if selection is not None:  # how these weights were chosen (FID early stopping)
            info["selection"] = selection
        write_json_atomic(tmp / INFO, info)
    return model_dir


def read_generator_info(model_dir: Path) -> dict[str, Any]:
    """The model's JSON description, checked for format, type and the files that type needs."""
    model_dir = Path(model_dir)
    path = model_dir / INFO
    if not path.exists():
        raise DataError(f"{path}: not a synthgate generator ({INFO} missing)",
                        hint="point at the model directory written by `synthgate train` (out_dir/model)")
    try:
        info = read_json(path)
    except Exception as e:
        raise DataError(f"{path}: cannot read ({e})", hint="re-run `synthgate train`") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        got = info.get("format") if isinstance(info, dict) else None
        raise DataError(f"{path}: unknown generator format {got!r}; expected {FORMAT}")
    if not isinstance(info.get("type"), str) or info["type"] not in FAMILIES:
        raise DataError(f"{path}: unknown generator type {info.get('type')!r}; expected one of {', '.join(FAMILIES)}")
    for f in get_family(info["type"]).files:
        if not (model_dir / f).exists():
            raise DataError(f"{model_dir / f}: missing from the {info['type']} model",
                            hint="the model directory is incomplete; re-run `synthgate train`")
    return info


@dataclass
class LoadedGenerator:
    """A trained generator ready to sample. ``sample`` returns uint8 (N, H, W, C)."""

    model_dir: Path
    info: dict[str, Any]
    gcfg: GeneratorConfig
    module: nn.Module
    device: torch.device
    family: GeneratorFamily
    #: what the family's sampler needs beside the network (diffusion: the scheduler config)
    context: Any = None

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def type(self) -> str:
        return str(self.info["type"])

    @property
    def name(self) -> str:
        return str(self.info["name"])

    @property
    def resolution(self) -> int:
        return int(self.info["resolution"])

    @property
    def channels(self) -> int:
        return int(self.info["channels"])

    def sample(self, labels: np.ndarray, cfg: SampleConfig, reporter: Reporter | None = None) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        n = len(self.classes)
        if len(labels) and (labels.min() < 0 or labels.max() >= n):
            raise ConfigError(f"labels must lie in 0..{n - 1} (the model's {n} classes), got {labels.min()}..{labels.max()}")
        return self.family.sample(self.module, self.context, labels, cfg, n_classes=n, device=self.device,
                                  amp=self.device.type == "cuda", reporter=reporter)


def load_generator(model_dir: Path, device: str | torch.device = "auto") -> LoadedGenerator:
    """Open a model directory written by :func:`save_generator`; ``DataError`` naming the bad file."""
    model_dir = Path(model_dir)
    info = read_generator_info(model_dir)
    dev = device if isinstance(device, torch.device) else resolve_device(device, "sample.device")
    try:
        gcfg = GeneratorConfig.model_validate(info["generator"])
    except Exception as e:
        raise DataError(f"{model_dir / INFO}: invalid generator settings ({e})") from None
    family = get_family(gcfg.type)
    module, context = family.load(model_dir, gcfg, info, dev)
    return LoadedGenerator(model_dir, info, gcfg, module, dev, family, context)
