"""Downstream utility: is a classifier trained with the synthetic images any good on real data?

Settings (all tested on the same real test split, repeated over seeds):

- ``real``       TRTR, train on real (the reference);
- ``synthetic``  TSTR, train on synthetic only (dumontschutte2021 3.1: the gap
                 AUC_real - AUC_syn, Mann-Whitney U between the settings, S.4-S.5);
- ``augmented``  real + synthetic (xing2023 II.D, niehues2024 Table 3: the gain over real,
                 paired Wilcoxon signed-rank over seeds);
- ``transfer``   pre-train on synthetic, then freeze everything but the last layer and fit it on
                 real (xing2023 II.D feature extraction; benitodelvalle 4.2 transfer learning).

Model selection uses the real validation split for every setting. The label-overfitting check
of dumontschutte2021 (S.5): Delta_syn = AUC_syn(X_syn) - AUC_syn(X_real), the TSTR classifier
tested on held-out synthetic images minus on real ones; near 0 when the synthetic images carry
the class the way real ones do, large when the generator encodes labels in unrealistic ways.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from synthgate.evaluation.classifier import auroc, per_class_subsample, predict, train_classifier
from synthgate.evaluation.config import UtilityConfig
from synthgate.progress import NullReporter, Reporter

log = logging.getLogger(__name__)


def _scores(model: Any, x: np.ndarray, y: np.ndarray, n_classes: int, device: torch.device) -> dict[str, float]:
    p = predict(model, x, device)
    return {"auroc": auroc(y, p, n_classes), "accuracy": float((p.argmax(1) == y).mean())}


def utility(
    real_train: tuple[np.ndarray, np.ndarray],
    real_val: tuple[np.ndarray, np.ndarray],
    real_test: tuple[np.ndarray, np.ndarray],
    synthetic: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    cfg: UtilityConfig,
    device: torch.device,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Run every setting for every seed; return per-run scores and the summary statistics."""
    from scipy.stats import mannwhitneyu, wilcoxon

    reporter = reporter or NullReporter()
    xr, yr = real_train
    xv, yv = real_val
    xt, yt = real_test
    xs, ys = synthetic
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in cfg.settings}
    delta_syn: list[float] = []
    common = dict(n_classes=n_classes, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, device=device)
    total = len(cfg.seeds) * len(cfg.settings)
    with reporter.task("Utility: training downstream classifiers", total) as advance:
        for seed in cfg.seeds:
            rng = np.random.default_rng(seed)
            ri = per_class_subsample(np.arange(len(yr)), yr, cfg.max_train_per_class, seed)
            si = per_class_subsample(np.arange(len(ys)), ys, cfg.max_train_per_class, seed)
            perm = rng.permutation(si)
            n_hold = max(1, int(round(len(perm) * cfg.synthetic_test_fraction)))
            s_test, s_train = perm[:n_hold], perm[n_hold:]
            tstr = None
            for setting in cfg.settings:
                if setting == "real":
                    m = train_classifier(xr[ri], yr[ri], xv, yv, arch=cfg.arch, seed=seed, **common).model
                elif setting == "synthetic":
                    m = train_classifier(xs[s_train], ys[s_train], xv, yv, arch=cfg.arch, seed=seed, **common).model
                    tstr = m
                elif setting == "augmented":
                    xa = np.concatenate([xr[ri], xs[s_train]])
                    ya = np.concatenate([yr[ri], ys[s_train]])
                    m = train_classifier(xa, ya, xv, yv, arch=cfg.arch, seed=seed, **common).model
                else:  # transfer: pre-train on synthetic, fit the last layer on real
                    pre = tstr or train_classifier(xs[s_train], ys[s_train], xv, yv, arch=cfg.arch, seed=seed,
                                                   **common).model
                    m = train_classifier(xr[ri], yr[ri], xv, yv, arch=cfg.arch, seed=seed, init=pre,
                                         head_only=True, **common).model
                score = _scores(m, xt, yt, n_classes, device)
                score["seed"] = seed
                runs[setting].append(score)
                advance(1)
            if tstr is not None:
                on_syn = _scores(tstr, xs[s_test], ys[s_test], n_classes, device)["auroc"]
                on_real = runs["synthetic"][-1]["auroc"]
                delta_syn.append(on_syn - on_real)

    def auc(setting: str) -> np.ndarray:
        return np.array([r["auroc"] for r in runs.get(setting, [])])

    summary: dict[str, Any] = {}
    for s, rs in runs.items():
        a = np.array([r["auroc"] for r in rs])
        acc = np.array([r["accuracy"] for r in rs])
        summary[s] = {"auroc_mean": float(a.mean()), "auroc_std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
                      "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0}
    stats: dict[str, Any] = {"n_seeds": len(cfg.seeds)}
    if "real" in runs and "synthetic" in runs:
        gap = auc("real") - auc("synthetic")
        stats["auc_gap"] = float(gap.mean())
        stats["auc_gap_std"] = float(gap.std(ddof=1)) if len(gap) > 1 else 0.0
        stats["mannwhitney_real_vs_synthetic_p"] = float(
            mannwhitneyu(auc("real"), auc("synthetic"), alternative="two-sided").pvalue)
    for s in ("augmented", "transfer"):
        if "real" in runs and s in runs:
            gain = auc(s) - auc("real")
            stats[f"{s}_gain"] = float(gain.mean())
            stats[f"{s}_gain_std"] = float(gain.std(ddof=1)) if len(gain) > 1 else 0.0
            nonzero = np.any(gain != 0)
            stats[f"{s}_wilcoxon_p"] = (float(wilcoxon(auc(s), auc("real"), alternative="greater").pvalue)
                                        if nonzero else 1.0)
    if delta_syn:
        stats["delta_syn"] = float(np.mean(delta_syn))
        stats["delta_syn_std"] = float(np.std(delta_syn, ddof=1)) if len(delta_syn) > 1 else 0.0
    if len(cfg.seeds) < 6:
        stats["note"] = (f"{len(cfg.seeds)} seeds: the smallest attainable one-sided Wilcoxon p-value is "
                         f"{0.5 ** len(cfg.seeds):.3f}; use >= 6 seeds for p < 0.05")
    return {"settings": summary, "runs": runs, "stats": stats,
            "train_sizes": {"real_per_class_cap": cfg.max_train_per_class, "synthetic": int(len(ys))}}
