"""Command-line and pipeline overrides on top of the project's own params.yaml: a source path given
without a type is detected (an .npz is not read as the MedNIST of params.yaml), ``synthgate sample
--match-real``/``--total``/``--per-class`` clear the file's conflicting settings, and ingesting the
same source twice gives the same DVC-tracked output."""

from __future__ import annotations

import json

import pytest

from synthgate.config import CLEAR, load_params
from synthgate.errors import ConfigError
from tests.helpers import REPO, make_npz, run_cli

PARAMS = REPO / "params.yaml"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SYNTHGATE_SOURCE_PATH": None}


# --------------------------------------------------------------------------------------------
# data source


def _mednist_params(tmp_path):
    """The project's params.yaml with the source type fixed to mednist (as it shipped before)."""
    text = PARAMS.read_text()
    assert "    type: auto " in text
    path = tmp_path / "params-mednist.yaml"
    path.write_text(text.replace("    type: auto ", "    type: mednist ", 1))
    assert load_params(path).data.source.type == "mednist"
    return path


def test_source_path_override_resets_the_type_to_auto(tmp_path):
    fixed = _mednist_params(tmp_path)
    assert load_params(fixed, {"data.source.path": "x.npz"}).data.source.type == "auto"
    assert load_params(fixed, {"data.source.path": "x", "data.source.type": "dicom"}).data.source.type == "dicom"
    assert load_params(fixed, {"data.source.path": None}).data.source.type == "mednist"  # not given: as in the file


@pytest.mark.parametrize("params_file", ["project", "mednist"])
def test_prepare_npz_through_the_cli(tmp_path, params_file):
    params = PARAMS if params_file == "project" else _mednist_params(tmp_path)
    make_npz(tmp_path / "pneumoniamnist.npz", {"train": 6, "val": 2, "test": 2})
    r = run_cli("prepare", "--params", str(params), "--source", "pneumoniamnist.npz", "--resolution", "16",
                "--out", "ds", cwd=tmp_path, env=ONE_THREAD)
    assert r.code == 0, r.output
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["classes"] == ["normal", "pneumonia"] and m["num_images"] == 10
    assert m["config"]["source"]["type"] == "auto"


def test_ingest_npz_records_medmnist_and_is_reproducible(tmp_path):
    make_npz(tmp_path / "pneumoniamnist.npz", {"train": 6, "val": 2, "test": 2})
    params = str(_mednist_params(tmp_path))
    r = run_cli("ingest", "--params", params, "--source", "pneumoniamnist.npz", "--out", "raw", cwd=tmp_path,
                env=ONE_THREAD)
    assert r.code == 0, r.output
    assert "(medmnist)" in r.stdout
    first = (tmp_path / "raw" / "ingest.json").read_text()
    rec = json.loads(first)
    assert rec["type"] == "medmnist" and rec["path"] == "pneumoniamnist.npz"
    assert "ingested" not in rec  # no timestamp: the DVC-tracked output depends on the data only
    r = run_cli("ingest", "--params", params, "--source", "pneumoniamnist.npz", "--out", "raw", cwd=tmp_path,
                env=ONE_THREAD)
    assert r.code == 0, r.output
    assert (tmp_path / "raw" / "ingest.json").read_text() == first
    # prepare reads the ingest folder as the source it holds
    r = run_cli("prepare", "--params", params, "--source", "raw", "--resolution", "16", "--out", "ds",
                cwd=tmp_path, env=ONE_THREAD)
    assert r.code == 0, r.output
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["num_images"] == 10


def test_pipeline_source_uri_is_detected(tmp_path):
    from synthgate.kubeflow.io import params_json, source_params

    npz = make_npz(tmp_path / "breastmnist.npz", {"train": 4, "val": 2, "test": 2})
    text = params_json(load_params(_mednist_params(tmp_path)))
    p = source_params(text, str(npz))
    assert p.data.source.type == "auto" and p.data.source.path == npz
    assert source_params(text, str(npz), overrides={"data.source.type": "medmnist"}).data.source.type == "medmnist"
    assert source_params(text, "").data.source.type == "mednist"  # no source_uri: params_json as it is

    from synthgate.data.sources import read_source

    data = read_source(p.data.source)
    assert data.kind == "medmnist" and data.classes == ["malignant", "normal, benign"] and len(data.items) == 8


# --------------------------------------------------------------------------------------------
# how many images to sample


def test_clear_sets_a_setting_to_null():
    assert load_params(PARAMS).sample.per_class == 50
    p = load_params(PARAMS, {"sample.per_class": CLEAR, "sample.match_real": True})
    assert p.sample.per_class is None and p.sample.match_real
    with pytest.raises(ConfigError, match="set either per_class or match_real, not both"):
        load_params(PARAMS, {"sample.match_real": True})


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """An (untrained) tiny diffusion model saved as `synthgate train` does, and its real dataset."""
    import torch

    from synthgate.generators.diffusion import DiffusionTask
    from tests.unit.generators_helpers import make_dataset, quick, single_thread, tiny

    root = tmp_path_factory.mktemp("generator")
    real = make_dataset(root / "real", {"lung": 10, "bone": 5}, val_every=5)  # train: 8 lung, 4 bone
    with single_thread():
        torch.manual_seed(0)
        task = DiffusionTask(tiny(), quick(), 16, 1, 2, torch.device("cpu"))
        model = task.save(root / "model", task.ema_module(), classes=real.classes,
                          dataset_hash=real.content_hash, step=1)
    return model, real.root


def _sample(tmp_path, generator, *args):
    model, real = generator
    return run_cli("sample", "--params", str(PARAMS), "--model", str(model), "--real", str(real), "--out", "s",
                   "--steps", "2", "--device", "cpu", *args, cwd=tmp_path, env=ONE_THREAD)


def _counts(tmp_path):
    return json.loads((tmp_path / "s" / "manifest.json").read_text())["counts"]["train"]


@pytest.mark.parametrize(("args", "counts"), [
    (["--match-real"], {"lung": 8, "bone": 4}),
    (["--match-real", "--total", "6"], {"lung": 4, "bone": 2}),
    (["--total", "3"], {"lung": 2, "bone": 1}),
    (["--per-class", "2"], {"lung": 2, "bone": 2}),
])
def test_sample_counts_from_the_command_line(tmp_path, generator, args, counts):
    r = _sample(tmp_path, generator, *args)
    assert r.code == 0, r.output
    assert _counts(tmp_path) == counts


def test_sample_per_class_clears_match_real_of_the_params_file(tmp_path, generator):
    text = PARAMS.read_text()
    assert "  per_class: 50 " in text and "  match_real: false" in text
    matched = tmp_path / "params.yaml"
    matched.write_text(text.replace("  per_class: 50 ", "  per_class: null ", 1)
                       .replace("  match_real: false", "  match_real: true\n  total: 6", 1))
    model, real = generator
    base = ["sample", "--params", str(matched), "--model", str(model), "--real", str(real), "--out", "s",
            "--steps", "2", "--device", "cpu"]
    r = run_cli(*base, "--per-class", "1", cwd=tmp_path, env=ONE_THREAD)
    assert r.code == 0, r.output
    assert _counts(tmp_path) == {"lung": 1, "bone": 1}
    r = run_cli(*base, "--per-class-only", cwd=tmp_path, env=ONE_THREAD)  # which per_class? none in the file
    assert r.code != 0 and "Traceback" not in r.output
    assert "sample: set per_class" in " ".join(r.stderr.split())


def test_sample_contradictory_options_are_refused(tmp_path, generator):
    r = _sample(tmp_path, generator, "--match-real", "--per-class", "2")
    assert r.code != 0 and "Traceback" not in r.output
    assert "set either per_class or match_real, not both" in " ".join(r.stderr.split())
    r = _sample(tmp_path, generator, "--per-class-only", "--total", "5")
    assert r.code != 0 and "total applies with match_real: true only" in " ".join(r.stderr.split())
