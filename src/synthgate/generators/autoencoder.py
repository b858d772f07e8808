"""The latent family's autoencoder: diffusers ``AutoencoderKL`` or ``VQModel``, trained on the real
training split, cached by dataset version and settings, frozen while the denoiser trains.

Training (niehues2024 and the LDM recipe, without the LPIPS term no pretrained network is there
for): an L1 or L2 reconstruction loss, ``ms_ssim_weight * (1 - MS-SSIM)`` (torchmetrics; fewer
scales and a 3-pixel window at small sides), the KL term (``kl``) or the codebook and commitment
loss (``vq``), and optionally a PatchGAN hinge loss from ``discriminator_start``. Reconstruction
quality (PSNR, MS-SSIM) is measured on the test split (the validation split where there is none)
and recorded with the weights' sha256 and the latent scaling factor (1 / the standard deviation of
the training latents, as Stable Diffusion's 0.18215 was chosen) in ``autoencoder.json``.

The autoencoder sees training images: whatever the latent model generates is decoded by it, and the
memorization evaluation judges the decoded images like any other family's.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthgate.errors import ConfigError, DataError
from synthgate.generators.common import to_model_space
from synthgate.generators.config import AutoencoderConfig
from synthgate.progress import NullReporter, Reporter
from synthgate.utils import atomic_directory, read_json, sha256_file, utc_now, write_json_atomic

if TYPE_CHECKING:
    from synthgate.data.canonical import CanonicalDataset

INFO = "autoencoder.json"
FILES = ("config.json", "diffusion_pytorch_model.safetensors", INFO)
WEIGHTS = "diffusion_pytorch_model.safetensors"
#: channel width of the first level per generator size; deeper levels double it once
WIDTHS = {"tiny": 32, "small": 64, "base": 128}
#: MS-SSIM's standard per-scale weights (Wang et al. 2003), the first few renormalised at small sides
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def check_resolution(acfg: AutoencoderConfig, resolution: int) -> int:
    """The latent side for ``resolution``; ConfigError when the downsampling factor does not divide it."""
    f = acfg.downsample
    if resolution < 2 * f or resolution % f:
        raise ConfigError(
            f"prepare.resolution: {resolution}x{resolution} images cannot be encoded by a downsample-{f} autoencoder "
            f"(generator.autoencoder.downsample): the side must be a multiple of {f} and at least {2 * f}",
            hint=f"prepare at a multiple of {f} (e.g. 32 or 64), or set generator.autoencoder.downsample to 4")
    return resolution // f


def build_autoencoder(acfg: AutoencoderConfig, size: str, channels: int, resolution: int) -> nn.Module:
    """``AutoencoderKL`` or ``VQModel`` with ``log2(downsample)`` halvings and ``latent_channels``."""
    from diffusers import AutoencoderKL, VQModel

    check_resolution(acfg, resolution)
    w = WIDTHS[size]
    levels = int(math.log2(acfg.downsample)) + 1
    widths = tuple([w] + [2 * w] * (levels - 1))
    common = {"in_channels": channels, "out_channels": channels, "down_block_types": ("DownEncoderBlock2D",) * levels,
              "up_block_types": ("UpDecoderBlock2D",) * levels, "block_out_channels": widths, "layers_per_block": 1,
              "latent_channels": acfg.latent_channels, "norm_num_groups": 16 if w < 64 else 32,
              "sample_size": resolution}
    if acfg.kind == "kl":
        return AutoencoderKL(**common)
    return VQModel(**common, num_vq_embeddings=acfg.codebook_size, vq_embed_dim=acfg.latent_channels)


def ms_ssim_metric(resolution: int) -> Any:
    """torchmetrics' MS-SSIM on images in [0, 1], with as many scales as the side allows at a 3x3 uniform
    window (torchmetrics needs side > (window - 1) * (scales - 1)^2) and NaN-safe normalisation; never
    synchronised across processes (under DDP rank 0 alone trains and measures the autoencoder)."""
    from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure

    scales = max(1, min(len(MS_SSIM_BETAS), int(math.log2(max(resolution, 2) / 2))))
    while scales > 1 and not resolution > 2 * max(1, scales - 1) ** 2:
        scales -= 1
    betas = np.asarray(MS_SSIM_BETAS[:scales]) / sum(MS_SSIM_BETAS[:scales])
    return MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0, gaussian_kernel=False, kernel_size=3,
                                                      betas=tuple(betas.tolist()), normalize="relu",
                                                      sync_on_compute=False)  # rank 0 alone under DDP


class PatchDiscriminator(nn.Module):
    """A small PatchGAN (three strided convolutions): one real/fake logit per patch."""

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.GroupNorm(8, 2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class Autoencoder:
    """A trained, frozen autoencoder: ``encode`` maps images in [-1, 1] to scaled latents, ``decode`` back."""

    model: nn.Module
    info: dict[str, Any]
    folder: Path

    @property
    def kind(self) -> str:
        return str(self.info["kind"])

    @property
    def scaling(self) -> float:
        return float(self.info["scaling_factor"])

    @property
    def weights_sha256(self) -> str:
        return str(self.info["weights_sha256"])

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.model.encode(x)  # type: ignore[operator]
        z = enc.latent_dist.mode() if self.kind == "kl" else enc.latents
        return z * self.scaling

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z / self.scaling).sample  # type: ignore[operator]


def _reconstruct(model: nn.Module, kind: str, x: torch.Tensor, gen: torch.Generator | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction, regulariser): the KL term of a sampled posterior, or VQ's codebook loss."""
    if kind == "kl":
        post = model.encode(x).latent_dist  # type: ignore[operator]
        z = post.sample(generator=gen) if gen is not None else post.mode()
        return model.decode(z).sample, post.kl().mean()  # type: ignore[operator]
    out = model.decode(model.encode(x).latents)  # type: ignore[operator]
    return out.sample, out.commit_loss.mean()


def train_autoencoder(images: np.ndarray, acfg: AutoencoderConfig, size: str, device: torch.device,
                      reporter: Reporter | None = None) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train on uint8 ``images`` (N, H, W, C); -> (the model in eval mode, the loss history)."""
    reporter = reporter or NullReporter()
    res, channels = int(images.shape[1]), int(images.shape[-1])
    torch.manual_seed(acfg.seed)
    gen = torch.Generator().manual_seed(acfg.seed)
    model = build_autoencoder(acfg, size, channels, res).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=acfg.lr, weight_decay=0.0)
    ms_ssim = ms_ssim_metric(res).to(device)
    disc = PatchDiscriminator(channels).to(device) if acfg.discriminator_weight > 0 else None
    d_opt = torch.optim.AdamW(disc.parameters(), lr=acfg.lr, betas=(0.5, 0.9)) if disc is not None else None
    data = torch.from_numpy(np.ascontiguousarray(images))
    reg_weight = acfg.kl_weight if acfg.kind == "kl" else 1.0
    history: list[dict[str, float]] = []
    sums = {"loss": 0.0, "recon": 0.0, "ms_ssim": 0.0}
    log_every = max(1, acfg.steps // 20)
    with reporter.task(f"Training the {acfg.kind.upper()} autoencoder (f{acfg.downsample}, "
                       f"{acfg.latent_channels} latent channels, {len(images)} images)", acfg.steps) as advance:
        for step in range(1, acfg.steps + 1):
            idx = torch.randint(len(data), (min(acfg.batch_size, len(data)),), generator=gen)
            x = to_model_space(data[idx].to(device))
            rec, reg = _reconstruct(model, acfg.kind, x, torch.Generator(device).manual_seed(acfg.seed * 1_000_003 + step))
            recon = F.l1_loss(rec, x) if acfg.recon == "l1" else F.mse_loss(rec, x)
            ms = ms_ssim((rec.clamp(-1, 1) + 1) / 2, (x + 1) / 2) if acfg.ms_ssim_weight > 0 else torch.zeros(())
            loss = recon + acfg.ms_ssim_weight * (1 - ms) + reg_weight * reg
            adversarial = disc is not None and step >= acfg.discriminator_start
            if adversarial:
                loss = loss - acfg.discriminator_weight * disc(rec).mean()  # type: ignore[misc]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if adversarial:  # hinge loss on real and reconstructed patches
                d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(rec.detach())).mean()  # type: ignore[misc]
                d_opt.zero_grad(set_to_none=True)  # type: ignore[union-attr]
                d_loss.backward()
                d_opt.step()  # type: ignore[union-attr]
            for k, v in (("loss", loss), ("recon", recon), ("ms_ssim", ms)):
                sums[k] += float(v.detach())
            if step % log_every == 0 or step == acfg.steps:
                n = log_every if step % log_every == 0 else step % log_every
                history.append({"step": step, **{k: v / n for k, v in sums.items()}})
                sums = dict.fromkeys(sums, 0.0)
            advance(1)
    return model.eval().requires_grad_(False), history


@torch.no_grad()
def reconstruction_quality(model: nn.Module, kind: str, images: np.ndarray, device: torch.device,
                           batch: int = 256) -> dict[str, float]:
    """PSNR (dB) and MS-SSIM of deterministic reconstructions of uint8 ``images``, in [0, 1] (torchmetrics)."""
    from torchmetrics.image import PeakSignalNoiseRatio

    psnr = PeakSignalNoiseRatio(data_range=1.0, sync_on_compute=False).to(device)
    ms_ssim = ms_ssim_metric(int(images.shape[1])).to(device)
    for start in range(0, len(images), batch):
        x = to_model_space(torch.from_numpy(np.ascontiguousarray(images[start : start + batch])).to(device))
        rec = _reconstruct(model, kind, x, None)[0].clamp(-1, 1)
        psnr.update((rec + 1) / 2, (x + 1) / 2)
        ms_ssim.update((rec + 1) / 2, (x + 1) / 2)
    return {"psnr": float(psnr.compute()), "ms_ssim": float(ms_ssim.compute()), "images": int(len(images))}


@torch.no_grad()
def scaling_factor(model: nn.Module, kind: str, images: np.ndarray, device: torch.device, n: int = 1024) -> float:
    """1 / the standard deviation of the (unscaled) latents of up to ``n`` training images."""
    x = to_model_space(torch.from_numpy(np.ascontiguousarray(images[:n])).to(device))
    enc = model.encode(x)  # type: ignore[operator]
    z = enc.latent_dist.mode() if kind == "kl" else enc.latents
    return float(1.0 / max(float(z.float().std()), 1e-6))


def config_key(acfg: AutoencoderConfig, size: str) -> str:
    data = acfg.model_dump(mode="json", exclude={"cache_dir"})
    return hashlib.sha256(json.dumps({**data, "size": size}, sort_keys=True).encode()).hexdigest()[:12]


def get_autoencoder(ds: CanonicalDataset, acfg: AutoencoderConfig, size: str, device: torch.device,
                    reporter: Reporter | None = None) -> Autoencoder:
    """The autoencoder of ``ds`` with these settings: the cached one, or one trained now on the
    train split (and cached under ``acfg.cache_dir``)."""
    reporter = reporter or NullReporter()
    check_resolution(acfg, ds.resolution)
    cache = Path(acfg.cache_dir) / (f"{ds.content_hash[:16]}-{acfg.kind}-f{acfg.downsample}-c{acfg.latent_channels}"
                                    f"-{size}-{config_key(acfg, size)}")
    if (cache / INFO).exists():
        return load_autoencoder(cache, device, expect_dataset=ds.content_hash)
    train = np.asarray(ds.images[ds.split_indices("train")])
    held = ds.split_indices("test")
    split = "test"
    if len(held) == 0:
        held, split = ds.split_indices("val"), "val"
    if len(train) == 0:
        raise DataError(f"{ds.root}: no training images to train the autoencoder on")
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the caller's streams stay
        model, history = train_autoencoder(train, acfg, size, device, reporter)
    seconds = time.perf_counter() - start
    quality = reconstruction_quality(model, acfg.kind, np.asarray(ds.images[held]), device) if len(held) else {}
    with atomic_directory(cache) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)  # type: ignore[operator]
        sha = sha256_file(tmp / WEIGHTS)
        info = {"autoencoder_id": f"{acfg.kind}-f{acfg.downsample}-{ds.content_hash[:12]}-{sha[:12]}",
                "kind": acfg.kind, "downsample": acfg.downsample, "latent_channels": acfg.latent_channels,
                "size": size, "resolution": ds.resolution, "channels": ds.channels,
                "dataset_content_hash": ds.content_hash, "weights_sha256": sha,
                "scaling_factor": scaling_factor(model, acfg.kind, train, device),
                "reconstruction": {**quality, "split": split}, "train_images": int(len(train)),
                "train_seconds": round(seconds, 1), "device": str(device),
                "config": acfg.model_dump(mode="json"), "history": history, "created": utc_now()}
        write_json_atomic(tmp / INFO, info)
    reporter.info(f"autoencoder {info['autoencoder_id']}: {split} PSNR {quality.get('psnr', float('nan')):.2f} dB, "
                  f"MS-SSIM {quality.get('ms_ssim', float('nan')):.4f}, latent scale {info['scaling_factor']:.4g}")
    return load_autoencoder(cache, device, expect_dataset=ds.content_hash)


def load_autoencoder(folder: Path, device: torch.device, expect_dataset: str | None = None,
                     expect_weights: str | None = None) -> Autoencoder:
    """Open a cached (or bundled) autoencoder; DataError when it belongs to another dataset version
    or its weights are not the recorded ones."""
    from diffusers import AutoencoderKL, VQModel

    folder = Path(folder)
    if not (folder / INFO).exists():
        raise DataError(f"{folder}: no autoencoder ({INFO} missing)",
                        hint="a latent model needs the autoencoder it was trained with; re-run `synthgate train`")
    info = read_json(folder / INFO)
    if expect_dataset is not None and info.get("dataset_content_hash") != expect_dataset:
        raise DataError(f"{folder}: the autoencoder was trained on dataset version "
                        f"{str(info.get('dataset_content_hash'))[:16]}, not on {expect_dataset[:16]}",
                        hint="delete it, or train on the dataset it belongs to")
    sha = sha256_file(folder / WEIGHTS) if (folder / WEIGHTS).exists() else None
    if sha != info.get("weights_sha256") or (expect_weights is not None and sha != expect_weights):
        raise DataError(f"{folder / WEIGHTS}: the autoencoder's weights (sha256 {str(sha)[:16]}) are not the ones "
                        f"{'this model was trained with' if expect_weights else 'recorded'} "
                        f"({str(expect_weights or info.get('weights_sha256'))[:16]})",
                        hint="a latent model samples only with its own autoencoder; re-run `synthgate train`")
    cls = AutoencoderKL if info.get("kind") == "kl" else VQModel
    try:
        model = cls.from_pretrained(folder, low_cpu_mem_usage=False)
    except Exception as e:
        raise DataError(f"{folder}: cannot load the autoencoder ({e})") from None
    return Autoencoder(model.to(device).eval().requires_grad_(False), info, folder)


def copy_autoencoder(ae: Autoencoder, dest: Path) -> None:
    """Bundle ``ae`` into a model folder (``dest``: ``<model>/vae``)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        shutil.copyfile(ae.folder / f, dest / f)
