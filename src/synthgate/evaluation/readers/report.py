"""The reader-study section of the evaluation report (both reports: it shows numbers and opaque
image ids, never an image)."""

from __future__ import annotations

import html
from typing import Any

from synthgate.evaluation.report import _fmt, _table


def readers_section(r: dict[str, Any] | None) -> list[str]:
    out = ["<h2>Reader study</h2>"]
    if not r:
        return out + ["<p>not run (evaluate.reader_study: a study folder from `synthgate reader-study create`, "
                      "served and answered, then given to `synthgate evaluate --reader-study`)</p>"]
    a = r["accuracy"]
    b = r.get("accuracy_bounds_95") or {}
    out.append(
        f"<p class=note>dumontschutte2021 S.8: readers labelled {r['n_images']} images ({r['n_real']} real images of "
        f"the real test split, the rest from this synthetic set; readers were not told the mix) as real or "
        f"synthetic, one at a time at {r['display_size']} px. TR: a real image called real, FR: a synthetic image "
        "called real, TS: a synthetic image called synthetic, FS: a real image called synthetic; accuracy (TR + TS) "
        f"/ N, 0.5 is chance. {r['readers_finished']} of {r['readers_added']} readers finished (only they count). "
        f"Study {html.escape(str(r['study_sha256'])[:16])}, key {html.escape(str(r['key_sha256'])[:16])}.</p>")
    out.append(_table([[name, v["TR"], v["FR"], v["TS"], v["FS"], v["accuracy"]] for name, v in r["per_reader"].items()],
                      ["reader", "TR", "FR", "TS", "FS", "accuracy"]))
    w = a.get("wilcoxon")
    test = (f"one-sided Wilcoxon signed-rank test of accuracy &gt; 0.5: p = {_fmt(w['p'])} ({w['readers_tested']} "
            "readers away from exactly 0.5)" if w else html.escape(a.get("note", "")))
    ci = a.get("ci95")
    out.append(
        f"<p>Mean accuracy <b>{_fmt(a['mean'], 3)}</b>" + (f" ± {_fmt(a['std'], 3)} (sd over readers)" if a.get("std")
                                                          is not None else "")
        + (f", 95% t interval over readers [{_fmt(ci[0], 3)}, {_fmt(ci[1], 3)}]" if ci else "") + f"; {test}. "
        + (f"One-sided 0.95 bounds over readers and images: <b>[{_fmt(b.get('lower'), 3)}, "
           f"{_fmt(b.get('upper'), 3)}]</b> (the gate's rule fidelity.max_reader_accuracy recomputes them at its "
           "policy's level)." if b else "") + "</p>")
    out.append("<p class=note>A large p-value is absence of evidence at this number of readers, not proof that the "
               "images are indistinguishable; the bounds say how far from chance the readers may still be. An accuracy well below 0.5 "
               "means the readers took synthetic images for real more often than real ones: they tell the two "
               "apart with the labels swapped, so the gate's rule bounds it from both sides.</p>")
    out.append(_table([[c, v["TR"], v["FR"], v["TS"], v["FS"], v["accuracy"]] for c, v in r["per_class"].items()],
                      ["class (pooled over readers)", "TR", "FR", "TS", "FS", "accuracy"]))
    out.append(_table([["real" if x["real"] else "synthetic", x["class"],
                        f"{x['synthetic_votes']} / {x['readers']}"] for x in r["most_called_synthetic"]],
                      ["most often called synthetic: truth", "class", "'synthetic' votes"]))
    return out
