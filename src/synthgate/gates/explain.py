"""What each gate rule's number is and what the rule protects, in words a reviewer reads.

One home for the plain-language side of the rules: the decision page (the verdict at the top of
``gate/report.html`` and of the published report) and the MLflow version description both render
every rule with its value, its threshold, the *kind* of value (a point estimate, a confidence bound,
a p-value, a count) and one line of what it protects. A rule that is not listed here is shown with
the kind "value" and no line, and :func:`tests.unit.test_explain` fails, so a new rule cannot reach
a reviewer unexplained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RuleGuide:
    kind: str  # what the value is: "count", "point estimate", "lower confidence bound", ...
    protects: str  # one plain line: what a failure of this rule would let through
    fmt: str = "g"  # "int": a count; "rate": a share in [0, 1]; "p": a p-value; "g": a number


GUIDE: dict[str, RuleGuide] = {
    "memorization.max_flagged_copies": RuleGuide(
        "count (images whose copy p-value is significant after multiple-testing correction)",
        "no synthetic image is a (near-)copy of one training patient's image", "int"),
    "memorization.min_planted_detection": RuleGuide(
        "point estimate (share of planted copies found, weakest kind)",
        "the copy search is able to find copies on this data: 'no copy flagged' means something", "rate"),
    "memorization.copy_excess_test": RuleGuide(
        "p-value (exact test of more images than chance above the held-out 99th percentile)",
        "the set as a whole is not closer to training patients than unseen patients are", "p"),
    "memorization.max_membership_auc": RuleGuide(
        "lower confidence bound (membership-inference AUC, copy-descriptor space)",
        "an attacker cannot tell training patients from unseen ones by their distance to the synthetic set"),
    "memorization.max_membership_auc_pixel": RuleGuide(
        "lower confidence bound (membership-inference AUC, pixel space)",
        "the same membership protection, measured on raw pixels"),
    "memorization.max_pixel_median_shift": RuleGuide(
        "lower confidence bound (median shift of best correlation, synthetic minus held-out)",
        "synthetic images are not systematically closer to training images than unseen patients' images are"),
    "memorization.full_coverage": RuleGuide(
        "count (training images the copy search compared)",
        "the copy search looked at every training image, so no patient's copy can go unseen", "int"),
    "memorization.held_out_sufficient": RuleGuide(
        "count (real held-out images calibrating the copy null)",
        "enough unseen patients' images to certify a copy at the stated false-alarm rate", "int"),
    "utility.max_auc_gap": RuleGuide(
        "upper confidence bound (AUC trained on real minus AUC trained on synthetic)",
        "a classifier trained on the synthetic set is nearly as good as one trained on as many real images"),
    "utility.max_delta_syn": RuleGuide(
        "upper confidence bound (synthetic-trained AUC on synthetic minus on real)",
        "the synthetic labels do not teach shortcuts that fail on real images"),
    "utility.min_augmentation_gain": RuleGuide(
        "lower confidence bound (AUC of real plus synthetic minus real alone)",
        "adding the synthetic set to real data does not hurt a classifier"),
    "utility.max_augmentation_p": RuleGuide(
        "p-value (paired Wilcoxon test of the augmentation gain)",
        "the augmentation gain is not noise", "p"),
    "utility.min_seeds": RuleGuide(
        "count (utility repeats)", "enough repeats for the utility bounds to hold at their level", "int"),
    "utility.min_resample_fraction": RuleGuide(
        "point estimate (share of the smaller pool each repeat's training sets draw)",
        "the repeats resample enough of the data for their spread to mean something", "rate"),
    "fidelity.max_fid_ratio": RuleGuide(
        "point estimate (FID over the real test-vs-train FID)",
        "the synthetic images look like the real ones as a whole"),
    "fidelity.min_precision": RuleGuide(
        "point estimate (share of synthetic images inside the real manifold)",
        "synthetic images are realistic", "rate"),
    "fidelity.min_recall": RuleGuide(
        "point estimate (share of real images inside the synthetic manifold)",
        "the synthetic set covers the variety of the real data", "rate"),
    "fidelity.max_reader_accuracy": RuleGuide(
        "confidence bounds (readers' accuracy at telling synthetic from real)",
        "radiologists cannot tell the synthetic images from real ones", "rate"),
    "samples.min_synthetic_images": RuleGuide(
        "count (synthetic images evaluated)", "the evidence rests on enough images to mean something", "int"),
    "samples.min_per_class": RuleGuide(
        "count (synthetic images in the smallest class)", "every class is represented in the synthetic set", "int"),
    "policy.rules_applied": RuleGuide(
        "check", "a policy that switches every rule off cannot approve anything", "int"),
    "policy.memorization_rules_applied": RuleGuide(
        "check", "a policy cannot approve a release without checking for copied patients", "int"),
    "synthetic.not_standin": RuleGuide(
        "check", "real held-out images standing in for a generator cannot approve a generator", "int"),
}

UNKNOWN = RuleGuide("value", "")


def guide(rule: str) -> RuleGuide:
    return GUIDE.get(rule, UNKNOWN)


def fmt(rule: str, value: Any) -> str:
    """``value`` formatted for people by the rule's kind: counts as integers, shares with two decimals,
    p-values with three significant digits, everything else with four; a missing value as "not measured"."""
    if value is None:
        return "not measured"
    if not isinstance(value, int | float):
        return str(value)
    style = guide(rule).fmt
    v = float(value)
    if style == "int" and v.is_integer():
        return f"{int(v):,}"
    if style == "rate":
        return f"{v:.2f}"
    if style == "p":
        return f"{v:.3g}"
    return f"{v:.4g}"


def threshold_text(rule: str, comparison: str, threshold: Any) -> str:
    sign = {"<=": "≤", ">=": "≥"}.get(comparison, comparison)
    return f"{sign} {fmt(rule, threshold)}" if threshold is not None else "none"
