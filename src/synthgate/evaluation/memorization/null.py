"""The held-out null of a copy score and per-image p-values against it.

The null is the same score computed for real held-out images (patients not in training) against the
training split. With n of them an empirical (conformal) p-value, (1 + #{null >= s}) / (n + 1), is
exact but cannot go below 1/(n + 1): too coarse to name one copy among thousands of synthetic images
once a multiplicity correction asks for p < alpha / m. Beyond the null's range the p-value therefore
comes from a model of the null's upper tail, peaks over threshold (Pickands-Balkema-de Haan): the
exceedances of the null's top ``tail_fraction`` over their threshold u follow a generalized Pareto
distribution, here with shape 0, the exponential (:func:`_fit_tail` says why), fitted by maximum
likelihood on the Fisher-z scale. Because an extrapolated tail is
uncertain, the p-value used is the bootstrap upper bound (``BOUND_LEVEL``) of the fitted tail
probability: the null is resampled, the tail refitted, and the 95th percentile of the resulting
probabilities is taken. Its goodness of fit (Anderson-Darling, parametric bootstrap) is reported.
Measured calibration (``benchmarks/null_calibration.py``, 400 honest sets per cell, n = m = 100,
300 and 1,000; the chance that Benjamini-Hochberg at 0.05 flags any honest image, nominal 0.05):
normal, Gumbel, logistic and Student t10 nulls 0.000-0.025, a normal null with 3% near-copies
0.000-0.007, heavy-tailed Student t5 0.05-0.195 and t3 0.13-0.41. Correlations' nulls are not that
heavy unless the held-out set holds near-copies of training images (validation removes those), and
the real nulls of PneumoniaMNIST and BreastMNIST measured in the same benchmark stay at the level
(0/100 and 1/100 halvings). A shape re-estimated in every bootstrap refit (``tail="gpd_bootstrap"``,
probability-weighted moments, never below 0) holds the level on t3 (0.06-0.075) but makes every
extrapolated p-value polynomial: a copy at r = 0.9999 against a Gumbel null of 150 gets a median
p-value of 2e-6 instead of 4e-15, too large to name it among 1,000 images. A shape estimated once
(``tail="gpd"``) reduces the heavy-tail excess (t3, n = 1,000: 0.155) and, measured on PneumoniaMNIST's planted copies
(``benchmarks/memorization_gate.py``), already costs real power (sharpened copies flagged 2/30
instead of 28/30, posterized 4/30 instead of 20/30): a few dozen tail points cannot tell a shape
of 0.2 from 0. The evaluation therefore keeps the exponential and reports the estimated shape
(``shape_estimate``) beside its goodness of fit, so that a reviewer sees a heavy-tailed null.
Inside the null's range the exact empirical p-value is used.

The tail is the top ``tail_fraction`` of the null, or its top ``min_exceedances`` scores where that is
more (at most :data:`MAX_TAIL_FRACTION` of it). When the held-out set has fewer than
``min_exceedances / MAX_TAIL_FRACTION`` images the tail cannot be fitted: the null says so with the
number needed (:attr:`TailNull.sufficient`), and its p-values stop at 1/(n + 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: One-sided level of the bootstrap upper bound on an extrapolated tail probability.
BOUND_LEVEL = 0.95
#: The largest share of a small null taken as its tail (the tail has at least ``min_exceedances`` points).
MAX_TAIL_FRACTION = 1 / 3


def _fit_tail(exceedances: np.ndarray) -> tuple[float, float]:
    """(shape xi, scale sigma) of the tail model: a generalized Pareto distribution with shape
    xi = 0, the exponential, whose scale's maximum-likelihood estimate is the mean excess. On the
    Fisher-z scale a correlation's sampling distribution is close to normal and a maximum of such
    values lies in the Gumbel domain of attraction (xi = 0); a lighter (bounded) true tail makes the
    exponential conservative. A free shape fitted to a few dozen points is too unstable to
    extrapolate: on Gumbel-distributed nulls of 100-300 scores, free fits (xi in [-0.5, 0]) gave
    honest images p-values below alpha/m ten times more often than alpha."""
    x = np.asarray(exceedances, np.float64)
    x = x[np.isfinite(x)]
    return 0.0, float(max(x.mean(), 1e-6)) if len(x) else 1e-6


#: The largest tail shape probability-weighted moments can estimate (they need xi < 1/2).
MAX_SHAPE = 0.45


def _fit_gpd(exceedances: np.ndarray) -> tuple[float, float]:
    """(xi, sigma) of a generalized Pareto distribution by probability-weighted moments (Hosking and
    Wallis 1987; closed form, stable on a few dozen points), with xi never below 0 (an estimate at or
    below 0 gives the exponential, scale = the mean excess) nor above :data:`MAX_SHAPE`."""
    x = np.asarray(exceedances, np.float64)
    x = np.sort(np.maximum(x[np.isfinite(x)], 0.0))
    if not len(x):
        return 0.0, 1e-6
    a0 = float(x.mean())
    p = (np.arange(1, len(x) + 1) - 0.35) / len(x)
    a1 = float(np.mean((1.0 - p) * x))
    denom = a0 - 2.0 * a1
    xi = 2.0 - a0 / denom if denom > 1e-12 else MAX_SHAPE  # Hosking's k = a0 / (a0 - 2 a1) - 2 = -xi
    if xi <= 0:
        return 0.0, float(max(a0, 1e-6))
    xi = min(xi, MAX_SHAPE)
    return float(xi), float(max(a0 * (1.0 - xi), 1e-6))  # the GPD's mean is sigma / (1 - xi)


#: Tail models :func:`fit_null` can use: the evaluation's (``exponential``) and, for
#: ``benchmarks/null_calibration.py``, a shape estimated once on the null (``gpd``) or re-estimated in
#: every bootstrap refit (``gpd_bootstrap``).
TAILS = ("exponential", "gpd", "gpd_bootstrap")


def _gpd_sf(x: np.ndarray, xi: float, sigma: float) -> np.ndarray:
    x = np.maximum(np.asarray(x, np.float64), 0.0)
    if abs(xi) < 1e-9:
        return np.exp(-x / sigma)
    base = 1.0 + xi * x / sigma
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(base > 0, np.power(np.maximum(base, 1e-300), -1.0 / xi), 0.0)
    return out


@dataclass
class TailNull:
    """A detector's held-out null with its modelled upper tail."""

    name: str
    scores: np.ndarray  # sorted null scores (Fisher z or another score where higher = more copy-like)
    tail_fraction: float
    min_exceedances: int
    u: float = float("nan")
    xi: float = float("nan")
    sigma: float = float("nan")
    n_u: int = 0
    gof_p: float | None = None
    shape_estimate: float = float("nan")  # the GPD shape the data suggest (>= 0), reported whatever the model
    tail: str = "exponential"
    boot: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # rows: u, n_u, xi, sigma

    @property
    def n(self) -> int:
        return int(len(self.scores))

    @property
    def needed(self) -> int:
        """Held-out images needed to fit the tail: ``min_exceedances`` within the top :data:`MAX_TAIL_FRACTION`."""
        return int(np.ceil(self.min_exceedances / MAX_TAIL_FRACTION))

    @property
    def sufficient(self) -> bool:
        return self.n >= self.needed

    def empirical_p(self, z: np.ndarray) -> np.ndarray:
        """(1 + #{null >= z}) / (n + 1): exact for a score exchangeable with the null."""
        z = np.asarray(z, np.float64)
        above = self.n - np.searchsorted(self.scores, z, side="left")
        return (1.0 + above) / (self.n + 1.0)

    def tail_p(self, z: np.ndarray) -> np.ndarray:
        """Bootstrap upper bound of the modelled tail probability P(null >= z) (z above u)."""
        z = np.atleast_1d(np.asarray(z, np.float64))
        if not self.sufficient or len(self.boot) == 0:
            return np.full(z.shape, 1.0 / (self.n + 1.0))
        probs = np.stack([(n_u / self.n) * _gpd_sf(z - u, xi, sigma) for u, n_u, xi, sigma in self.boot])
        return np.quantile(probs, BOUND_LEVEL, axis=0)

    def pvalues(self, z: np.ndarray) -> np.ndarray:
        """Exact empirical p-values inside the null's range; beyond its largest score, the bounded
        tail model (never above 1/(n + 1), so p-values fall as scores rise)."""
        z = np.atleast_1d(np.asarray(z, np.float64))
        p = self.empirical_p(z)
        beyond = z > self.scores[-1] if self.n else np.ones(len(z), bool)
        if beyond.any():
            p[beyond] = np.minimum(self.tail_p(z[beyond]), 1.0 / (self.n + 1.0))
        return p

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n, "needed": self.needed, "sufficient": self.sufficient,
            "model": "exponential tail (peaks over threshold, Fisher-z scale) beyond the null's range, bootstrap "
                     f"{BOUND_LEVEL:.0%} upper bound; exact empirical p-values inside it",
            "tail_fraction": self.tail_fraction, "min_exceedances": self.min_exceedances,
            "max": float(self.scores[-1]) if self.n else None,
            "smallest_empirical_p": 1.0 / (self.n + 1.0),
        }
        if self.sufficient:
            out.update({"threshold_u": self.u, "exceedances": self.n_u, "shape_xi": self.xi,
                        "scale_sigma": self.sigma, "gof_anderson_darling_p": self.gof_p,
                        "shape_estimate": self.shape_estimate, "tail": self.tail,
                        "bootstrap_fits": int(len(self.boot))})
        else:
            out["note"] = (f"{self.n} held-out images: the tail model needs at least {self.needed} "
                           f"({self.min_exceedances} tail scores within the top {MAX_TAIL_FRACTION:.0%}); "
                           f"p-values stop at 1/(n+1) = {1.0 / (self.n + 1):.2g}")
        return out


def fit_null(name: str, scores: np.ndarray, tail_fraction: float = 0.2, min_exceedances: int = 20,
             n_boot: int = 100, gof_samples: int = 99, seed: int = 0, tail: str = "exponential") -> TailNull:
    """Fit the tail model of a detector's held-out null (see the module docstring; ``tail``: one of
    :data:`TAILS`)."""
    if tail not in TAILS:
        raise ValueError(f"unknown tail model {tail!r} (one of {', '.join(TAILS)})")
    s = np.sort(np.asarray(scores, np.float64))
    s = s[np.isfinite(s)]
    null = TailNull(name, s, tail_fraction, min_exceedances, tail=tail)
    if not null.sufficient:
        return null
    rng = np.random.default_rng(seed)

    def fit(sample: np.ndarray, shape: float | None = None) -> tuple[float, int, float, float]:
        sample = np.sort(sample)
        n_u = max(min_exceedances, int(round(tail_fraction * len(sample))))  # the top tail_fraction, or more
        u = float(sample[len(sample) - n_u - 1])
        excess = sample[len(sample) - n_u :] - u
        if tail == "exponential":
            return (u, n_u, *_fit_tail(excess))
        if shape is None:
            return (u, n_u, *_fit_gpd(excess))
        return u, n_u, shape, float(max(np.mean(np.maximum(excess, 0.0)) * (1.0 - shape), 1e-6))

    null.u, null.n_u, null.xi, null.sigma = fit(s)
    null.shape_estimate = _fit_gpd(s[len(s) - null.n_u :] - null.u)[0]
    fixed = null.xi if tail == "gpd" else None  # "gpd": the bootstrap refits threshold and scale only
    boots = [fit(s[rng.integers(0, len(s), len(s))], fixed) for _ in range(n_boot)]
    null.boot = np.array(boots, np.float64)
    if gof_samples > 0 and tail == "exponential":
        null.gof_p = _gof(s[len(s) - null.n_u :] - null.u, null.xi, null.sigma, gof_samples, rng)
    return null


def _gof(exceedances: np.ndarray, xi: float, sigma: float, samples: int, rng: np.random.Generator) -> float:
    """Anderson-Darling goodness of fit of the exponential tail, p-value by parametric bootstrap
    (the scale re-estimated on every simulated sample, as it was on the data)."""

    def ad(x: np.ndarray) -> float:
        x = np.sort(np.maximum(x, 0.0))
        f = np.clip(1.0 - np.exp(-x / max(x.mean(), 1e-12)), 1e-12, 1 - 1e-12)
        n = len(x)
        i = np.arange(1, n + 1)
        return float(-n - np.mean((2 * i - 1) * (np.log(f) + np.log(1 - f[::-1]))))

    x = np.asarray(exceedances, np.float64)
    stat = ad(x)
    sims = rng.exponential(sigma, size=(samples, len(x)))
    count = sum(ad(sim) >= stat for sim in sims)
    return float((1 + count) / (samples + 1))
