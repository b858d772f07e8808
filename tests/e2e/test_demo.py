"""The demo, end to end on real MedNIST (../shared/data), on tiny settings."""

import json

import pytest
import yaml

from tests.helpers import REPO, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_prepares_validates_and_evaluates_mednist(tmp_path, mednist_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["source"]["path"] = str(mednist_path)
    params["prepare"]["max_per_class"] = 300
    params["evaluate"]["encoder"]["epochs"] = 2
    params["evaluate"]["utility"].update(epochs=2, max_train_per_class=100)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    r = run_cli("demo", cwd=tmp_path)
    assert r.code == 0, r.output
    assert "Traceback" not in r.output
    for line in ("canonical dataset", "validated dataset", "metadata", "validation report", "data docs (HTML)",
                 "evaluation report"):
        assert line in r.stdout
    prepared = json.loads((tmp_path / "data/prepared/manifest.json").read_text())
    assert prepared["classes"] == ["AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT"]
    assert prepared["num_images"] == 1800
    assert prepared["inputs"][0]["sha256"] == "8a8b1962f87ff9295e7cb46e8d00340321eb372e236d642fc909670d10380143"
    report = json.loads((tmp_path / "reports/validation/validation.json").read_text())
    assert report["passed"] is True
    validated = json.loads((tmp_path / "data/validated/manifest.json").read_text())
    assert validated["num_images"] == 1800 - sum(report["dropped"].values())
    assert validated["inputs"][0]["content_hash"] == prepared["content_hash"]
    assert (tmp_path / "reports/validation/data_docs/index.html").exists()
    evaluation = json.loads((tmp_path / "reports/evaluation/evaluation.json").read_text())
    assert evaluation["synthetic"]["standin"] and evaluation["encoder"]["encoder_id"].startswith("small-")
    assert evaluation["memorization"]["pixel"]["near_copy_fraction"] < 0.05
    assert (tmp_path / "reports/evaluation/report.html").stat().st_size > 100_000
