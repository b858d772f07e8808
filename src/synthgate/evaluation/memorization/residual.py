"""What a match leaves unexplained, and whether it is structure or noise: the ``structure`` detector.

A copy that had noise added, or its contrast and brightness changed, differs from its source by white noise
(and rounding, and clipping at the grey range's ends); an image of another patient, or another slice of one
scan, differs from its nearest training image by anatomy: spatially correlated structure. Correlation scores
cannot tell the two apart when the noise is as large as the difference between two patients (a low-contrast
slice with Gaussian noise of 0.03 of the grey range correlates 0.75-0.9 with its source, less than unseen
patients' images with theirs on MedNIST: docs/leakage.md). The residual's lag-1 autocovariance can: white
noise has none.

For a query q and its best pixel match t (under the rotation/flip the pixel score found), the gain and offset
of q = a t + b are fitted by least squares, twice: the second time without the pixels where q sits at an end
of the grey range and the first fit predicts beyond it (clipped: there the copy lost what the fit predicts).
The score is

    structure = lag-1 autocovariance of the residual q - a t - b / lag-1 autocovariance of q

over the kept pixels (horizontal and vertical neighbours, each series centred): the share of the query's
spatial structure the match does not explain, about 1 - r^2 of the two images' structure, whatever white
noise either carries. A noisy or contrast-changed copy scores near 0 (its residual is white); images of
another patient 0.02 and above (the smallest of 1,259 held-out MedNIST images at 64x64: 0.03). A query
without spatial structure (its own lag-1 autocovariance within 3 standard errors of white noise's, var/sqrt(2n)
over n pixels: a blank or pure noise image), or with fewer than a tenth of its pixels kept, has no evidence here and scores 1.
The evidence turns it into a detector score -ln(max(structure, STRUCTURE_FLOOR)) (higher = more copy-like).
"""

from __future__ import annotations

import torch

#: The smallest structure share scored: the detector's score is -ln(max(share, floor)), at most 11.5. Far below
#: what another patient's image reaches (0.02 and above, measured), so the floor only keeps the score finite for
#: copies (whose share scatters around 0 by the noise of the autocovariance estimate).
STRUCTURE_FLOOR = 1e-5
#: The grey range's ends (luma of uint8 images) where a copy's pixels clip.
LOW, HIGH = 0.0, 255.0


def _fit(q: torch.Tensor, t: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares gain and offset of q = a t + b over the kept pixels; (c, 1) each."""
    w = keep.to(q.dtype)
    n = w.sum(1, keepdim=True).clamp_min(1.0)
    mq, mt = (q * w).sum(1, keepdim=True) / n, (t * w).sum(1, keepdim=True) / n
    dq, dt = (q - mq) * w, (t - mt) * w
    a = (dq * dt).sum(1, keepdim=True) / (dt * dt).sum(1, keepdim=True).clamp_min(1e-6)
    return a, mq - a * mt


def _lag1(x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lag-1 autocovariance, variance) of x (c, H, W) over the kept pixels, x centred on them."""
    w = keep.to(x.dtype)
    n = w.sum((1, 2)).clamp_min(1.0)
    xc = (x - ((x * w).sum((1, 2)) / n)[:, None, None]) * w
    pairs = (xc[:, 1:] * xc[:, :-1]).sum((1, 2)) + (xc[:, :, 1:] * xc[:, :, :-1]).sum((1, 2))
    return pairs / (2 * n), (xc * xc).sum((1, 2)) / n


def residual_structure(q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(c, H, W) queries and their matches (float luma, 0-255) -> (c,) the structure share (module docstring)."""
    c, h, w = q.shape
    qf, tf = q.reshape(c, -1), t.reshape(c, -1)
    a, b = _fit(qf, tf, torch.ones_like(qf, dtype=torch.bool))
    pred = a * tf + b
    clipped = ((qf <= LOW) & (pred <= LOW + 0.5)) | ((qf >= HIGH) & (pred >= HIGH - 0.5))
    keep = ~clipped
    a, b = _fit(qf, tf, keep)
    keep2 = keep.reshape(c, h, w)
    res_cov, _ = _lag1((qf - a * tf - b).reshape(c, h, w), keep2)
    q_cov, q_var = _lag1(q, keep2)
    n = keep.sum(1).to(q.dtype)
    # structure: a lag-1 autocovariance beyond 3 standard errors of white noise's (var / sqrt(2n))
    structured = (q_cov > 3.0 * q_var / torch.sqrt(2.0 * n.clamp_min(1.0)) + 1e-6) & (n >= 0.1 * h * w)
    return torch.where(structured, res_cov / q_cov.clamp_min(1e-6), torch.ones_like(res_cov))
