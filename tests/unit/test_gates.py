"""Gate policy and decision: every rule can fail, missing evidence fails, tampering is caught."""

import copy
import json

import pytest

from synthgate.errors import ConfigError, DataError
from synthgate.evaluation.evaluate import evaluation_hash
from synthgate.gates.decision import decide, gate, load_evaluation
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
