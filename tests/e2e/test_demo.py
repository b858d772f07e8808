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
    r = run_cli("demo", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": None}, timeout=1500)
    try:  # the server and the gatekeeper stay up for the UI, as after `make demo`: its page is screenshotted too
        _check(tmp_path, r, params)
    finally:
        stop = run_cli("mlflow-stop", "--root", "mlruns", cwd=tmp_path)
    assert stop.code == 0 and "stopped" in stop.output and not (tmp_path / "mlruns" / "server.pid").exists()


def _check(tmp_path, r, params):
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
    _pages_render_offline(tmp_path, pulled, gate["passed"], registered["ui"])


def _pages_render_offline(root, pulled, passed, ui):
    """Issue #35: every page the demo leaves opens in headless chromium with no network, says in its title what
    it is, and states the decision first; `make docs-check` keeps the screenshots (SYNTHGATE_SCREENSHOTS)."""
    import base64
    import os
    from pathlib import Path

    from tests import pages

    if not pages.available():
        pytest.skip("chromium and chromedriver not installed (make test installs them)")
    word = "PASSED" if passed else "FAILED"
    expected = {  # page -> (file, words its title starts with, words its visible text must hold)
        "validation": (root / "reports/validation/data_docs/index.html", "Validation ", ["PASSED"]),
        "evaluation": (root / "reports/evaluation/report.html", "Evaluation report: ",
                       ["internal: shows real patient images"]),
        "decision": (root / "reports/gate/report.html", f"Release decision: {word} · Evaluation report: ",
                     ["what it protects", "kind of value", "memorization.min_planted_detection"]),
        "decision-public": (root / "reports/gate/report_public.html", f"Release decision: {word} · ",
                            ["public: no real image"]),
        "published": (pulled / "report.html", "Released synthetic data of mednist-generator version 1",
                      ["Released: the release gate PASSED" if passed else "Released by OVERRIDE"]),
    }
    shots = pages.shoot({k: v[0] for k, v in expected.items()}, root / "screenshots")
    # the model version's page in the MLflow UI (the local server, logged in as the demo's admin)
    creds = dict(line.split("=", 1) for line in (root / "mlruns/credentials.env").read_text().splitlines()
                 if "=" in line and not line.startswith("#"))
    token = base64.b64encode(f"{creds['MLFLOW_TRACKING_USERNAME']}:{creds['MLFLOW_TRACKING_PASSWORD']}".encode())
    shots |= pages.shoot({"mlflow-version": ui}, root / "screenshots",
                         headers={"Authorization": "Basic " + token.decode()}, wait_for={"mlflow-version": "Release gate"})
    expected["mlflow-version"] = (ui, "", ["Release gate: " + word, "what it protects", "kind of value"]
                                  + ([] if passed else ["Released by OVERRIDE: the release gate FAILED"]))
    for name, (_, title, words) in expected.items():
        s = shots[name]
        assert s.external == [], (name, s.external)  # nothing from a CDN: a hospital network has none
        assert s.title.startswith(title), (name, s.title)
        assert all(w in s.text for w in words), (name, words, s.text[:2000])
        assert not pages.blank(s.png) and s.height > 300, name
    # the decision comes before the evidence on the decision page
    text = shots["decision"].text
    assert text.index("Release gate") < text.index("what it protects") < text.index("Summary")
    keep = os.environ.get("SYNTHGATE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for s in shots.values():
            pages.keep_for_docs(s.png, Path(keep) / f"demo-{s.png.name}")
