"""Realism score (Kynkaanniemi et al. 2019; benitodelvalle Eq. 11):

    R(phi_g, Phi_r) = max_r  ||phi_r - NN_k(phi_r, Phi_r)|| / ||phi_g - phi_r||

A synthetic image is realistic (R >= 1) when its feature vector lies inside the k-NN hypersphere
of at least one real feature vector. The class-based variant uses only the real images of the
synthetic image's class, so it also drops images whose label does not fit (benitodelvalle 4.2).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from synthgate.evaluation.fidelity import kth_nn_radius


def realism_scores(real: np.ndarray, fake: np.ndarray, k: int = 3, chunk: int = 2048) -> np.ndarray:
    if len(real) <= k or len(fake) == 0:
        return np.full(len(fake), np.nan)
    radii = torch.from_numpy(kth_nn_radius(real, k))
    r = torch.from_numpy(np.asarray(real, np.float64))
    out = np.empty(len(fake))
    for i in range(0, len(fake), chunk):
        d = torch.cdist(torch.from_numpy(np.asarray(fake[i : i + chunk], np.float64)), r)
        out[i : i + chunk] = (radii[None, :] / d.clamp_min(1e-12)).max(dim=1).values.numpy()
    return out


def realism(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray,
            classes: list[str], k: int, per_class: bool) -> dict[str, Any]:
    glob = realism_scores(real, fake, k)
    result: dict[str, Any] = {"k": k, "global": {"kept": int((glob >= 1).sum()), "total": int(len(fake)),
                                                "kept_fraction": float((glob >= 1).mean()) if len(fake) else None}}
    scores = {"global": glob}
    if per_class:
        pc = np.full(len(fake), np.nan)
        for c in range(len(classes)):
            sel = fake_labels == c
            if sel.any():
                pc[sel] = realism_scores(real[real_labels == c], fake[sel], k)
        kept = pc >= 1
        result["per_class"] = {
            "kept": int(kept.sum()), "total": int(len(fake)),
            "kept_fraction": float(kept.mean()) if len(fake) else None,
            "by_class": {c: {"kept": int(kept[fake_labels == i].sum()), "total": int((fake_labels == i).sum())}
                         for i, c in enumerate(classes)},
        }
        scores["per_class"] = pc
    result["scores"] = scores
    return result
