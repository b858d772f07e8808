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


RELEASE_START = "<!-- synthgate:release -->"
RELEASE_END = "<!-- /synthgate:release -->"


def insert_release(report_html: str, release: dict[str, Any]) -> str:
    """The published report: a page of its own that opens with the signed release (``release``: the gatekeeper's
    release predicate) — whether the gate passed or the version was released by an override of a failed gate, by
    whom, when and why — and shows the registered public report below it in a sandboxed frame (no scripts, its
    styles its own), so that nothing in the registered report can hide, restyle or imitate the release above it.
    A function of the registered report and the signed release only: the gatekeeper recomputes the page byte for
    byte before it signs a dataset."""
    override = release.get("override") or {}
    when = html.escape(str(release.get("signed_at", "")))
    policy = html.escape(str(release.get("policy_hash", ""))[:16])
    who = html.escape(str(release.get("model", ""))) + " version " + html.escape(str(release.get("version", "")))
    passed = release.get("verdict") == "passed"
    if passed:
        body = (f"<b>Released: <span class=ok>the release gate PASSED</span></b>. {who} was released by the "
                f"gatekeeper on {when} under policy {policy}: every rule of the evaluation below held.")
    else:
        body = (f"<b>Released by OVERRIDE: <span class=bad>the release gate FAILED</span></b>. {who} did not pass its "
                f"gate under policy {policy}; the owner <b>{html.escape(str(override.get('user', '?')))}</b> released it "
                f"anyway on {when}, giving the reason: <i>{html.escape(str(override.get('reason', '')))}</i>. Failing "
                f"rules: {html.escape(', '.join(map(str, release.get('failing_rules') or [])) or '-')} (details in the "
                "evaluation below); decide whether this dataset may be used for your purpose.")
    signed = release.get("rules")
    table = ("<p>The rules as the gatekeeper recomputed them from the registered evaluation under policy "
             f"{policy} (part of what it signed):</p>" + rules_table({"rules": signed})
             if isinstance(signed, list) and signed else
             "<p class=note>This release predates the signed rule table: the rules are in the report below.</p>")
    return ("<!doctype html><html><head><meta charset=utf-8>"
            f"<title>Released synthetic data of {who}: release and evaluation report</title><style>"
            "body{font-family:sans-serif;margin:1.5em}.ok{color:#1b7f3b}.bad{color:#b00020}"
            ".release{border-left:6px solid;padding:.6em 1em;background:#f6f6f6;margin-bottom:1em}"
            "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em}"
            "th{background:#eee}.note{color:#555}.wide{overflow-x:auto}.l{text-align:left}"
            ".rules td:nth-child(-n+4){white-space:nowrap}"
            "iframe{width:100%;height:85vh;border:1px solid #ccc}</style></head><body>"
            + RELEASE_START + "<div class=release style='border-left-color:" + ("#1b7f3b" if passed else "#b00020")
            + "'>" + body + " (the gatekeeper's signed release attestation; <code>synthgate pull</code> verifies it)"
            + table + "</div>" + RELEASE_END
            + "<p>The registered evaluation report of this version, as the pipeline registered it (public: no real "
            "image); where it differs from the signed release above, the release holds:</p>"
            + '<iframe sandbox title="the registered evaluation report" srcdoc="'
            + html.escape(report_html, quote=True) + '"></iframe></body></html>')
