"""A reader study as evidence in an evaluation (``evaluate.reader_study``): the study folder is
analyzed again (its key verified against study.json, its answers read from SQLite, so an edited
``reader_study.json`` counts for nothing), and it is bound to the evaluated datasets image by image:
every image of the key must come from the evaluated real dataset's test split or from the evaluated
synthetic set, at the index the key names, and the PNG the readers saw must hold that image's
pixels. Its numbers go into ``evaluation.json``'s ``readers`` section, where the gate rule
``fidelity.max_reader_accuracy`` reads them. The readers' names stay in the study folder: the
evaluation, which is registered and may be published, names them ``reader 1``, ``reader 2``, ... in
the order they were added, and lists the images most often called synthetic without their ids (the
key of a study that goes on stays unknown to readers who can read the registry).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from synthgate.errors import DataError

HINT = ("create a study from the evaluated datasets (`synthgate reader-study create --real ... --synthetic ...`), "
        "or evaluate the datasets the study shows")


def _check_images(study: Any, key: dict[str, dict[str, Any]], real: Any, syn: Any) -> None:
    """Every image of the study is the evaluated datasets' image the key names (see the module docstring)."""
    from PIL import Image

    test = set(real.split_indices("test").tolist())
    for image_id, entry in key.items():
        ds, what = (real, "real") if entry["real"] else (syn, "synthetic")
        i = int(entry["index"])
        where = f"{study.root}: image {image_id}"
        if entry.get("dataset_content_hash") != ds.content_hash:
            raise DataError(f"{where} comes from dataset {str(entry.get('dataset_content_hash'))[:16]}, not from the "
                            f"evaluated {what} dataset {ds.content_hash[:16]}: its readers judged other images",
                            hint=HINT)
        if not 0 <= i < len(ds.meta) or (entry["real"] and i not in test):
            raise DataError(f"{where}: index {i} is not an image of the evaluated {what} dataset"
                            + ("'s test split" if entry["real"] else ""), hint=HINT)
        shown = np.asarray(Image.open(study.root / "images" / f"{image_id}.png"))
        if not np.array_equal(shown.reshape(np.asarray(ds.images[i]).shape), np.asarray(ds.images[i])):
            raise DataError(f"{where}: the PNG the readers saw is not image {i} of the evaluated {what} dataset",
                            hint="a study's images are never edited; create a new study")


def reader_evidence(study_dir: Path, real: Any, syn: Any) -> dict[str, Any]:
    """The ``readers`` section of an evaluation of the canonical dataset ``syn`` against ``real``."""
    from synthgate.evaluation.readers.analyze import analyze_study
    from synthgate.evaluation.readers.bound import accuracy_bound
    from synthgate.evaluation.readers.study import load_study

    study_dir = Path(study_dir)
    study = load_study(study_dir)
    shown = {"real": (study.manifest.get("real") or {}).get("content_hash"),
             "synthetic": (study.manifest.get("synthetic") or {}).get("content_hash")}
    for what, evaluated in (("synthetic", syn.content_hash), ("real", real.content_hash)):
        if shown[what] != evaluated:
            raise DataError(
                f"{study_dir}: the reader study shows the {what} dataset {str(shown[what])[:16]}, but this evaluation "
                f"is of the {what} dataset {evaluated[:16]}: its readers judged other images", hint=HINT)
    _check_images(study, study.key(), real, syn)  # key() refuses a key that does not match study.json
    result = analyze_study(study, write=False)  # refuses a study no reader finished
    names = {name: f"reader {k + 1}" for k, name in enumerate(result["correct"])}
    correct = list(result["correct"].values())
    return {
        "study": str(study_dir), "study_sha256": hashlib.sha256((study_dir / "study.json").read_bytes()).hexdigest(),
        "key_sha256": result["key_sha256"], "n_images": result["n_images"], "n_real": result["n_real"],
        "display_size": result["display_size"], "resolution": result["resolution"],
        "readers_added": result["readers_added"], "readers_finished": result["readers_finished"],
        "per_reader": {names[n]: v for n, v in result["per_reader"].items()},
        "accuracy": result["accuracy"], "confusion_mean": result["confusion_mean"], "per_class": result["per_class"],
        "most_called_synthetic": [{k: v for k, v in x.items() if k != "image_id"}
                                  for x in result["most_called_synthetic"]],
        "correct": correct,  # readers x images, 1 = right: the gate recomputes its bounds and tests from this
        "accuracy_bounds_95": accuracy_bound(correct, 0.95) if len(correct) >= 2 else None,
    }
