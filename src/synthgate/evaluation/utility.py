"""Downstream utility: is a classifier trained with the synthetic images any good on real data?

Settings (all tested on the same real test split, repeated over seeds; dumontschutte2021 3.1):

- ``real``       TRTR on a real training set *matched* to the synthetic one: the same number of
                 images per class (dumontschutte2021 3.1: "real and synthetic folds ... with
                 equivalent sizes and label combinations"); the reference of the utility gap;
- ``real_full``  TRTR on the whole real training split (``max_train_per_class``): what the real
                 data can do, reported beside the matched one, and the reference of the next two;
- ``synthetic``  TSTR, train on the synthetic images only; the gap AUC_real - AUC_syn;
- ``augmented``  the same real set as ``real_full`` plus the synthetic images (xing2023 II.D,
                 niehues2024 Table 3): the gain over ``real_full``, paired Wilcoxon over seeds;
- ``transfer``   the TSTR network with its last layer refitted on the ``real_full`` images
                 (xing2023 II.D feature extraction; benitodelvalle 4.2 transfer learning).

Every classifier is trained to convergence on the real validation split (dumontschutte2021 S.4,
:func:`synthgate.evaluation.classifier.train_classifier`): a step budget, early stopping on the
validation AUROC, the best weights kept; accuracy is read at the threshold chosen on validation,
balanced accuracy beside it.

Each seed gives one *paired* value per comparison (the same seed draws the matched real subset,
the held-out synthetic share and the initial weights of both networks): ``auc_gap`` =
AUC_real - AUC_syn, ``delta_syn``, ``augmented_gain``, ``transfer_gain``. They are stored per
seed; the gate decides on their one-sided paired-t confidence bound over seeds
(:func:`confidence_bound`), not on the mean. The label-overfitting check of dumontschutte2021
(S.5): Delta_syn = AUC_syn(X_syn) - AUC_syn(X_real), the TSTR classifier tested on held-out
synthetic images minus on real ones; near 0 when the synthetic images carry the class the way
real ones do, large when the generator encodes labels in unrealistic ways. The Mann-Whitney U
test between the real and synthetic AUCs (S.5) and the paired Wilcoxon test of the augmentation
gain are reported beside the bounds.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from synthgate.errors import DataError
from synthgate.progress import NullReporter, Reporter

if TYPE_CHECKING:
    import torch

    from synthgate.evaluation.classifier import TrainedClassifier, TrainSettings
    from synthgate.evaluation.config import UtilityConfig

log = logging.getLogger(__name__)

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


def confidence_bound(values: list[float] | np.ndarray, confidence: float, side: str) -> float:
    """One-sided paired-t confidence bound of the mean of per-seed paired differences:
    ``mean + t_{confidence, n-1} * sd / sqrt(n)`` (``side="upper"``) or ``mean - ...``
    (``"lower"``), with scipy's Student t quantile. NaN with fewer than 2 finite values."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2 or not np.all(np.isfinite(v)):
        return float("nan")
    half = float(t.ppf(confidence, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return float(v.mean() + half if side == "upper" else v.mean() - half)


def train_settings(cfg: UtilityConfig) -> TrainSettings:
    """The downstream classifier's training settings from ``evaluate.utility``."""
    from synthgate.evaluation.classifier import TrainSettings

    return TrainSettings(max_steps=cfg.max_steps, batch_size=cfg.batch_size, lr=cfg.lr,
                         weight_decay=cfg.weight_decay, warmup=cfg.warmup, eval_every=cfg.eval_every,
                         patience=cfg.patience, balanced=cfg.balanced, shift=cfg.shift,
                         intensity=cfg.intensity, flip=cfg.flip, min_val_per_class=cfg.min_val_per_class,
                         max_epochs=cfg.epochs)


def _names(n_classes: int, class_names: list[str] | None) -> list[str]:
    return list(class_names) if class_names else [f"class {k}" for k in range(n_classes)]


def _check_synthetic(y_real: np.ndarray, y_syn: np.ndarray, n_classes: int, names: list[str]) -> None:
    """Refuse a synthetic set that lacks a class of the real training split: TSTR could never
    predict it, and matched sizes per class do not exist."""
    real_counts = np.bincount(y_real, minlength=n_classes)
    syn_counts = np.bincount(y_syn, minlength=n_classes)
    missing = [names[k] for k in range(n_classes) if real_counts[k] > 0 and syn_counts[k] == 0]
    if missing:
        raise DataError(
            f"utility: the synthetic set has no images of class(es) {', '.join(repr(m) for m in missing)} "
            f"(synthetic counts: {', '.join(f'{names[k]}={int(syn_counts[k])}' for k in range(n_classes))}): "
            "a classifier trained on it cannot learn them, so the utility settings cannot be compared",
            hint="sample every class (sample.per_class, or sample.match_real), or evaluate without utility "
                 "(evaluate.utility.enabled: false)")


def _hold_out(idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of ``idx`` into (held out, train): ``round(fraction * n)`` images of each
    class held out, at least one where the class has two or more, none where it has one."""
    rng = np.random.default_rng(seed)
    test, train = [], []
    for k in np.unique(labels[idx]):
        members = rng.permutation(idx[labels[idx] == k])
        n_hold = 0 if len(members) < 2 else min(len(members) - 1, max(1, int(round(len(members) * fraction))))
        test.append(members[:n_hold])
        train.append(members[n_hold:])
    return np.sort(np.concatenate(test)), np.sort(np.concatenate(train))


def _class_order(idx: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``idx`` grouped by class (stable): two sets with the same counts per class then hold the same
    class at every position."""
    return idx[np.argsort(labels[idx], kind="stable")]


def _counts(labels: np.ndarray, n_classes: int, names: list[str]) -> dict[str, int]:
    c = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    return {names[k]: int(c[k]) for k in range(n_classes)}


def _mean_sd(v: np.ndarray) -> tuple[float, float]:
    v = np.asarray(v, dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def utility(
    real_train: tuple[np.ndarray, np.ndarray],
    real_val: tuple[np.ndarray, np.ndarray],
    real_test: tuple[np.ndarray, np.ndarray],
    synthetic: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    cfg: UtilityConfig,
    device: torch.device,
    reporter: Reporter | None = None,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """Run every setting for every seed; return per-run scores, per-seed paired values and the
    summary statistics with their confidence bounds (see the module docstring).

    Refuses (:class:`DataError`) a synthetic set without images of a class of the real training
    split. A validation split with fewer than ``cfg.min_val_per_class`` images of a class cannot
    drive early stopping: every classifier then trains the fixed budget, and ``validation``
    in the result says so (dumontschutte2021 S.4 assumes a validation fold).
    """
    from scipy.stats import mannwhitneyu, wilcoxon

    from synthgate.evaluation.classifier import (
        auroc,
        classification_scores,
        fit_head,
        per_class_subsample,
        per_class_take,
        predict,
        train_classifier,
        validation_shortfall,
    )

    reporter = reporter or NullReporter()
    names = _names(n_classes, class_names)
    xr, yr = real_train[0], np.asarray(real_train[1], dtype=np.int64)
    xv, yv = real_val[0], np.asarray(real_val[1], dtype=np.int64)
    xt, yt = real_test[0], np.asarray(real_test[1], dtype=np.int64)
    xs, ys = synthetic[0], np.asarray(synthetic[1], dtype=np.int64)
    settings = set(cfg.settings)
    need_syn = bool(settings & {"real", "synthetic", "augmented", "transfer"})
    need_full = bool(settings & {"real_full", "augmented", "transfer"})
    need_tstr = bool(settings & {"synthetic", "transfer"})
    if need_syn:
        _check_synthetic(yr, ys, n_classes, names)
    if cfg.max_val_per_class is not None and len(yv):
        keep = per_class_subsample(np.arange(len(yv)), yv, cfg.max_val_per_class, 0)
        xv, yv = xv[keep], yv[keep]
    xv = np.asarray(xv)
    shortfall = validation_shortfall(yv, n_classes, np.unique(yr), cfg.min_val_per_class)
    validation: dict[str, Any] = {
        "per_class": _counts(yv, n_classes, names), "min_per_class": cfg.min_val_per_class,
        "early_stopping": shortfall is None,
        "note": None if shortfall is None else (
            f"{shortfall}: too few to select on, so no early stopping: every classifier trained the fixed "
            f"budget of {cfg.max_steps} steps{'' if cfg.epochs is None else f' (at most {cfg.epochs} epochs)'} "
            "and kept its last weights; the decision threshold is still read on the validation split"),
    }
    if shortfall is not None:
        log.warning("utility: %s", validation["note"])
    st = train_settings(cfg)
    order = [s for s in ("real", "real_full", "synthetic", "augmented", "transfer")
             if s in settings or (s == "real_full" and need_full) or (s == "synthetic" and need_tstr)]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in order}
    delta_syn: list[float] = []
    sizes: dict[str, Any] = {}

    def fit(x: np.ndarray, y: np.ndarray, seed: int) -> TrainedClassifier:
        return train_classifier(x, y, xv, yv, arch=cfg.arch, n_classes=n_classes, seed=seed, device=device,
                                settings=st)

    def record(setting: str, trained: TrainedClassifier, seed: int, n_train: int) -> None:
        score = classification_scores(yt, predict(trained.model, xt, device), n_classes, trained.threshold)
        runs[setting].append({"seed": seed, **score, **trained.info(), "n_train": int(n_train)})

    with reporter.task("Utility: training downstream classifiers", len(cfg.seeds) * len(order)) as advance:
        for seed in cfg.seeds:
            real_idx = np.arange(len(yr))
            full = per_class_subsample(real_idx, yr, cfg.max_train_per_class, seed)
            s_test, s_train = (np.arange(0), np.arange(0))
            matched = {}
            if need_syn:
                s_all = per_class_subsample(np.arange(len(ys)), ys, cfg.max_train_per_class, seed)
                s_test, s_train = _hold_out(s_all, ys, cfg.synthetic_test_fraction, seed)
                syn_c = np.bincount(ys[s_train], minlength=n_classes)
                real_c = np.bincount(yr, minlength=n_classes)
                matched = {k: int(min(syn_c[k], real_c[k])) for k in range(n_classes) if real_c[k] and syn_c[k]}
            # matched sets in class order: position i holds the same class in both, so the two networks
            # see the same initial weights, batch positions and augmentation draws (common random
            # numbers): their AUC difference then varies with the images, not with the training noise
            r_matched = _class_order(per_class_take(real_idx, yr, matched, seed), yr) if matched else real_idx[:0]
            s_matched = _class_order(per_class_take(s_train, ys, matched, seed), ys) if matched else s_train
            if not sizes:
                sizes = {"matched_per_class": _counts(yr[r_matched], n_classes, names),
                         "real_full_per_class": _counts(yr[full], n_classes, names),
                         "synthetic_train_per_class": _counts(ys[s_train], n_classes, names),
                         "synthetic_held_out_per_class": _counts(ys[s_test], n_classes, names)}
            tstr = None
            for setting in order:
                if setting == "real":
                    record(setting, fit(xr[r_matched], yr[r_matched], seed), seed, len(r_matched))
                elif setting == "synthetic":
                    tstr = fit(xs[s_matched], ys[s_matched], seed)
                    record(setting, tstr, seed, len(s_matched))
                    if len(s_test):
                        p_syn = predict(tstr.model, xs[s_test], device)
                        delta_syn.append(auroc(ys[s_test], p_syn, n_classes) - runs["synthetic"][-1]["auroc"])
                elif setting == "real_full":
                    record(setting, fit(xr[full], yr[full], seed), seed, len(full))
                elif setting == "augmented":
                    xa = np.concatenate([xr[full], xs[s_train]])
                    ya = np.concatenate([yr[full], ys[s_train]])
                    record(setting, fit(xa, ya, seed), seed, len(ya))
                else:  # transfer: the TSTR network's body frozen, its last layer refitted on the real set
                    assert tstr is not None
                    record(setting, fit_head(tstr.model, xr[full], yr[full], xv, yv, n_classes=n_classes,
                                             device=device), seed, len(full))
                advance(1)

    def auc(setting: str) -> np.ndarray:
        return np.array([r["auroc"] for r in runs.get(setting, [])], dtype=np.float64)

    seeds = [int(s) for s in cfg.seeds]
    paired: dict[str, Any] = {"seeds": seeds}
    if "real" in runs and "synthetic" in runs:
        paired["auc_gap"] = (auc("real") - auc("synthetic")).tolist()
    if delta_syn and "synthetic" in settings:
        paired["delta_syn"] = [float(d) for d in delta_syn]
    for s in ("augmented", "transfer"):
        if s in runs and "real_full" in runs:
            paired[f"{s}_gain"] = (auc(s) - auc("real_full")).tolist()

    summary: dict[str, Any] = {}
    for s, rs in runs.items():
        out = {}
        for metric in ("auroc", "accuracy", "balanced_accuracy"):
            out[f"{metric}_mean"], out[f"{metric}_std"] = _mean_sd(np.array([r[metric] for r in rs]))
        out["steps_mean"] = float(np.mean([r["steps"] for r in rs]))
        summary[s] = out

    n_min = min_seeds_for(cfg.confidence)
    stats: dict[str, Any] = {"n_seeds": len(seeds), "confidence": cfg.confidence,
                             "min_seeds_for_confidence": n_min}
    for key, values in paired.items():
        if key == "seeds":
            continue
        mean, sd = _mean_sd(np.array(values))
        stats[key], stats[f"{key}_std"] = mean, sd
        side = PAIRED_SIDES[key]
        stats[f"{key}_{side}"] = confidence_bound(values, cfg.confidence, side) if len(seeds) >= n_min else None
    if "real" in runs and "synthetic" in runs:
        stats["mannwhitney_real_vs_synthetic_p"] = float(
            mannwhitneyu(auc("real"), auc("synthetic"), alternative="two-sided").pvalue)
    for s in ("augmented", "transfer"):
        if f"{s}_gain" in paired:
            gain = np.array(paired[f"{s}_gain"])
            stats[f"{s}_wilcoxon_p"] = (float(wilcoxon(auc(s), auc("real_full"), alternative="greater").pvalue)
                                        if np.any(gain != 0) else 1.0)
    if len(seeds) < n_min:
        stats["note"] = (f"{len(seeds)} seed(s): a one-sided test at confidence {cfg.confidence:g} needs at least "
                         f"{n_min} (the smallest attainable sign/Wilcoxon p-value is 0.5^n = "
                         f"{0.5 ** len(seeds):.3f}); no confidence bounds, and the gate's utility rules fail")
    return {"settings": summary, "runs": runs, "paired": paired, "stats": stats, "train_sizes": sizes,
            "validation": validation,
            "training": {"arch": cfg.arch, **{k: getattr(st, k) for k in (
                "max_steps", "batch_size", "lr", "weight_decay", "warmup", "schedule", "eval_every", "patience",
                "min_delta", "balanced", "shift", "intensity", "flip", "min_val_per_class", "max_epochs")},
                "val_images": int(len(yv))}}
