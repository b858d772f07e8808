"""Helpers shared by both generator families: devices, seeds, pixel scaling, sample grids."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from synthgate.devices import resolve_device  # noqa: F401  (re-exported)


def mix_seed(*parts: object) -> int:
    """A 63-bit seed derived from ``parts`` (stable across processes and platforms)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def make_generator(device: torch.device, *parts: object) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(mix_seed(*parts))


def per_image_noise(shape: tuple[int, ...], seed: int, start: int, count: int, stream: str) -> torch.Tensor:
    """Noise for images ``start .. start+count`` on the CPU, one seeded generator per image.

    Image ``i`` of a run gets the same noise whatever the batch size and whatever else is sampled,
    so the same seed with different labels differs only by the conditioning.
    """
    out = torch.empty((count, *shape))
    for k in range(count):
        out[k] = torch.randn(shape, generator=torch.Generator().manual_seed(mix_seed(seed, stream, start + k)))
    return out


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C) numpy array."""
    x = ((x.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()
