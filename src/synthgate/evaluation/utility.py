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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from synthgate.errors import DataError
from synthgate.evaluation.bounds import (  # noqa: F401  (re-exported: the bounds the utility report records)
    PAIRED_SIDES,
    auc_influence,
    bound_components,
    confidence_bound,
    delong_variance,
    finite,
    min_seeds_for,
    paired_design,
    set_ratio,
)
from synthgate.progress import NullReporter, Reporter

if TYPE_CHECKING:
    import torch

    from synthgate.evaluation.classifier import TrainedClassifier, TrainSettings
    from synthgate.evaluation.config import UtilityConfig

log = logging.getLogger(__name__)

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
    return_proba: bool = False,
    train_groups: np.ndarray | None = None,
    test_groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Run every setting for every seed; return per-run scores, per-seed paired values and the
    summary statistics with their confidence bounds (see the module docstring).

    Refuses (:class:`DataError`) a synthetic set without images of a class of the real training
    split. A validation split with fewer than ``cfg.min_val_per_class`` images of a class cannot
    drive early stopping: every classifier then trains the fixed budget, and ``validation``
    in the result says so (dumontschutte2021 S.4 assumes a validation fold). ``return_proba`` adds
    each run's test-split probabilities (``test_proba``, arrays: not for the evaluation JSON).
    ``train_groups``/``test_groups`` (the patient of each image): the matched real sets are drawn
    by patient (a share ``resample_fraction`` of the training split's patients per seed, then the
    matched counts from their images), the real pool's overlap counts patients, and the test-split
    variance treats patients as the independent units.
    """
    from synthgate.evaluation.classifier import per_class_subsample

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
    validation = _validation(yv, yr, n_classes, names, cfg)
    order = [s for s in ("real", "real_full", "synthetic", "augmented", "transfer")
             if s in settings or (s == "real_full" and need_full) or (s == "synthetic" and need_tstr)]
    fitter = _Fitter(order, (xv, yv), (xt, yt), n_classes, cfg, device)
    ratios: dict[str, float] = {}
    sizes: dict[str, Any] = {}
    with reporter.task("Utility: training downstream classifiers", len(cfg.seeds) * len(order)) as advance:
        for seed in cfg.seeds:
            sets = _seed_sets(int(seed), yr, ys, n_classes, cfg, need_syn, train_groups, ratios)
            if not sizes:
                sizes = {"matched_per_class": _counts(yr[sets.r_matched], n_classes, names),
                         "real_full_per_class": _counts(yr[sets.full], n_classes, names),
                         "synthetic_train_per_class": _counts(ys[sets.s_train], n_classes, names),
                         "synthetic_held_out_per_class": _counts(ys[sets.s_test], n_classes, names)}
            fitter.seed(int(seed), sets, (xr, yr), (xs, ys), advance)
    paired, design = _paired(fitter, ratios, settings, [int(s) for s in cfg.seeds], test_groups)
    st = fitter.settings
    out: dict[str, Any] = {
        "settings": _summary(fitter.runs), "runs": fitter.runs, "paired": paired,
        "stats": _stats(fitter, paired, design, cfg),
        "train_sizes": {**sizes, "resample_fraction": cfg.resample_fraction,
                        "set_ratios": {k: finite(v) for k, v in ratios.items()}},
        "validation": validation,
        "training": {"arch": cfg.arch, **{k: getattr(st, k) for k in (
            "max_steps", "batch_size", "lr", "weight_decay", "warmup", "schedule", "eval_every", "patience",
            "min_delta", "balanced", "shift", "intensity", "flip", "min_val_per_class", "max_epochs")},
            "val_images": int(len(yv))}}
    if return_proba:
        out["test_proba"] = fitter.proba
    return out


def _validation(yv: np.ndarray, yr: np.ndarray, n_classes: int, names: list[str], cfg: UtilityConfig
                ) -> dict[str, Any]:
    """Whether the validation split can drive early stopping; when not, the note says so (and logs it)."""
    from synthgate.evaluation.classifier import validation_shortfall

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
    return validation


@dataclass
class _SeedSets:
    """The training sets one seed draws (indices into the real and the synthetic training sets)."""

    full: np.ndarray  # real_full and augmented: the real training split (max_train_per_class)
    s_test: np.ndarray  # the synthetic images held out for Delta_syn
    s_train: np.ndarray  # the synthetic pool the matched set is drawn from
    r_matched: np.ndarray  # real (matched): per class as many as s_matched, in class order
    s_matched: np.ndarray  # synthetic (TSTR)


def _seed_sets(seed: int, yr: np.ndarray, ys: np.ndarray, n_classes: int, cfg: UtilityConfig, need_syn: bool,
               train_groups: np.ndarray | None, ratios: dict[str, float]) -> _SeedSets:
    """Draw one seed's sets; the first seed also fills ``ratios`` (:func:`set_ratio` of each pool)."""
    from synthgate.evaluation.classifier import per_class_subsample, per_class_take

    real_idx = np.arange(len(yr))
    full = per_class_subsample(real_idx, yr, cfg.max_train_per_class, seed)
    s_test, s_train = (np.arange(0), np.arange(0))
    matched: dict[int, int] = {}
    if need_syn:
        s_all = per_class_subsample(np.arange(len(ys)), ys, cfg.max_train_per_class, seed)
        s_test, s_train = _hold_out(s_all, ys, cfg.synthetic_test_fraction, seed)
        syn_c = np.bincount(ys[s_train], minlength=n_classes)
        held_c = np.bincount(ys[s_test], minlength=n_classes)
        real_c = np.bincount(yr, minlength=n_classes)
        pool_c = np.bincount(ys, minlength=n_classes)
        # a share of the smaller pool, drawn afresh per seed: the seeds then vary over the
        # training sets too, and the bound can account for the pools' own sampling variance
        matched = {k: max(1, int(math.floor(cfg.resample_fraction * min(syn_c[k], real_c[k]))))
                   for k in range(n_classes) if real_c[k] and syn_c[k]}
        if not ratios:
            ratios.update({
                "real": set_ratio(matched, {k: int(real_c[k]) for k in matched}),
                "synthetic": set_ratio(matched, {k: int(pool_c[k]) for k in matched}),
                "synthetic_held_out": set_ratio({k: matched[k] + int(held_c[k]) for k in matched},
                                                {k: int(pool_c[k]) for k in matched}),
                "synthetic_train": set_ratio({k: int(syn_c[k]) for k in range(n_classes) if syn_c[k]},
                                             {k: int(pool_c[k]) for k in range(n_classes) if syn_c[k]}),
            })
    real_pool = real_idx
    if matched and train_groups is not None:
        real_pool, matched = _by_patient(seed, yr, n_classes, cfg, train_groups, matched, ratios)
    # matched sets in class order: position i holds the same class in both, so the two networks
    # see the same initial weights, batch positions and augmentation draws (common random
    # numbers): their AUC difference then varies with the images, not with the training noise
    r_matched = _class_order(per_class_take(real_pool, yr, matched, seed), yr) if matched else real_idx[:0]
    s_matched = _class_order(per_class_take(s_train, ys, matched, seed), ys) if matched else s_train
    return _SeedSets(full, s_test, s_train, r_matched, s_matched)


def _by_patient(seed: int, yr: np.ndarray, n_classes: int, cfg: UtilityConfig, train_groups: np.ndarray,
                matched: dict[int, int], ratios: dict[str, float]) -> tuple[np.ndarray, dict[int, int]]:
    """The real pool drawn by patient: two seeds then share about ``resample_fraction`` of the
    patients, as :func:`set_ratio` says; -> (the pool's indices, the matched counts it can give)."""
    real_idx = np.arange(len(yr))
    gstr = np.asarray(train_groups).astype(str)
    ug = np.unique(gstr)
    order_g = np.random.default_rng([seed, 1]).permutation(len(ug))
    n_sel = min(len(ug) - 1, max(1, int(round(cfg.resample_fraction * len(ug)))))
    chosen = set(ug[order_g[:n_sel]].tolist())
    have = np.bincount(yr[np.isin(gstr, list(chosen))], minlength=n_classes)
    for g in ug[order_g[n_sel:]]:  # a class none of the chosen patients has: add its patients
        if all(have[k] > 0 for k in matched):
            break
        cls_g = np.bincount(yr[gstr == g], minlength=n_classes)
        if any(have[k] == 0 and cls_g[k] > 0 for k in matched):
            chosen.add(str(g))
            have += cls_g
    real_pool = real_idx[np.isin(gstr, list(chosen))]
    avail = np.bincount(yr[real_pool], minlength=n_classes)
    matched = {k: max(1, min(v, int(avail[k]))) for k, v in matched.items()}
    if ratios.get("real_groups") is None:
        ratios["real"] = (float(len(chosen)) / (len(ug) - len(chosen))) if len(ug) > len(chosen) else float("inf")
        ratios["real_groups"] = float(len(ug))
    return real_pool, matched


class _Fitter:
    """Trains every setting's classifier for a seed and records its test-split scores."""

    def __init__(self, order: list[str], val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                 n_classes: int, cfg: UtilityConfig, device: torch.device) -> None:
        self.order, self.val, self.test, self.n_classes, self.cfg, self.device = order, val, test, n_classes, cfg, device
        self.settings = train_settings(cfg)
        self.runs: dict[str, list[dict[str, Any]]] = {s: [] for s in order}
        self.proba: dict[str, list[np.ndarray]] = {s: [] for s in order}
        self.psi_syn_test: list[np.ndarray] = []  # Delta_syn's test-image influences, per seed
        self.delta_syn: list[float] = []

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> TrainedClassifier:
        from synthgate.evaluation.classifier import train_classifier

        return train_classifier(x, y, *self.val, arch=self.cfg.arch, n_classes=self.n_classes, seed=seed,
                                device=self.device, settings=self.settings)

    def record(self, setting: str, trained: TrainedClassifier, seed: int, n_train: int) -> None:
        from synthgate.evaluation.classifier import classification_scores, predict

        xt, yt = self.test
        p = predict(trained.model, xt, self.device)
        self.proba[setting].append(p)
        score = classification_scores(yt, p, self.n_classes, trained.threshold)
        self.runs[setting].append({"seed": seed, **score, **trained.info(), "n_train": int(n_train)})

    def seed(self, seed: int, sets: _SeedSets, real: tuple[np.ndarray, np.ndarray],
             syn: tuple[np.ndarray, np.ndarray], advance: Any) -> None:
        from synthgate.evaluation.classifier import auroc, fit_head, predict

        (xr, yr), (xs, ys), n = real, syn, self.n_classes
        tstr = None
        for setting in self.order:
            if setting == "real":
                self.record(setting, self.fit(xr[sets.r_matched], yr[sets.r_matched], seed), seed, len(sets.r_matched))
            elif setting == "synthetic":
                tstr = self.fit(xs[sets.s_matched], ys[sets.s_matched], seed)
                self.record(setting, tstr, seed, len(sets.s_matched))
                if len(sets.s_test):
                    p_syn = predict(tstr.model, xs[sets.s_test], self.device)
                    self.delta_syn.append(auroc(ys[sets.s_test], p_syn, n) - self.runs["synthetic"][-1]["auroc"])
                    self.psi_syn_test.append(-auc_influence(self.test[1], self.proba["synthetic"][-1], n))
            elif setting == "real_full":
                self.record(setting, self.fit(xr[sets.full], yr[sets.full], seed), seed, len(sets.full))
            elif setting == "augmented":
                xa = np.concatenate([xr[sets.full], xs[sets.s_train]])
                ya = np.concatenate([yr[sets.full], ys[sets.s_train]])
                self.record(setting, self.fit(xa, ya, seed), seed, len(ya))
            else:  # transfer: the TSTR network's body frozen, its last layer refitted on the real set
                assert tstr is not None
                self.record(setting, fit_head(tstr.model, xr[sets.full], yr[sets.full], *self.val, n_classes=n,
                                              device=self.device), seed, len(sets.full))
            advance(1)

    def auc(self, setting: str) -> np.ndarray:
        return np.array([r["auroc"] for r in self.runs.get(setting, [])], dtype=np.float64)

    def psi_diff(self, a: str, b: str) -> list[np.ndarray]:
        yt = self.test[1]
        return [auc_influence(yt, pa, self.n_classes) - auc_influence(yt, pb, self.n_classes)
                for pa, pb in zip(self.proba[a], self.proba[b], strict=True)]


def _paired(f: _Fitter, ratios: dict[str, float], settings: set[str], seeds: list[int],
            test_groups: np.ndarray | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The per-seed paired values of each comparison and their variance designs."""
    yt = f.test[1]
    paired: dict[str, Any] = {"seeds": seeds}
    design: dict[str, Any] = {}
    if "real" in f.runs and "synthetic" in f.runs:
        paired["auc_gap"] = (f.auc("real") - f.auc("synthetic")).tolist()
        design["auc_gap"] = paired_design([("real (matched)", f.auc("real").tolist(), ratios["real"]),
                                           ("synthetic (TSTR)", f.auc("synthetic").tolist(), ratios["synthetic"])],
                                          f.psi_diff("real", "synthetic"), yt, test_groups)
    if f.delta_syn and "synthetic" in settings:
        paired["delta_syn"] = [float(d) for d in f.delta_syn]
        design["delta_syn"] = paired_design([("synthetic (TSTR and held out)", paired["delta_syn"],
                                              ratios["synthetic_held_out"])], f.psi_syn_test, yt, test_groups)
    for s in ("augmented", "transfer"):
        if s in f.runs and "real_full" in f.runs:
            paired[f"{s}_gain"] = (f.auc(s) - f.auc("real_full")).tolist()
            # the same real split on both sides: the gain is conditional on it; the synthetic pool resampled
            design[f"{s}_gain"] = paired_design([("synthetic (added)", paired[f"{s}_gain"],
                                                  ratios.get("synthetic_train", float("inf")))],
                                                f.psi_diff(s, "real_full"), yt, test_groups)
    if design:
        paired["variance"] = design
    return paired, design


def _summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for s, rs in runs.items():
        out = {}
        for metric in ("auroc", "accuracy", "balanced_accuracy"):
            out[f"{metric}_mean"], out[f"{metric}_std"] = _mean_sd(np.array([r[metric] for r in rs]))
        out["steps_mean"] = float(np.mean([r["steps"] for r in rs]))
        summary[s] = out
    return summary


def _stats(f: _Fitter, paired: dict[str, Any], design: dict[str, Any], cfg: UtilityConfig) -> dict[str, Any]:
    """Means, standard errors and their parts, the one-sided bounds (with enough seeds), and the
    rank tests reported beside them."""
    from scipy.stats import mannwhitneyu, wilcoxon

    seeds = paired["seeds"]
    n_min = min_seeds_for(cfg.confidence)
    stats: dict[str, Any] = {"n_seeds": len(seeds), "confidence": cfg.confidence,
                             "min_seeds_for_confidence": n_min}
    for key, values in paired.items():
        if key not in PAIRED_SIDES:
            continue
        mean, sd = _mean_sd(np.array(values))
        stats[key], stats[f"{key}_std"] = mean, sd
        side = PAIRED_SIDES[key]
        parts = bound_components(values, design.get(key))
        stats[f"{key}_se"] = finite(parts["se"])
        stats[f"{key}_se_parts"] = {k: finite(math.sqrt(v)) for k, v in parts.items() if k != "se"}
        stats[f"{key}_{side}"] = (confidence_bound(values, cfg.confidence, side, design.get(key))
                                  if len(seeds) >= n_min else None)
    if "real" in f.runs and "synthetic" in f.runs:
        stats["mannwhitney_real_vs_synthetic_p"] = float(
            mannwhitneyu(f.auc("real"), f.auc("synthetic"), alternative="two-sided").pvalue)
    for s in ("augmented", "transfer"):
        if f"{s}_gain" in paired:
            gain = np.array(paired[f"{s}_gain"])
            stats[f"{s}_wilcoxon_p"] = (float(wilcoxon(f.auc(s), f.auc("real_full"), alternative="greater").pvalue)
                                        if np.any(gain != 0) else 1.0)
    if len(seeds) < n_min:
        stats["note"] = (f"{len(seeds)} seed(s): a one-sided test at confidence {cfg.confidence:g} needs at least "
                         f"{n_min} (the smallest attainable sign/Wilcoxon p-value is 0.5^n = "
                         f"{0.5 ** len(seeds):.3f}); no confidence bounds, and the gate's utility rules fail")
    return stats
