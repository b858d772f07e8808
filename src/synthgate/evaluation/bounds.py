"""The utility rules' statistics: paired per-seed differences and their one-sided confidence bounds.

A bound covers three sources of variance (:func:`bound_components`): the seeds' training noise
(the paired t), the training pools' own sampling variance (the corrected resampled t of Nadeau and
Bengio 2003) and the real test split's (DeLong's variance, clustered by patient when patients are
known). :mod:`synthgate.evaluation.utility` records the design; :mod:`synthgate.gates.decision`
recomputes the bound from it. numpy and scipy only: the gate imports this without torch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Paired per-seed quantities and the side of the bound the gate reads: an upper bound for the
#: gaps (smaller is better), a lower bound for the gains (larger is better).
PAIRED_SIDES = {"auc_gap": "upper", "delta_syn": "upper", "augmented_gain": "lower", "transfer_gain": "lower"}


def min_seeds_for(confidence: float) -> int:
    """The fewest paired seeds for which a one-sided test at ``confidence`` can succeed at all
    without a distributional assumption: the exact sign test and the Wilcoxon signed-rank test
    both have the smallest one-sided p-value 0.5**n (every seed agreeing), so
    ``n >= log2(1 / (1 - confidence))``: 5 at 0.95, 4 at 0.9, 7 at 0.99 (and at least 2, the
    fewest a t-bound needs). Below it a paired-t bound leans on normality alone, and the report's
    rank tests cannot reach the level (dumontschutte2021 S.5 used at least four repeats)."""
    alpha = 1.0 - confidence
    return max(2, math.ceil(math.log2(1.0 / alpha) - 1e-9))


def auc_influence(y: np.ndarray, proba: np.ndarray, n_classes: int) -> np.ndarray:
    """Each test image's influence on the macro one-vs-rest AUROC of :func:`classifier.auroc`
    (binary: the AUROC of class 1), from DeLong's placement values (DeLong, DeLong and
    Clarke-Pearson 1988): a positive's share of negatives it outscores (ties 1/2) and a negative's
    share of positives that outscore it, centred on the AUROC and divided by the class's count.
    The influences of several classifiers scored on the same test images add up with the weights
    of any linear combination of their AUROCs (a mean of paired gaps, say), and
    :func:`delong_variance` of the sum is DeLong's variance of that combination; for one binary
    AUROC it is exactly DeLong's ``S10/m + S01/n``."""
    y = np.asarray(y, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    psi = np.zeros(len(y), dtype=np.float64)
    classes = [1] if n_classes == 2 else [k for k in range(n_classes) if k in set(y.tolist())]
    if n_classes == 2 and len(np.unique(y)) < 2:
        return psi
    for k in classes:
        score = proba[:, k]
        pos, neg = y == k, y != k
        sp, sn = np.sort(score[pos]), np.sort(score[neg])
        m, n = len(sp), len(sn)
        if m == 0 or n == 0:
            continue
        # V10: P(score_i > negative) + ties / 2, for each positive i; V01: the same seen from each negative
        v10 = (np.searchsorted(sn, score[pos], "left") + np.searchsorted(sn, score[pos], "right")) / (2.0 * n)
        v01 = 1.0 - (np.searchsorted(sp, score[neg], "left") + np.searchsorted(sp, score[neg], "right")) / (2.0 * m)
        a = float(v10.mean())
        psi[pos] += (v10 - a) / m
        psi[neg] += (v01 - a) / n
    return psi / len(classes)


def delong_variance(y: np.ndarray, psi: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Variance of an AUROC combination over draws of the test set, from the per-image influences
    ``psi`` (:func:`auc_influence`): within each true class, ``n_c / (n_c - 1)`` times the sum of
    squared deviations from the class mean (DeLong's estimator, stratified by class). With
    ``groups`` (the patient of each test image) the patients are the independent units: the
    influences are summed per patient first and their spread is taken over patients (the clustered
    AUC variance of Obuchowski 1997), since images of one patient do not vary independently."""
    y = np.asarray(y)
    if groups is not None:
        _, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        per = np.bincount(inv, weights=psi)
        g = len(per)
        return float(g / (g - 1) * np.sum((per - per.mean()) ** 2)) if g > 1 else float("inf")
    total = 0.0
    for k in np.unique(y):
        v = psi[y == k]
        if len(v) > 1:
            total += float(len(v) / (len(v) - 1) * np.sum((v - v.mean()) ** 2))
    return total


def set_ratio(used: dict[int, int], pool: dict[int, int]) -> float:
    """The largest, over classes, of ``used / (pool - used)``: how much the images one seed draws
    overlap with another seed's draw from the same pool. Infinite when a seed uses a whole class
    (nothing is resampled, so the variance of the pool itself cannot be estimated)."""
    u = np.asarray([used[k] for k in sorted(used)], dtype=np.float64)
    p = np.asarray([pool[k] for k in sorted(used)], dtype=np.float64)
    keep = u > 0
    if not np.any(keep):
        return 0.0
    rest = p[keep] - u[keep]
    return float("inf") if np.any(rest <= 0) else float(np.max(u[keep] / rest))


def bound_components(values: list[float] | np.ndarray, design: dict[str, Any] | None) -> dict[str, float]:
    """The standard error of a mean of per-seed paired values and its three parts (squared):

    - ``seeds``: ``sd^2 / K``, the paired-t term: training noise and the per-seed draws of the sets;
    - ``sets``: for each training pool the seeds draw from (``design["components"]``: its per-seed
      values and :func:`set_ratio`), ``ratio * var(values)``: the variance of the pool itself as a
      sample of its population, which the seeds cannot average away. Seeds that draw a share ``f``
      of a pool of ``N`` vary with variance about ``sigma^2 (1/(fN) - 1/N)`` around the pool's own
      value, which varies with ``sigma^2 / N`` around the population's: ``f / (1 - f)`` times the
      first (the corrected resampled t-test of Nadeau and Bengio 2003, Mach. Learn. 52:239);
    - ``test``: DeLong's variance of the mean over the real test split (``design["test_variance"]``).

    ``design=None`` gives the plain paired-t term alone (``sets`` and ``test`` 0)."""
    v = np.asarray(values, dtype=np.float64)
    k = len(v)
    seeds = float(v.var(ddof=1)) / k if k > 1 else float("nan")
    sets = 0.0
    test = 0.0
    if design is not None:
        for comp in design.get("components", []):
            cv = np.asarray(comp["values"], dtype=np.float64)
            ratio = float("inf") if comp["ratio"] is None else float(comp["ratio"])
            var = float(cv.var(ddof=1)) if len(cv) > 1 else float("nan")
            sets += float("inf") if math.isinf(ratio) else ratio * var
        test = float(design.get("test_variance", 0.0))
    return {"seeds": seeds, "sets": sets, "test": test, "se": math.sqrt(seeds + sets + test)}


def confidence_bound(values: list[float] | np.ndarray, confidence: float, side: str,
                     design: dict[str, Any] | None = None) -> float:
    """One-sided confidence bound of the mean of per-seed paired differences:
    ``mean + t_{confidence, K-1} * se`` (``side="upper"``) or ``mean - ...`` (``"lower"``), with
    scipy's Student t quantile and ``se`` from :func:`bound_components`. With ``design`` the bound
    covers the estimand a reviewer asks about (the generator against real data of the same size,
    over draws of the training and test sets); without it, the seeds' training noise alone (the
    plain paired t). NaN with fewer than 2 finite values; infinite when a pool is not resampled."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2 or not np.all(np.isfinite(v)):
        return float("nan")
    se = bound_components(v, design)["se"]
    if math.isnan(se):
        return float("nan")
    half = float(t.ppf(confidence, len(v) - 1)) * se
    return float(v.mean() + half if side == "upper" else v.mean() - half)


def finite(x: float) -> float | None:
    """``x``, or ``None`` where it is infinite or NaN (JSON has neither): a ratio of ``None`` means the
    seeds do not resample that pool."""
    return float(x) if math.isfinite(x) else None


def paired_design(pools: list[tuple[str, list[float], float]], psi: list[np.ndarray], y_test: np.ndarray,
                  test_groups: np.ndarray | None = None) -> dict[str, Any]:
    """The variance record of one paired quantity (see :func:`bound_components`): ``pools`` as
    (name, per-seed values, :func:`set_ratio`), ``psi`` the per-seed test-image influences of the
    paired difference (:func:`auc_influence` of one setting minus the other's), averaged over seeds
    for the test-set term."""
    mean_psi = np.mean(np.stack(psi), axis=0) if psi else np.zeros(len(y_test))
    return {"components": [{"name": n, "values": [float(x) for x in v], "ratio": finite(r)} for n, v, r in pools],
            "test_variance": finite(delong_variance(y_test, mean_psi, test_groups)) if psi else 0.0}
