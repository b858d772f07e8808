"""What the readers' answers say (dumontschutte2021 S.8, S.10): per reader the true reals (TR, a real
image called real), false reals (FR, a synthetic image called real), true synthetics (TS) and false
synthetics (FS, a real image called synthetic), accuracy (TR + TS) / N; over the readers who finished,
the mean and standard deviation of the accuracies and, with at least ``MIN_READERS_FOR_TEST``, the
one-sided Wilcoxon signed-rank test of accuracy > 0.5 (readers tell synthetic from real better than
chance). A large p-value is absence of evidence at this number of readers, not proof that the images
are indistinguishable: the t interval of the mean accuracy says how close to 0.5 it is pinned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from synthgate.errors import DataError
from synthgate.evaluation.readers.store import Answers
from synthgate.evaluation.readers.study import Study, load_study
from synthgate.utils import write_json_atomic

MIN_READERS_FOR_TEST = 5
RESULT = "reader_study.json"


def confusion(key: dict[str, dict[str, Any]], answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    tr = sum(key[i]["real"] and a["answer"] == "real" for i, a in answers.items())
    fs = sum(key[i]["real"] and a["answer"] == "synthetic" for i, a in answers.items())
    fr = sum(not key[i]["real"] and a["answer"] == "real" for i, a in answers.items())
    ts = sum(not key[i]["real"] and a["answer"] == "synthetic" for i, a in answers.items())
    n = tr + fs + fr + ts
    return {"TR": tr, "FR": fr, "TS": ts, "FS": fs, "n": n, "accuracy": (tr + ts) / n if n else None}


def _right(truth: dict[str, Any], answer: dict[str, Any] | None) -> bool:
    return answer is not None and answer["answer"] == ("real" if truth["real"] else "synthetic")


def _pooled(key: dict[str, dict[str, Any]], per_reader: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """TR/FR/TS/FS and accuracy of ``key``'s images, summed over the readers' answers."""
    parts = [confusion(key, {i: a for i, a in answers.items() if i in key}) for answers in per_reader]
    out: dict[str, Any] = {k: sum(p[k] for p in parts) for k in ("TR", "FR", "TS", "FS", "n")}
    out["accuracy"] = (out["TR"] + out["TS"]) / out["n"] if out["n"] else None
    return out


def _group_stats(right: np.ndarray, n: np.ndarray) -> dict[str, Any]:
    """Over readers with ``right`` correct answers of ``n`` each."""
    from scipy import stats

    acc = right / n
    out: dict[str, Any] = {"readers": int(len(acc)), "mean": float(acc.mean()),
                           "std": float(acc.std(ddof=1)) if len(acc) > 1 else None}
    if len(acc) > 1:
        half = float(stats.t.ppf(0.975, len(acc) - 1) * acc.std(ddof=1) / np.sqrt(len(acc)))
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
        out["ci95_note"] = "a t interval over the readers, for this set of images (not over draws of images)"
    # on whole numbers, so that readers equally far from chance tie exactly (0.56 - 0.5 != 0.5 - 0.44 in floats)
    diff = (2 * right - n).astype(np.int64)
    nonzero = int((diff != 0).sum())
    out["readers_at_chance"] = int(len(diff) - nonzero)
    if nonzero >= MIN_READERS_FOR_TEST:
        w = stats.wilcoxon(diff, alternative="greater", zero_method="wilcox")
        out["wilcoxon"] = {"alternative": "accuracy > 0.5 (readers tell synthetic from real better than chance)",
                           "statistic": float(w.statistic), "p": float(w.pvalue), "readers_tested": nonzero,
                           "zero_method": "wilcox (readers at exactly 0.5 are left out)"}
    else:
        out["wilcoxon"] = None
        out["note"] = (f"{nonzero} reader(s) away from exactly 0.5 (of {len(acc)} finished): fewer than "
                       f"{MIN_READERS_FOR_TEST}, so no test; accuracy and spread only (the paper tested with 9 and 11 "
                       "readers and reported accuracy and spread with 5)")
    return out


def analyze_study(study: Study | Path, out: Path | None = None, top: int = 10, write: bool = True) -> dict[str, Any]:
    """The study's result, written to ``out`` (default: ``reader_study.json`` in the study folder)
    unless ``write`` is false."""
    st = study if isinstance(study, Study) else load_study(Path(study))
    key = st.key()  # refuses an edited key
    store = Answers(st)
    try:
        readers, answers = store.readers(), store.all_answers()
    finally:
        store.close()
    finished = [r for r in readers if r.finished]
    if not finished:
        progress = ", ".join(f"{r.name} {r.answered}/{len(r.order)}" for r in readers) or "no readers added"
        raise DataError(f"{st.root}: no reader has finished the study ({len(finished)} of {len(readers)}; "
                        f"{progress})", hint="analyze once at least one reader has answered every image")
    per_reader = {r.name: confusion(key, answers.get(r.name, {})) for r in finished}
    right = np.array([v["TR"] + v["TS"] for v in per_reader.values()], np.int64)
    n = np.array([v["n"] for v in per_reader.values()], np.int64)
    classes = sorted({v["class"] for v in key.values()})
    per_class = {}
    for c in classes:
        sub = {i: v for i, v in key.items() if v["class"] == c}
        per_class[c] = _pooled(sub, [answers.get(r.name, {}) for r in finished])
    called_synthetic = []
    for i, v in key.items():
        votes = [answers.get(r.name, {}).get(i, {}).get("answer") for r in finished]
        called_synthetic.append({"image_id": i, "real": v["real"], "class": v["class"],
                                 "synthetic_votes": sum(x == "synthetic" for x in votes), "readers": len(votes)})
    called_synthetic.sort(key=lambda x: (-x["synthetic_votes"], x["image_id"]))
    result = {
        "study": str(st.root), "n_images": len(key), "n_real": sum(v["real"] for v in key.values()),
        "readers_added": len(readers), "readers_finished": len(finished),
        "unfinished": {r.name: f"{r.answered}/{len(r.order)}" for r in readers if not r.finished},
        "per_reader": per_reader, "accuracy": _group_stats(right, n),
        "confusion_mean": {k: float(np.mean([v[k] for v in per_reader.values()])) for k in ("TR", "FR", "TS", "FS")},
        "per_class": per_class, "most_called_synthetic": called_synthetic[:top],
        "synthetic": st.manifest.get("synthetic"), "real": st.manifest.get("real"),
        "display_size": st.manifest.get("display_size"), "resolution": st.manifest.get("resolution"),
        "key_sha256": st.manifest.get("key_sha256"),
        # per finished reader, 1 where the answer was right, in study.json's image order (the gate's bounds
        # and per-reader tests are computed from it)
        "correct": {r.name: [int(_right(key[i], answers.get(r.name, {}).get(i))) for i in st.ids] for r in finished},
    }
    if write:
        write_json_atomic(Path(out) if out else st.root / RESULT, result)
    return result


def read_result(path: Path) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text()))
