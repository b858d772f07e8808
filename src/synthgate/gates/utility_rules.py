"""The utility rules: each decides on the one-sided confidence bound of per-seed paired values
(:func:`synthgate.evaluation.bounds.confidence_bound`), over the seeds, the training pools and the
test split, checked against the evaluation's own runs so that an edited variance record fails."""

from __future__ import annotations

from typing import Any

from synthgate.gates.policy import GatePolicy
from synthgate.gates.rules import RuleResult, threshold_rules


def valid_design(design: Any, n: int) -> bool:
    """A paired quantity's variance record as :func:`synthgate.evaluation.bounds.paired_design`
    writes it: pools with ``n`` per-seed values and a ratio (``None``: not resampled), and a finite,
    non-negative test-set variance."""
    import numpy as np

    if not isinstance(design, dict) or not isinstance(design.get("components"), list):
        return False
    tv = design.get("test_variance")
    if not isinstance(tv, int | float) or isinstance(tv, bool) or not np.isfinite(tv) or tv < 0:
        return False
    for c in design["components"]:
        if not isinstance(c, dict) or not isinstance(c.get("values"), list) or len(c["values"]) != n:
            return False
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in c["values"]):
            return False
        r = c.get("ratio")
        if r is not None and not (isinstance(r, int | float) and not isinstance(r, bool) and np.isfinite(r) and r >= 0):
            return False
    return True


#: Per paired quantity, the pools its variance record must name (in order), the per-seed values each must
#: carry (a setting's AUROCs in ``utility.runs``, or the paired values themselves) and its ratio in
#: ``utility.train_sizes.set_ratios``; the paired values themselves as a difference of two settings.
DESIGNS: dict[str, dict[str, Any]] = {
    "auc_gap": {"components": [("real (matched)", "real", "real"), ("synthetic (TSTR)", "synthetic", "synthetic")],
                "difference": ("real", "synthetic")},
    "delta_syn": {"components": [("synthetic (TSTR and held out)", None, "synthetic_held_out")]},
    "augmented_gain": {"components": [("synthetic (added)", None, "synthetic_train")],
                       "difference": ("augmented", "real_full")},
    "transfer_gain": {"components": [("synthetic (added)", None, "synthetic_train")],
                      "difference": ("transfer", "real_full")},
}


def design_mismatch(key: str, values: list[float], design: dict[str, Any], util: dict[str, Any]) -> str | None:
    """Why a variance record does not belong to the evaluation's own runs (``None`` if it does): the
    pools :data:`DESIGNS` names, each with the per-seed AUROCs of its setting in ``utility.runs`` (or the
    paired values) and the ratio ``train_sizes.set_ratios`` records; the paired values the difference of
    the two settings' AUROCs. A record edited to narrow the bound, or written by other code, fails."""
    import numpy as np

    spec = DESIGNS.get(key)
    if spec is None:
        return f"no variance design is known for {key!r}"
    runs = util.get("runs") or {}
    ratios = (util.get("train_sizes") or {}).get("set_ratios") or {}

    def aurocs(setting: str) -> list[float] | None:
        rs = runs.get(setting)
        if not isinstance(rs, list) or not all(isinstance(r, dict) and isinstance(r.get("auroc"), int | float)
                                               for r in rs):
            return None
        return [float(r["auroc"]) for r in rs]

    comps = design["components"]
    if [c.get("name") for c in comps] != [n for n, _, _ in spec["components"]]:
        return (f"its pools are {[c.get('name') for c in comps]}, not {[n for n, _, _ in spec['components']]}")
    for c, (name, setting, ratio_key) in zip(comps, spec["components"], strict=True):
        expected = values if setting is None else aurocs(setting)
        if expected is None or len(expected) != len(c["values"]) or not np.allclose(c["values"], expected,
                                                                                   rtol=0, atol=1e-9):
            return f"pool {name!r}: its per-seed values are not {'the paired values' if setting is None else f'the {setting} runs AUROCs'}"
        if ratio_key not in ratios:
            return f"pool {name!r}: train_sizes.set_ratios has no {ratio_key!r}"
        r, want = c.get("ratio"), ratios[ratio_key]
        if (r is None) != (want is None) or (r is not None and not np.isclose(float(r), float(want), rtol=1e-9)):
            return f"pool {name!r}: ratio {r} is not train_sizes.set_ratios.{ratio_key} = {want}"
    if "difference" in spec:
        a, b = (aurocs(x) for x in spec["difference"])
        if a is None or b is None or len(a) != len(values) or len(b) != len(values) or not np.allclose(
                values, np.subtract(a, b), rtol=0, atol=1e-9):
            return f"the paired values are not the {spec['difference'][0]} minus {spec['difference'][1]} AUROCs"
    return None


def bound_rule(rule: str, values: Any, seeds: Any, threshold: float, cmp: str, what: str,
                confidence: float, design: Any, util: dict[str, Any] | None = None, key: str = "") -> RuleResult:
    """One rule on the one-sided confidence bound of per-seed paired values (the upper bound for
    ``<=``, the lower for ``>=``; :func:`synthgate.evaluation.bounds.confidence_bound`): the rule
    passes only when the bound, not the mean, is within the threshold. The bound's standard error
    covers the seeds, the sampling of the training pools (``design``, corrected resampled t) and
    of the test split (DeLong). Fewer seeds than the level needs
    (:func:`~synthgate.evaluation.bounds.min_seeds_for`), missing or non-finite values, or a
    missing variance record (an evaluation whose bound would cover the seeds alone) fail as not
    measured."""
    import numpy as np

    from synthgate.evaluation.bounds import bound_components, confidence_bound, min_seeds_for

    need = min_seeds_for(confidence)
    side = "upper" if cmp == "<=" else "lower"
    ok_values = (isinstance(values, list) and isinstance(seeds, list) and len(values) == len(seeds)
                 and all(isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in values))
    ok_seeds = (isinstance(seeds, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)
                and len(set(seeds)) == len(seeds))
    if ok_values and not ok_seeds:
        return RuleResult(rule, False, None, threshold, cmp,
                          f"{what} not measured: the seeds {seeds} are not distinct integers (a repeated seed is the "
                          "same run again), so this rule cannot pass")
    if not ok_values:
        return RuleResult(rule, False, None, threshold, cmp,
                          f"{what} not measured: the evaluation lacks its per-seed paired values, so this rule "
                          "cannot pass")
    if len(values) < need:
        return RuleResult(rule, False, None, threshold, cmp,
                          f"{what} not measured at confidence {confidence:g}: {len(values)} seed(s), fewer than "
                          f"the {need} a one-sided bound at this level needs, so this rule cannot pass")
    if not valid_design(design, len(values)):
        return RuleResult(rule, False, None, threshold, cmp,
                          f"{what} not measured: the evaluation lacks the variance record of its bound (the "
                          "sampling of the training pools and the test split; earlier evaluations bounded the "
                          "seeds' noise alone), so this rule cannot pass; re-run evaluate")
    mismatch = design_mismatch(key, values, design, util or {})
    if mismatch is not None:
        return RuleResult(rule, False, None, threshold, cmp,
                          f"{what} not measured: the variance record of its bound does not match the evaluation's "
                          f"runs ({mismatch}): edited, or written by other code, so this rule cannot pass")
    bound = confidence_bound(values, confidence, side, design)
    ok = bound <= threshold if cmp == "<=" else bound >= threshold
    v = np.asarray(values, dtype=np.float64)
    parts = bound_components(v, design)
    unsampled = [str(c.get("name")) for c in design["components"] if c.get("ratio") is None]
    why = (f"; not resampled by the seeds, so unbounded: {', '.join(unsampled)}" if unsampled else "")
    half = abs(bound - float(v.mean()))
    if cmp == "<=" and threshold > 0 and np.isfinite(half) and half >= threshold and not ok:
        # the margin is below what the data can resolve: say so instead of blaming the generator alone
        why += (f"; the half-width {half:.3g} alone exceeds the margin {threshold:g}, so even a generator as good "
                "as the real data fails at this level on data this size: more real images, or a wider margin "
                "stated in the policy")
    return RuleResult(rule, bool(ok), float(bound), float(threshold), cmp,
                      f"{what}: one-sided {confidence:g} {side} confidence bound {bound:.4g} (mean {v.mean():.4g}, "
                      f"se {parts['se']:.3g} = seeds {np.sqrt(parts['seeds']):.3g} (sd {v.std(ddof=1):.3g} over "
                      f"{len(v)} seeds {', '.join(map(str, seeds))}) + training sets {np.sqrt(parts['sets']):.3g} "
                      f"+ test split {np.sqrt(parts['test']):.3g} in quadrature, t with {len(v) - 1} df{why}) "
                      f"{'within' if ok else 'violates'} {cmp} {threshold:g}")


def utility_rules(evaluation: dict[str, Any], policy: GatePolicy, rules: list[RuleResult],
                   skipped: list[str]) -> None:
    """Utility rules on confidence bounds (dumontschutte2021 S.5; over seeds, training pools and the
    test split: :func:`bound_rule`), at the policy's ``utility.confidence``; the Wilcoxon p and the
    seed count as plain thresholds."""
    from synthgate.evaluation.bounds import min_seeds_for

    util = evaluation.get("utility") or {}
    stats = util.get("stats", {})
    paired = util.get("paired") or {}
    level = policy.utility.confidence
    bounded = {
        "max_auc_gap": ("auc_gap", "<=", "utility gap AUC_real - AUC_syn"),
        "max_delta_syn": ("delta_syn", "<=", "label-overfitting Delta_syn"),
        "min_augmentation_gain": ("augmented_gain", ">=", "augmentation AUC gain"),
    }
    plain = {
        "max_augmentation_p": (stats.get("augmented_wilcoxon_p"), "<=", "Wilcoxon p of the augmentation gain"),
        "min_seeds": (stats.get("n_seeds"), ">=",
                      f"utility repeats (seeds; confidence {level:g} needs >= {min_seeds_for(level)})"),
        "min_resample_fraction": ((util.get("train_sizes") or {}).get("resample_fraction"), ">=",
                                  "share of the smaller pool each seed's matched training sets draw"),
    }
    thresholds = policy.utility.model_dump(exclude={"confidence"})
    for name, threshold in thresholds.items():
        if name in bounded and threshold is not None:
            key, cmp, what = bounded[name]
            design = (paired.get("variance") or {}).get(key) if isinstance(paired.get("variance"), dict) else None
            rules.append(bound_rule(f"utility.{name}", paired.get(key), paired.get("seeds"), threshold, cmp, what,
                                     level, design, util, key))
        else:
            threshold_rules("utility", {name: threshold}, plain, rules, skipped)  # a null bounded rule: skipped
