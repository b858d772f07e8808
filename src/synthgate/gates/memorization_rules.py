"""The memorization rules, re-derived from the evaluation's recorded p-values at the policy's own
false-alarm rate (the evaluation's own settings cannot loosen them): the flagged copies (BH or
Bonferroni over the synthetic images), the power on planted copies, the exceedance test of each
detector, and the membership and median-shift rules on their lower confidence bounds."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthgate.gates.policy import GatePolicy
from synthgate.gates.rules import RuleResult, get


def memorization_rules(evaluation: dict[str, Any], policy: GatePolicy, rules: list[RuleResult],
                       skipped: list[str], details: dict[str, Any]) -> None:
    """The memorization rules (:class:`MemorizationRules`) re-derived from the evaluation's recorded
    p-values at the policy's own false-alarm rate; the levels and the flagged images go to ``details``."""
    from scipy.stats import norm

    from synthgate.evaluation.memorization.stats import reject

    mp = policy.memorization
    mem = get(evaluation, "memorization") or {}
    detectors = mem.get("detectors") or {}
    n_tests = max(1, mp.set_level_tests(len(detectors) or 6))
    flag_level = mp.false_alarm_rate / 2
    test_level = mp.false_alarm_rate / 2 / n_tests
    p_comb = get(mem, "per_image", "p_combined")
    m = len(p_comb) if isinstance(p_comb, list) else 0
    flagged: list[int] = []
    if isinstance(p_comb, list) and m:
        flagged = np.flatnonzero(reject(np.asarray(p_comb, float), flag_level, mp.correction)).tolist()
    details["memorization"] = {
        "false_alarm_rate": mp.false_alarm_rate, "flag_level": flag_level, "correction": mp.correction,
        "set_level_tests": n_tests, "level_per_test": test_level, "flagged": flagged,
        "statement": (f"an honest generator fails these rules with probability at most {mp.false_alarm_rate:g} "
                      f"(copy flags at {flag_level:g} with {mp.correction.upper()} over {m} synthetic images; "
                      f"{n_tests} set-level tests at {test_level:.3g} each, Bonferroni)"),
    }
    if mp.max_flagged_copies is None:
        skipped.append("memorization.max_flagged_copies")
    elif not isinstance(p_comb, list):
        rules.append(_missing("memorization.max_flagged_copies", mp.max_flagged_copies, "<=", "per-image copy p-values"))
    else:
        ok = len(flagged) <= mp.max_flagged_copies
        shown = ", ".join(map(str, flagged[:10])) + (" ..." if len(flagged) > 10 else "")
        rules.append(RuleResult(
            "memorization.max_flagged_copies", ok, float(len(flagged)), float(mp.max_flagged_copies), "<=",
            f"{len(flagged)} of {m} synthetic images flagged as copies of a training image "
            f"({mp.correction.upper()} at {flag_level:g}){': ' + shown if flagged else ''}; "
            f"{'within' if ok else 'violates'} <= {mp.max_flagged_copies}"))
    _planted_rule(mem, policy, flag_level / max(m, 1), m, rules, skipped)
    _excess_rule(detectors, policy, test_level, rules, skipped)
    _bounded_rules(mem, policy, test_level, float(norm.ppf(1 - test_level)), rules, skipped)


def _missing(rule: str, threshold: Any, cmp: str, what: str) -> RuleResult:
    return RuleResult(rule, False, None, threshold, cmp,
                      f"{what} not measured: the evaluation lacks it, so this rule cannot pass")


def _planted_rule(mem: dict[str, Any], policy: GatePolicy, level: float, m: int, rules: list[RuleResult],
                  skipped: list[str]) -> None:
    """The power on planted copies: the weakest ruled kind's share flagged as one copy among ``m``
    images (p <= ``level``)."""
    mp = policy.memorization
    planted: dict[str, Any] = mem.get("planted") or {}
    if mp.min_planted_detection is None:
        skipped.append("memorization.min_planted_detection")
        return
    # the policy names the ruled kinds; the evaluation's own "ruled" flags are not read (it could unrule a kind)
    absent = [k for k in mp.planted_kinds if not isinstance(planted.get(k), dict)
              or not isinstance(planted[k].get("p_values"), list) or not planted[k]["p_values"]]
    if absent:
        rules.append(_missing("memorization.min_planted_detection", mp.min_planted_detection, ">=",
                              f"detection power on planted copies of kind(s) {', '.join(absent)} (the policy rules on "
                              f"them)"))
        return
    rates = {k: sum(p <= level for p in planted[k]["p_values"]) / len(planted[k]["p_values"])
             for k in mp.planted_kinds}
    weakest = min(rates, key=lambda k: rates[k])
    value = rates[weakest]
    ok = value >= mp.min_planted_detection
    blind = sorted(k for k, r in rates.items() if r < mp.min_planted_detection)
    rules.append(RuleResult(
        "memorization.min_planted_detection", ok, float(value), float(mp.min_planted_detection), ">=",
        f"planted copies flagged (one among {m} images, p <= {level:.3g}): weakest kind {weakest} "
        f"{value:.2f} of {planted[weakest]['n']}"
        + (f"; below {mp.min_planted_detection:g}: {', '.join(blind)}" if blind else "")
        + f"; {'within' if ok else 'violates'} >= {mp.min_planted_detection:g}"
        + _unreachable(planted, blind, mp.min_planted_detection)))


def _unreachable(planted: dict[str, Any], blind: list[str], need: float) -> str:
    """Which failing kinds no test on these detectors could catch often enough on this held-out set: the
    evaluation's ``reachable`` share (copies beyond every unseen patient's image on some detector; informative,
    never part of the decision). Those kinds need more resolution or another detector, not more statistics."""
    capped = [(k, float(planted[k]["reachable"])) for k in blind
              if isinstance(planted[k].get("reachable"), int | float) and planted[k]["reachable"] < need]
    if not capped:
        return ""
    return ("; not reachable on this data: " + ", ".join(
        f"{k} (at most {r:.2f}: {1 - r:.0%} of its copies are no more copy-like than some unseen patient's image "
        "on every detector)" for k, r in capped)
        + " - no threshold or null model fixes that; a higher resolution or a detector that separates these "
          "copies does")


def _excess_rule(detectors: dict[str, Any], policy: GatePolicy, test_level: float, rules: list[RuleResult],
                 skipped: list[str]) -> None:
    """The most significant detector's exceedance test (exact beta-binomial) at ``test_level``."""
    mp = policy.memorization
    if mp.copy_excess_test is None or mp.copy_excess_test is False:
        skipped.append("memorization.copy_excess_test")
        return
    if not detectors:
        rules.append(_missing("memorization.copy_excess_test", test_level, ">=", "exceedance tests"))
        return
    ex = {d: v["exceedance"] for d, v in detectors.items()}
    worst = min(ex, key=lambda d: ex[d]["p"])
    e = ex[worst]
    ok = e["p"] >= test_level
    rules.append(RuleResult(
        "memorization.copy_excess_test", ok, float(e["p"]), float(test_level), ">=",
        f"most significant exceedance ({worst}): {e['exceedances']} of {e['n_synthetic']} synthetic images above "
        f"the held-out null's {e['order_statistic']}-th largest of {e['n_null']} (expected {e['expected']:.2g}), "
        f"exact beta-binomial p {e['p']:.3g}; {'within' if ok else 'violates'} >= {test_level:.3g}"))


def _bounded_rules(mem: dict[str, Any], policy: GatePolicy, test_level: float, z: float, rules: list[RuleResult],
                   skipped: list[str]) -> None:
    """Membership AUCs and the median shift on their one-sided lower confidence bounds (``z``)."""
    mp = policy.memorization
    bounded = {
        "max_membership_auc": (get(mem, "membership", "descriptor"), "auc",
                               "membership-inference AUC (copy descriptor)"),
        "max_membership_auc_pixel": (get(mem, "membership", "pixel"), "auc", "membership-inference AUC (pixels)"),
        "max_pixel_median_shift": (get(mem, "pixel_shift"), "shift", "median best-r shift, synthetic - held-out"),
    }
    for name, (node, key, what) in bounded.items():
        threshold = getattr(mp, name)
        rule = f"memorization.{name}"
        if threshold is None:
            skipped.append(rule)
            continue
        if not isinstance(node, dict) or node.get(key) is None or node.get("se") is None:
            rules.append(_missing(rule, threshold, "<=", what))
            continue
        lower = float(node[key]) - z * float(node["se"])
        ok = lower <= threshold
        rules.append(RuleResult(rule, ok, lower, float(threshold), "<=",
                                f"{what} {node[key]:.4g}, one-sided {1 - test_level:.4g} lower confidence bound "
                                f"{lower:.4g} {'within' if ok else 'violates'} <= {threshold:g}"))
