"""A reader study as evidence in an evaluation (``evaluate.reader_study``): the study folder is
analyzed again (its key verified against study.json, its answers read from SQLite, so an edited
``reader_study.json`` counts for nothing), it must show the evaluated synthetic set beside the
evaluated real dataset's test split, and its numbers go into ``evaluation.json``'s ``readers``
section, where the gate rule ``fidelity.max_reader_accuracy`` reads them. The readers' names stay
in the study folder: the evaluation, which is registered and may be published, names them
``reader 1``, ``reader 2``, ... in the order they were added.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from synthgate.errors import DataError


def reader_evidence(study_dir: Path, real_hash: str, synthetic_hash: str) -> dict[str, Any]:
    """The ``readers`` section of an evaluation of ``synthetic_hash`` against ``real_hash``."""
    from synthgate.evaluation.readers.analyze import analyze_study
    from synthgate.evaluation.readers.bound import accuracy_bound
    from synthgate.evaluation.readers.study import load_study

    study_dir = Path(study_dir)
    study = load_study(study_dir)
    shown = {"real": (study.manifest.get("real") or {}).get("content_hash"),
             "synthetic": (study.manifest.get("synthetic") or {}).get("content_hash")}
    for what, evaluated in (("synthetic", synthetic_hash), ("real", real_hash)):
        if shown[what] != evaluated:
            raise DataError(
                f"{study_dir}: the reader study shows the {what} dataset {str(shown[what])[:16]}, but this evaluation "
                f"is of the {what} dataset {evaluated[:16]}: its readers judged other images",
                hint="create a study from the evaluated datasets (`synthgate reader-study create --real ... "
                     "--synthetic ...`), or evaluate the datasets the study shows")
    result = analyze_study(study)  # refuses an edited key and a study no reader finished
    names = {name: f"reader {k + 1}" for k, name in enumerate(result["correct"])}
    correct = list(result["correct"].values())
    bound = accuracy_bound(correct, 0.95) if len(correct) >= 2 else None
    return {
        "study": str(study_dir), "study_sha256": hashlib.sha256((study_dir / "study.json").read_bytes()).hexdigest(),
        "key_sha256": result["key_sha256"], "n_images": result["n_images"], "n_real": result["n_real"],
        "display_size": result["display_size"], "resolution": result["resolution"],
        "readers_added": result["readers_added"], "readers_finished": result["readers_finished"],
        "per_reader": {names[n]: v for n, v in result["per_reader"].items()},
        "accuracy": result["accuracy"], "confusion_mean": result["confusion_mean"], "per_class": result["per_class"],
        "most_called_synthetic": result["most_called_synthetic"],
        "correct": correct,  # readers x images, 1 = right: the gate recomputes its bound from this
        "accuracy_bound_95": bound,
    }
