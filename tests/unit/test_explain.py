"""Every gate rule reaches a reviewer explained: its kind of value, what it protects, its number formatted."""

from synthgate.gates.decision import decide
from synthgate.gates.explain import GUIDE, fmt, guide, threshold_text
from synthgate.gates.page import insert_verdict, rules_table, verdict_words
from synthgate.gates.policy import GatePolicy

# the settings of a rule group that are not rules themselves
SETTINGS = {"false_alarm_rate", "correction", "planted_kinds", "confidence", "reader_confidence", "min_readers", "min_images"}
INTEGRITY = {"memorization.full_coverage", "memorization.held_out_sufficient", "policy.rules_applied",
             "policy.memorization_rules_applied", "synthetic.not_standin"}


def _policy_rules() -> set[str]:
    policy = GatePolicy()
    names = set()
    for group in ("memorization", "utility", "fidelity", "samples"):
        names |= {f"{group}.{k}" for k in getattr(policy, group).model_dump() if k not in SETTINGS}
    return names


def test_every_rule_a_policy_can_apply_is_explained_and_nothing_else():
    assert set(GUIDE) == _policy_rules() | INTEGRITY
    for name, g in GUIDE.items():
        assert g.kind and g.protects and g.fmt in {"int", "rate", "p", "g"}, name


def test_a_decision_on_missing_evidence_names_only_explained_rules():
    everything = GatePolicy.model_validate({"utility": {"min_augmentation_gain": 0.0, "max_augmentation_p": 0.05},
                                            "fidelity": {"max_fid_ratio": 3, "min_precision": 0.5, "min_recall": 0.5,
                                                         "max_reader_accuracy": 0.6}})
    d = decide({"format": "synthgate.evaluation/v1", "real": {}, "synthetic": {"standin": "x"}, "evaluation_hash": "e",
                "memorization": {"coverage": {"full": False}, "null_sufficient": False}}, everything)
    assert {"synthetic.not_standin", "memorization.full_coverage", "memorization.held_out_sufficient"} <= {
        r.rule for r in d.rules}
    assert {r.rule for r in d.rules} <= set(GUIDE)
    assert all(guide(r.rule).protects for r in d.rules)


def test_numbers_are_formatted_for_people():
    assert fmt("samples.min_synthetic_images", 540.0) == "540"  # was "540.0000"
    assert fmt("samples.min_synthetic_images", 12345.0) == "12,345"
    assert fmt("memorization.min_planted_detection", 0.8966) == "0.90"
    assert fmt("memorization.copy_excess_test", 0.000123456) == "0.000123"
    assert fmt("utility.max_auc_gap", 0.062491) == "0.06249"
    assert fmt("utility.max_auc_gap", None) == "not measured"
    assert threshold_text("samples.min_per_class", ">=", 10.0) == "≥ 10"
    assert threshold_text("memorization.max_membership_auc", "<=", 0.55) == "≤ 0.55"
    assert guide("no.such_rule").kind == "value"


def test_the_decision_page_lists_every_rule_failing_first_and_escapes_text():
    rules = [{"rule": "utility.max_auc_gap", "passed": True, "value": 0.01, "threshold": 0.05, "comparison": "<=",
              "reason": "ok"},
             {"rule": "memorization.max_flagged_copies", "passed": False, "value": 2.0, "threshold": 0.0,
              "comparison": "<=", "reason": "2 images <script>x</script>"}]
    gate = {"passed": False, "rules": rules, "skipped": ["fidelity.max_fid_ratio"], "evaluation_hash": "e" * 64,
            "policy_hash": "p" * 64, "created": "2026-12-07T20:00:00+00:00"}
    table = rules_table(gate)
    assert table.index("memorization.max_flagged_copies") < table.index("utility.max_auc_gap")
    assert "<td class=bad>FAIL</td><td>2</td><td>≤ 0</td>" in table
    page = insert_verdict("<html><head><title>Evaluation report: g</title></head><body><h1>Evaluation report: g</h1>"
                          "<!-- synthgate:gate-verdict --><!-- /synthgate:gate-verdict --><h2>Summary</h2></body></html>",
                          gate)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<title>Release decision: FAILED · Evaluation report: g</title>" in page
    assert "Not applied by this policy (set to null): fidelity.max_fid_ratio." in page
    assert "1 of 2 rules failed: this version may not be released" in page
    # deciding again replaces the verdict and the title's prefix, never stacks them
    again = insert_verdict(page, {**gate, "passed": True, "rules": [{**r, "passed": True} for r in rules]})
    assert again.count("Release gate:") == 1 and "<title>Release decision: PASSED · Evaluation report: g</title>" in again
    assert verdict_words({"passed": True, "rules": rules}).startswith("All 2 rules of the release policy held")

