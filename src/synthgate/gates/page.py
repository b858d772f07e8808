"""The decision page: the evaluation report with the gate's verdict on top.

:func:`insert_verdict` puts, above the evidence, the verdict in words, every rule the policy applied
with its value, threshold, the kind of value (point estimate, confidence bound, p-value, count) and
one line of what it protects (:mod:`synthgate.gates.explain`), the failing rules' full reasons, the
rules the policy switched off, and the memorization statement; and retitles the page so that its
title says it is a release decision. ``gate/report.html`` and ``gate/report_public.html`` are this
page; the public one is registered, and the published ``report.html`` frames it below the signed
release.
"""

from __future__ import annotations

import html
import re
from typing import Any

from synthgate.evaluation.report import VERDICT_END, VERDICT_START
from synthgate.gates.explain import fmt, guide, threshold_text

_TITLE = re.compile(r"<title>(.*?)</title>", re.S)
_H1 = re.compile(r"<h1>(.*?)</h1>", re.S)
_PREFIX = re.compile(r"^Release decision: [A-Z]+ · ")


def verdict_words(gate: dict[str, Any]) -> str:
    """The verdict as a sentence a reviewer acts on."""
    rules = gate.get("rules", [])
    failing = [r for r in rules if not r.get("passed")]
    if gate.get("passed"):
        return (f"All {len(rules)} rules of the release policy held: this version may be promoted, and its "
                "synthetic data released once the gatekeeper signs the release.")
    return (f"{len(failing)} of {len(rules)} rules failed: this version may not be released. Only an owner can "
            "release it anyway, by an override the gatekeeper signs and every published copy shows with its reason.")


def rules_table(gate: dict[str, Any]) -> str:
    """Every applied rule, failing first: result, value, kind of value, threshold, what it protects."""
    rows = []
    for r in sorted(gate.get("rules", []), key=lambda r: bool(r.get("passed"))):
        name = str(r.get("rule", ""))
        g = guide(name)
        ok = bool(r.get("passed"))
        rows.append(
            f"<tr><td class=l><code>{html.escape(name)}</code></td>"
            f"<td class={'ok' if ok else 'bad'}>{'pass' if ok else 'FAIL'}</td>"
            f"<td>{html.escape(fmt(name, r.get('value')))}</td>"
            f"<td>{html.escape(threshold_text(name, str(r.get('comparison', '')), r.get('threshold')))}</td>"
            f"<td class=l>{html.escape(g.kind)}</td><td class=l>{html.escape(g.protects)}</td></tr>")
    head = "".join(f"<th class=l>{h}</th>" for h in
                   ("rule", "result", "value", "threshold", "kind of value", "what it protects"))
    return f"<div class=wide><table class=rules><tr>{head}</tr>{''.join(rows)}</table></div>"


def insert_verdict(report_html: str, gate: dict[str, Any]) -> str:
    """The report with the gate's decision at the top (replacing an earlier one) and a title that says
    it is a release decision; a function of the report and ``gate.json``'s content only."""
    failing = [r for r in gate.get("rules", []) if not r.get("passed")]
    mem = (gate.get("details") or {}).get("memorization") or {}
    ok = bool(gate.get("passed"))
    word = "PASSED" if ok else "FAILED"
    lines = [f"<div class=flag style='border-left-color:{'#1b7f3b' if ok else '#b00020'}'>"
             f"<b>Release gate: <span class={'ok' if ok else 'bad'}>{word}</span></b>. "
             f"{html.escape(verdict_words(gate))}",
             f"<p class=ids>evaluation {html.escape(str(gate.get('evaluation_hash', ''))[:16])} · policy "
             f"{html.escape(str(gate.get('policy_hash', ''))[:16])} · decided {html.escape(str(gate.get('created', '')))}"
             "</p>", rules_table(gate)]
    if failing:
        lines.append("<p><b>Why each failing rule failed</b></p><ul>"
                     + "".join(f"<li><b>{html.escape(r['rule'])}</b>: {html.escape(str(r.get('reason', '')))}</li>"
                               for r in failing) + "</ul>")
    if gate.get("skipped"):
        lines.append("<p class=note>Not applied by this policy (set to null): "
                     + html.escape(", ".join(map(str, gate["skipped"]))) + ".</p>")
    if mem.get("statement"):
        lines.append(f"<p class=note>Memorization: {html.escape(mem['statement'])}."
                     + (f" Flagged copies (never released): {html.escape(', '.join(map(str, mem['flagged'][:50])))}"
                        if mem.get("flagged") else "") + "</p>")
    lines.append("</div>")
    block = VERDICT_START + "".join(lines) + VERDICT_END
    if VERDICT_START in report_html and VERDICT_END in report_html:
        head, rest = report_html.split(VERDICT_START, 1)
        out = head + block + rest.split(VERDICT_END, 1)[1]
    else:
        out = report_html.replace("<body>", "<body>" + block, 1)
    return _retitle(out, word)


def _retitle(page: str, word: str) -> str:
    def sub(m: re.Match[str], tag: str) -> str:
        return f"<{tag}>Release decision: {word} · {_PREFIX.sub('', m.group(1))}</{tag}>"

    page = _TITLE.sub(lambda m: sub(m, "title"), page, count=1)
    return _H1.sub(lambda m: sub(m, "h1"), page, count=1)
