"""A gate rule's result, and the rules that compare one recorded number with one threshold."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any


@dataclass
class RuleResult:
    rule: str
    passed: bool
    value: float | None
    threshold: float | None
    comparison: str  # "<=" or ">="
    reason: str



def get(data: dict[str, Any], *keys: str) -> Any:
    node: Any = data
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def threshold_rules(group: str, thresholds: dict[str, Any], measured: dict[str, tuple[Any, str, str]],
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
