"""The whole synthesis pipeline run by ``kfp.local`` (each component in a subprocess, artifacts as
local paths) on tiny settings, against a real MLflow server: prepare -> validate -> train -> sample
-> evaluate -> gate -> register -> promote -> publish. Then again with the repository's strict
policy: the cached steps are reused, and promote fails the run with the gate's reasons."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.helpers import REPO, make_folder

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "kfp-local-generator"
STEPS = {"prepare", "validate", "train", "sample", "evaluate", "gate", "register", "promote", "publish"}
HAS_PUBLISH = importlib.util.find_spec("synthgate.publish.package") is not None
NO_PUBLISH = "synthgate.publish.package (the publish stage) is not in this checkout yet"

#: A real policy the tiny generator can meet: only the sample-count rules apply (every other rule
#: is switched off with null, which the gate record lists as not applied).
# Every rule off but the sample counts and one memorization rule that any measured value passes (a
# policy without a memorization rule fails by design).
PERMISSIVE_POLICY = {
    "memorization": dict.fromkeys(("min_planted_detection", "copy_excess_test", "max_pixel_median_shift",
                                   "max_membership_auc", "max_membership_auc_pixel")) | {"max_flagged_copies": 10_000},
    "utility": dict.fromkeys(("max_auc_gap", "max_delta_syn", "min_augmentation_gain", "max_augmentation_p",
                              "min_seeds", "min_resample_fraction")),
    "fidelity": dict.fromkeys(("max_fid_ratio", "min_precision", "min_recall")),
    "samples": {"min_synthetic_images": 100, "min_per_class": 10},
}


def _tiny_params(tmp: Path, source: Path) -> str:
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["data"]["source"].update(type="folder", path=str(source))
    p["prepare"].update(resolution=16, split={"val": 0.15, "test": 0.3, "seed": 0}, workers=1)
    p["train"].update(steps=20, batch_size=8, checkpoint_every=20, log_every=10, mlflow=False, device="cpu")
    p["sample"].update(per_class=34, steps=4, device="cpu")  # 102 images: the policy wants >= 100
    p["evaluate"]["device"] = "cpu"
    p["evaluate"]["encoder"].update(epochs=1, batch_size=32, cache_dir=str(tmp / "encoders"))
    p["evaluate"]["memorization"].update(planted=20, chunk=64, bootstrap=20, descriptor={
        "steps": 20, "batch_size": 32, "cache_dir": str(tmp / "encoders")})
    p["evaluate"]["utility"].update(epochs=1, batch_size=32, seeds=[0], settings=["real", "synthetic"])
    return json.dumps(p)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """kfp.local warns that resources and a non-Python image mean nothing locally: known."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Task .* have no effect", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"You may be attemping to run a task", category=RuntimeWarning)
        yield


def _run_dirs(root: Path) -> list[Path]:
    return sorted(root.glob("synthgate-synthesis-*"))


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, mlflow_server):
    from kfp import local
    from pipelines import synthesis

    tmp = tmp_path_factory.mktemp("kfp")
    source = make_folder(tmp / "raw", {"a": 100, "b": 100, "c": 100}, mixed=False)
    (tmp / "tmp").mkdir()
    old_tmpdir = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp / "tmp")  # the components' scratch folders (training checkpoints)
    root = tmp / "pipeline_root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=True)
    # cache_training: the second run (strict policy) reuses everything up to the evaluation
    pipe = synthesis.build(gpu=False, cache_training=True)
    params_json = _tiny_params(tmp, source)
    store = tmp / "store"
    # the gatekeeper decides under the policy an owner pinned for the model, not the pipeline's gate_policy_yaml:
    # the admin (an owner) creates the model and pins the permissive policy through the gatekeeper
    from synthgate.registry.client import connect
    from synthgate.registry.registry import pin_policy

    connect(mlflow_server).create_registered_model(MODEL)
    (tmp / "permissive.yaml").write_text(yaml.safe_dump(PERMISSIVE_POLICY))
    pin_policy(MODEL, tmp / "permissive.yaml", mlflow_server)
    start = time.perf_counter()
    try:
        with _quiet():
            pipe(params_json=params_json, gate_policy_yaml=yaml.safe_dump(PERMISSIVE_POLICY), auto_promote=True,
                 publish_store=str(store) if HAS_PUBLISH else "", tracking_uri=mlflow_server, model_name=MODEL,
                 checkpoint_uri=str(tmp / "checkpoints"))
        seconds = time.perf_counter() - start
        print(f"\nkfp.local synthesis pipeline: {seconds:.1f} s")
        yield SimpleNamespace(root=root, run=_run_dirs(root)[0], pipe=pipe, params_json=params_json, store=store,
                              uri=mlflow_server, seconds=seconds, checkpoints=tmp / "checkpoints")
    finally:
        if old_tmpdir is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_tmpdir


def _output(run: Path, step: str) -> dict:
    return json.loads((run / step / "executor_output.json").read_text())


def test_every_step_ran_and_succeeded(pipeline_run):
    ran = {p.name for p in pipeline_run.run.iterdir() if (p / "executor_output.json").exists()}
    assert ran == (STEPS if HAS_PUBLISH else STEPS - {"publish"})
    assert "is now @approved (gate passed)" in _output(pipeline_run.run, "promote")["parameterValues"]["Output"]


def test_train_step_mirrors_its_checkpoints_per_run(pipeline_run):
    """checkpoint_uri: the train step mirrors to <uri>/<scope of this run's task>/ (what a restarted pod
    resumes from)."""
    runs = [p for p in pipeline_run.checkpoints.iterdir() if p.is_dir()]
    assert len(runs) == 1 and len(runs[0].name) == 16
    names = sorted(p.name for p in (runs[0] / "checkpoints").iterdir())
    assert names and all(n.startswith("step_") for n in names)
    assert {n.removesuffix(".sha256") for n in names if n.endswith(".sha256")} == {n for n in names if n.endswith(".pt")}


def test_typed_artifacts(pipeline_run):
    run = pipeline_run.run
    prepared = _output(run, "prepare")["artifacts"]["dataset"]["artifacts"][0]["metadata"]
    assert prepared["num_images"] == 300 and prepared["classes"] == ["a", "b", "c"] and prepared["resolution"] == 16
    validated = _output(run, "validate")["artifacts"]
    assert (run / "validate/validated/manifest.json").exists()
    assert validated["report"]["artifacts"][0]["metadata"]["passed"] is True
    assert (run / "validate/data_docs").read_text().lstrip().lower().startswith("<!doctype html")
    model = _output(run, "train")["artifacts"]["generator"]["artifacts"][0]["metadata"]
    assert model["steps"] == 20 and model["type"] == "diffusion"
    assert (run / "train/generator/synthgate_generator.json").exists()
    assert not (run / "train/generator/checkpoints").exists()  # the Model artifact is the generator only
    synthetic = _output(run, "sample")["artifacts"]["synthetic"]["artifacts"][0]["metadata"]
    assert synthetic["num_images"] == 102 and synthetic["synthetic"] is True


def test_metrics_and_report(pipeline_run):
    run = pipeline_run.run
    ev = _output(run, "evaluate")["artifacts"]
    metrics = ev["metrics"]["artifacts"][0]["metadata"]
    for key in ("fid", "precision", "recall", "flagged_copies", "smallest_copy_p", "planted_min_detection",
                "membership_auc", "auc_real", "auc_synthetic", "auc_gap"):
        assert isinstance(metrics[key], float), key
    assert json.loads((run / "evaluate/metrics").read_text()) == metrics
    html = (run / "evaluate/report").read_text()
    assert "<h2>Summary</h2>" in html and len(html) > 10_000
    assert (run / "evaluate/evaluation/evaluation.json").exists()


def test_gate_decision(pipeline_run):
    run = pipeline_run.run
    gate = json.loads((run / "gate/gate/gate.json").read_text())
    assert gate["passed"] is True
    assert {r["rule"] for r in gate["rules"]} == {"samples.min_synthetic_images", "samples.min_per_class",
                                                  "memorization.max_flagged_copies"}
    assert "memorization.min_planted_detection" in gate["skipped"]
    out = _output(run, "gate")
    assert out["parameterValues"]["Output"] is True
    assert out["artifacts"]["metrics"]["artifacts"][0]["metadata"]["gate_passed"] == 1.0
    evaluation = json.loads((run / "evaluate/evaluation/evaluation.json").read_text())
    assert gate["evaluation_hash"] == evaluation["evaluation_hash"]
    # the KFP UI's HTML artifact of the gate step: the report with the verdict at the top
    html = (run / "gate/report").read_text()
    assert "Release gate: <span class=ok>PASSED</span>" in html and "<h2>Summary</h2>" in html


def test_registered_and_promoted_in_mlflow(pipeline_run):
    from mlflow.tracking import MlflowClient

    record = json.loads((pipeline_run.run / "register/registered/registered.json").read_text())
    assert record["name"] == MODEL
    client = MlflowClient(tracking_uri=pipeline_run.uri, registry_uri=pipeline_run.uri)
    mv = client.get_model_version(MODEL, record["version"])
    assert mv.tags["gate.passed"] == "true"
    assert client.get_registered_model(MODEL).aliases["approved"] == record["version"]
    assert _output(pipeline_run.run, "register")["parameterValues"]["Output"] == f"{MODEL}:{record['version']}"


@pytest.mark.skipif(not HAS_PUBLISH, reason=NO_PUBLISH)
def test_published_after_promotion(pipeline_run):
    run = pipeline_run.run
    publication = json.loads((run / "publish/publication").read_text())
    assert publication["num_images"] == 102
    assert publication["uri"] == _output(run, "publish")["parameterValues"]["Output"]
    files = [p for p in pipeline_run.store.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files), files


def test_strict_policy_fails_promotion_with_the_gate_reasons(pipeline_run, capfd):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=pipeline_run.uri, registry_uri=pipeline_run.uri)
    approved = client.get_registered_model(MODEL).aliases["approved"]
    from synthgate.registry.registry import pin_policy

    pin_policy(MODEL, Path("gates.yaml"), pipeline_run.uri)  # the owner pins the repository's policy
    capfd.readouterr()
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"Inner task failed: .*promote"), _quiet():
        pipeline_run.pipe(params_json=pipeline_run.params_json, auto_promote=True,  # default: gates.yaml
                          publish_store=str(pipeline_run.store), tracking_uri=pipeline_run.uri, model_name=MODEL,
                          checkpoint_uri=str(pipeline_run.checkpoints))  # the same train inputs: cached
    print(f"\nkfp.local strict rerun: {time.perf_counter() - start:.1f} s")
    out = capfd.readouterr().out
    assert "failed its gate under the pinned policy" in out and "not released" in out
    assert "utility.min_seeds" in out  # one utility seed: the strict policy wants 3
    second = _run_dirs(pipeline_run.root)[-1]
    assert second != pipeline_run.run
    ran = {p.name for p in second.iterdir() if p.is_dir()}  # a step that failed or came from the cache: no folder
    assert ran == {"gate", "register"}, "prepare..evaluate come from the cache; promote fails; publish never runs"
    gate = json.loads((second / "gate/gate/gate.json").read_text())
    assert gate["passed"] is False
    html = (second / "gate/report").read_text()
    assert "Release gate: <span class=bad>FAILED</span>" in html
    assert all(r["rule"] in html for r in gate["rules"] if not r["passed"])
    record = json.loads((second / "register/registered/registered.json").read_text())
    assert client.get_model_version(MODEL, record["version"]).tags["gate.passed"] == "false"
    assert client.get_registered_model(MODEL).aliases["approved"] == approved  # unchanged
