"""Gate policy and decision: every rule can fail, missing evidence fails, tampering is caught."""

import copy
import json

import pytest

from synthgate.errors import ConfigError, DataError
from synthgate.evaluation.evaluate import evaluation_hash
from synthgate.gates.decision import check_record, decide, gate, load_evaluation
from synthgate.gates.policy import GatePolicy, load_policy
from tests.helpers import REPO, run_cli


def _evaluation(**over):
    e = {
        "format": "synthgate.evaluation/v1",
        "real": {"content_hash": "r" * 64},
        "synthetic": {"content_hash": "s" * 64, "num_images": 600, "counts": {"a": 300, "b": 300},
                      "generator": {"name": "diffusion-tiny-step600"}},
        "encoder": {"encoder_id": "small-abc"},
        "memorization": {"pixel": {"near_copy_fraction": 0.001, "median_shift": -0.01},
                         "feature": {"near_copy_fraction": 0.002},
                         "membership": {"feature_auc": 0.51, "pixel_auc": 0.49}},
        "utility": {"stats": {"auc_gap": 0.01, "delta_syn": 0.02, "augmented_gain": 0.004,
                              "augmented_wilcoxon_p": 0.03, "n_seeds": 6}},
        "summary": {"fid_ratio_to_baseline": 1.5, "precision": 0.8, "recall": 0.7},
    }
    for path, value in over.items():
        node = e
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    e["evaluation_hash"] = evaluation_hash(e)
    return e


STRICT = GatePolicy.model_validate({"utility": {"min_augmentation_gain": 0.0, "max_augmentation_p": 0.05},
                                    "fidelity": {"max_fid_ratio": 3, "min_precision": 0.5, "min_recall": 0.5}})


def test_good_evaluation_passes_every_rule():
    d = decide(_evaluation(), STRICT)
    assert d.passed and not d.skipped
    assert len(d.rules) == 15
    r = next(r for r in d.rules if r.rule == "utility.max_auc_gap")
    assert (r.value, r.threshold, r.comparison) == (0.01, 0.05, "<=")
    assert r.reason == "utility gap AUC_real - AUC_syn 0.01 within <= 0.05"


@pytest.mark.parametrize("path,value,rule", [
    ("memorization__pixel__near_copy_fraction", 0.3, "memorization.max_pixel_near_copy_fraction"),
    ("memorization__feature__near_copy_fraction", 0.05, "memorization.max_feature_near_copy_fraction"),
    ("memorization__pixel__median_shift", 0.08, "memorization.max_pixel_median_shift"),
    ("memorization__membership__feature_auc", 0.9, "memorization.max_membership_auc"),
    ("memorization__membership__pixel_auc", 0.75, "memorization.max_membership_auc_pixel"),
    ("utility__stats__auc_gap", 0.2, "utility.max_auc_gap"),
    ("utility__stats__delta_syn", 0.3, "utility.max_delta_syn"),
    ("utility__stats__augmented_gain", -0.02, "utility.min_augmentation_gain"),
    ("utility__stats__augmented_wilcoxon_p", 0.4, "utility.max_augmentation_p"),
    ("utility__stats__n_seeds", 2, "utility.min_seeds"),
    ("summary__fid_ratio_to_baseline", 8.0, "fidelity.max_fid_ratio"),
    ("summary__precision", 0.1, "fidelity.min_precision"),
    ("summary__recall", 0.2, "fidelity.min_recall"),
    ("synthetic__num_images", 40, "samples.min_synthetic_images"),
    ("synthetic__counts", {"a": 595, "b": 5}, "samples.min_per_class"),
])
def test_every_rule_can_fail(path, value, rule):
    d = decide(_evaluation(**{path: value}), STRICT)
    assert not d.passed
    assert [r.rule for r in d.failures] == [rule]
    assert "violates" in d.failures[0].reason


def test_missing_evidence_fails_and_null_rules_are_listed():
    e = _evaluation()
    e["utility"] = None
    e["evaluation_hash"] = evaluation_hash(e)
    d = decide(e, GatePolicy())
    failed = {r.rule: r.reason for r in d.failures}
    assert set(failed) == {"utility.max_auc_gap", "utility.max_delta_syn", "utility.min_seeds"}
    assert "not measured" in failed["utility.max_auc_gap"]
    assert "fidelity.max_fid_ratio" in d.skipped


def test_tampered_evaluation_is_refused(tmp_path):
    e = _evaluation()
    p = tmp_path / "evaluation.json"
    p.write_text(json.dumps(e))
    assert load_evaluation(p)["evaluation_hash"] == e["evaluation_hash"]
    bad = copy.deepcopy(e)
    bad["memorization"]["pixel"]["near_copy_fraction"] = 0.0001  # "improved" after the fact
    p.write_text(json.dumps(bad))
    with pytest.raises(DataError, match="content does not match its evaluation_hash"):
        gate(p, GatePolicy(), tmp_path / "gate.json")
    assert not (tmp_path / "gate.json").exists()


def test_gate_json_binds_decision_to_evaluation_and_policy(tmp_path):
    e = _evaluation(utility__stats__auc_gap=0.2)
    (tmp_path / "evaluation.json").write_text(json.dumps(e))
    d = gate(tmp_path / "evaluation.json", GatePolicy(), tmp_path / "gate.json")
    g = json.loads((tmp_path / "gate.json").read_text())
    assert g["passed"] is False and g["evaluation_hash"] == e["evaluation_hash"]
    assert g["policy_hash"] == GatePolicy().policy_hash() == d.policy_hash
    assert g["identities"]["encoder_id"] == "small-abc"
    assert g["policy"]["utility"]["max_auc_gap"] == 0.05


def test_policy_file_errors(tmp_path):
    p = tmp_path / "gates.yaml"
    p.write_text("memorization:\n  max_copy_fraction: 0.01\n")
    with pytest.raises(ConfigError, match="memorization.max_copy_fraction: Extra inputs are not permitted"):
        load_policy(p)
    p.write_text("utility:\n  max_auc_gap: small\n")
    with pytest.raises(ConfigError, match="utility.max_auc_gap: Input should be a valid number"):
        load_policy(p)
    p.write_text("tests:\n  x: 1\n")
    with pytest.raises(ConfigError, match="tests: Extra inputs are not permitted"):
        load_policy(p)
    assert load_policy(REPO / "gates.yaml") == GatePolicy()


def test_cli_gate_exit_codes(tmp_path):
    (tmp_path / "evaluation.json").write_text(json.dumps(_evaluation(utility__stats__auc_gap=0.2)))
    r = run_cli("gate", "--evaluation", "evaluation.json", "--out", "gate.json", cwd=tmp_path)
    assert r.code == 0 and "FAILED" in r.stdout and "utility.max_auc_gap" in r.stdout
    r = run_cli("gate", "--evaluation", "evaluation.json", "--out", "gate.json", "--strict", cwd=tmp_path)
    assert r.code == 1 and "gate failed: 1 rule(s): utility.max_auc_gap" in r.stderr
    (tmp_path / "bad.yaml").write_text("utility:\n  max_auc_gapp: 0.1\n")
    r = run_cli("gate", "--evaluation", "evaluation.json", "--policy", "bad.yaml", cwd=tmp_path)
    assert r.code == 2 and "utility.max_auc_gapp" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- gates that cannot fail
NO_MEMORIZATION = {"memorization": dict.fromkeys(GatePolicy().memorization.model_dump())}
ALL_NULL = {group: dict.fromkeys(rules) for group, rules in GatePolicy().model_dump().items()}


def test_a_policy_that_applies_no_rule_fails():
    d = decide(_evaluation(), GatePolicy.model_validate(ALL_NULL))
    assert not d.passed and len(d.skipped) == 15
    failed = {r.rule: r.reason for r in d.failures}
    assert set(failed) == {"policy.rules_applied", "policy.memorization_rules_applied"}
    assert failed["policy.rules_applied"] == ("the policy applies no rule (every rule is null): a gate that cannot "
                                              "fail approves nothing")
    r = d.failures[0]
    assert (r.value, r.threshold, r.comparison) == (0.0, 1.0, ">=")


def test_a_policy_without_memorization_rules_fails():
    d = decide(_evaluation(), GatePolicy.model_validate(NO_MEMORIZATION))
    assert not d.passed
    [r] = d.failures
    assert r.rule == "policy.memorization_rules_applied"
    assert r.reason == ("the policy applies no memorization rule (all null): nothing checks that the synthetic "
                        "images do not copy patients")
    # one memorization rule is enough; the integrity rules are listed only when they fail
    one = GatePolicy.model_validate({"memorization": {**NO_MEMORIZATION["memorization"],
                                                      "max_pixel_near_copy_fraction": 0.01}})
    d = decide(_evaluation(), one)
    assert d.passed and not [r for r in d.rules if r.rule.startswith("policy.")]


def test_a_standin_evaluation_fails_the_gate():
    standin = "real test images of data/validated (0123456789abcdef)"
    e = _evaluation(synthetic__standin=standin, synthetic__generator=None)
    d = decide(e, STRICT)
    assert not d.passed
    [r] = d.failures
    assert r.rule == "synthetic.not_standin"
    assert r.reason == (f"the synthetic set is a stand-in ({standin}), not a generator's output: it checks the "
                        "evaluation itself and cannot approve a generator")
    # every other rule is still applied and reported
    assert len(d.rules) == 16 and all(x.passed for x in d.rules if x.rule != "synthetic.not_standin")
    assert decide(_evaluation(synthetic__standin=None), STRICT).passed


# --------------------------------------------------------------------------- recomputing a stored record
def _record(tmp_path, evaluation, policy=None):
    (tmp_path / "evaluation.json").write_text(json.dumps(evaluation))
    gate(tmp_path / "evaluation.json", policy or GatePolicy(), tmp_path / "gate.json")
    return json.loads((tmp_path / "gate.json").read_text())


def test_check_record_accepts_an_honest_record(tmp_path):
    e = _evaluation(utility__stats__auc_gap=0.2)
    d = check_record(_record(tmp_path, e), e)
    assert not d.passed and [r.rule for r in d.failures] == ["utility.max_auc_gap"]


def test_check_record_refuses_an_edited_verdict(tmp_path):
    e = _evaluation(memorization__pixel__near_copy_fraction=0.9)
    rec = _record(tmp_path, e)
    forged = copy.deepcopy(rec)
    forged["passed"] = True
    with pytest.raises(DataError) as err:
        check_record(forged, e, "gate.json")
    assert err.value.message == (
        "gate.json: the recorded verdict (passed=True, failing: memorization.max_pixel_near_copy_fraction) differs "
        "from the decision recomputed from the evaluation and the recorded policy (passed=False, failing: "
        "memorization.max_pixel_near_copy_fraction): the gate record was modified or written by other code")
    # a rule flipped to pass along with the verdict
    for r in forged["rules"]:
        r["passed"] = True
    with pytest.raises(DataError, match=r"recorded verdict \(passed=True, failing: none\) differs from the decision "
                                        r"recomputed .*\(passed=False, failing: memorization.max_pixel_near_copy"):
        check_record(forged, e)


def test_check_record_refuses_an_edited_policy(tmp_path):
    e = _evaluation(memorization__pixel__near_copy_fraction=0.9)
    rec = _record(tmp_path, e)
    loose = copy.deepcopy(rec)
    loose["policy"]["memorization"]["max_pixel_near_copy_fraction"] = 1.0  # loosened after the fact
    with pytest.raises(DataError, match="gate.json: the recorded policy hashes to [0-9a-f]{16}, not to the recorded "
                                        "policy_hash [0-9a-f]{16}: the policy was modified"):
        check_record(loose, e)
    # the policy and its hash both replaced: the verdict still has to match the recomputation
    loose["policy_hash"] = GatePolicy.model_validate(loose["policy"]).policy_hash()
    with pytest.raises(DataError, match=r"recorded verdict \(passed=False"):
        check_record(loose, e)
    missing = {k: v for k, v in rec.items() if k != "policy"}
    with pytest.raises(DataError, match="does not contain the policy it applied"):
        check_record(missing, e)
    bad = copy.deepcopy(rec)
    bad["policy"]["utility"]["max_auc_gapp"] = 0.1
    with pytest.raises(DataError, match="the recorded policy is not a valid gate policy"):
        check_record(bad, e)
    with pytest.raises(DataError, match="gate record belongs to evaluation"):
        check_record(rec, _evaluation())
