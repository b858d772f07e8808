"""The registry against a real MLflow server (SQLite + local artifacts on 127.0.0.1): a passing
version gets the alias; a failing one is refused and the alias stays; an override is recorded;
an evaluation changed after gating is caught at promote time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthgate.errors import DataError
from synthgate.gates.decision import gate
from synthgate.gates.policy import GatePolicy
from synthgate.registry.client import RegistryUnavailable, connect
from synthgate.registry.registry import PromotionRefused, list_versions, promote, register
from tests.unit.test_gates import _evaluation

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def server(mlflow_server):
    return mlflow_server


def _free_port() -> int:
    from synthgate.registry.server import free_port

    return free_port()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from synthgate.generators.config import GeneratorConfig
    from synthgate.generators.diffusion import build_scheduler, build_unet
    from synthgate.generators.model import save_generator

    gcfg = GeneratorConfig(type="diffusion", size="tiny")
    out = tmp_path_factory.mktemp("gen") / "model"
    save_generator(out, build_unet(gcfg, 16, 1, 2), gcfg, resolution=16, channels=1, classes=["a", "b"],
                   dataset_hash="d" * 64, step=1, scheduler=build_scheduler(gcfg))
    return out


def _gated(tmp: Path, tag: str, **over) -> tuple[Path, Path]:
    d = tmp / tag
    d.mkdir()
    e = _evaluation(**over)
    e["real"]["path"] = str(d / "MedNIST")
    from synthgate.evaluation.evaluate import evaluation_hash

    e["evaluation_hash"] = evaluation_hash(e)
    (d / "evaluation.json").write_text(json.dumps(e))
    gate(d / "evaluation.json", GatePolicy(), d / "gate.json")
    return d / "evaluation.json", d / "gate.json"


def test_approval_workflow(server, model_dir, tmp_path, monkeypatch):
    import mlflow

    client = connect(server)
    name = "mednist-generator"
    ok = register(model_dir, *_gated(tmp_path, "ok"), uri=server, name=name)
    assert ok.gate_passed and ok.version == "1"
    tags = client.get_model_version(name, "1").tags
    assert tags["gate.passed"] == "true" and tags["lineage.training_dataset_hash"] == "d" * 64
    assert tags["gate.rule.utility.max_auc_gap"].startswith("pass: 0.01 <= 0.05")
    assert "approved" not in (client.get_registered_model(name).aliases or {})
    artifacts = {a.path for a in client.list_artifacts(ok.run_id)}
    assert {"evaluation", "gate"} <= artifacts

    assert "now @approved (gate passed)" in promote(name, "1", uri=server)
    assert client.get_registered_model(name).aliases["approved"] == "1"
    assert client.get_model_version(name, "1").tags["audit.1.action"] == "promoted"

    # the registered pyfunc samples images from the registry by alias
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server)
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@approved")
    images = loaded.predict(pd.DataFrame({"class": ["a", "b"], "count": [2, 1], "steps": [2, 2]}))
    assert images.shape == (3, 16, 16, 1) and images.dtype == np.uint8

    # a memorizing generator: registered for the record, refused at promotion, alias unchanged
    bad = register(model_dir, *_gated(tmp_path, "bad", memorization__pixel__near_copy_fraction=0.9),
                   uri=server, name=name)
    assert not bad.gate_passed
    with pytest.raises(PromotionRefused) as e:
        promote(name, bad.version, uri=server)
    assert "failed its gate" in e.value.message and "memorization.max_pixel_near_copy_fraction" in e.value.message
    assert client.get_registered_model(name).aliases["approved"] == "1"
    assert client.get_model_version(name, bad.version).tags["audit.1.action"] == "refused"

    # override needs a reason, and is recorded
    with pytest.raises(Exception, match="--force needs --reason"):
        promote(name, bad.version, uri=server, force=True)
    msg = promote(name, bad.version, uri=server, force=True, reason="committee decision 42")
    assert "OVERRIDE" in msg
    t = client.get_model_version(name, bad.version).tags
    assert t["override.reason"] == "committee decision 42" and t["override.user"]
    assert t["audit.2.action"] == "override"
    assert client.get_registered_model(name).aliases["approved"] == bad.version

    # tampering with the stored evaluation after gating is caught
    third = register(model_dir, *_gated(tmp_path, "third"), uri=server, name=name)
    run_id = client.get_model_version(name, third.version).run_id
    doctored = json.loads((tmp_path / "third" / "evaluation.json").read_text())
    doctored["memorization"]["pixel"]["near_copy_fraction"] = 0.0
    (tmp_path / "doctored").mkdir()
    (tmp_path / "doctored" / "evaluation.json").write_text(json.dumps(doctored))
    client.log_artifact(run_id, str(tmp_path / "doctored" / "evaluation.json"), "evaluation")
    with pytest.raises(PromotionRefused, match="the evaluation changed after gating"):
        promote(name, third.version, uri=server)
    assert client.get_registered_model(name).aliases["approved"] == bad.version

    rows = {r["version"]: r for r in list_versions(name, server)}
    assert rows["1"]["gate"] == "true" and rows[bad.version]["aliases"] == ["approved"]
    assert rows[bad.version]["override"] == "committee decision 42"


def test_unknown_version_and_missing_gate_record(server, model_dir, tmp_path):
    client = connect(server)
    with pytest.raises(DataError, match="model 'nope' has no version '1'"):
        promote("nope", "1", uri=server)
    client.create_registered_model("hand-made")
    run_id = client.create_run(client.create_experiment("manual")).info.run_id
    client.create_model_version("hand-made", f"runs:/{run_id}/model", run_id=run_id)
    with pytest.raises(PromotionRefused, match="has no gate record"):
        promote("hand-made", "1", uri=server)
    with pytest.raises(DataError, match="belongs to evaluation"):
        ev, _ = _gated(tmp_path, "a")
        _, other_gate = _gated(tmp_path, "b", utility__stats__auc_gap=0.3)
        register(model_dir, ev, other_gate, uri=server, name="x")


def test_server_down_is_named():
    port = _free_port()
    with pytest.raises(RegistryUnavailable, match=f"MLflow tracking server at http://127.0.0.1:{port} is not reachable"):
        connect(f"http://127.0.0.1:{port}", attempts=3, backoff=0.01)
