"""Apply a :class:`GatePolicy` to an ``evaluation.json``.

Every rule yields the measured value, the threshold and a one-line reason. Missing evidence is a
failure, not a pass: a rule whose number the evaluation does not contain (utility not run, too
few seeds) fails with "not measured". The decision is bound to the evaluation by its hash, which
is recomputed here, so an evaluation edited after the fact is refused.

A gate must be able to fail, and must judge a generator's output: beyond the policy's rules, the
decision fails (rules named ``policy.*`` and ``synthetic.*``, listed only when they fail) when the
policy applied no rule at all, when it applied no memorization rule, and when the "synthetic" set
is a stand-in (real held-out images from ``synthgate standin``). These are failures rather than
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
from synthgate.evaluation.evaluate import evaluation_hash
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
    created: str = field(default_factory=utc_now)

    @property
    def failures(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "passed": self.passed, "created": self.created, "synthgate_version": __version__,
                "evaluation_hash": self.evaluation_hash, "policy_hash": self.policy_hash,
                "identities": self.identities, "rules": [asdict(r) for r in self.rules], "skipped": self.skipped}


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
    anything) or no memorization rule, and an evaluation of a stand-in instead of a generator."""
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
                        skipped: list[str]) -> None:
    measured = {
        "max_pixel_near_copy_fraction": (
            _get(evaluation, "memorization", "pixel", "near_copy_fraction"), "<=", "pixel near-copy fraction"),
        "max_feature_near_copy_fraction": (
            _get(evaluation, "memorization", "feature", "near_copy_fraction"), "<=", "feature near-copy fraction"),
        "max_pixel_median_shift": (
            _get(evaluation, "memorization", "pixel", "median_shift"), "<=",
            "median max-correlation shift, synthetic vs held-out"),
        "max_membership_auc": (
            _get(evaluation, "memorization", "membership", "feature_auc"), "<=", "membership-inference AUC"),
        "max_membership_auc_pixel": (
            _get(evaluation, "memorization", "membership", "pixel_auc"), "<=", "membership-inference AUC (pixels)"),
    }
    _threshold_rules("memorization", policy.memorization.model_dump(), measured, rules, skipped)


def _utility_rules(evaluation: dict[str, Any], policy: GatePolicy, rules: list[RuleResult],
                   skipped: list[str]) -> None:
    stats = (evaluation.get("utility") or {}).get("stats", {})
    measured = {
        "max_auc_gap": (stats.get("auc_gap"), "<=", "utility gap AUC_real - AUC_syn"),
        "max_delta_syn": (stats.get("delta_syn"), "<=", "label-overfitting Delta_syn"),
        "min_augmentation_gain": (stats.get("augmented_gain"), ">=", "augmentation AUC gain"),
        "max_augmentation_p": (stats.get("augmented_wilcoxon_p"), "<=", "Wilcoxon p of the augmentation gain"),
        "min_seeds": (stats.get("n_seeds"), ">=", "utility repeats (seeds)"),
    }
    _threshold_rules("utility", policy.utility.model_dump(), measured, rules, skipped)


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
    for group_rules in (_memorization_rules, _utility_rules, _fidelity_rules, _sample_rules):
        group_rules(evaluation, policy, rules, skipped)
    rules.extend(_integrity_failures(evaluation, rules))
    identities = {
        "real_content_hash": _get(evaluation, "real", "content_hash"),
        "synthetic_content_hash": _get(evaluation, "synthetic", "content_hash"),
        "generator": _get(evaluation, "synthetic", "generator"),
        "encoder_id": _get(evaluation, "encoder", "encoder_id"),
    }
    return GateDecision(all(r.passed for r in rules), rules, evaluation["evaluation_hash"], policy.policy_hash(),
                        identities, skipped)


def gate(evaluation_path: Path, policy: GatePolicy, out: Path) -> GateDecision:
    """Decide and write ``gate.json`` (with the policy it applied)."""
    data = load_evaluation(evaluation_path)
    decision = decide(data, policy)
    body = decision.to_json()
    body["evaluation"] = str(evaluation_path)
    body["policy"] = policy.model_dump(mode="json")
    write_json_atomic(Path(out), body)
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
