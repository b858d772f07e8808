"""Is the held-out set, the memorization gate's null, representative of the data?

The gate calibrates every copy score on held-out images (other patients, or other inferred acquisition
groups). A split that leaks makes that null too heavy (:mod:`synthgate.data.leakage`); a split that holds out
only the most atypical groups makes it too light: held-out images then lie farther from training than a typical
image of another patient does, and an honest generator's typical images look like copies against them. This
module measures both sides with the same statistic as the leakage diagnosis:

* **class mix**: each class's share of the held-out images against its share of training (total variation
  distance);
* **distance to training**: the aligned similarity of every held-out image to its nearest training image
  (the diagnosis's search), against a **leave-group-out reference**: training images, each searched against
  the training images of the other groups (groups dealt into ``folds`` seeded folds; a source without groups
  has one image per group, so that adjacent slices of a scan then count as "other groups" and the reference
  comes out closer). The comparison is the probability that a held-out image is farther from training than a
  reference image (``p_farther``, 0.5 = alike) with its standard error. The reference searches (folds-1)/folds
  of training, the held-out images all of it: the reference is slightly farther by construction, which counts
  against calling a null atypical, never for it.

A report only: it never fails validation. The tolerance (:data:`TOLERANCE`) is an effect size, not a
calibrated test; the measured values per dataset are in docs/leakage.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from synthgate.utils import auc_placements

#: |p_farther - 0.5| beyond which (at the lower 95% bound) the held-out set is called unlike the reference.
TOLERANCE = 0.15
#: Class shares whose total variation distance exceeds this are reported as a skewed class mix.
MAX_CLASS_TVD = 0.1


@dataclass
class Representativeness:
    class_mix: dict[str, dict[str, float]]  # class -> train_share, held_out_share
    class_tvd: float
    held_out: np.ndarray  # nearest-training aligned similarity of each held-out image
    reference: np.ndarray  # the same for the leave-group-out reference
    folds: int
    grouped: bool

    @property
    def p_farther(self) -> tuple[float, float]:
        """P(a held-out image is farther from training than a reference image; ties count half) and its
        standard error from the placement values (DeLong)."""
        if len(self.held_out) < 2 or len(self.reference) < 2:
            return 0.5, 0.5
        return auc_placements(-self.held_out, -self.reference)  # farther = a lower similarity

    @property
    def verdict(self) -> str:
        p, se = self.p_farther
        lo, hi = p - 1.96 * se, p + 1.96 * se
        mix = ("" if self.class_tvd <= MAX_CLASS_TVD else
               f"; its class mix differs from training's (total variation {self.class_tvd:.2f})")
        if lo > 0.5 + TOLERANCE:
            return (f"held-out images are farther from training than training images are from other groups "
                    f"(P(farther) = {p:.2f} +- {1.96 * se:.2f}): a null of atypical images; honest generators' "
                    f"typical images may be flagged{mix}")
        if hi < 0.5 - TOLERANCE:
            return (f"held-out images are closer to training than training images are to other groups "
                    f"(P(farther) = {p:.2f} +- {1.96 * se:.2f}): see the leakage verdict"
                    + ("" if self.grouped else "; this source has no groups, so the reference is leave-one-image-"
                       "out") + mix)
        return (f"representative: held-out images are as far from training as training images are from other "
                f"groups (P(farther) = {p:.2f} +- {1.96 * se:.2f}){mix}")

    def to_dict(self) -> dict[str, Any]:
        p, se = self.p_farther

        def q(x: np.ndarray) -> dict[str, float]:
            return {k: round(float(np.quantile(x, v)), 4) for k, v in
                    (("p10", 0.1), ("median", 0.5), ("p90", 0.9), ("p99", 0.99))} if len(x) else {}

        return {"verdict": self.verdict, "p_farther": round(p, 4), "se": round(se, 4), "tolerance": TOLERANCE,
                "held_out_similarity": q(self.held_out), "reference_similarity": q(self.reference),
                "n_held_out": int(len(self.held_out)), "n_reference": int(len(self.reference)),
                "folds": self.folds, "grouped": self.grouped, "class_mix": self.class_mix,
                "class_tvd": round(self.class_tvd, 4), "max_class_tvd": MAX_CLASS_TVD}


def leave_group_out(small: np.ndarray, groups: np.ndarray, *, size: int, folds: int, shortlist: int,
                    seed: int = 0) -> np.ndarray:
    """Nearest-image aligned similarity of up to ``size`` training images (a seeded sample), each searched
    against the images of the groups dealt into the other folds; ``small`` (N, S, S) uint8 at the diagnosis's
    resolution, ``groups`` one id per image."""
    from synthgate.data.dedup import aligned_nearest

    rng = np.random.default_rng(seed)
    _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    fold_of = rng.integers(0, folds, inverse.max() + 1 if len(inverse) else 0)[inverse]
    pick = np.sort(rng.choice(len(small), size=min(size, len(small)), replace=False))
    out = np.full(len(pick), np.nan)
    for f in range(folds):
        at = np.flatnonzero(fold_of[pick] == f)
        ref = np.flatnonzero(fold_of != f)
        if len(at) and len(ref):
            out[at] = aligned_nearest(small[pick[at]][..., None], small[ref][..., None], shortlist=shortlist).similarity
    return out[np.isfinite(out)]


def representativeness(small: np.ndarray, held_similarity: np.ndarray, held_labels: np.ndarray,
                       train_labels: np.ndarray, groups: np.ndarray | None, classes: list[str], *,
                       folds: int = 5, size: int = 2000, shortlist: int = 16, seed: int = 0) -> Representativeness:
    """The module docstring's report. ``small`` are the training images at the diagnosis's resolution,
    ``held_similarity`` the diagnosis's similarity of each held-out image; ``groups`` of the training images
    (None: one group per image)."""
    grouped = groups is not None
    g = np.asarray(groups).astype(str) if groups is not None else np.arange(len(small)).astype(str)
    ref = leave_group_out(small, g, size=max(size, 1), folds=folds, shortlist=shortlist, seed=seed)
    mix: dict[str, dict[str, float]] = {}
    for k, c in enumerate(classes):
        mix[c] = {"train_share": round(float(np.mean(train_labels == k)) if len(train_labels) else 0.0, 4),
                  "held_out_share": round(float(np.mean(held_labels == k)) if len(held_labels) else 0.0, 4)}
    tvd = 0.5 * sum(abs(v["train_share"] - v["held_out_share"]) for v in mix.values())
    return Representativeness(mix, float(tvd), np.asarray(held_similarity, np.float64), ref, folds, grouped)
