"""Delentropy, a per-image complexity measure.

complexity-delentropy-gan-training-size.txt, Section 3.1, Eqs. 4-5 (after Larkin's delentropy):
the *deledensity* p(i, j) is the joint 2D histogram of the image's x and y derivatives, and
``DE = -1/2 * sum p log2 p``. As in the paper (and Marchesoni's implementation it used), images
are first reduced to 8-bit grayscale; derivatives are central differences over the interior
pixels, binned on the integer grid -255..255 (one bin per possible difference value), so
p is normalised by the number of gradient vectors.
"""

from __future__ import annotations

import numpy as np

_SPAN = 511  # central differences of uint8 images lie in [-255, 255]


def to_gray(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, H, W) uint8, ITU-R 601 luma as in Pillow's ``convert('L')``."""
    if images.ndim == 3:
        return images
    if images.shape[-1] == 1:
        return images[..., 0]
    rgb = images[..., :3].astype(np.float32)
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def delentropy(images: np.ndarray) -> np.ndarray:
    """Delentropy in bits of each image in a batch: (N, H, W[, C]) uint8 -> (N,) float64."""
    gray = to_gray(np.asarray(images))
    if gray.ndim == 2:
        gray = gray[None]
    if gray.shape[1] < 3 or gray.shape[2] < 3:
        raise ValueError("delentropy needs images of at least 3x3 pixels")
    g = gray.astype(np.int32)
    fx = (g[:, 1:-1, 2:] - g[:, 1:-1, :-2]) + 255
    fy = (g[:, 2:, 1:-1] - g[:, :-2, 1:-1]) + 255
    codes = (fx * _SPAN + fy).reshape(len(g), -1)
    n, m = codes.shape
    codes = np.sort(codes, axis=1)
    # Run-length encode every row at once: a run starts where the value changes or a row begins.
    starts = np.ones_like(codes, dtype=bool)
    starts[:, 1:] = codes[:, 1:] != codes[:, :-1]
    flat_starts = np.flatnonzero(starts.ravel())
    counts = np.diff(np.append(flat_starts, n * m))
    rows = flat_starts // m
    p = counts / m
    return 0.5 * np.bincount(rows, weights=-p * np.log2(p), minlength=n)


def delentropy_reference(image: np.ndarray) -> float:
    """Straightforward single-image version with ``np.histogram2d``; used to test :func:`delentropy`."""
    g = to_gray(np.asarray(image)[None])[0].astype(np.float64)
    fx = (g[:, 2:] - g[:, :-2])[1:-1, :]
    fy = (g[2:, :] - g[:-2, :])[:, 1:-1]
    r = 255.5
    hist, _, _ = np.histogram2d(fx.ravel(), fy.ravel(), bins=_SPAN, range=[[-r, r], [-r, r]])
    p = hist[hist > 0] / hist.sum()
    return float(-0.5 * np.sum(p * np.log2(p)))
