"""The statistics behind the memorization rules: multiplicity corrections, the exact exceedance
test, confidence bounds for a membership-inference AUC, a distribution shift and a detection rate.

Every function returns plain floats/arrays so that the evaluation can record them and the gate can
re-derive its decision from the record.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Correlations and cosine similarities are clipped here before the Fisher z transform, so that an
#: exact copy (r = 1 in float32) has a finite score: atanh(1 - 1e-7) = 8.4.
R_MAX = 1.0 - 1e-7


def fisher_z(r: np.ndarray | float) -> np.ndarray:
    """Fisher's z = atanh(r), which makes the upper tail of a correlation's distribution unbounded
    (a copy at r = 0.9999 is far above r = 0.99 on this scale, as it should be)."""
    return np.arctanh(np.clip(np.asarray(r, np.float64), -R_MAX, R_MAX))


def reject(p: np.ndarray, alpha: float, method: str = "bh") -> np.ndarray:
    """Which of the p-values are rejected at level ``alpha``: Benjamini-Hochberg (``bh``, false
    discovery rate; under the global null its chance of any rejection is ``alpha``, as Holm's) or
    Holm (``holm``, family-wise error rate)."""
    p = np.asarray(p, np.float64)
    m = len(p)
    out = np.zeros(m, bool)
    if m == 0:
        return out
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "bh":
        ok = ranked <= alpha * np.arange(1, m + 1) / m
        if ok.any():
            out[order[: int(np.flatnonzero(ok).max()) + 1]] = True
    elif method == "holm":
        ok = ranked <= alpha / (m - np.arange(m))
        n_ok = m if ok.all() else int(np.argmin(ok))
        out[order[:n_ok]] = True
    else:
        raise ValueError(f"unknown correction {method!r} (bh or holm)")
    return out


def exceedance_test(null: np.ndarray, synthetic: np.ndarray, quantile: float = 0.99) -> dict[str, Any]:
    """Exact test of "more synthetic scores above a high order statistic of the null than chance".

    The threshold is the k-th largest of the n null scores, k = max(1, floor((1 - quantile)(n + 1))).
    When synthetic and null scores are exchangeable (an honest generator whose images are like unseen
    real ones), each synthetic score exceeds it with probability Q ~ Beta(k, n + 1 - k), so the count
    X of the m exceedances is beta-binomial(m, k, n + 1 - k) whatever the held-out size: the p-value
    P(X >= x) is exact, not asymptotic.
    """
    from scipy.stats import betabinom

    null = np.sort(np.asarray(null, np.float64))
    syn = np.asarray(synthetic, np.float64)
    n, m = len(null), len(syn)
    k = max(1, int(np.floor((1.0 - quantile) * (n + 1))))
    threshold = float(null[n - k])
    x = int((syn > threshold).sum())
    dist = betabinom(m, k, n + 1 - k)
    return {"threshold": threshold, "order_statistic": k, "n_null": n, "n_synthetic": m, "exceedances": x,
            "expected": float(dist.mean()), "p": float(dist.sf(x - 1)) if x > 0 else 1.0}


def auc_bound(member: np.ndarray, nonmember: np.ndarray, level: float) -> dict[str, Any]:
    """ROC AUC of "member scores higher" with its one-sided lower confidence bound at ``level``
    (DeLong's variance from the placement values) and the exact one-sided Mann-Whitney p-value of
    AUC = 0.5. A point estimate from a few dozen images is noisy (60 vs 60: an honest AUC above 0.6
    is common); a rule decides on the bound."""
    from scipy.stats import mannwhitneyu, norm

    from synthgate.utils import auc_placements

    a, b = np.asarray(member, np.float64), np.asarray(nonmember, np.float64)
    if len(a) < 2 or len(b) < 2:
        return {"auc": None, "se": None, "lower_bound": None, "p": None, "members": len(a), "non_members": len(b)}
    test = mannwhitneyu(a, b, alternative="greater")
    auc = float(test.statistic / (len(a) * len(b)))
    se = auc_placements(a, b)[1]
    return {"auc": auc, "se": se, "lower_bound": float(auc - float(norm.ppf(level)) * se), "level": level,
            "p": float(test.pvalue), "members": int(len(a)), "non_members": int(len(b))}


def shift_bound(synthetic: np.ndarray, null: np.ndarray, level: float, n_boot: int = 2000,
                seed: int = 0) -> dict[str, Any]:
    """Median of the synthetic scores minus that of the null, with a one-sided lower confidence bound
    at ``level`` (percentile bootstrap, both samples resampled)."""
    s, b = np.asarray(synthetic, np.float64), np.asarray(null, np.float64)
    shift = float(np.median(s) - np.median(b))
    rng = np.random.default_rng(seed)
    boots = (np.median(s[rng.integers(0, len(s), (n_boot, len(s)))], axis=1)
             - np.median(b[rng.integers(0, len(b), (n_boot, len(b)))], axis=1))
    return {"shift": shift, "lower_bound": float(np.quantile(boots, 1.0 - level)), "level": level,
            "n_boot": n_boot}


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided confidence interval of a binomial proportion k/n."""
    from scipy.stats import beta

    if n == 0:
        return (0.0, 1.0)
    a = (1.0 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return (lo, hi)
