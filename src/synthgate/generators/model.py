"""The generator model format: a directory that alone can sample.

- diffusion: ``unet/`` (diffusers ``save_pretrained``, EMA weights) and ``scheduler/`` (the training
  noise schedule, from which every sampler is built)
- gan: ``generator.pt`` (state dict of the EMA generator)
- both: ``synthgate_generator.json`` (format, type, generator config, resolution, channels, classes,
  the training dataset's content hash, training step, synthgate version, file hashes)

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
from synthgate.generators.config import MODEL_TYPES, GeneratorConfig, SampleConfig
from synthgate.progress import Reporter
from synthgate.utils import atomic_directory, read_json, sha256_file, utc_now, write_json_atomic

FORMAT = "synthgate.generator/v1"
INFO = "synthgate_generator.json"
GAN_WEIGHTS = "generator.pt"
UNET_FILES = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors")
SCHEDULER_FILES = ("scheduler/scheduler_config.json",)


def _files(gtype: str) -> tuple[str, ...]:
    return (*UNET_FILES, *SCHEDULER_FILES) if gtype == "diffusion" else (GAN_WEIGHTS,)


def save_generator(
    model_dir: Path, module: nn.Module, gcfg: GeneratorConfig, *, resolution: int, channels: int,
    classes: list[str], dataset_hash: str, step: int, scheduler: Any = None, name: str | None = None,
    selection: dict[str, Any] | None = None,
) -> Path:
    """Write ``module`` (the EMA network) and its description to ``model_dir`` atomically."""
    model_dir = Path(model_dir)
    with atomic_directory(model_dir) as tmp:
        if gcfg.type == "diffusion":
            if scheduler is None:
                raise ValueError("a diffusion model needs its scheduler")
            module.save_pretrained(tmp / "unet", safe_serialization=True)  # type: ignore[operator]
            scheduler.save_pretrained(tmp / "scheduler")
        else:
            torch.save({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, tmp / GAN_WEIGHTS)
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
            "files": {f: sha256_file(tmp / f) for f in _files(gcfg.type)},
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
    if info.get("type") not in MODEL_TYPES:
        raise DataError(f"{path}: unknown generator type {info.get('type')!r}; expected one of {', '.join(MODEL_TYPES)}")
    for f in _files(info["type"]):
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
    scheduler_config: Any = None

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
        amp = self.device.type == "cuda"
        if self.type == "diffusion":
            from synthgate.generators.diffusion import sample_images

            return sample_images(self.module, self.scheduler_config, labels, cfg, null_class=n, device=self.device,
                                 amp=amp, reporter=reporter)
        from synthgate.generators.gan import CpdGenerator
        from synthgate.generators.gan import sample_images as gan_sample

        assert isinstance(self.module, CpdGenerator)
        return gan_sample(self.module, labels, cfg, device=self.device, amp=amp, reporter=reporter)


def load_generator(model_dir: Path, device: str | torch.device = "auto") -> LoadedGenerator:
    """Open a model directory written by :func:`save_generator`; ``DataError`` naming the bad file."""
    model_dir = Path(model_dir)
    info = read_generator_info(model_dir)
    dev = device if isinstance(device, torch.device) else resolve_device(device, "sample.device")
    try:
        gcfg = GeneratorConfig.model_validate(info["generator"])
    except Exception as e:
        raise DataError(f"{model_dir / INFO}: invalid generator settings ({e})") from None
    if gcfg.type == "diffusion":
        from diffusers import DDPMScheduler, UNet2DModel

        try:
            unet = UNet2DModel.from_pretrained(model_dir / "unet", low_cpu_mem_usage=False)
        except Exception as e:
            raise DataError(f"{model_dir / 'unet'}: cannot load the UNet ({e})", hint="re-run `synthgate train`") from None
        try:
            scheduler = DDPMScheduler.from_pretrained(model_dir / "scheduler")
        except Exception as e:
            raise DataError(f"{model_dir / 'scheduler'}: cannot load the scheduler ({e})") from None
        return LoadedGenerator(model_dir, info, gcfg, unet.to(dev).eval().requires_grad_(False), dev, scheduler.config)
    from synthgate.generators.gan import build_generator

    g = build_generator(gcfg, int(info["resolution"]), int(info["channels"]), len(info["classes"]))
    path = model_dir / GAN_WEIGHTS
    try:
        g.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:
        raise DataError(f"{path}: cannot load the generator weights ({e})", hint="re-run `synthgate train`") from None
    return LoadedGenerator(model_dir, info, gcfg, g.to(dev).eval().requires_grad_(False), dev)
