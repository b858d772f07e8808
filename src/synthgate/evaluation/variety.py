"""Variety and complexity.

- Variety (xing2023, II.D): the file size of the lossless-compressed mean image of each class.
  A varied class averages to a blurry mean image that compresses well (small file); a class whose
  images share their structure (mode collapse) averages to a sharp one (large file). xing2023 uses
  lossless JPEG; Pillow has no lossless JPEG encoder, so lossless PNG (deflate, level 9) is used:
  the comparison real vs synthetic is what matters, not the codec's absolute size.
- Complexity (complexity paper, Eqs. 4-5): the per-class delentropy distributions of real and
  synthetic images, compared with a two-sample Kolmogorov-Smirnov test and the difference of
  their means.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from synthgate.data.complexity import delentropy


def mean_image(images: np.ndarray) -> np.ndarray:
    m = np.asarray(images, dtype=np.float64).mean(axis=0)
    return np.clip(np.rint(m), 0, 255).astype(np.uint8)


def compressed_size(image: np.ndarray) -> int:
    """Bytes of ``image`` (H, W, C) uint8 as lossless PNG at maximum compression."""
    arr = image[..., 0] if image.shape[-1] == 1 else image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True, compress_level=9)
    return len(buf.getvalue())


def variety(real: np.ndarray, real_labels: np.ndarray, syn: np.ndarray, syn_labels: np.ndarray,
            classes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, c in enumerate(classes):
        r, s = real[real_labels == k], syn[syn_labels == k]
        out[c] = {
            "real_mean_image_bytes": compressed_size(mean_image(r)) if len(r) else None,
            "synthetic_mean_image_bytes": compressed_size(mean_image(s)) if len(s) else None,
        }
        if len(r) and len(s):
            out[c]["ratio"] = out[c]["synthetic_mean_image_bytes"] / out[c]["real_mean_image_bytes"]
    return out


def complexity(real: np.ndarray, real_labels: np.ndarray, syn: np.ndarray, syn_labels: np.ndarray,
               classes: list[str], real_de: np.ndarray | None = None, syn_de: np.ndarray | None = None
               ) -> dict[str, Any]:
    """Delentropy per class, real vs synthetic, with a two-sample KS test."""
    from scipy.stats import ks_2samp

    rd = delentropy(real) if real_de is None else real_de
    sd = delentropy(syn) if syn_de is None else syn_de
    out: dict[str, Any] = {}
    for k, c in enumerate(classes):
        r, s = rd[real_labels == k], sd[syn_labels == k]
        entry: dict[str, Any] = {"real_mean": float(r.mean()) if len(r) else None,
                                 "real_std": float(r.std()) if len(r) else None,
                                 "synthetic_mean": float(s.mean()) if len(s) else None,
                                 "synthetic_std": float(s.std()) if len(s) else None}
        if len(r) > 1 and len(s) > 1:
            t = ks_2samp(r, s)
            entry.update({"ks_statistic": float(t.statistic), "ks_p": float(t.pvalue),
                          "mean_difference": float(s.mean() - r.mean())})
        out[c] = entry
    return {"per_class": out, "real": rd, "synthetic": sd}
