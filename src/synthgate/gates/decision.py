"""Apply a :class:`GatePolicy` to an ``evaluation.json``.

Every rule yields the measured value, the threshold and a one-line reason. Missing evidence is a
failure, not a pass: a rule whose number the evaluation does not contain (utility not run, too
few seeds) fails with "not measured". The decision is bound to the evaluation by its hash, which
is recomputed here, so an evaluation edited after the fact is refused.

A gate must be able to fail, and must judge a generator's output: beyond the policy's rules, the
decision fails (rules named ``policy.*`` and ``synthetic.*``, listed only when they fail) when the
policy applied no rule at all, when it applied no memorization rule, when the copy search did not
cover the whole training split, when the held-out set is too small to certify the copy null's tail,
and when the "synthetic" set is a stand-in (real held-out images from ``synthgate standin``). The
memorization rules are re-derived here from the p-values the evaluation recorded, at the policy's
false-alarm rate (:func:`_memorization_rules`), so that the evaluation's own settings cannot loosen
them. These are failures rather than
refusals, like missing evidence: ``gate.json`` is still written, the version can be registered for
the record, and promotion lists the reason. :func:`check_record` recomputes a stored ``gate.json``
from its evaluation and policy, so that a record whose verdict was edited is refused.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from synthgate import __version__
from synthgate.errors import DataError
from synthgate.evaluation.hashing import evaluation_hash
from synthgate.gates.policy import GatePolicy
from synthgate.utils import read_json, utc_now, write_json_atomic

FORMAT = "synthgate.gate/v1"


@dataclass
class RuleResult:
    rule: str
    passed: bool
    value: float | None
    threshold: float | None
    comparison: str  # "<=" or ">="
    reason: str


@dataclass
class GateDecision:
    passed: bool
    rules: list[RuleResult]
    evaluation_hash: str
    policy_hash: str
    identities: dict[str, Any]
    skipped: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # levels, flagged images
    created: str = field(default_factory=utc_now)

    @property
    def failures(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "passed": self.passed, "created": self.created, "synthgate_version": __version__,
                "evaluation_hash": self.evaluation_hash, "policy_hash": self.policy_hash,
                "identities": self.identities, "rules": [asdict(r) for r in self.rules], "skipped": self.skipped,
                "details": self.details}


def load_evaluation(path: Path) -> dict[str, Any]:
    """Read an evaluation.json and check that its content still matches its hash."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: evaluation not found", hint="run `synthgate evaluate` first")
    data = read_json(path)
    if data.get("format") != "synthgate.evaluation/v1" or "evaluation_hash" not in data:
        raise DataError(f"{path}: not a synthgate evaluation")
    actual = evaluation_hash(data)
    if actual != data["evaluation_hash"]:
        raise DataError(
            f"{path}: content does not match its evaluation_hash (recorded {data['evaluation_hash'][:16]}, "
            f"computed {actual[:16]}): the evaluation was modified after it was written",
            hint="re-run `synthgate evaluate`; never edit evaluation.json by hand",
        )
    return data


def _get(data: dict[str, Any], *keys: str) -> Any:
    node: Any = data
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def _integrity_failures(evaluation: dict[str, Any], applied: list[RuleResult]) -> list[RuleResult]:
    """Failures no policy can switch off: a policy that applies no rule (``all([])`` would pass
    anything) or no memorization rule, a copy search that did not cover the whole training split, a
    held-out set too small to certify the copy null's tail, and an evaluation of a stand-in instead
    of a generator."""
    out: list[RuleResult] = []
    if not applied:
        out.append(RuleResult("policy.rules_applied", False, 0.0, 1.0, ">=",
                              "the policy applies no rule (every rule is null): a gate that cannot fail "
                              "approves nothing"))
    n_mem = sum(r.rule.startswith("memorization.") for r in applied)
    if not n_mem:
        out.append(RuleResult("policy.memorization_rules_applied", False, 0.0, 1.0, ">=",
                              "the policy applies no memorization rule (all null): nothing checks that the "
                              "synthetic images do not copy patients"))
    coverage = _get(evaluation, "memorization", "coverage")
    if isinstance(coverage, dict) and not coverage.get("full"):
        out.append(RuleResult(
            "memorization.full_coverage", False, float(coverage.get("train_compared", 0)),
            float(coverage.get("train_size", 0)), ">=",
            f"the copy search compared the synthetic images with {coverage.get('train_compared')} of "
            f"{coverage.get('train_size')} training images (evaluate.memorization.max_train): copies of the others "
            "would go unseen, so the evidence cannot approve a generator"))
    if _get(evaluation, "memorization", "null_sufficient") is False:
        have = _get(evaluation, "memorization", "coverage", "held_out")
        need = _get(evaluation, "memorization", "held_out_needed")
        out.append(RuleResult(
            "memorization.held_out_sufficient", False, float(have or 0), float(need or 0), ">=",
            f"{have} real held-out images calibrate the copy null, fewer than the {need} its tail model needs: "
            "individual copies cannot be certified at the stated false-alarm rate (add held-out images: a larger "
            "val/test split, or more data)"))
    standin = _get(evaluation, "synthetic", "standin")
    if standin:
        out.append(RuleResult("synthetic.not_standin", False, 1.0, 0.0, "<=",
                              f"the synthetic set is a stand-in ({standin}), not a generator's output: "
                              "it checks the evaluation itself and cannot approve a generator"))
    return out


def _threshold_rules(group: str, thresholds: dict[str, Any], measured: dict[str, tuple[Any, str, str]],
                     rules: list[RuleResult], skipped: list[str]) -> None:
    """One rule per non-null threshold: ``measured[name] = (value, comparison, what it is)``."""
    for name, threshold in thresholds.items():
        rule = f"{group}.{name}"
        if threshold is None:
            skipped.append(rule)
            continue
        value, cmp, what = measured[name]
        if value is None:
            rules.append(RuleResult(rule, False, None, threshold, cmp,
                                    f"{what} not measured: the evaluation lacks it, so this rule cannot pass"))
            continue
        ok = (operator.le if cmp == "<=" else operator.ge)(value, threshold)
        verdict = "within" if ok else "violates"
        rules.append(RuleResult(rule, bool(ok), float(value), float(threshold), cmp,
                                f"{what} {value:.4g} {verdict} {cmp} {threshold:g}"))


def _memorization_rules(evaluation: dict[str, Any], policy: GatePolicy, rules: list[RuleResult],
                        skipped: list[str], details: dict[str, Any]) -> None:
    """The memorization rules (:class:`MemorizationRules`) re-derived from the evaluation's recorded
    p-values at the policy's own false-alarm rate; the levels and the flagged images go to ``details``."""
    from scipy.stats import norm

    from synthgate.evaluation.memorization.stats import reject

    mp = policy.memorization
    mem = _get(evaluation, "memorization") or {}
    detectors = mem.get("detectors") or {}
    n_tests = max(1, mp.set_level_tests(len(detectors) or 6))
    flag_level = mp.false_alarm_rate / 2
    test_level = mp.false_alarm_rate / 2 / n_tests
    z = float(norm.ppf(1 - test_level))
    p_comb = _get(mem, "per_image", "p_combined")
    m = len(p_comb) if isinstance(p_comb, list) else 0
    flagged: list[int] = []
    if isinstance(p_comb, list) and m:
        import numpy as np

        flagged = np.flatnonzero(reject(np.asarray(p_comb, float), flag_level, mp.correction)).tolist()
    details["memorization"] = {
        "false_alarm_rate": mp.false_alarm_rate, "flag_level": flag_level, "correction": mp.correction,
        "set_level_tests": n_tests, "level_per_test": test_level, "flagged": flagged,
        "statement": (f"an honest generator fails these rules with probability at most {mp.false_alarm_rate:g} "
                      f"(copy flags at {flag_level:g} with {mp.correction.upper()} over {m} synthetic images; "
                      f"{n_tests} set-level tests at {test_level:.3g} each, Bonferroni)"),
    }

    def missing(rule: str, threshold: Any, cmp: str, what: str) -> RuleResult:
        return RuleResult(rule, False, None, threshold, cmp,
                          f"{what} not measured: the evaluation lacks it, so this rule cannot pass")

    if mp.max_flagged_copies is None:
        skipped.append("memorization.max_flagged_copies")
    elif not isinstance(p_comb, list):
        rules.append(missing("memorization.max_flagged_copies", mp.max_flagged_copies, "<=", "per-image copy p-values"))
    else:
        ok = len(flagged) <= mp.max_flagged_copies
        shown = ", ".join(map(str, flagged[:10])) + (" ..." if len(flagged) > 10 else "")
        rules.append(RuleResult(
            "memorization.max_flagged_copies", ok, float(len(flagged)), float(mp.max_flagged_copies), "<=",
            f"{len(flagged)} of {m} synthetic images flagged as copies of a training image "
            f"({mp.correction.upper()} at {flag_level:g}){': ' + shown if flagged else ''}; "
            f"{'within' if ok else 'violates'} <= {mp.max_flagged_copies}"))

    planted = mem.get("planted")
    if mp.min_planted_detection is None:
        skipped.append("memorization.min_planted_detection")
    elif not planted:
        rules.append(missing("memorization.min_planted_detection", mp.min_planted_detection, ">=",
                             "detection power on planted copies"))
    else:
        level = flag_level / max(m, 1)
        rates = {k: sum(p <= level for p in v["p_values"]) / max(len(v["p_values"]), 1)
                 for k, v in planted.items() if v.get("ruled")}
        weakest = min(rates, key=lambda k: rates[k]) if rates else None
        value = rates[weakest] if weakest else None
        if value is None:
            rules.append(missing("memorization.min_planted_detection", mp.min_planted_detection, ">=",
                                 "detection power on planted copies"))
        else:
            ok = value >= mp.min_planted_detection
            blind = sorted(k for k, r in rates.items() if r < mp.min_planted_detection)
            rules.append(RuleResult(
                "memorization.min_planted_detection", ok, float(value), float(mp.min_planted_detection), ">=",
                f"planted copies flagged (one among {m} images, p <= {level:.3g}): weakest kind {weakest} "
                f"{value:.2f} of {planted[weakest]['n']}"
                + (f"; below {mp.min_planted_detection:g}: {', '.join(blind)}" if blind else "")
                + f"; {'within' if ok else 'violates'} >= {mp.min_planted_detection:g}"))

    if mp.copy_excess_test is None or mp.copy_excess_test is False:
        skipped.append("memorization.copy_excess_test")
    elif not detectors:
        rules.append(missing("memorization.copy_excess_test", test_level, ">=", "exceedance tests"))
    else:
        ex = {d: v["exceedance"] for d, v in detectors.items()}
        worst = min(ex, key=lambda d: ex[d]["p"])
        e = ex[worst]
        ok = e["p"] >= test_level
        rules.append(RuleResult(
            "memorization.copy_excess_test", ok, float(e["p"]), float(test_level), ">=",
            f"most significant exceedance ({worst}): {e['exceedances']} of {e['n_synthetic']} synthetic images above "
            f"the held-out null's {e['order_statistic']}-th largest of {e['n_null']} (expected {e['expected']:.2g}), "
            f"exact beta-binomial p {e['p']:.3g}; {'within' if ok else 'violates'} >= {test_level:.3g}"))

    bounded = {
        "max_membership_auc": (_get(mem, "membership", "descriptor"), "auc",
                               "membership-inference AUC (copy descriptor)"),
        "max_membership_auc_pixel": (_get(mem, "membership", "pixel"), "auc", "membership-inference AUC (pixels)"),
        "max_pixel_median_shift": (_get(mem, "pixel_shift"), "shift", "median best-r shift, synthetic - held-out"),
    }
    for name, (node, key, what) in bounded.items():
        threshold = getattr(mp, name)
        rule = f"memorization.{name}"
        if threshold is None:
            skipped.append(rule)
            continue
        if not isinstance(node, dict) or node.get(key) is None or node.get("se") is None:
            rules.append(missing(rule, threshold, "<=", what))
            continue
        lower = float(node[key]) - z * float(node["se"])
        ok = lower <= threshold
        rules.append(RuleResult(rule, ok, lower, float(threshold), "<=",
                                f"{what} {node[key]:.4g}, one-sided {1 - test_level:.4g} lower confidence bound "
                                f"{lower:.4g} {'within' if ok else 'violates'} <= {threshold:g}"))


def _valid_design(design: Any, n: int) -> bool:
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


def _design_mismatch(key: str, values: list[float], design: dict[str, Any], util: dict[str, Any]) -> str | None:
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


def _bound_rule(rule: str, values: Any, seeds: Any, threshold: float, cmp: str, what: str,
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
    if not _valid_design(design, len(values)):
        return RuleResult(rule, False, None, threshold, cmp,
                          f"{what} not measured: the evaluation lacks the variance record of its bound (the "
                          "sampling of the training pools and the test split; earlier evaluations bounded the "
                          "seeds' noise alone), so this rule cannot pass; re-run evaluate")
    mismatch = _design_mismatch(key, values, design, util or {})
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


def _utility_rules(evaluation: dict[str, Any], policy: GatePolicy, rules: list[RuleResult],
                   skipped: list[str]) -> None:
    """Utility rules on confidence bounds (dumontschutte2021 S.5; over seeds, training pools and the
    test split: :func:`_bound_rule`), at the policy's ``utility.confidence``; the Wilcoxon p and the
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
            rules.append(_bound_rule(f"utility.{name}", paired.get(key), paired.get("seeds"), threshold, cmp, what,
                                     level, design, util, key))
        else:
            _threshold_rules("utility", {name: threshold}, plain, rules, skipped)  # a null bounded rule: skipped


def _fidelity_rules(evaluation: dict[str, Any], policy: GatePolicy, rules: list[RuleResult],
                    skipped: list[str]) -> None:
    measured = {
        "max_fid_ratio": (_get(evaluation, "summary", "fid_ratio_to_baseline"), "<=",
                          "FID relative to real test vs train"),
        "min_precision": (_get(evaluation, "summary", "precision"), ">=", "precision"),
        "min_recall": (_get(evaluation, "summary", "recall"), ">=", "recall"),
    }
    _threshold_rules("fidelity", policy.fidelity.model_dump(), measured, rules, skipped)


def _sample_rules(evaluation: dict[str, Any], policy: GatePolicy, rules: list[RuleResult],
                  skipped: list[str]) -> None:
    syn_counts = _get(evaluation, "synthetic", "counts") or {}
    measured = {
        "min_synthetic_images": (_get(evaluation, "synthetic", "num_images"), ">=", "synthetic images"),
        "min_per_class": (min(syn_counts.values()) if syn_counts else None, ">=",
                          "synthetic images in the smallest class"),
    }
    _threshold_rules("samples", policy.samples.model_dump(), measured, rules, skipped)


def decide(evaluation: dict[str, Any], policy: GatePolicy) -> GateDecision:
    rules: list[RuleResult] = []
    skipped: list[str] = []
    details: dict[str, Any] = {}
    _memorization_rules(evaluation, policy, rules, skipped, details)
    for group_rules in (_utility_rules, _fidelity_rules, _sample_rules):
        group_rules(evaluation, policy, rules, skipped)
    rules.extend(_integrity_failures(evaluation, rules))
    identities = {
        "real_content_hash": _get(evaluation, "real", "content_hash"),
        "synthetic_content_hash": _get(evaluation, "synthetic", "content_hash"),
        "generator": _get(evaluation, "synthetic", "generator"),
        "encoder_id": _get(evaluation, "encoder", "encoder_id"),
    }
    return GateDecision(all(r.passed for r in rules), rules, evaluation["evaluation_hash"], policy.policy_hash(),
                        identities, skipped, details)


def gated_report(gate_path: Path, public: bool = False) -> Path:
    """Where :func:`gate` writes the evaluation report with its verdict on top: ``report.html`` beside
    ``gate.json`` (the evaluation's own report stays as the evaluate stage wrote it, so that DVC and
    the evaluation's artifacts do not change after the fact); ``public``: the report without real
    images (``report_public.html``), the one the registry logs and publish ships."""
    from synthgate.evaluation.evaluate import PUBLIC_REPORT

    return Path(gate_path).with_name(PUBLIC_REPORT if public else "report.html")


def gate(evaluation_path: Path, policy: GatePolicy, out: Path) -> GateDecision:
    """Decide and write ``gate.json`` (with the policy it applied); when the evaluation has a
    ``report.html``, write it beside ``gate.json`` with the verdict, the failing rules and the
    memorization statement at the top (:func:`gated_report`): the report that is registered and
    published."""
    data = load_evaluation(evaluation_path)
    decision = decide(data, policy)
    body = decision.to_json()
    body["evaluation"] = str(evaluation_path)
    body["policy"] = policy.model_dump(mode="json")
    write_json_atomic(Path(out), body)
    from synthgate.evaluation.evaluate import PUBLIC_REPORT
    from synthgate.evaluation.report import insert_verdict

    for name, public in (("report.html", False), (PUBLIC_REPORT, True)):
        report = Path(evaluation_path).parent / name
        if report.exists():  # the verdict at the top of the reports (the public one is registered and published)
            dst = gated_report(Path(out), public=public)
            tmp = dst.with_suffix(".html.tmp")
            tmp.write_text(insert_verdict(report.read_text(), body))
            tmp.replace(dst)
    return decision


def check_record(record: dict[str, Any], evaluation: dict[str, Any], where: str = "gate.json") -> GateDecision:
    """Recompute a stored gate record from ``evaluation`` and the policy it records; refuse
    (:class:`DataError`) a record whose policy, verdict or rule results differ from the recomputation
    (a ``gate.json`` edited after it was written, or written by other code). ``evaluation`` must
    already be checked against its hash."""
    hint = "re-run `synthgate gate` on the evaluation; never edit gate.json by hand"
    if record.get("evaluation_hash") != evaluation.get("evaluation_hash"):
        raise DataError(f"{where}: gate record belongs to evaluation {str(record.get('evaluation_hash'))[:16]}, "
                        f"not {str(evaluation.get('evaluation_hash'))[:16]}", hint=hint)
    if not isinstance(record.get("policy"), dict):
        raise DataError(f"{where}: the gate record does not contain the policy it applied, so its verdict "
                        "cannot be checked", hint=hint)
    try:
        policy = GatePolicy.model_validate(record["policy"])
    except ValidationError as e:
        raise DataError(f"{where}: the recorded policy is not a valid gate policy "
                        f"({e.error_count()} error(s), first: {e.errors()[0]['msg']})", hint=hint) from None
    if policy.policy_hash() != record.get("policy_hash"):
        raise DataError(f"{where}: the recorded policy hashes to {policy.policy_hash()[:16]}, not to the recorded "
                        f"policy_hash {str(record.get('policy_hash'))[:16]}: the policy was modified", hint=hint)
    decision = decide(evaluation, policy)
    stored = {str(r.get("rule")): bool(r.get("passed")) for r in record.get("rules", []) if isinstance(r, dict)}
    computed = {r.rule: r.passed for r in decision.rules}
    if record.get("passed") is not decision.passed or stored != computed:
        def failing(d: dict[str, bool]) -> str:
            return ", ".join(sorted(k for k, ok in d.items() if not ok)) or "none"

        raise DataError(
            f"{where}: the recorded verdict (passed={record.get('passed')}, failing: {failing(stored)}) differs "
            f"from the decision recomputed from the evaluation and the recorded policy (passed={decision.passed}, "
            f"failing: {failing(computed)}): the gate record was modified or written by other code", hint=hint)
    return decision
