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
false-alarm rate (:func:`~synthgate.gates.memorization_rules.memorization_rules`), so that the evaluation's own settings cannot loosen
them. These are failures rather than
refusals, like missing evidence: ``gate.json`` is still written, the version can be registered for
the record, and promotion lists the reason. :func:`check_record` recomputes a stored ``gate.json``
from its evaluation and policy, so that a record whose verdict was edited is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from synthgate import __version__
from synthgate.errors import DataError
from synthgate.evaluation.hashing import evaluation_hash
from synthgate.gates.memorization_rules import memorization_rules
from synthgate.gates.policy import GatePolicy
from synthgate.gates.reader_rules import reader_rule
from synthgate.gates.rules import RuleResult, get, threshold_rules
from synthgate.gates.utility_rules import utility_rules
from synthgate.utils import read_json, utc_now, write_json_atomic, write_text_atomic

FORMAT = "synthgate.gate/v1"


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
    try:
        data = read_json(path)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}): the evaluation is damaged or truncated",
                        hint="re-run `synthgate evaluate`; never edit evaluation.json by hand") from None
    if not isinstance(data, dict) or data.get("format") != "synthgate.evaluation/v1" or "evaluation_hash" not in data:
        raise DataError(f"{path}: not a synthgate evaluation")
    actual = evaluation_hash(data)
    if actual != data["evaluation_hash"]:
        raise DataError(
            f"{path}: content does not match its evaluation_hash (recorded {data['evaluation_hash'][:16]}, "
            f"computed {actual[:16]}): the evaluation was modified after it was written",
            hint="re-run `synthgate evaluate`; never edit evaluation.json by hand",
        )
    return data


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
    coverage = get(evaluation, "memorization", "coverage")
    if isinstance(coverage, dict) and not coverage.get("full"):
        out.append(RuleResult(
            "memorization.full_coverage", False, float(coverage.get("train_compared", 0)),
            float(coverage.get("train_size", 0)), ">=",
            f"the copy search compared the synthetic images with {coverage.get('train_compared')} of "
            f"{coverage.get('train_size')} training images (evaluate.memorization.max_train): copies of the others "
            "would go unseen, so the evidence cannot approve a generator"))
    if get(evaluation, "memorization", "null_sufficient") is False:
        have = get(evaluation, "memorization", "coverage", "held_out")
        need = get(evaluation, "memorization", "held_out_needed")
        out.append(RuleResult(
            "memorization.held_out_sufficient", False, float(have or 0), float(need or 0), ">=",
            f"{have} real held-out images calibrate the copy null, fewer than the {need} its tail model needs: "
            "individual copies cannot be certified at the stated false-alarm rate (add held-out images: a larger "
            "val/test split, or more data)"))
    standin = get(evaluation, "synthetic", "standin")
    if standin:
        out.append(RuleResult("synthetic.not_standin", False, 1.0, 0.0, "<=",
                              f"the synthetic set is a stand-in ({standin}), not a generator's output: "
                              "it checks the evaluation itself and cannot approve a generator"))
    return out


def _fidelity_rules(evaluation: dict[str, Any], policy: GatePolicy, rules: list[RuleResult],
                    skipped: list[str]) -> None:
    measured = {
        "max_fid_ratio": (get(evaluation, "summary", "fid_ratio_to_baseline"), "<=",
                          "FID relative to real test vs train"),
        "min_precision": (get(evaluation, "summary", "precision"), ">=", "precision"),
        "min_recall": (get(evaluation, "summary", "recall"), ">=", "recall"),
    }
    threshold_rules("fidelity", policy.fidelity.model_dump(exclude=set(policy.fidelity.READER_FIELDS)), measured,
                    rules, skipped)
    reader_rule(evaluation, policy.fidelity, rules, skipped)


def _sample_rules(evaluation: dict[str, Any], policy: GatePolicy, rules: list[RuleResult],
                  skipped: list[str]) -> None:
    syn_counts = get(evaluation, "synthetic", "counts") or {}
    measured = {
        "min_synthetic_images": (get(evaluation, "synthetic", "num_images"), ">=", "synthetic images"),
        "min_per_class": (min(syn_counts.values()) if syn_counts else None, ">=",
                          "synthetic images in the smallest class"),
    }
    threshold_rules("samples", policy.samples.model_dump(), measured, rules, skipped)


def decide(evaluation: dict[str, Any], policy: GatePolicy) -> GateDecision:
    rules: list[RuleResult] = []
    skipped: list[str] = []
    details: dict[str, Any] = {}
    memorization_rules(evaluation, policy, rules, skipped, details)
    for group_rules in (utility_rules, _fidelity_rules, _sample_rules):
        group_rules(evaluation, policy, rules, skipped)
    rules.extend(_integrity_failures(evaluation, rules))
    identities = {
        "real_content_hash": get(evaluation, "real", "content_hash"),
        "synthetic_content_hash": get(evaluation, "synthetic", "content_hash"),
        "generator": get(evaluation, "synthetic", "generator"),
        "encoder_id": get(evaluation, "encoder", "encoder_id"),
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
    from synthgate.gates.page import insert_verdict

    for name, public in (("report.html", False), (PUBLIC_REPORT, True)):
        report = Path(evaluation_path).parent / name
        if report.exists():  # the verdict at the top of the reports (the public one is registered and published)
            write_text_atomic(gated_report(Path(out), public=public), insert_verdict(report.read_text(), body))
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
