"""The confidence bound the reader-study gate rule decides on (numpy and scipy only: the gate
recomputes it from the 0/1 matrix ``evaluation.json`` records, without the study folder).

Every reader reads the same images, so the readers' mean accuracy varies with both the readers and
the images drawn (a crossed design with one answer per cell): a bound over readers alone (the t
interval of the readers' accuracies) is too narrow when some images are easy to call and others
hard, for every reader alike. The variance of the grand mean is estimated from the two-way analysis
of variance of the matrix: ``(MS_readers + MS_images) / (R I)``, which estimates
``var_readers / R + var_images / I + 2 var_residual / (R I)`` (conservative by one residual term,
and never negative), with Satterthwaite's degrees of freedom. ``benchmarks/reader_bound.py``
measures its coverage on simulated readers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def accuracy_bound(correct: np.ndarray | list[list[int]], confidence: float) -> dict[str, Any]:
    """One-sided upper confidence bound of the mean accuracy over readers and images, from the
    readers x images matrix of 1 (right) and 0 (wrong)."""
    from scipy.stats import t

    m = np.asarray(correct, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] < 2 or m.shape[1] < 2:
        raise ValueError(f"a readers x images matrix with at least 2 of each is needed, got shape {m.shape}")
    r, i = m.shape
    mean = float(m.mean())
    ms_readers = i * float(((m.mean(axis=1) - mean) ** 2).sum()) / (r - 1)
    ms_images = r * float(((m.mean(axis=0) - mean) ** 2).sum()) / (i - 1)
    se = math.sqrt((ms_readers + ms_images) / (r * i))
    denom = ms_readers**2 / (r - 1) + ms_images**2 / (i - 1)
    df = (ms_readers + ms_images) ** 2 / denom if denom > 0 else float(r - 1)
    upper = mean + float(t.ppf(confidence, df)) * se if se > 0 else mean
    return {"mean": mean, "upper": float(min(upper, 1.0)), "se": se, "df": float(df), "confidence": confidence,
            "readers": r, "images": i, "ms_readers": ms_readers, "ms_images": ms_images}
