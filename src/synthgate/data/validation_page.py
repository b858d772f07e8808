"""The validation report as HTML that works offline (a hospital network): synthgate's own page at
``data_docs/index.html``, self-contained (inline CSS, no scripts, status as text and unicode symbols),
with the one verdict ``validation.json`` has and what was dropped to reach it.

Great Expectations' data docs load bootstrap, jQuery, bootstrap-table, Font Awesome and vega from
CDNs (none of them ships with the ``great_expectations`` wheel); offline its index (a table filled in
by jQuery) is blank and its status icons are empty. So its index is replaced by synthgate's page,
and its per-suite pages are kept as the raw evidence with every CDN reference removed, a small inline
stylesheet (its icons as ✔/✘) and a banner saying that its status is the one before synthgate's
drops, pointing to the page with the verdict.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

#: What each entry of ``validation.json``'s ``dropped`` is, in words (one, several), and the setting that dropped it.
DROPPED_WORDS = {"empty": ("blank (constant) image", "blank (constant) images", "validate.drop_empty"),
                 "duplicates": ("held-out image duplicating an image of another split",
                                "held-out images duplicating images of other splits", "validate.drop_duplicates")}

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1100px;
padding:1.5rem;color:#1d2330;line-height:1.45}
h1{font-size:1.5rem;margin:.2rem 0 1rem} h2{font-size:1.15rem;margin:1.6rem 0 .5rem}
.verdict{border-radius:6px;padding:1rem 1.2rem;font-size:1.05rem;border:2px solid}
.verdict.passed{background:#e6f4ea;border-color:#1a7f37} .verdict.failed{background:#fdecea;border-color:#c62828}
.verdict .word{font-size:1.6rem;font-weight:700;display:block;margin-bottom:.3rem}
.passed .word,.ok{color:#1a7f37} .failed .word,.bad{color:#c62828} .cleared{color:#9a6700}
table{border-collapse:collapse;width:100%;font-size:.92rem} th,td{border:1px solid #d0d5dd;padding:.35rem .5rem;
text-align:left;vertical-align:top} th{background:#f2f4f7} td.sym{font-size:1.1rem;text-align:center;width:2rem}
.note{color:#475467;font-size:.9rem} code{background:#f2f4f7;padding:0 .2rem;border-radius:3px}
"""

#: Inline stand-ins for what Great Expectations' pages would load from CDNs.
_GE_STYLE = """<style id="synthgate-offline">
body{font-family:system-ui,Helvetica,Arial,sans-serif;margin:0 1rem;color:#1d2330}
table{border-collapse:collapse;margin:.4rem 0} th,td{border:1px solid #d0d5dd;padding:.25rem .45rem;vertical-align:top}
.d-none,.ge-breadcrumbs,footer,.navbar-brand img{display:none}
.fas.fa-check-circle::before{content:"\\2714";font-style:normal} .fas.fa-times::before{content:"\\2718";font-style:normal}
.text-success{color:#1a7f37} .text-danger{color:#c62828}
.synthgate-banner{border:2px solid #9a6700;background:#fff8e1;padding:.7rem 1rem;margin:1rem 0;border-radius:6px}
</style>"""

_EXTERNAL_TAG = re.compile(
    r"""<link\b[^>]*\bhref=["']https?://[^>]*>"""
    r"""|<script\b[^>]*\bsrc=["']https?://[^>]*>\s*</script>"""
    r"""|<img\b[^>]*\bsrc=["']https?://[^>]*>""",
    re.I,
)
_CSS_URL = re.compile(r"""url\(\s*['"]?https?://[^)]*\)""", re.I)


def docs_site(docs_dir: Path) -> dict[str, Any]:
    """Great Expectations' data docs site configuration: its pages under ``docs_dir``."""
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def _ge_tally(report: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Per Great Expectations suite: (expectations held as GE judged them, expectations evaluated)."""
    out: dict[str, tuple[int, int]] = {}
    for c in report["checks"]:
        if c["source"] != "great_expectations":
            continue
        suite = c["details"].get("suite", "great_expectations")
        held, n = out.get(suite, (0, 0))
        out[suite] = (held + int(c["details"].get("ge_success", c["passed"])), n + 1)
    return out


def _dropped_words(dropped: dict[str, int], setting: bool = True) -> str:
    parts = []
    for kind, n in dropped.items():
        one, many, name = DROPPED_WORDS.get(kind, (f"{kind} image", f"{kind} images", "validate"))
        parts.append(f"{n} {one if n == 1 else many}" + (f" ({name})" if setting else ""))
    return " and ".join(parts)


def verdict(report: dict[str, Any]) -> str:
    """The verdict of ``validation.json`` in words, accounting for what was dropped: derived from its checks."""
    checks, dropped = report["checks"], report.get("dropped") or {}
    ge = [c for c in checks if c["source"] == "great_expectations"]
    ge_held = sum(int(c["details"].get("ge_success", c["passed"])) for c in ge)
    cleared = [c for c in ge if c["passed"] and not c["details"].get("ge_success", True)]
    failing = [c for c in checks if not c["passed"]]
    if not report["passed"]:
        listing = "; ".join(f"{c['name']} ({c['summary']})" for c in failing)
        text = (f"Failed: {len(failing)} of {len(checks)} checks failed: {listing}. Great Expectations held {ge_held} "
                f"of {len(ge)} expectations. No validated dataset was written.")
        return text + (f" (Dropping would have removed {_dropped_words(dropped)}.)" if dropped else "")
    v = report.get("validated_dataset") or {}
    size = f" ({v['num_images']} images)" if "num_images" in v else ""
    text = f"Passed: {ge_held} of {len(ge)} Great Expectations expectations held on the prepared data"
    if cleared:
        tally = _ge_tally(report)
        which = ", ".join(f"{c['name']} ({c['details'].get('expectation', '')} on "
                          f"{(c['details'].get('kwargs') or {}).get('column', '?')}; Great Expectations' "
                          f"{c['details'].get('suite', '')} page says Failed, "
                          f"{'/'.join(map(str, tally.get(c['details'].get('suite', ''), (0, 0))))})" for c in cleared)
        by = {k: n for k, n in dropped.items() if k == "empty"} or dropped
        text += (f"; the failing {'one' if len(cleared) == 1 else 'ones'}, {which}, concerned "
                 f"{_dropped_words(by, setting=False)}, which {'was' if sum(by.values()) == 1 else 'were'} dropped "
                 f"({', '.join(DROPPED_WORDS.get(k, ('', '', 'validate'))[2] for k in by)})")
        rest = {k: n for k, n in dropped.items() if k not in by}
        text += f"; {_dropped_words(rest)} also dropped" if rest else ""
    elif dropped:
        text += f"; {_dropped_words(dropped)} dropped"
    return text + f"; the validated dataset{size} passes all {len(checks)} checks."


def _offline_ge_page(text: str, home: str, note: str) -> str:
    """One Great Expectations page with nothing loaded from the network, readable without its CDN styles."""
    text = _CSS_URL.sub("none", _EXTERNAL_TAG.sub("", text))
    banner = (f'<div class="synthgate-banner">Great Expectations\' raw result, judged on the prepared data before '
              f'synthgate dropped anything. {html.escape(note)} The verdict is on '
              f'<a href="{html.escape(home)}">synthgate\'s validation page</a>.</div>')
    text = re.sub(r"</head>", lambda m: _GE_STYLE + m.group(0), text, count=1, flags=re.I)
    return re.sub(r"<body\b[^>]*>", lambda m: m.group(0) + banner, text, count=1, flags=re.I)


def _ge_pages(report: dict[str, Any], docs_dir: Path) -> list[tuple[str, str, str]]:
    """Makes GE's pages offline and returns (suite, raw status, relative link) per validation result page;
    GE's index (a table that jQuery from a CDN fills in) is removed: synthgate's page replaces it."""
    (docs_dir / "index.html").unlink(missing_ok=True)
    for css in docs_dir.glob("static/styles/*.css"):
        css.write_text(_CSS_URL.sub("none", css.read_text()))
    tally = _ge_tally(report)
    pages = []
    for page in sorted(docs_dir.rglob("*.html")):
        rel = page.relative_to(docs_dir).as_posix()
        suite = next((s for s in tally if f"/{s}/" in f"/{rel}" or rel.endswith(f"/{s}.html")), "")
        held, n = tally.get(suite, (0, 0))
        status = f"{'Success' if held == n else 'Failed'} ({held}/{n})"
        note = f"Its status for {suite}: {status}." if suite else ""
        home = os.path.relpath(docs_dir / "index.html", page.parent)
        text = page.read_text(encoding="utf-8")
        if "synthgate-offline" not in text:
            page.write_text(_offline_ge_page(text, home, note), encoding="utf-8")
        if rel.startswith("validations/"):
            pages.append((suite, status, rel))
    return pages


def _check_rows(report: dict[str, Any]) -> str:
    rows = []
    checks = sorted(report["checks"], key=lambda c: (c["passed"], c["details"].get("ge_success", True)))
    for c in checks:
        raw_fail = not c["details"].get("ge_success", True)
        sym, cls = ("✘", "bad") if not c["passed"] else ("⚠", "cleared") if raw_fail else ("✔", "ok")
        word = "failed" if not c["passed"] else "passed after the drop" if raw_fail else "passed"
        src = "Great Expectations" if c["source"] == "great_expectations" else "synthgate"
        rows.append(f'<tr><td class="sym {cls}">{sym}</td><td>{html.escape(c["name"])}</td>'
                    f'<td class="{cls}">{word}</td><td>{src}</td><td>{html.escape(str(c["summary"]))}</td></tr>')
    return "\n".join(rows)


def _balance_rows(report: dict[str, Any]) -> str:
    counts = (report.get("class_balance") or {}).get("counts") or {}
    return "\n".join(f"<tr><td>{html.escape(str(k))}</td><td>{v['train']}</td><td>{v['val']}</td><td>{v['test']}</td>"
                     "</tr>" for k, v in counts.items())


def render(report: dict[str, Any], ge_pages: list[tuple[str, str, str]], files: list[str]) -> str:
    """synthgate's validation page: the verdict first, then every check (failing first), the class
    counts, the files beside it and Great Expectations' raw pages with their status explained."""
    ok = bool(report["passed"])
    word = "PASSED" if ok else "FAILED"
    ge_list = "\n".join(f'<li><a href="{html.escape(rel)}">{html.escape(suite)}</a>: Great Expectations\' own '
                        f"status <b>{html.escape(status)}</b></li>" for suite, status, rel in ge_pages)
    ge_note = ("Great Expectations judges the prepared data as it came in, before synthgate drops anything, so its "
               "pages can say Failed where the verdict above is Passed: the expectations it counts as failing are "
               "the ones marked ⚠ above, cleared by the drop.") if ok and report.get("dropped") else ""
    v = report.get("validated_dataset") or {}
    validated = (f"<p>Validated dataset: <code>{html.escape(v['path'])}</code> ({v['num_images']} images, content "
                 f"hash <code>{html.escape(v['content_hash'][:16])}</code>)</p>") if v else ""
    file_list = "".join(f'<li><a href="../{html.escape(f)}">{html.escape(f)}</a></li>' for f in files)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Validation {word}: {html.escape(str(report['dataset']))}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Validation of <code>{html.escape(str(report['dataset']))}</code></h1>
<div id="verdict" class="verdict {'passed' if ok else 'failed'}"><span class="word">{'✔' if ok else '✘'} {word}</span>
{html.escape(verdict(report))}</div>
<p class="note">Prepared dataset content hash <code>{html.escape(str(report.get('content_hash', ''))[:16])}</code>.
Dropped: {html.escape(_dropped_words(report.get('dropped') or {}) or 'nothing')}.</p>
{validated}
<h2>Checks</h2>
<table id="checks"><tr><th></th><th>check</th><th>result</th><th>by</th><th>details</th></tr>
{_check_rows(report)}
</table>
<h2>Images per class</h2>
<table><tr><th>class</th><th>train</th><th>val</th><th>test</th></tr>
{_balance_rows(report)}
</table>
<h2>Files</h2>
<ul>{file_list}</ul>
<h2>Great Expectations' raw pages</h2>
<p class="note">{ge_note} Its pages are kept as the raw evidence, with their CDN styles and scripts removed so that
they open offline (plain tables, ✔/✘ for its icons).</p>
<ul>{ge_list}</ul>
</body></html>
"""


def write_page(report: dict[str, Any], report_dir: Path) -> Path:
    """Makes ``report_dir/data_docs`` offline and writes synthgate's page as its ``index.html``."""
    docs_dir = Path(report_dir) / "data_docs"
    docs_dir.mkdir(parents=True, exist_ok=True)
    pages = _ge_pages(report, docs_dir)
    files = [f for f in ("validation.json", "duplicates.csv", "leakage.csv") if (Path(report_dir) / f).exists()]
    index = docs_dir / "index.html"
    index.write_text(render(report, pages, files), encoding="utf-8")
    return index
