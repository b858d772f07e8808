"""Fidelity in the reference encoder's feature space: FID, KID, improved precision/recall
(Kynkaanniemi et al., with F1 as in benitodelvalle 4.2), density and coverage (Naeem et al.).

FID and KID are torchmetrics' implementations fed with precomputed encoder features (the
encoder is the feature extractor: an identity module hands its features to the metric), so the
expensive forward pass runs once for every metric. PRDC is computed with chunked distance
matrices; the unit tests check both against reference implementations (torchmetrics on the same
features; the ``prdc`` package) within 1e-4.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from synthgate.errors import DataError


class _Features(nn.Module):
    """Identity 'feature extractor' for torchmetrics: inputs already are encoder features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (torchmetrics, float64)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise DataError("FID needs at least 2 images per set")
    m = FrechetInceptionDistance(feature=_Features(real.shape[1]), reset_real_features=True)
    m.update(torch.from_numpy(np.asarray(real, np.float64)), real=True)
    m.update(torch.from_numpy(np.asarray(fake, np.float64)), real=False)
    return float(m.compute())


def kid(real: np.ndarray, fake: np.ndarray, subset_size: int = 1000, subsets: int = 50, seed: int = 0
        ) -> tuple[float, float]:
    """Kernel inception distance (cubic polynomial kernel MMD), mean and std over subsets."""
    from torchmetrics.image.kid import KernelInceptionDistance

    n = min(subset_size, len(real), len(fake))
    if n < 2:
        raise DataError("KID needs at least 2 images per set")
    torch.manual_seed(seed)
    with warnings.catch_warnings():  # "will save all extracted features": they are small vectors here
        warnings.simplefilter("ignore", UserWarning)
        m = KernelInceptionDistance(feature=_Features(real.shape[1]), subsets=subsets, subset_size=n)
    m.update(torch.from_numpy(np.asarray(real, np.float64)), real=True)
    m.update(torch.from_numpy(np.asarray(fake, np.float64)), real=False)
    mean, std = m.compute()
    return float(mean), float(std)


def _cdist(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
    return torch.cdist(torch.from_numpy(np.asarray(a, np.float64)), torch.from_numpy(np.asarray(b, np.float64)))


def kth_nn_radius(x: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Distance of every row to its k-th nearest neighbour within the set (itself excluded)."""
    out = np.empty(len(x))
    for i in range(0, len(x), chunk):
        d = _cdist(x[i : i + chunk], x)
        out[i : i + chunk] = torch.kthvalue(d, k + 1, dim=1).values.numpy()  # k+1: the row itself is 0
    return out


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5, chunk: int = 2048) -> dict[str, float]:
    """Improved precision/recall (k-NN manifolds), their F1, density and coverage."""
    if len(real) <= k or len(fake) <= k:
        raise DataError(
            f"precision/recall with k={k} need more than k images in each set (real {len(real)}, "
            f"synthetic {len(fake)})",
            hint="sample more images or lower evaluate.fidelity.k",
        )
    r_rad = kth_nn_radius(real, k, chunk)
    f_rad = kth_nn_radius(fake, k, chunk)
    inside_count = np.zeros(len(fake))  # real balls containing each fake
    fake_in_any = np.zeros(len(fake), bool)
    real_nn_fake = np.full(len(real), np.inf)  # nearest fake to each real
    real_in_fake_ball = np.zeros(len(real), bool)
    for i in range(0, len(real), chunk):
        d = _cdist(real[i : i + chunk], fake).numpy()  # (r, f)
        within = d < r_rad[i : i + chunk, None]
        inside_count += within.sum(axis=0)
        fake_in_any |= within.any(axis=0)
        real_nn_fake[i : i + chunk] = d.min(axis=1)
        real_in_fake_ball[i : i + chunk] = (d < f_rad[None, :]).any(axis=1)
    precision = float(fake_in_any.mean())
    recall = float(real_in_fake_ball.mean())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": float(f1),
        "density": float(inside_count.sum() / (k * len(fake))),
        "coverage": float((real_nn_fake < r_rad).mean()),
    }


def fidelity_metrics(real: np.ndarray, fake: np.ndarray, k: int, kid_subset: int, kid_subsets: int,
                     seed: int = 0) -> dict[str, Any]:
    kid_mean, kid_std = kid(real, fake, kid_subset, kid_subsets, seed)
    return {"fid": fid(real, fake), "kid": kid_mean, "kid_std": kid_std, **prdc(real, fake, k),
            "n_real": int(len(real)), "n_synthetic": int(len(fake))}
