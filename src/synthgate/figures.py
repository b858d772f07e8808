"""Image grids as PNG files (the samples grid of training, the registry and the reports): numpy and
Pillow only, so code that shows images does not load torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_grid(images: np.ndarray, nrow: int, pad: int = 2, fill: int = 0) -> np.ndarray:
    """Tile uint8 (N, H, W, C) images into one (rows*(H+pad)+pad, nrow*(W+pad)+pad, C) image."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    n, h, w, c = images.shape
    nrow = max(1, min(nrow, n)) if n else max(1, nrow)
    rows = -(-n // nrow) if n else 1
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        grid[y : y + h, x : x + w] = im
    return grid


def save_png(path: Path, image: np.ndarray) -> Path:
    """Write a uint8 (H, W, C) image (C = 1 or 3) as PNG with Pillow."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)
    return path
