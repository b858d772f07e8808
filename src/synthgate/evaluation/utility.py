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


def _finite(x: float) -> float | None:
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
    return {"components": [{"name": n, "values": [float(x) for x in v], "ratio": _finite(r)} for n, v, r in pools],
            "test_variance": _finite(delong_variance(y_test, mean_psi, test_groups)) if psi else 0.0}


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
    proba: dict[str, list[np.ndarray]] = {s: [] for s in order}
    psi_syn_test: list[np.ndarray] = []
    delta_syn: list[float] = []
    ratios: dict[str, float] = {}
    sizes: dict[str, Any] = {}

    def fit(x: np.ndarray, y: np.ndarray, seed: int) -> TrainedClassifier:
        return train_classifier(x, y, xv, yv, arch=cfg.arch, n_classes=n_classes, seed=seed, device=device,
                                settings=st)

    def record(setting: str, trained: TrainedClassifier, seed: int, n_train: int) -> None:
        p = predict(trained.model, xt, device)
        proba[setting].append(p)
        score = classification_scores(yt, p, n_classes, trained.threshold)
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
                held_c = np.bincount(ys[s_test], minlength=n_classes)
                real_c = np.bincount(yr, minlength=n_classes)
                pool_c = np.bincount(ys, minlength=n_classes)
                # a share of the smaller pool, drawn afresh per seed: the seeds then vary over the
                # training sets too, and the bound can account for the pools' own sampling variance
                matched = {k: max(1, int(math.floor(cfg.resample_fraction * min(syn_c[k], real_c[k]))))
                           for k in range(n_classes) if real_c[k] and syn_c[k]}
                if not ratios:
                    ratios = {
                        "real": set_ratio(matched, {k: int(real_c[k]) for k in matched}),
                        "synthetic": set_ratio(matched, {k: int(pool_c[k]) for k in matched}),
                        "synthetic_held_out": set_ratio({k: matched[k] + int(held_c[k]) for k in matched},
                                                        {k: int(pool_c[k]) for k in matched}),
                        "synthetic_train": set_ratio({k: int(syn_c[k]) for k in range(n_classes) if syn_c[k]},
                                                     {k: int(pool_c[k]) for k in range(n_classes) if syn_c[k]}),
                    }
            real_pool = real_idx
            if matched and train_groups is not None:
                # by patient: two seeds then share about resample_fraction of the patients, as set_ratio says
                ug = np.unique(np.asarray(train_groups).astype(str))
                order_g = np.random.default_rng([seed, 1]).permutation(len(ug))
                n_sel = min(len(ug) - 1, max(1, int(round(cfg.resample_fraction * len(ug)))))
                chosen = set(ug[order_g[:n_sel]].tolist())
                gstr = np.asarray(train_groups).astype(str)
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
                    ratios["real"] = (float(len(chosen)) / (len(ug) - len(chosen))) if len(ug) > len(chosen) \
                        else float("inf")
                    ratios["real_groups"] = float(len(ug))
            # matched sets in class order: position i holds the same class in both, so the two networks
            # see the same initial weights, batch positions and augmentation draws (common random
            # numbers): their AUC difference then varies with the images, not with the training noise
            r_matched = _class_order(per_class_take(real_pool, yr, matched, seed), yr) if matched else real_idx[:0]
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
                        psi_syn_test.append(-auc_influence(yt, proba["synthetic"][-1], n_classes))
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

    def psi_diff(a: str, b: str) -> list[np.ndarray]:
        return [auc_influence(yt, pa, n_classes) - auc_influence(yt, pb, n_classes)
                for pa, pb in zip(proba[a], proba[b], strict=True)]

    design: dict[str, Any] = {}
    if "real" in runs and "synthetic" in runs:
        paired["auc_gap"] = (auc("real") - auc("synthetic")).tolist()
        design["auc_gap"] = paired_design([("real (matched)", auc("real").tolist(), ratios["real"]),
                                           ("synthetic (TSTR)", auc("synthetic").tolist(), ratios["synthetic"])],
                                          psi_diff("real", "synthetic"), yt, test_groups)
    if delta_syn and "synthetic" in settings:
        paired["delta_syn"] = [float(d) for d in delta_syn]
        design["delta_syn"] = paired_design([("synthetic (TSTR and held out)", paired["delta_syn"],
                                              ratios["synthetic_held_out"])], psi_syn_test, yt, test_groups)
    for s in ("augmented", "transfer"):
        if s in runs and "real_full" in runs:
            paired[f"{s}_gain"] = (auc(s) - auc("real_full")).tolist()
            # the same real split on both sides: the gain is conditional on it; the synthetic pool resampled
            design[f"{s}_gain"] = paired_design([("synthetic (added)", paired[f"{s}_gain"],
                                                  ratios.get("synthetic_train", float("inf")))],
                                                psi_diff(s, "real_full"), yt, test_groups)
    if design:
        paired["variance"] = design

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
        if key not in PAIRED_SIDES:
            continue
        mean, sd = _mean_sd(np.array(values))
        stats[key], stats[f"{key}_std"] = mean, sd
        side = PAIRED_SIDES[key]
        parts = bound_components(values, design.get(key))
        stats[f"{key}_se"] = _finite(parts["se"])
        stats[f"{key}_se_parts"] = {k: _finite(math.sqrt(v)) for k, v in parts.items() if k != "se"}
        stats[f"{key}_{side}"] = (confidence_bound(values, cfg.confidence, side, design.get(key))
                                  if len(seeds) >= n_min else None)
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
    out: dict[str, Any] = {
        "settings": summary, "runs": runs, "paired": paired, "stats": stats,
        "train_sizes": {**sizes, "resample_fraction": cfg.resample_fraction,
                        "set_ratios": {k: _finite(v) for k, v in ratios.items()}},
        "validation": validation,
        "training": {"arch": cfg.arch, **{k: getattr(st, k) for k in (
            "max_steps", "batch_size", "lr", "weight_decay", "warmup", "schedule", "eval_every", "patience",
            "min_delta", "balanced", "shift", "intensity", "flip", "min_val_per_class", "max_epochs")},
            "val_images": int(len(yv))}}
    if return_proba:
        out["test_proba"] = proba
    return out
