"""The learned copy descriptor: a self-supervised contrastive encoder for copy detection.

After SSCD (Pizzi et al., "A Self-Supervised Descriptor for Image Copy Detection", CVPR 2022): the
positives are an image and a modified copy of itself, every other image in the batch is a negative
(InfoNCE), and a differential-entropy (KoLeo) term spreads the descriptors so that distinct images
stay apart. The modifications model copying: rotations/flips, scale/crop, translation, small
rotations, brightness/contrast, Gaussian noise, blur, JPEG-style block compression, smooth elastic
deformation and blends with another image. Classifier features are built to make images of one class
alike; this descriptor is built to tell a copy from a look-alike.

It is trained on the real training split only (no downloaded weights; none exist for medical images
here), cached by the dataset's content hash and its configuration like the reference encoder, and its
identity is recorded with every result. Images are converted to grey, resized to at most
``input_size`` and standardised per image, so the descriptor is blind to affine intensity changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthgate.data.canonical import CanonicalDataset
from synthgate.data.complexity import to_gray
from synthgate.errors import ConfigError, DataError
from synthgate.progress import NullReporter, Reporter
from synthgate.utils import atomic_directory, read_json, sha256_file, utc_now, write_json_atomic

log = logging.getLogger(__name__)
WEIGHTS = "descriptor.pt"
INFO = "descriptor.json"
#: Bumped whenever the network or its training changes: part of the cache key and of the identity.
ARCH_VERSION = 2

#: The modifications the descriptor is trained to be invariant to (the names recorded with it).
AUGMENTATIONS = ("rotation/flip", "scale/crop", "translation", "rotation +-15 deg", "elastic deformation",
                 "blend with another image (<= 35%)", "brightness/contrast", "gaussian blur", "gaussian noise",
                 "JPEG-style block compression")


class DescriptorNet(nn.Module):
    """A small CNN (a strided stem, then three stages that each halve the resolution, two 3x3
    convolutions each), generalized-mean pooling as SSCD, a linear projection and L2 normalisation."""

    def __init__(self, width: int = 16, dim: int = 128) -> None:
        super().__init__()

        def conv(i: int, o: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        w = width
        self.body = nn.Sequential(*conv(1, w, 2), *conv(w, 2 * w, 2), *conv(2 * w, 2 * w, 1),
                                  *conv(2 * w, 4 * w, 2), *conv(4 * w, 4 * w, 1), *conv(4 * w, 8 * w, 2))
        self.gem_p = nn.Parameter(torch.tensor(3.0))
        self.proj = nn.Linear(8 * w, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x).clamp_min(1e-6)
        g = f.pow(self.gem_p).mean(dim=(2, 3)).pow(1.0 / self.gem_p)  # GeM pooling
        return F.normalize(self.proj(g), dim=1)


def prepare_input(images: np.ndarray, input_size: int) -> torch.Tensor:
    """uint8 (N, H, W[, C]) -> float (N, 1, s, s) grey in [0, 255], area-resized to s = min(H, input_size)."""
    x = torch.from_numpy(to_gray(np.asarray(images)).astype(np.float32))[:, None]
    if x.shape[-1] > input_size:
        x = F.adaptive_avg_pool2d(x, input_size)
    return x


def standardise(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)


_JPEG_Q = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)


def _dct8(device: torch.device) -> torch.Tensor:
    k = torch.arange(8, device=device)[:, None].float()
    i = torch.arange(8, device=device)[None].float()
    m = torch.cos(math.pi * (2 * i + 1) * k / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m


def jpeg_like(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) in [0, 255] -> 8x8 block DCT quantised with the JPEG luminance table at ``quality``
    (the lossy step of baseline JPEG, without chroma or entropy coding). H and W multiples of 8."""
    b, _, h, w = x.shape
    d = _dct8(x.device)
    blocks = (x - 128).reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)
    coef = d @ blocks @ d.T
    q = quality.clamp(5, 95).to(x)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q) / 100
    table = (_JPEG_Q.to(x)[None] * scale[:, None, None]).clamp_min(1)[:, None, None]
    out = d.T @ (torch.round(coef / table) * table) @ d
    return (out.permute(0, 1, 3, 2, 4).reshape(b, 1, h, w) + 128).clamp(0, 255)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    y = F.pad(x, (r, r, r, r), mode="replicate")
    return F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))


def augment(x: torch.Tensor, others: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random modified copy of each image of ``x`` (B, 1, H, W) in [0, 255] (see :data:`AUGMENTATIONS`);
    ``others`` (B, 1, H, W) are the images blended in."""
    b, _, h, w = x.shape
    dev = x.device

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(dev)

    which = torch.randint(0, 8, (b,), generator=gen).to(dev)  # rotation k = which % 4, mirrored when >= 4
    out = torch.empty_like(x)
    for t in range(8):
        sel = which == t
        if sel.any():
            y = torch.flip(x[sel], (-1,)) if t >= 4 else x[sel]
            out[sel] = torch.rot90(y, t % 4, (-2, -1))
    x = out
    affine = u(b) < 0.8
    s = torch.where(affine, torch.exp((u(b) * 2 - 1) * math.log(1.25)), torch.ones(b, device=dev))
    a = torch.where(affine, (u(b) * 2 - 1) * math.radians(15), torch.zeros(b, device=dev))
    t = (u(b, 2) * 2 - 1) * 0.16 * affine[:, None]
    theta = torch.stack([torch.stack([s * torch.cos(a), -s * torch.sin(a), t[:, 0]], 1),
                         torch.stack([s * torch.sin(a), s * torch.cos(a), t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    elastic = (u(b) < 0.3).float()
    disp = (u(b, 2, 4, 4) * 2 - 1) * 0.06 * elastic[:, None, None, None]
    grid = grid + F.interpolate(disp, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mix = ((u(b) < 0.25).float() * u(b) * 0.35)[:, None, None, None]
    x = x * (1 - mix) + others * mix
    contrast = torch.exp((u(b) * 2 - 1) * math.log(1.5))[:, None, None, None]
    bright = ((u(b) * 2 - 1) * 40)[:, None, None, None]
    jitter = (u(b) < 0.7)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = torch.where(jitter, (x - mean) * contrast + mean + bright, x)
    blur = u(b) < 0.3
    if blur.any():
        x[blur] = _blur(x[blur], float(0.4 + torch.rand(1, generator=gen)) * h / 32)
    noise = torch.where(u(b) < 0.5, u(b) * 0.08 * 255, torch.zeros(b, device=dev))[:, None, None, None]
    x = (x + torch.randn(x.shape, generator=gen).to(dev) * noise).clamp(0, 255)
    jpeg = u(b) < 0.3
    if jpeg.any() and h % 8 == 0 and w % 8 == 0:
        x[jpeg] = jpeg_like(x[jpeg], 20 + u(int(jpeg.sum())) * 70)
    return x


@dataclass
class Descriptor:
    model: DescriptorNet
    info: dict[str, Any]
    path: Path
    device: torch.device

    @property
    def descriptor_id(self) -> str:
        return str(self.info["descriptor_id"])

    @torch.no_grad()
    def features(self, images: np.ndarray, batch: int = 1024) -> np.ndarray:
        self.model.eval()
        out = []
        size = int(self.info["input_size"])
        for i in range(0, len(images), batch):
            x = standardise(prepare_input(np.asarray(images[i : i + batch]), size)).to(self.device)
            out.append(self.model(x).float().cpu())
        if not out:
            return np.zeros((0, int(self.info["dim"])), np.float32)
        return torch.cat(out).numpy()

    def identity(self) -> dict[str, Any]:
        keys = ("descriptor_id", "dataset_content_hash", "weights_sha256", "steps", "input_size", "dim",
                "final_loss", "augmentations")
        return {k: self.info.get(k) for k in keys}


def train_descriptor(train: np.ndarray, cfg: Any, device: torch.device,
                     reporter: Reporter | None = None) -> tuple[DescriptorNet, list[dict[str, float]]]:
    """InfoNCE over two modified copies of each image in a batch plus ``cfg.koleo`` times the KoLeo
    differential-entropy estimate (SSCD, Eq. 3-4); AdamW, linear warm-up then cosine decay."""
    reporter = reporter or NullReporter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x_all = prepare_input(train, cfg.input_size)
    n = len(x_all)
    b = min(cfg.batch_size, n)
    if b < 4:
        raise DataError(f"the copy descriptor needs at least 4 training images (got {n})")
    net = DescriptorNet(cfg.width, cfg.dim).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    warm = max(1, cfg.steps // 10)  # linear warm-up, then cosine decay
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, cfg.steps) / cfg.steps)))
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    with reporter.task(f"Training the copy descriptor ({n} images, {cfg.steps} steps)", cfg.steps) as advance:
        for step in range(cfg.steps):
            idx = torch.randperm(n, generator=gen)[:b]
            xb = x_all[idx].to(device)
            v1 = augment(xb, x_all[torch.randint(0, n, (b,), generator=gen)].to(device), gen)
            v2 = augment(xb, x_all[torch.randint(0, n, (b,), generator=gen)].to(device), gen)
            net.train()
            z = net(standardise(torch.cat([v1, v2])))
            sim = z @ z.T / cfg.temperature
            sim = sim - 1e4 * torch.eye(2 * b, device=device)  # an image is not its own negative
            target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(device)
            nce = F.cross_entropy(sim, target)
            dist = torch.cdist(z[:b], z[:b]) + 1e3 * torch.eye(b, device=device)
            koleo = -torch.log(dist.min(dim=1).values + 1e-6).mean()
            loss = nce + cfg.koleo * koleo
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 50 == 0 or step == cfg.steps - 1:
                history.append({"step": step, "infonce": float(nce.detach()), "koleo": float(koleo.detach()),
                                "seconds": round(time.perf_counter() - start, 2)})
            advance(1)
    net.eval()
    return net, history


def _config_key(cfg: Any) -> str:
    relevant = {**cfg.model_dump(mode="json", exclude={"cache_dir"}), "arch_version": ARCH_VERSION}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


def load_descriptor(path: Path, device: torch.device, expect_dataset: str | None = None) -> Descriptor:
    """Open a trained descriptor directory; refuse one trained on another dataset version."""
    path = Path(path)
    if not (path / INFO).exists() or not (path / WEIGHTS).exists():
        raise DataError(f"{path}: not a synthgate copy descriptor ({INFO} or {WEIGHTS} missing)")
    info = read_json(path / INFO)
    if expect_dataset is not None and info.get("dataset_content_hash") != expect_dataset:
        raise ConfigError(f"{path}: copy descriptor was trained on dataset {str(info.get('dataset_content_hash'))[:16]}, "
                          f"but the real dataset is {expect_dataset[:16]}",
                          hint="retrain it (pass --retrain-encoder)")
    if sha256_file(path / WEIGHTS) != info.get("weights_sha256"):
        raise DataError(f"{path / WEIGHTS}: weights do not match the sha256 in {INFO}",
                        hint="the descriptor was modified; retrain it with --retrain-encoder")
    if info.get("arch_version") != ARCH_VERSION:
        raise DataError(f"{path}: copy descriptor of architecture version {info.get('arch_version')}, this synthgate "
                        f"uses {ARCH_VERSION}", hint="retrain it (pass --retrain-encoder)")
    model = DescriptorNet(int(info["width"]), int(info["dim"]))
    model.load_state_dict(torch.load(path / WEIGHTS, map_location="cpu", weights_only=True))
    model.to(device).eval()
    return Descriptor(model, info, path, device)


def get_descriptor(real: CanonicalDataset, cfg: Any, device: torch.device, retrain: bool = False,
                   reporter: Reporter | None = None) -> Descriptor:
    """The copy descriptor for ``real``: cached by content hash and configuration, else trained on the
    whole training split."""
    cache = Path(cfg.cache_dir) / f"{real.content_hash[:16]}-copydesc-{_config_key(cfg)}"
    if cache.exists() and not retrain:
        try:
            return load_descriptor(cache, device, expect_dataset=real.content_hash)
        except (DataError, ConfigError) as e:
            log.warning("cached copy descriptor unusable (%s); retraining", e.message)
    train = np.asarray(real.images[real.split_indices("train")])
    net, history = train_descriptor(train, cfg, device, reporter)
    with atomic_directory(cache) as tmp:
        torch.save(net.state_dict(), tmp / WEIGHTS)
        sha = sha256_file(tmp / WEIGHTS)
        write_json_atomic(tmp / INFO, {
            "descriptor_id": f"copydesc-{real.content_hash[:12]}-{sha[:12]}", "dataset_content_hash": real.content_hash,
            "weights_sha256": sha, "arch_version": ARCH_VERSION, "width": cfg.width, "dim": cfg.dim,
            "input_size": cfg.input_size,
            "steps": cfg.steps, "config": cfg.model_dump(mode="json"), "train_images": int(len(train)),
            "final_loss": history[-1] if history else None, "history": history,
            "augmentations": list(AUGMENTATIONS), "created": utc_now()})
    return load_descriptor(cache, device, expect_dataset=real.content_hash)
