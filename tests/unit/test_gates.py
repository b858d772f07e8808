"""Gate policy and decision: every rule can fail, missing evidence fails, tampering is caught."""

import copy
import json

import numpy as np
import pytest

from synthgate.errors import ConfigError, DataError
from synthgate.evaluation.evaluate import evaluation_hash
from synthgate.gates.decision import check_record, decide, gate, load_evaluation
from synthgate.gates.policy import GatePolicy, load_policy
from tests.helpers import REPO, fake_memorization

RATIOS = {"real": 0.0, "synthetic": 0.0, "synthetic_held_out": 0.0, "synthetic_train": 0.0}


def complete_utility(u: dict) -> dict:
    """``utility`` of an evaluation made consistent, as synthgate.evaluation.utility.utility writes it:
    per-seed runs whose AUROCs give the paired values (synthetic 0.9 throughout), the set ratios (0 unless
    the test sets them) and a variance record per paired quantity that matches them (test variance 0)."""
    p = u["paired"]
    n = len(p["seeds"])
    ratios = {**RATIOS, **(u.get("train_sizes") or {}).get("set_ratios", {})}
    syn = [0.9] * n
    runs = {"synthetic": [{"auroc": a} for a in syn], "real_full": [{"auroc": 0.9} for _ in range(n)]}
    if "auc_gap" in p:
        runs["real"] = [{"auroc": 0.9 + g} for g in p["auc_gap"]]
    if "augmented_gain" in p:
        runs["augmented"] = [{"auroc": 0.9 + g} for g in p["augmented_gain"]]
    p.setdefault("variance", {})
    if "auc_gap" in p:
        p["variance"].setdefault("auc_gap", {"components": [
            {"name": "real (matched)", "values": [r["auroc"] for r in runs["real"]], "ratio": ratios["real"]},
            {"name": "synthetic (TSTR)", "values": syn, "ratio": ratios["synthetic"]}], "test_variance": 0.0})
    if "delta_syn" in p:
        p["variance"].setdefault("delta_syn", {"components": [
            {"name": "synthetic (TSTR and held out)", "values": list(p["delta_syn"]),
             "ratio": ratios["synthetic_held_out"]}], "test_variance": 0.0})
    if "augmented_gain" in p:
        p["variance"].setdefault("augmented_gain", {"components": [
            {"name": "synthetic (added)", "values": list(p["augmented_gain"]), "ratio": ratios["synthetic_train"]}],
            "test_variance": 0.0})
    u["runs"] = {**runs, **u.get("runs", {})}
    u["train_sizes"] = {"resample_fraction": 0.5, "set_ratios": ratios, **{k: v for k, v in (u.get("train_sizes") or {}).items()
                                                                           if k != "set_ratios"}}
    return u


def _evaluation(raw=False, **over):
    e = {
        "format": "synthgate.evaluation/v1",
        "real": {"content_hash": "r" * 64},
        "synthetic": {"content_hash": "s" * 64, "num_images": 600, "counts": {"a": 300, "b": 300},
                      "generator": {"name": "diffusion-tiny-step600"}},
        "encoder": {"encoder_id": "small-abc"},
        "memorization": fake_memorization(600, copies=over.pop("copies", 0)),
        "utility": {"stats": {"auc_gap": 0.01, "delta_syn": 0.02, "augmented_gain": 0.004,
                              "augmented_wilcoxon_p": 0.03, "n_seeds": 6},
                    "paired": {"seeds": [0, 1, 2, 3, 4, 5], "auc_gap": [0.01] * 6, "delta_syn": [0.02] * 6,
                               "augmented_gain": [0.004] * 6}},
        "summary": {"fid_ratio_to_baseline": 1.5, "precision": 0.8, "recall": 0.7},
    }
    for path, value in over.items():
        node = e
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    if not raw and isinstance(e.get("utility"), dict) and isinstance(e["utility"].get("paired"), dict) \
            and isinstance(e["utility"]["paired"].get("seeds"), list):
        complete_utility(e["utility"])
    e["evaluation_hash"] = evaluation_hash(e)
    return e


STRICT = GatePolicy.model_validate({"utility": {"min_augmentation_gain": 0.0, "max_augmentation_p": 0.05},
                                    "fidelity": {"max_fid_ratio": 3, "min_precision": 0.5, "min_recall": 0.5}})


def test_good_evaluation_passes_every_rule():
    d = decide(_evaluation(), STRICT)
    assert d.passed and d.skipped == ["fidelity.max_reader_accuracy"]  # needs a reader study: test_reader_gate.py
    assert len(d.rules) == 17
    r = next(r for r in d.rules if r.rule == "utility.max_auc_gap")
    assert (r.value, r.threshold, r.comparison) == (0.01, 0.05, "<=")
    assert r.reason == ("utility gap AUC_real - AUC_syn: one-sided 0.95 upper confidence bound 0.01 (mean 0.01, "
                        "se 0 = seeds 0 (sd 0 over 6 seeds 0, 1, 2, 3, 4, 5) + training sets 0 + test split 0 in "
                        "quadrature, t with 5 df) within <= 0.05")


@pytest.mark.parametrize("path,value,rule", [
    ("memorization__per_image__p_combined", [1e-12] + [0.5] * 599, "memorization.max_flagged_copies"),
    ("memorization__planted__noise__p_values", [1e-15] * 80 + [0.5] * 20, "memorization.min_planted_detection"),
    ("memorization__detectors__aligned__exceedance__p", 1e-6, "memorization.copy_excess_test"),
    ("memorization__pixel_shift__shift", 0.08, "memorization.max_pixel_median_shift"),
    ("memorization__membership__descriptor__auc", 0.9, "memorization.max_membership_auc"),
    ("memorization__membership__pixel__auc", 0.75, "memorization.max_membership_auc_pixel"),
    ("utility__paired__auc_gap", [0.2] * 6, "utility.max_auc_gap"),
    ("utility__paired__delta_syn", [0.3] * 6, "utility.max_delta_syn"),
    ("utility__paired__augmented_gain", [-0.02] * 6, "utility.min_augmentation_gain"),
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
    assert set(failed) == {"utility.max_auc_gap", "utility.max_delta_syn", "utility.min_seeds",
                           "utility.min_resample_fraction"}
    assert "not measured" in failed["utility.max_auc_gap"]
    assert "fidelity.max_fid_ratio" in d.skipped


def test_tampered_evaluation_is_refused(tmp_path):
    e = _evaluation()
    p = tmp_path / "evaluation.json"
    p.write_text(json.dumps(e))
    assert load_evaluation(p)["evaluation_hash"] == e["evaluation_hash"]
    bad = copy.deepcopy(e)
    bad["memorization"]["per_image"]["p_combined"][0] = 0.9  # "improved" after the fact
    p.write_text(json.dumps(bad))
    with pytest.raises(DataError, match="content does not match its evaluation_hash"):
        gate(p, GatePolicy(), tmp_path / "gate.json")
    assert not (tmp_path / "gate.json").exists()


def test_gate_json_binds_decision_to_evaluation_and_policy(tmp_path):
    e = _evaluation(utility__paired__auc_gap=[0.2] * 6)
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


def test_cli_gate_exit_codes(tmp_path, cli):
    (tmp_path / "evaluation.json").write_text(json.dumps(_evaluation(utility__paired__auc_gap=[0.2] * 6)))
    # a failed gate exits 1 by default, so `gate && register && publish` stops; gate.json is written either way
    code, out, err = cli("gate", "--evaluation", "evaluation.json", "--out", "gate.json", cwd=tmp_path)
    assert code == 1 and "FAILED" in out and "gate failed: 1 rule(s): utility.max_auc_gap" in err
    assert json.loads((tmp_path / "gate.json").read_text())["passed"] is False
    assert cli("gate", "--evaluation", "evaluation.json", "--out", "gate.json", "--strict", cwd=tmp_path)[0] == 1
    # --report-only (dvc.yaml: the failed version is still registered, as failed) exits 0
    code, out, err = cli("gate", "--evaluation", "evaluation.json", "--out", "gate.json", "--report-only",
                         cwd=tmp_path)
    assert code == 0 and "FAILED" in out and "utility.max_auc_gap" in out
    (tmp_path / "evaluation.json").write_text(json.dumps(_evaluation()))
    code, out, err = cli("gate", "--evaluation", "evaluation.json", "--out", "gate.json", cwd=tmp_path)
    assert code == 0 and "PASSED" in out
    (tmp_path / "bad.yaml").write_text("utility:\n  max_auc_gapp: 0.1\n")
    code, out, err = cli("gate", "--evaluation", "evaluation.json", "--policy", "bad.yaml", cwd=tmp_path)
    assert code == 2 and "utility.max_auc_gapp" in err and "Traceback" not in err


def test_utility_rules_decide_on_the_upper_bound_not_the_mean():
    gaps = [0.0, 0.09, 0.01, 0.07, 0.0, 0.01]  # mean 0.03 <= 0.05, but too noisy to show it
    d = decide(_evaluation(utility__paired__auc_gap=gaps), STRICT)
    [r] = [x for x in d.failures if x.rule.startswith("utility.")]
    assert r.rule == "utility.max_auc_gap" and r.value == pytest.approx(0.0625, abs=1e-4)
    assert r.reason == ("utility gap AUC_real - AUC_syn: one-sided 0.95 upper confidence bound 0.06249 (mean 0.03, "
                        "se 0.0161 = seeds 0.0161 (sd 0.0395 over 6 seeds 0, 1, 2, 3, 4, 5) + training sets 0 + "
                        "test split 0 in quadrature, t with 5 df) violates <= 0.05")
    # the same values at a lower level (a policy may choose it) give a tighter bound that passes
    lax = GatePolicy.model_validate({"utility": {"confidence": 0.75, "min_seeds": 2}})
    r = next(x for x in decide(_evaluation(utility__paired__auc_gap=gaps), lax).rules if x.rule == "utility.max_auc_gap")
    assert r.passed and "one-sided 0.75 upper confidence bound 0.0" in r.reason


def _covered(real, gaps, ratios, test_variance):
    """An evaluation whose auc_gap variance record is the one utility() writes for these runs."""
    syn = list(np.subtract(real, gaps))
    runs = {"real": [{"auroc": a} for a in real], "synthetic": [{"auroc": a} for a in syn],
            "real_full": [{"auroc": 0.9}] * 6, "augmented": [{"auroc": 0.904}] * 6}
    design = {"components": [{"name": "real (matched)", "values": list(real), "ratio": ratios["real"]},
                             {"name": "synthetic (TSTR)", "values": syn, "ratio": ratios["synthetic"]}],
              "test_variance": test_variance}
    return _evaluation(utility__paired__auc_gap=list(gaps), utility__runs=runs,
                       utility__train_sizes={"set_ratios": ratios}, utility__paired__variance={"auc_gap": design})


def test_utility_bound_covers_the_training_pools_and_the_test_split():
    """Constant per-seed gaps (no seed noise) still get a bound wider than the mean: the pools the
    seeds resample and the test split vary too (corrected resampled t, DeLong), each in quadrature."""
    from scipy.stats import t

    gaps = [0.01] * 6
    real = [0.90, 0.92, 0.88, 0.91, 0.89, 0.90]
    ratios = {"real": 1.0, "synthetic": 0.25}
    r = next(x for x in decide(_covered(real, gaps, ratios, 0.0002), STRICT).rules if x.rule == "utility.max_auc_gap")
    var_sets = (1.0 + 0.25) * float(np.var(real, ddof=1))  # both pools vary as the real AUROCs do here
    se = (var_sets + 0.0002) ** 0.5
    assert r.value == pytest.approx(0.01 + t.ppf(0.95, 5) * se)
    assert not r.passed and f"training sets {var_sets ** 0.5:.3g} + test split 0.0141 in quadrature" in r.reason
    assert "alone exceeds the margin" not in r.reason  # half-width < 0.05: a gap of 0 would pass
    # a test split this noisy (se 0.03) cannot resolve the margin at all: the reason says so
    r = next(x for x in decide(_covered(real, gaps, ratios, 0.0009), STRICT).rules if x.rule == "utility.max_auc_gap")
    half = t.ppf(0.95, 5) * (var_sets + 0.0009) ** 0.5
    assert f"the half-width {half:.3g} alone exceeds the margin 0.05, so even a generator as good as the real data " \
           "fails" in r.reason
    # a pool the seeds did not resample (each seed used all of a class): unbounded, and it says which
    r = next(x for x in decide(_covered(real, gaps, {"real": 1.0, "synthetic": None}, 0.0004), STRICT).rules
             if x.rule == "utility.max_auc_gap")
    assert not r.passed and r.value == float("inf")
    assert "not resampled by the seeds, so unbounded: synthetic (TSTR)" in r.reason
    # no variance record (an evaluation whose bound covered the seeds alone), or one that does not fit
    for bad in (None, {"components": [{"name": "x", "values": [0.9] * 5, "ratio": 1.0}], "test_variance": 0.0},
                {"components": [], "test_variance": -1.0}):
        e = _evaluation()
        e["utility"]["paired"]["variance"]["auc_gap"] = bad
        r = next(x for x in decide(e, STRICT).rules if x.rule == "utility.max_auc_gap")
        assert not r.passed and r.value is None
        assert "lacks the variance record of its bound" in r.reason and "re-run evaluate" in r.reason


@pytest.mark.parametrize("edit,why", [
    (lambda e: e["utility"]["paired"]["variance"]["auc_gap"].update(components=[]), "its pools are []"),
    (lambda e: e["utility"]["paired"]["variance"]["auc_gap"]["components"][0].update(ratio=0.0),
     "ratio 0.0 is not train_sizes.set_ratios.real = 1.0"),
    (lambda e: e["utility"]["paired"]["variance"]["auc_gap"]["components"][0].update(values=[0.9] * 6),
     "its per-seed values are not the real runs AUROCs"),
    (lambda e: e["utility"]["paired"].update(auc_gap=[0.0] * 6), "the paired values are not the real minus"),
])
def test_a_variance_record_edited_to_narrow_the_bound_fails(edit, why):
    """Gutted, re-weighted or re-valued records, or paired values that are not the runs' difference:
    the rule fails as not measured instead of deciding on a bound the runs do not support."""
    real = [0.90, 0.95, 0.86, 0.93, 0.88, 0.91]
    e = _covered(real, [0.04, 0.0, 0.06, 0.01, 0.05, 0.02], {"real": 1.0, "synthetic": 0.1}, 0.0001)
    edit(e)
    r = next(x for x in decide(e, STRICT).rules if x.rule == "utility.max_auc_gap")
    assert not r.passed and r.value is None
    assert "does not match the evaluation's runs" in r.reason and why in r.reason


def test_repeated_seeds_booleans_and_a_small_resample_fraction_fail():
    e = _evaluation(utility__paired__seeds=[1, 1, 2, 3, 4, 5])
    r = next(x for x in decide(e, STRICT).rules if x.rule == "utility.max_auc_gap")
    assert not r.passed and "are not distinct integers" in r.reason
    e = _evaluation(utility__paired__delta_syn=[True] * 6)
    r = next(x for x in decide(e, STRICT).rules if x.rule == "utility.max_delta_syn")
    assert not r.passed and "lacks its per-seed paired values" in r.reason
    e = _evaluation(utility__train_sizes={"resample_fraction": 0.1})
    r = next(x for x in decide(e, STRICT).rules if x.rule == "utility.min_resample_fraction")
    assert not r.passed and r.reason.startswith("share of the smaller pool each seed's matched training sets draw 0.1 "
                                                "violates >= 0.5")


def test_utility_rules_with_too_few_seeds_for_the_level_fail_naming_the_minimum():
    e = _evaluation(utility__paired={"seeds": [0, 1, 2], "auc_gap": [0.0] * 3, "delta_syn": [0.0] * 3,
                                     "augmented_gain": [0.01] * 3}, utility__stats__n_seeds=3)
    failed = {r.rule: r.reason for r in decide(e, STRICT).failures if r.rule.startswith("utility.")}
    assert set(failed) == {"utility.max_auc_gap", "utility.max_delta_syn", "utility.min_augmentation_gain",
                           "utility.min_seeds"}
    assert failed["utility.max_auc_gap"] == (
        "utility gap AUC_real - AUC_syn not measured at confidence 0.95: 3 seed(s), fewer than the 5 a one-sided "
        "bound at this level needs, so this rule cannot pass")
    assert failed["utility.min_seeds"] == "utility repeats (seeds; confidence 0.95 needs >= 5) 3 violates >= 5"
    # per-seed values missing (an evaluation from before the bounds): not measured
    e = _evaluation()
    del e["utility"]["paired"]
    failed = {r.rule: r.reason for r in decide(e, GatePolicy()).failures if r.rule.startswith("utility.")}
    assert set(failed) == {"utility.max_auc_gap", "utility.max_delta_syn"}
    assert "lacks its per-seed paired values" in failed["utility.max_auc_gap"]


# --------------------------------------------------------------------------- gates that cannot fail
LEVELS = {"confidence", "false_alarm_rate", "correction", "planted_kinds", "reader_confidence", "min_readers", "min_images"}  # levels, not rules
NO_MEMORIZATION = {"memorization": dict.fromkeys(k for k in GatePolicy().memorization.model_dump() if k not in LEVELS)}
ALL_NULL = {group: dict.fromkeys(k for k in rules if k not in LEVELS)
            for group, rules in GatePolicy().model_dump().items()}


def test_a_policy_that_applies_no_rule_fails():
    d = decide(_evaluation(), GatePolicy.model_validate(ALL_NULL))
    assert not d.passed and len(d.skipped) == 18
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
    one = GatePolicy.model_validate({"memorization": {**NO_MEMORIZATION["memorization"], "max_flagged_copies": 0}})
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
    assert len(d.rules) == 18 and all(x.passed for x in d.rules if x.rule != "synthetic.not_standin")
    assert decide(_evaluation(synthetic__standin=None), STRICT).passed


# --------------------------------------------------------------------------- recomputing a stored record
def _record(tmp_path, evaluation, policy=None):
    (tmp_path / "evaluation.json").write_text(json.dumps(evaluation))
    gate(tmp_path / "evaluation.json", policy or GatePolicy(), tmp_path / "gate.json")
    return json.loads((tmp_path / "gate.json").read_text())


def test_check_record_accepts_an_honest_record(tmp_path):
    e = _evaluation(utility__paired__auc_gap=[0.2] * 6)
    d = check_record(_record(tmp_path, e), e)
    assert not d.passed and [r.rule for r in d.failures] == ["utility.max_auc_gap"]


def test_check_record_refuses_an_edited_verdict(tmp_path):
    e = _evaluation(copies=3)
    rec = _record(tmp_path, e)
    forged = copy.deepcopy(rec)
    forged["passed"] = True
    with pytest.raises(DataError) as err:
        check_record(forged, e, "gate.json")
    assert err.value.message == (
        "gate.json: the recorded verdict (passed=True, failing: memorization.max_flagged_copies) differs "
        "from the decision recomputed from the evaluation and the recorded policy (passed=False, failing: "
        "memorization.max_flagged_copies): the gate record was modified or written by other code")
    # a rule flipped to pass along with the verdict
    for r in forged["rules"]:
        r["passed"] = True
    with pytest.raises(DataError, match=r"recorded verdict \(passed=True, failing: none\) differs from the decision "
                                        r"recomputed .*\(passed=False, failing: memorization.max_flagged_copies"):
        check_record(forged, e)


def test_check_record_refuses_an_edited_policy(tmp_path):
    e = _evaluation(copies=3)
    rec = _record(tmp_path, e)
    loose = copy.deepcopy(rec)
    loose["policy"]["memorization"]["max_flagged_copies"] = 10  # loosened after the fact
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


# --------------------------------------------------------------------------- memorization at a stated rate
def test_copy_flags_are_recomputed_at_the_policys_false_alarm_rate():
    p = [1e-5] + [0.5] * 599  # one image at p = 1e-5 among 600
    e = _evaluation(memorization__per_image__p_combined=p)
    d = decide(e, GatePolicy())  # flags at 0.01 / 2 with BH: the smallest needs p <= 0.005 / 600
    assert d.passed and d.details["memorization"]["flagged"] == []
    assert d.details["memorization"]["statement"] == (
        "an honest generator fails these rules with probability at most 0.01 (copy flags at 0.005 with BH over 600 "
        "synthetic images; 9 set-level tests at 0.000556 each, Bonferroni)")
    loose = GatePolicy.model_validate({"memorization": {"false_alarm_rate": 0.1}})
    d = decide(e, loose)
    [r] = d.failures
    assert r.rule == "memorization.max_flagged_copies" and d.details["memorization"]["flagged"] == [0]
    assert r.reason == ("1 of 600 synthetic images flagged as copies of a training image (BH at 0.05): 0; "
                        "violates <= 0")
    # the evaluation's own flags do not decide: an evaluation claiming none is judged on its p-values
    e = _evaluation(copies=2, memorization__flags={"alpha": 1e-9, "correction": "holm", "count": 0, "indices": []})
    assert [r.rule for r in decide(e, GatePolicy()).failures] == ["memorization.max_flagged_copies"]


def test_planted_power_is_judged_at_the_synthetic_set_size():
    e = _evaluation(memorization__planted__crop_resize__p_values=[1e-7] * 95 + [0.5] * 5)
    # 1e-7 <= 0.005 / 600: found; blends are reported, not ruled
    e["memorization"]["planted"]["blend"]["p_values"] = [0.5] * 100
    r = next(x for x in decide(e, GatePolicy()).rules if x.rule == "memorization.min_planted_detection")
    assert r.passed and r.value == 0.95 and "weakest kind crop_resize 0.95 of 100" in r.reason
    big = _evaluation(memorization__per_image__p_combined=[0.5] * 100_000,
                      memorization__planted__crop_resize__p_values=[1e-7] * 95 + [0.5] * 5)
    r = next(x for x in decide(big, GatePolicy()).rules if x.rule == "memorization.min_planted_detection")
    assert not r.passed and r.value == 0.0 and "below 0.9: crop_resize" in r.reason  # 1e-7 > 0.005 / 100000


def test_a_failing_planted_kind_that_the_data_caps_is_named_as_such():
    """Issue #34: when a kind fails because its copies are no more copy-like than unseen patients' images
    (the evaluation's `reachable` share), the reason says that no statistics fix it; a kind that fails with
    a high reachable share is the statistics' limit and is not named so."""
    e = _evaluation(memorization__planted__crop_resize__p_values=[1e-7] * 30 + [0.5] * 70,
                    memorization__planted__crop_resize__reachable=0.66,
                    memorization__planted__noise__p_values=[1e-7] * 50 + [0.5] * 50,
                    memorization__planted__noise__reachable=0.99)
    r = next(x for x in decide(e, GatePolicy()).rules if x.rule == "memorization.min_planted_detection")
    assert not r.passed and "below 0.9: crop_resize, noise" in r.reason
    assert ("not reachable on this data: crop_resize (at most 0.66: 34% of its copies are no more copy-like than "
            "some unseen patient's image on every detector)") in r.reason
    assert "noise (at most" not in r.reason and "a higher resolution or a detector" in r.reason
    old = _evaluation(memorization__planted__crop_resize__p_values=[1e-7] * 30 + [0.5] * 70)  # no reachable share
    r = next(x for x in decide(old, GatePolicy()).rules if x.rule == "memorization.min_planted_detection")
    assert not r.passed and "not reachable" not in r.reason


def test_the_reachable_share_counts_copies_beyond_every_held_out_image_on_some_detector():
    from synthgate.evaluation.memorization.evidence import reachable

    null_max = {"pixel": 2.0, "aligned": 3.0}
    copies = {"pixel": np.array([2.5, 1.0, 1.0, 2.0]), "aligned": np.array([0.0, 3.5, 2.9, 3.0])}
    assert reachable(copies, null_max) == 0.5  # beyond on pixel, beyond on aligned, inside, tied (not beyond)


def test_memorization_evidence_that_cannot_certify_fails_whatever_the_policy():
    partial = _evaluation(memorization__coverage__train_compared=20000, memorization__coverage__full=False,
                          memorization__coverage__train_size=47000)
    small = _evaluation(memorization__null_sufficient=False, memorization__coverage__held_out=41)
    lax = GatePolicy.model_validate({"memorization": {**NO_MEMORIZATION["memorization"], "max_flagged_copies": 100}})
    [r] = decide(partial, lax).failures
    assert r.rule == "memorization.full_coverage"
    assert r.reason.startswith("the copy search compared the synthetic images with 20000 of 47000 training images "
                               "(evaluate.memorization.max_train)")
    [r] = decide(small, lax).failures
    assert r.rule == "memorization.held_out_sufficient" and (r.value, r.threshold) == (41, 60)
    assert "41 real held-out images calibrate the copy null, fewer than the 60 its tail model needs" in r.reason


def test_an_evaluation_without_the_copy_evidence_fails_as_not_measured():
    e = _evaluation()
    e["memorization"] = {"pixel": {"near_copy_fraction": 0.0}}  # an evaluation.json from an older synthgate
    e["evaluation_hash"] = evaluation_hash(e)
    failed = {r.rule: r.reason for r in decide(e, GatePolicy()).failures}
    assert {"memorization.max_flagged_copies", "memorization.min_planted_detection", "memorization.copy_excess_test",
            "memorization.max_membership_auc", "memorization.max_membership_auc_pixel",
            "memorization.max_pixel_median_shift"} <= set(failed)
    assert all("not measured" in v for k, v in failed.items() if k.startswith("memorization."))


def test_membership_and_shift_rules_decide_on_the_lower_bound():
    # AUC 0.6 but with a standard error of 0.05: its 0.99944 lower bound is below 0.55
    e = _evaluation(memorization__membership__descriptor={"auc": 0.6, "se": 0.05, "p": 0.02})
    r = next(x for x in decide(e, GatePolicy()).rules if x.rule == "memorization.max_membership_auc")
    assert r.passed and r.value < 0.55 and "lower confidence bound" in r.reason
    e = _evaluation(memorization__membership__descriptor={"auc": 0.7, "se": 0.01, "p": 1e-9})
    r = next(x for x in decide(e, GatePolicy()).rules if x.rule == "memorization.max_membership_auc")
    assert not r.passed and r.value == pytest.approx(0.7 - 3.26 * 0.01, abs=2e-3)


def test_the_policy_decides_which_planted_kinds_are_ruled_not_the_evaluation():
    """Issue #33, attack 2: an evaluation that marks a failing planted kind ``ruled: false`` still fails,
    and one that leaves out a kind the policy rules on fails as not measured."""
    from synthgate.evaluation.memorization.planted import KINDS, NOT_RULED
    from synthgate.gates.policy import RULED_PLANTED_KINDS

    assert set(RULED_PLANTED_KINDS) == set(KINDS) - set(NOT_RULED)
    e = _evaluation(memorization__planted__noise__p_values=[0.5] * 100)
    e["memorization"]["planted"]["noise"]["ruled"] = False
    r = next(x for x in decide(e, GatePolicy()).rules if x.rule == "memorization.min_planted_detection")
    assert not r.passed and "noise" in r.reason
    del e["memorization"]["planted"]["noise"]
    r = next(x for x in decide(e, GatePolicy()).rules if x.rule == "memorization.min_planted_detection")
    assert not r.passed and "planted copies of kind(s) noise" in r.reason and "not measured" in r.reason
    narrow = GatePolicy.model_validate({"memorization": {"planted_kinds": ["exact"]}})
    r = next(x for x in decide(e, narrow).rules if x.rule == "memorization.min_planted_detection")
    assert r.passed
