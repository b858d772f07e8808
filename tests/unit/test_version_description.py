"""The MLflow version page's text (issue #35): every rule explained, thresholds readable in MLflow's
markdown renderer, and an override stated before the failed verdict it overrode."""

from synthgate.gates.rules import RuleResult
from synthgate.registry.registry import with_override


class _Decision:
    passed = False
    policy_hash = "p" * 64
    evaluation_hash = "e" * 64
    rules = [RuleResult("samples.min_per_class", True, 30.0, 10.0, ">=", "ok"),
             RuleResult("memorization.min_planted_detection", False, 0.3, 0.9, ">=", "weakest kind noise <b>0.30</b>")]


def test_the_description_lists_every_rule_with_its_kind_and_why_the_failing_ones_failed():
    from synthgate.registry.registry import version_description

    page = version_description(_Decision(), "run1", reported=True)
    assert page.startswith("## Release gate: FAILED\n\n1 of 2 rules failed: this version may not be released.")
    assert "| memorization.min\\_planted\\_detection | **FAIL** | 0.30 | ≥ 0.90 | point estimate \\(share" in page
    assert "| samples.min\\_per\\_class | pass | 30 | ≥ 10 | count \\(synthetic images in the smallest class\\)" in page
    assert page.index("**FAIL**") < page.index("| pass |")  # failing first
    assert "- memorization.min\\_planted\\_detection: weakest kind noise &lt;b&gt;0.30&lt;/b&gt;" in page
    assert "\\>" not in page and "<b>" not in page


def test_an_override_is_stated_first_and_once():
    page = with_override("## Release gate: FAILED\n\nrules", "alice", "2026-12-07T21:00:00+00:00", "teaching only")
    assert page.startswith("## Released by OVERRIDE: the release gate FAILED\n\nThe owner alice released")
    assert "teaching only" in page and page.endswith("## Release gate: FAILED\n\nrules")
    again = with_override(page, "bob", "2026-12-08T09:00:00+00:00", "second review")
    assert again.count("Released by OVERRIDE") == 1 and "bob" in again and "alice" not in again
    assert again.endswith("## Release gate: FAILED\n\nrules")
