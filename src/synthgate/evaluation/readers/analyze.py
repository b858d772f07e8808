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


def _group_stats(acc: np.ndarray) -> dict[str, Any]:
    from scipy import stats

    out: dict[str, Any] = {"readers": int(len(acc)), "mean": float(acc.mean()),
                           "std": float(acc.std(ddof=1)) if len(acc) > 1 else None}
    if len(acc) > 1:
        half = float(stats.t.ppf(0.975, len(acc) - 1) * acc.std(ddof=1) / np.sqrt(len(acc)))
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
    if len(acc) >= MIN_READERS_FOR_TEST:
        diff = acc - 0.5
        if np.all(diff == 0):
            out["wilcoxon"] = {"alternative": "accuracy > 0.5", "statistic": 0.0, "p": 1.0}
        else:
            w = stats.wilcoxon(diff, alternative="greater", zero_method="wilcox")
            out["wilcoxon"] = {"alternative": "accuracy > 0.5", "statistic": float(w.statistic), "p": float(w.pvalue)}
    else:
        out["wilcoxon"] = None
        out["note"] = (f"{len(acc)} reader(s) finished: fewer than {MIN_READERS_FOR_TEST}, so no test (as the paper "
                       "does); accuracy and spread only")
    return out


def analyze_study(study: Study | Path, out: Path | None = None, top: int = 10) -> dict[str, Any]:
    """The study's result, written to ``out`` (default: ``reader_study.json`` in the study folder)."""
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
    acc = np.array([v["accuracy"] for v in per_reader.values()], np.float64)
    classes = sorted({v["class"] for v in key.values()})
    per_class = {}
    for c in classes:
        ids = {i for i, v in key.items() if v["class"] == c}
        right = [(a["answer"] == "real") == key[i]["real"] for r in finished
                 for i, a in answers.get(r.name, {}).items() if i in ids]
        per_class[c] = {"accuracy": float(np.mean(right)) if right else None, "answers": len(right)}
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
        "per_reader": per_reader, "accuracy": _group_stats(acc),
        "confusion_mean": {k: float(np.mean([v[k] for v in per_reader.values()])) for k in ("TR", "FR", "TS", "FS")},
        "per_class": per_class, "most_called_synthetic": called_synthetic[:top],
        "synthetic": st.manifest.get("synthetic"), "display_size": st.manifest.get("display_size"),
        "resolution": st.manifest.get("resolution"),
    }
    write_json_atomic(Path(out) if out else st.root / RESULT, result)
    return result


def read_result(path: Path) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text()))
