"""A catalogue of bad inputs across the commands (issue #35): each one is answered by a message that names
what is wrong and what to do, exit status 2, and never "unexpected error". More bad inputs, with their own
set-up, live in test_cli_bad_input.py, test_prepare_fuzz.py and the stage tests; this file holds the ones a
table can state."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import make_folder


def _write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (tmp / name).write_bytes(content)
        else:
            (tmp / name).write_text(content)
    return setup


def _truncated_npz(tmp: Path) -> None:
    np.savez(tmp / "full.npz", train_images=np.zeros((20, 8, 8), np.uint8), train_labels=np.zeros((20, 1), np.uint8))
    data = (tmp / "full.npz").read_bytes()
    (tmp / "cut.npz").write_bytes(data[: len(data) // 2])


def _npz_3d_labels(tmp: Path) -> None:
    np.savez(tmp / "odd.npz", train_images=np.zeros((20, 8, 8), np.uint8),
             train_labels=np.zeros((20, 2, 2), np.uint8))


def _folder(tmp: Path) -> None:
    make_folder(tmp / "raw", {"a": 6, "b": 6}, mixed=False)


def _zip_with_text(tmp: Path) -> None:
    with zipfile.ZipFile(tmp / "notes.zip", "w") as z:
        z.writestr("readme.txt", "no images here")


def _evaluation(**over) -> str:
    return json.dumps({"format": "synthgate.evaluation/v1", **over})


# id, set-up, command, what the message must say (all of it, whitespace collapsed)
CASES: list[tuple[str, Callable[[Path], None] | None, list[str], list[str]]] = [
    ("npz-random-bytes", _write("bad.npz", bytes(range(256)) * 8), ["prepare", "--source", "bad.npz"],
     ["bad.npz: not an .npz file", "not a zip archive", "hint: download or copy the file again"]),
    ("npz-truncated", _truncated_npz, ["prepare", "--source", "cut.npz"], ["cut.npz: not an .npz file"]),
    ("npz-empty-file", _write("empty.npz", b""), ["prepare", "--source", "empty.npz"],
     ["empty.npz: not an .npz file"]),
    ("npz-3d-labels", _npz_3d_labels, ["prepare", "--source", "odd.npz"],
     ["odd.npz: train_labels has shape (20, 2, 2); expected (N,) or (N, 1), one class index per image"]),
    ("source-missing", None, ["prepare", "--source", "nowhere"],
     ["nowhere: no such file or directory", "hint: check --source"]),
    ("zip-without-images", _zip_with_text, ["prepare", "--source", "notes.zip"],
     ["notes.zip: no image files found", "hint: expected one sub-folder per class"]),
    ("channels-2", _folder, ["prepare", "--source", "raw", "--channels", "2"],
     ["the command-line value of prepare.channels: Input should be 1 or 3", "hint: fix the option's value"]),
    ("train-steps-negative", None, ["train", "--steps", "-5"],
     ["the command-line value of train.steps: Input should be greater than or equal to 1"]),
    ("train-batch-zero", None, ["train", "--batch-size", "0"], ["the command-line value of train.batch_size"]),
    ("params-missing", None, ["train", "--params", "nope.yaml"],
     ["nope.yaml: params file not found", "hint: pass --params PATH or create params.yaml"]),
    ("params-not-yaml", _write("p.yaml", "train: [\n"), ["train", "--params", "p.yaml"], ["p.yaml: not valid YAML"]),
    ("params-not-a-mapping", _write("p.yaml", "- 1\n- 2\n"), ["train", "--params", "p.yaml"],
     ["p.yaml: top level must be a mapping of sections"]),
    ("params-misspelt-section", _write("p.yaml", "sampel:\n  steps: 3\n"), ["train", "--params", "p.yaml"],
     ["p.yaml: sampel: Extra inputs are not permitted", "hint: fix the setting(s) above in p.yaml"]),
    ("params-bad-value", _write("p.yaml", "train:\n  steps: many\n"), ["train", "--params", "p.yaml"],
     ["p.yaml: train.steps: Input should be a valid integer"]),
    ("train-dataset-missing", None, ["train", "--dataset", "nodata"],
     ["nodata: no such dataset folder", "hint: run `synthgate prepare`"]),
    ("train-dataset-not-canonical", _folder, ["train", "--dataset", "raw"],
     ["raw: not a synthgate dataset (images.npy missing)"]),
    ("validate-dataset-missing", None, ["validate", "--dataset", "nodata"], ["nodata: no such dataset folder"]),
    ("evaluate-real-missing", None, ["evaluate", "--real", "nodata", "--synthetic", "nosyn"],
     ["nodata: no such dataset folder"]),
    ("sample-not-a-model", _folder, ["sample", "--model", "raw"], ["not a synthgate generator"]),
    ("gate-evaluation-missing", None, ["gate", "--evaluation", "nope.json"],
     ["nope.json: evaluation not found", "hint: run `synthgate evaluate` first"]),
    ("gate-evaluation-empty", _write("e.json", ""), ["gate", "--evaluation", "e.json"],
     ["e.json: not valid JSON", "damaged or truncated"]),
    ("gate-evaluation-other-format", _write("e.json", _evaluation(format="something/v9")),
     ["gate", "--evaluation", "e.json"], ["e.json: not a synthgate evaluation"]),
    ("gate-policy-missing", _write("e.json", _evaluation()), ["gate", "--evaluation", "e.json", "--policy", "no.yaml"],
     ["no.yaml: gate policy not found", "hint: pass --policy gates.yaml"]),
    ("gate-policy-unknown-rule", lambda t: (_write("e.json", _evaluation())(t),
                                            _write("g.yaml", "utility:\n  max_auc_gapp: 0.1\n")(t)),
     ["gate", "--evaluation", "e.json", "--policy", "g.yaml"], ["utility.max_auc_gapp"]),
    ("pull-bad-reference", None, ["pull", "x:y:z", "--to", "out", "--store", "store"],
     ["dataset version 'y:z' is not allowed"]),
    ("pull-store-missing", None, ["pull", "mednist-synthetic", "--to", "out", "--store", "nostore"],
     ["nostore: no dataset store here (the folder does not exist)", "hint: give --store"]),
    ("datasets-store-missing", None, ["datasets", "--store", "nostore"],
     ["nostore: no dataset store here (the folder does not exist)"]),
    ("publish-no-record", None, ["publish"], ["no registered.json", "hint: name the registered model"]),
    ("promote-without-version", None, ["promote", "only-a-name"], ["Missing argument 'version'"]),
]


@pytest.mark.parametrize("case, setup, args, needles", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_named_with_what_to_do(tmp_path, cli, case, setup, args, needles):
    if setup is not None:
        setup(tmp_path)
    code, out, err = cli(*args, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": None, "SYNTHGATE_SOURCE_PATH": None})
    assert code == 2, (case, code, out, err)
    assert "unexpected" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (case, needle, err)
    # a refused command writes nothing where its output would go
    assert not (tmp_path / "data" / "prepared").exists() and not (tmp_path / "models").exists()

