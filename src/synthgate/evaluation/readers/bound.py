"""The confidence bounds the reader-study gate rule decides on (numpy and scipy only: the gate
recomputes them from the 0/1 matrix ``evaluation.json`` records, without the study folder).

Every reader reads the same images, so the readers' mean accuracy varies with both the readers and
the images drawn (a crossed design with one answer per cell): a bound over readers alone (the t
interval of the readers' accuracies) is too narrow when some images are easy to call and others
hard, for every reader alike. The variance of the grand mean is estimated from the two-way analysis
of variance of the matrix: ``(MS_readers + MS_images) / (R I)``, which estimates
``var_readers / R + var_images / I + 2 var_residual / (R I)`` (conservative by one residual term,
and never negative), with Satterthwaite's degrees of freedom, and never below the binomial
``sqrt(p (1 - p) / (R I))`` (a balanced pattern of answers can make both mean squares 0).
``benchmarks/reader_bound.py`` measures its coverage on simulated readers.

The mean can hide one reader who tells the images apart among readers at chance, so the rule also
tests every reader on their own against the same margin (:func:`reader_tests`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def accuracy_bound(correct: np.ndarray | list[list[int]], confidence: float) -> dict[str, Any]:
    """One-sided lower and upper confidence bounds (each at ``confidence``) of the mean accuracy over
    readers and images, from the readers x images matrix of 1 (right) and 0 (wrong)."""
    from scipy.stats import t

    m = np.asarray(correct, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] < 2 or m.shape[1] < 2:
        raise ValueError(f"a readers x images matrix with at least 2 of each is needed, got shape {m.shape}")
    r, i = m.shape
    mean = float(m.mean())
    ms_readers = i * float(((m.mean(axis=1) - mean) ** 2).sum()) / (r - 1)
    ms_images = r * float(((m.mean(axis=0) - mean) ** 2).sum()) / (i - 1)
    se = max(math.sqrt((ms_readers + ms_images) / (r * i)), math.sqrt(mean * (1 - mean) / (r * i)))
    denom = ms_readers**2 / (r - 1) + ms_images**2 / (i - 1)
    df = (ms_readers + ms_images) ** 2 / denom if denom > 0 else float(r - 1)
    half = float(t.ppf(confidence, df)) * se
    return {"mean": mean, "upper": float(min(mean + half, 1.0)), "lower": float(max(mean - half, 0.0)), "se": se,
            "df": float(df), "confidence": confidence, "readers": r, "images": i, "ms_readers": ms_readers,
            "ms_images": ms_images}


def reader_tests(correct: np.ndarray | list[list[int]], margin: float, level: float) -> list[dict[str, Any]]:
    """Per reader, the exact one-sided binomial tests of accuracy > ``margin`` (the reader tells
    synthetic from real beyond what the policy accepts) and of accuracy < 1 - ``margin`` (the same
    with the labels swapped), at ``level`` / readers each (Bonferroni; the two regions are disjoint):
    the readers shown to be outside [1 - margin, margin]."""
    from scipy.stats import binomtest

    m = np.asarray(correct, dtype=np.int64)
    out = []
    for k, row in enumerate(m):
        right, n = int(row.sum()), len(row)
        p = min(float(binomtest(right, n, margin, alternative="greater").pvalue),
                float(binomtest(right, n, 1 - margin, alternative="less").pvalue))
        if p <= level / len(m):
            out.append({"reader": k + 1, "accuracy": float(row.mean()), "p": p})
    return out
