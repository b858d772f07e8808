"""The demo, end to end on real MedNIST (../shared/data), on tiny settings."""

import json

import pytest
import yaml

from tests.helpers import REPO, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_runs_prepare_to_evaluate_on_mednist(tmp_path, mednist_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["source"]["path"] = str(mednist_path)
    params["prepare"]["max_per_class"] = 300
    params["train"].update(steps=40, checkpoint_every=20)
    params["sample"].update(per_class=30, steps=10)
    params["evaluate"]["encoder"]["epochs"] = 2
    params["evaluate"]["memorization"].setdefault("descriptor", {})["steps"] = 100
    params["evaluate"]["utility"].update(epochs=2, max_train_per_class=100)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    r = run_cli("demo", "--stop-server", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": None}, timeout=1500)
    assert r.code == 0, r.output
    assert "Traceback" not in r.output
    for line in ("canonical dataset", "validated dataset", "metadata", "validation report", "data docs (HTML)",
                 "generator", "synthetic dataset", "evaluation report", "gate "):
        assert line in r.stdout
    prepared = json.loads((tmp_path / "data/prepared/manifest.json").read_text())
    assert prepared["classes"] == ["AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT"]
    assert prepared["num_images"] == 1800
    assert prepared["inputs"][0]["sha256"] == "8a8b1962f87ff9295e7cb46e8d00340321eb372e236d642fc909670d10380143"
    # MedNIST names no patients: the params file splits it by inferred acquisition groups, and validation's
    # leakage diagnosis is printed (docs/leakage.md)
    assert prepared["groups"]["source"] == "groups inferred from the pixels" and prepared["groups"]["links_capped"] >= 0
    report = json.loads((tmp_path / "reports/validation/validation.json").read_text())
    assert report["passed"] is True
    assert report["leakage"]["held_out"] > 0 and "leakage" in r.stdout
    validated = json.loads((tmp_path / "data/validated/manifest.json").read_text())
    assert validated["num_images"] == 1800 - sum(report["dropped"].values())
    assert validated["inputs"][0]["content_hash"] == prepared["content_hash"]
    assert (tmp_path / "reports/validation/data_docs/index.html").exists()
    assert (tmp_path / "models/generator/model/synthgate_generator.json").exists()
    samples = json.loads((tmp_path / "data/samples/manifest.json").read_text())
    assert samples["num_images"] == 180 and samples["synthetic"] is True
    assert samples["generator"]["dataset_content_hash"] == validated["content_hash"]
    evaluation = json.loads((tmp_path / "reports/evaluation/evaluation.json").read_text())
    assert evaluation["synthetic"]["content_hash"] == samples["content_hash"]
    assert evaluation["synthetic"]["generator"]["type"] == "diffusion"
    assert evaluation["encoder"]["encoder_id"].startswith("small-")
    assert evaluation["utility"]["stats"]["n_seeds"] == len(params["evaluate"]["utility"]["seeds"]) == 5
    assert (tmp_path / "reports/evaluation/report.html").stat().st_size > 100_000
    gate = json.loads((tmp_path / "reports/gate/gate.json").read_text())
    assert gate["evaluation_hash"] == evaluation["evaluation_hash"]
    assert ("PASSED" if gate["passed"] else "FAILED") in r.stdout
    registered = json.loads((tmp_path / "reports/registry/registered.json").read_text())
    assert registered["name"] == "mednist-generator" and registered["version"] == "1"
    assert "MLflow UI" in r.stdout and "model version" in r.stdout
    assert not (tmp_path / "mlruns" / "server.pid").exists()
    # publish (by the recorded demo override if the gate failed) and a pulled, verified copy on disk
    pulled = tmp_path / "data/pulled/mednist-synthetic-v1"
    manifest = json.loads((pulled / "manifest.json").read_text())
    assert manifest["dataset"]["content_hash"] == samples["content_hash"] and manifest["samples_source"] == "evaluated"
    assert manifest["model"]["gate_passed"] is gate["passed"]
    assert (manifest["model"]["override"] is None) is gate["passed"]
    assert json.loads((pulled / "pull.json").read_text())["files_verified"] == len(manifest["files"])
    assert (tmp_path / "data/published/mednist-synthetic/v1/manifest.json").exists()
    card = (pulled / "DATACARD.md").read_text()
    assert "mednist-generator version 1" in card and ("PASSED" if gate["passed"] else "released by override") in card
    assert "pulled and verified" in r.stdout
