"""The leakage diagnosis: how many held-out images have a training image closer than unseen patients'
images are.

A held-out set is evidence only if it holds other patients (the design notes, principle 3a). Most
sources name no patients, and their given or random split puts adjacent slices, re-crops and repeat
scans of one patient on both sides; the memorization gate's null is then as heavy as a lightly modified
copy and the gate cannot certify. This module measures that.

**Definition.** Every held-out (val, test) image is searched against the training split with the
memorization evaluation's copy search (:func:`synthgate.data.dedup.aligned_nearest`), at the reference
resolution (32x32, area averaging). It is *closer than an unseen patient* when its nearest training image
reaches the aligned similarity ``similarity``, or stands out from the second nearest by the aligned margin
``margin`` (Fisher z). Both thresholds come from a split where patients are known to be disjoint:
PneumoniaMNIST's official test split against its training split, each the 99.5th percentile of what unseen
patients reach (:data:`synthgate.data.config.LEAK_SIMILARITY`, ``LEAK_MARGIN``; how they were measured and
their false-alarm rate on held-out PneumoniaMNIST images: README, "Validation"). About 1% of the held-out
images of a patient-disjoint split are flagged by chance; the verdict subtracts that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthgate.data.complexity import to_gray
from synthgate.data.config import LeakageConfig, LeakThresholds
from synthgate.data.representative import Representativeness, representativeness

#: Share of the held-out images of a patient-disjoint split flagged by chance at the default thresholds
#: (PneumoniaMNIST, two-fold over 20 halvings of its test split: README, "Validation").
EXPECTED_FALSE_ALARMS = 0.016
HELD_OUT = ("val", "test")


def at_resolution(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W[, C]) uint8 -> (N, size, size) uint8 luma: block means when ``size`` divides the side, else
    Pillow's box filter (area averaging either way); unchanged at that size."""
    gray = to_gray(np.asarray(images))
    n, h, w = gray.shape
    if h == size and w == size:
        return gray
    if h % size == 0 and w % size == 0:
        small = gray.reshape(n, size, h // size, size, w // size).astype(np.float32).mean(axis=(2, 4))
        return np.clip(np.rint(small), 0, 255).astype(np.uint8)
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.Resampling.BOX)) for g in gray])


def flags(similarity: np.ndarray, margin: np.ndarray, t: LeakThresholds) -> np.ndarray:
    """The rule of the module docstring: closer than unseen patients' images are."""
    return (np.asarray(similarity) >= t.similarity) | (np.asarray(margin) >= t.margin)


@dataclass
class LeakageReport:
    """Per held-out image: its nearest training image and whether it is closer than unseen patients'."""

    pairs: pd.DataFrame  # index, split, label, train_index, similarity, margin, flagged, source, train_source
    held_out: int
    thresholds: dict[str, float]
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # split -> class -> n, flagged
    figure: str | None = None
    representative: Representativeness | None = None  # is the held-out set (the gate's null) representative?
    groups_note: dict[str, Any] | None = None  # the manifest's groups entry: how the split's groups came about

    @property
    def flagged(self) -> int:
        return int(self.pairs["flagged"].sum()) if len(self.pairs) else 0

    @property
    def expected_by_chance(self) -> float:
        return EXPECTED_FALSE_ALARMS * self.held_out

    @property
    def likely_leaked(self) -> int:
        """Flagged images beyond the chance rate of a patient-disjoint split (rounded)."""
        return max(0, int(round(self.flagged - self.expected_by_chance)))

    @property
    def leaks(self) -> bool:
        """More images flagged than a patient-disjoint split flags by chance (at most about 2x + 3, the upper
        tail of a binomial count at the chance rate)."""
        return self.flagged > 2 * self.expected_by_chance + 3

    @property
    def verdict(self) -> str:
        n, m = self.flagged, self.held_out
        if not self.leaks:
            return (f"no leak found: {n} of {m} held-out image(s) are closer to a training image than unseen "
                    f"patients' images are, about the {self.expected_by_chance:.0f} a patient-disjoint split "
                    "shows by chance")
        return (f"the split leaks: about {self.likely_leaked} held-out image(s) likely share a patient with training "
                f"({n} of {m} are closer to a training image than unseen patients' images are; "
                f"{self.expected_by_chance:.0f} expected by chance); the memorization gate cannot certify on this "
                f"split; {self.remedy}")

    @property
    def remedy(self) -> str:
        note = self.groups_note or {}
        if note.get("source_split") == "kept":
            return ("the source's own split was kept: prepare again with --regroup (prepare.infer_groups.source_split: "
                    "regroup) to move the groups that straddle it, then validate again")
        if "inferred" in str(note.get("source") or ""):
            return ("the inferred groups did not close the leak: prepare again with more linking rounds "
                    "(prepare.infer_groups.rounds) or a file-name pattern that names scans (--infer-pattern), then "
                    "validate again")
        if note.get("source"):
            return ("the named patient groups do not cover the near copies: check the patient column, or add inferred "
                    "groups (--infer-groups), then validate again")
        return ("run `synthgate prepare --infer-groups` (prepare.infer_groups.enabled: true; with a source split also "
                "--regroup) to split by inferred acquisition groups, then validate again")

    def summary(self) -> dict[str, Any]:
        """What the validated manifest and the evaluation report carry: the verdicts and their counts."""
        rep = self.representative
        return {"leakage": self.verdict, "leaks": self.leaks, "flagged": self.flagged, "held_out": self.held_out,
                "expected_by_chance": round(self.expected_by_chance, 1),
                "representative": rep.verdict if rep is not None else None,
                "p_farther": None if rep is None else round(rep.p_farther[0], 4),
                "class_tvd": None if rep is None else round(rep.class_tvd, 4)}

    def to_dict(self) -> dict[str, Any]:
        worst = self.pairs.sort_values("similarity", ascending=False).head(20)
        return {"held_out": self.held_out, "flagged": self.flagged,
                "expected_by_chance": round(self.expected_by_chance, 1), "likely_leaked": self.likely_leaked,
                "leaks": self.leaks, "verdict": self.verdict, "thresholds": self.thresholds,
                "per_split_and_class": self.counts, "csv": "leakage.csv", "figure": self.figure,
                "closest": worst[["source", "split", "train_source", "similarity", "margin"]].to_dict(orient="records"),
                "representative": self.representative.to_dict() if self.representative is not None else None}


def diagnose_leakage(images: np.ndarray, splits: np.ndarray, labels: np.ndarray, classes: list[str],
                     sources: np.ndarray, cfg: LeakageConfig, groups: np.ndarray | None = None) -> LeakageReport:
    """Search every non-constant held-out image against the training split and flag those closer than
    unseen patients' images are (module docstring); counts per split and class; and, unless
    ``cfg.reference`` is 0, whether the held-out set is representative (:mod:`synthgate.data.representative`,
    ``groups`` of all images, None: none named)."""
    from synthgate.data.dedup import aligned_nearest

    splits = np.asarray(splits).astype(str)
    labels = np.asarray(labels)
    sources = np.asarray(sources).astype(str)
    small = at_resolution(images, cfg.resolution)
    usable = small.reshape(len(small), -1).std(axis=1) > 0
    tr = np.flatnonzero((splits == "train") & usable)
    held = np.flatnonzero(np.isin(splits, HELD_OUT) & usable)
    thresholds = {"similarity": cfg.similarity, "margin": cfg.margin, "resolution": float(cfg.resolution)}
    cols = ["index", "split", "label", "train_index", "similarity", "margin", "flagged", "source", "train_source"]
    if len(tr) == 0 or len(held) == 0:
        return LeakageReport(pd.DataFrame(columns=cols), 0, thresholds)
    near = aligned_nearest(small[held][..., None], small[tr][..., None], shortlist=cfg.shortlist)
    train_index = tr[near.index]
    pairs = pd.DataFrame({"index": held, "split": splits[held], "label": [classes[int(k)] if 0 <= int(k) < len(classes) else str(k)  # validation names a bad label
                                                    for k in labels[held]],
                          "train_index": train_index, "similarity": near.similarity, "margin": near.margin,
                          "flagged": flags(near.similarity, near.margin, cfg), "source": sources[held],
                          "train_source": sources[train_index]}, columns=cols)
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for (sp, lab), g in pairs.groupby(["split", "label"], sort=True):
        counts.setdefault(str(sp), {})[str(lab)] = {"held_out": len(g), "flagged": int(g["flagged"].sum())}
    rep = None
    if cfg.reference > 0 and len(tr) > 1:
        rep = representativeness(small[tr], near.similarity, labels[held], labels[tr],
                                 None if groups is None else np.asarray(groups)[tr], classes, size=cfg.reference,
                                 shortlist=cfg.shortlist)
    return LeakageReport(pairs, len(held), thresholds, counts, representative=rep)


def write_leakage_report(report: LeakageReport, images: np.ndarray, report_dir: Path, shown: int) -> None:
    """``leakage.csv`` (every held-out image, its nearest training image and the scores) and
    ``leakage_pairs.png``: the ``shown`` closest flagged pairs side by side, held-out image left, its training
    image right, one pair per row in order of similarity."""
    from synthgate.figures import make_grid, save_png

    report_dir = Path(report_dir)
    report.pairs.to_csv(report_dir / "leakage.csv", index=False)
    stale = report_dir / "leakage_pairs.png"
    stale.unlink(missing_ok=True)
    worst = report.pairs[report.pairs["flagged"]].sort_values("similarity", ascending=False).head(shown)
    if shown == 0 or len(worst) == 0:
        return
    arr = np.asarray(images)
    tiles = np.stack([arr[int(i)] for r in worst.itertuples(index=False) for i in (r.index, r.train_index)])
    save_png(stale, make_grid(tiles, nrow=2, pad=2, fill=255))
    report.figure = stale.name


def dataset_leakage(images: np.ndarray, meta: pd.DataFrame, classes: list[str], keep: np.ndarray,
                    cfg: LeakageConfig, report_dir: Path, groups_note: dict[str, Any] | None = None) -> LeakageReport:
    """The diagnosis over the images that stay (``keep``) of a canonical dataset, with its report files;
    indices in the report are the dataset's."""
    idx = np.flatnonzero(keep)
    arr = np.asarray(images)
    groups = meta["group"].to_numpy()[idx] if "group" in meta.columns else None
    rep = diagnose_leakage(arr[idx], meta["split"].to_numpy()[idx], meta["label"].to_numpy()[idx], classes,
                           meta["source"].to_numpy()[idx], cfg, groups)
    rep.groups_note = groups_note
    if len(rep.pairs):
        rep.pairs["index"] = idx[rep.pairs["index"].to_numpy()]
        rep.pairs["train_index"] = idx[rep.pairs["train_index"].to_numpy()]
    write_leakage_report(rep, arr, report_dir, cfg.pairs_shown)
    return rep
