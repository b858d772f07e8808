"""The registry against a real MLflow server (SQLite + local artifacts on 127.0.0.1): a passing
version gets the alias; a failing one is refused and the alias stays; an override is recorded;
an evaluation changed after gating is caught at promote time, and so is a gate record whose
verdict was edited; an evaluation of another model (or of a stand-in) is not registered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthgate.errors import DataError, SynthgateError
from synthgate.gates.decision import gate
from synthgate.gates.policy import GatePolicy
from synthgate.registry.client import RegistryUnavailable, connect
from synthgate.registry.registry import PromotionRefused, list_versions, promote, register
from synthgate.utils import sha256_file
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
                   dataset_hash="d" * 64, step=1, extras={"scheduler": build_scheduler(gcfg)})
    # what `synthgate sample` records: the sampled weights' sha256 (the gatekeeper binds the release to it)
    GENERATOR["weights_sha256"] = sha256_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    return out


#: what `synthgate sample` records about the model_dir fixture (evaluation["synthetic"]["generator"])
GENERATOR = {"model_dir": "model", "name": "diffusion-tiny-step1", "type": "diffusion", "step": 1,
             "dataset_content_hash": "d" * 64}


def _gated(tmp: Path, tag: str, **over) -> tuple[Path, Path]:
    d = tmp / tag
    d.mkdir()
    e = _evaluation(**{"synthetic__generator": dict(GENERATOR), **over})
    e["real"]["path"] = str(d / "MedNIST")
    from synthgate.evaluation.evaluate import evaluation_hash

    e["evaluation_hash"] = evaluation_hash(e)
    (d / "evaluation.json").write_text(json.dumps(e))
    (d / "report.html").write_text("<html><body><h2>Summary</h2>real training images</body></html>")
    from synthgate.evaluation.report import PUBLIC_MARK

    (d / "report_public.html").write_text(f"<html><body>{PUBLIC_MARK}<h2>Summary</h2></body></html>")
    (d / "gate").mkdir()
    gate(d / "evaluation.json", GatePolicy(), d / "gate" / "gate.json")
    return d / "evaluation.json", d / "gate" / "gate.json"


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
    # the registered report is the gate's copy of the public report (no real image), with this evaluation's
    # verdict at the top; the full one (with real images) stays with the real data
    report = Path(client.download_artifacts(ok.run_id, "evaluation/report.html", str(tmp_path / "dl"))).read_text()
    assert "Release gate: <span class=ok>PASSED</span>" in report
    assert "synthgate:public-report" in report and "real training images" not in report
    assert "Release gate" not in (tmp_path / "ok" / "report.html").read_text()

    assert "now @approved (gate passed)" in promote(name, "1", uri=server)
    assert client.get_registered_model(name).aliases["approved"] == "1"
    assert client.get_model_version(name, "1").tags["audit.1.action"] == "signed-passed"
    assert "release.attestation" in client.get_model_version(name, "1").tags

    # the registered pyfunc samples images from the registry by alias
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server)
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@approved")
    images = loaded.predict(pd.DataFrame({"class": ["a", "b"], "count": [2, 1], "steps": [2, 2]}))
    assert images.shape == (3, 16, 16, 1) and images.dtype == np.uint8

    # a memorizing generator: registered for the record, refused at promotion, alias unchanged
    bad = register(model_dir, *_gated(tmp_path, "bad", copies=3),
                   uri=server, name=name)
    assert not bad.gate_passed
    with pytest.raises(PromotionRefused) as e:
        promote(name, bad.version, uri=server)
    assert "failed its gate" in e.value.message and "memorization.max_flagged_copies" in e.value.message
    assert client.get_registered_model(name).aliases["approved"] == "1"
    assert client.get_model_version(name, bad.version).tags["audit.1.action"] == "refused"

    # override needs a reason, and is recorded
    with pytest.raises(Exception, match="--force needs --reason"):
        promote(name, bad.version, uri=server, force=True)
    msg = promote(name, bad.version, uri=server, force=True, reason="committee decision 42")
    assert "OVERRIDE" in msg
    t = client.get_model_version(name, bad.version).tags
    assert t["override.reason"] == "committee decision 42" and t["override.user"]
    assert t["audit.2.action"] == "signed-override"
    # issue #35: the version's page said FAILED beside @approved; it now says first that an owner overrode, and why
    page = client.get_model_version(name, bad.version).description
    assert page.startswith("## Released by OVERRIDE: the release gate FAILED") and "committee decision 42" in page
    assert page.count("## Release gate: FAILED") == 1 and page.index("OVERRIDE") < page.index("Release gate: FAILED")
    # the override is counted on the gatekeeper's /metrics (the alert SynthgateReleaseOverridden reads it)
    import os

    import requests

    metrics = requests.get(os.environ["SYNTHGATE_GATEKEEPER_URL"] + "/metrics", timeout=10).text
    assert 'synthgate_gatekeeper_signed_total{kind="override"}' in metrics
    assert "synthgate_gatekeeper_last_override_timestamp_seconds 0.0" not in metrics
    assert client.get_registered_model(name).aliases["approved"] == bad.version

    # tampering with the stored evaluation after gating is caught
    third = register(model_dir, *_gated(tmp_path, "third"), uri=server, name=name)
    run_id = client.get_model_version(name, third.version).run_id
    doctored = json.loads((tmp_path / "third" / "evaluation.json").read_text())
    doctored["memorization"]["per_image"]["p_combined"][0] = 0.9
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
    with pytest.raises(PromotionRefused, match="model 'nope' has no version '1'"):
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


def _versions(client, name: str) -> list:
    return list(client.search_model_versions(f"name='{name}'"))


def test_evaluation_of_another_model_is_not_registered(server, model_dir, tmp_path):
    client = connect(server)
    where = "the evaluation is not of this model"
    cases = {
        "name": ({**GENERATOR, "name": "gan-small-step900"},
                 "the evaluated generator's name is 'gan-small-step900', but {info} says 'diffusion-tiny-step1'"),
        "step": ({**GENERATOR, "step": 600}, "the evaluated generator's step is 600, but {info} says 1"),
        "dataset": ({**GENERATOR, "dataset_content_hash": "e" * 64},
                    "the evaluated generator's dataset_content_hash is '" + "e" * 64 + "', but {info} says '"
                    + "d" * 64 + "'"),
        "partial": ({"name": "diffusion-tiny-step1"}, "the evaluated generator's step is None, but {info} says 1"),
    }
    for tag, (generator, message) in cases.items():
        ev, gt = _gated(tmp_path, tag, synthetic__generator=generator)
        with pytest.raises(DataError) as e:
            register(model_dir, ev, gt, uri=server, name="other-model")
        assert e.value.message == f"{ev}: " + message.format(info=model_dir / "synthgate_generator.json") + \
            f": {where}"
    # a stand-in (real held-out images) and a set that records no generator are not of any model
    standin = "real test images of data/validated (0123456789abcdef)"
    ev, gt = _gated(tmp_path, "standin", synthetic__generator=None, synthetic__standin=standin)
    assert json.loads(gt.read_text())["passed"] is False  # the gate already fails it
    with pytest.raises(DataError) as e:
        register(model_dir, ev, gt, uri=server, name="other-model")
    assert e.value.message == (f"{ev}: the evaluation is of a stand-in ({standin}), not a generator's output; it "
                               f"cannot be registered as an evaluation of {model_dir}")
    ev, gt = _gated(tmp_path, "anonymous", synthetic__generator=None)
    with pytest.raises(DataError, match="the evaluation is of a synthetic set that records no generator; it cannot "
                                        "be registered"):
        register(model_dir, ev, gt, uri=server, name="other-model")
    # nothing was registered by any of these refusals
    assert "other-model" not in {m.name for m in client.search_registered_models()}


def _sampled(tmp: Path, tag: str, weights_sha256: str) -> tuple[Path, Path]:
    """An evaluation of a synthetic set whose manifest records the sampled weights' sha256."""
    from synthgate.data.canonical import metadata_for, write_dataset
    from synthgate.evaluation.evaluate import evaluation_hash

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 1), dtype=np.uint8)
    labels = np.repeat([0, 1], 20)
    meta = metadata_for(images, labels, ["a", "b"], "train", [f"synthetic:t:{i}" for i in range(40)])
    syn = write_dataset(tmp / f"{tag}-samples", images, meta, ["a", "b"], stage="sample", config={},
                        inputs=[{"path": "model", "kind": "generator", "sha256": weights_sha256}],
                        extra={"synthetic": True, "generator": dict(GENERATOR)})
    ev, gt = _gated(tmp, tag)
    e = json.loads(ev.read_text())
    e["synthetic"].update(path=str(syn.root), content_hash=syn.content_hash)
    e["synthetic"]["generator"].pop("weights_sha256", None)  # only the sample manifest records them here
    e["evaluation_hash"] = evaluation_hash(e)
    ev.write_text(json.dumps(e))
    gate(ev, GatePolicy(), gt)
    return ev, gt


def test_weights_sha256_in_the_sample_manifest_must_match(server, model_dir, tmp_path):
    from synthgate.utils import sha256_file

    weights = model_dir / "unet" / "diffusion_pytorch_model.safetensors"
    ev, gt = _sampled(tmp_path, "other-weights", "f" * 64)
    with pytest.raises(DataError) as e:
        register(model_dir, ev, gt, uri=server, name="weights-model")
    assert e.value.message == (f"{ev}: the evaluated samples come from generator weights with sha256 "
                               f"{'f' * 16}..., but {weights} has sha256 {sha256_file(weights)[:16]}...: the "
                               "evaluation is not of this model")
    ev, gt = _sampled(tmp_path, "same-weights", sha256_file(weights))
    r = register(model_dir, ev, gt, uri=server, name="weights-model")
    assert r.version == "1" and r.gate_passed


def test_edited_gate_record_is_refused_at_register_and_promote(server, model_dir, tmp_path):
    from synthgate.utils import sha256_file

    client = connect(server)
    name = "edited-gate-generator"
    # edited before registering: register recomputes the decision and refuses
    ev, gt = _gated(tmp_path, "edited", copies=3)
    honest = gt.read_text()
    g = json.loads(honest)
    g["passed"] = True
    gt.write_text(json.dumps(g))
    with pytest.raises(DataError) as e:
        register(model_dir, ev, gt, uri=server, name=name)
    assert e.value.message == (
        f"{gt}: the recorded verdict (passed=True, failing: memorization.max_flagged_copies) differs from "
        "the decision recomputed from the evaluation and the recorded policy (passed=False, failing: "
        "memorization.max_flagged_copies): the gate record was modified or written by other code")

    # edited after registering, with its gate.sha256 and gate.passed tags rewritten to match: promote recomputes
    gt.write_text(honest)
    r = register(model_dir, ev, gt, uri=server, name=name)
    assert not r.gate_passed
    forged = tmp_path / "forged" / "gate.json"
    forged.parent.mkdir()
    g = json.loads(honest)
    g["passed"] = True
    for rule in g["rules"]:
        rule["passed"] = True
    forged.write_text(json.dumps(g))
    client.log_artifact(r.run_id, str(forged), "gate")
    client.set_model_version_tag(name, r.version, "gate.sha256", sha256_file(forged))
    client.set_model_version_tag(name, r.version, "gate.passed", "true")
    with pytest.raises(PromotionRefused) as e:
        promote(name, r.version, uri=server)
    # the model still bundles the honest record: refused before the verdict is even recomputed
    assert (f"{name} version {r.version}: the gate record bundled in the model is not the one "
            "registered with the version: the model served is not the model verified") in e.value.message
    assert "approved" not in (client.get_registered_model(name).aliases or {})
    assert client.get_model_version(name, r.version).tags["audit.1.action"] == "refused"

    # only the tag edited: the record is honest, the tag disagrees with the recomputation
    client.log_artifact(r.run_id, str(gt), "gate")
    client.set_model_version_tag(name, r.version, "gate.sha256", sha256_file(gt))
    with pytest.raises(PromotionRefused, match=f"{name} version {r.version}: its gate.passed tag says true, but the "
                                               "decision recomputed from its evaluation and policy says false"):
        promote(name, r.version, uri=server)
    assert "approved" not in (client.get_registered_model(name).aliases or {})


def test_the_model_carries_its_proof_and_refuses_a_failed_gate(server, model_dir, tmp_path, monkeypatch):
    """A failed version cannot be loaded through the README's path, even when someone sets the alias
    on it by hand; synthgate's loader honours only an override recorded by `synthgate promote`; the
    version page shows the verdict; the pyfunc has a signature."""
    import mlflow
    from mlflow.models import get_model_info

    from synthgate.registry.registry import load_model

    client = connect(server)
    name = "proof-generator"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server)
    ok = register(model_dir, *_gated(tmp_path, "ok"), uri=server, name=name)
    bad = register(model_dir, *_gated(tmp_path, "bad", copies=3), uri=server, name=name)

    page = client.get_model_version(name, bad.version).description
    assert page.startswith("## Release gate: FAILED")
    assert "Failing rules: memorization.max\\_flagged\\_copies" in page  # escaped markdown, rendered as text
    assert "| memorization.max\\_flagged\\_copies | **FAIL** |" in page and "evaluation/report.html" in page
    # issue #35: each rule with its kind of value and what it protects; thresholds as people read them (MLflow's
    # markdown renderer showed "\\>= 5"), counts as integers
    assert "| memorization.max\\_flagged\\_copies | **FAIL** | 3 | ≤ 0 | count \\(images whose copy p-value" in page
    assert "no synthetic image is a \\(near-\\)copy of one training patient's image" in page
    assert "\\>" not in page and "\\<" not in page and "may not be released" in page
    assert client.get_model_version(name, ok.version).description.startswith("## Release gate: PASSED")
    sig = get_model_info(f"models:/{name}/{ok.version}").signature
    assert [c.name for c in sig.inputs.inputs][:2] == ["class", "count"]
    assert sig.outputs.inputs[0].type == np.dtype(np.uint8) and sig.outputs.inputs[0].shape == (-1, 16, 16, 1)

    # the alias moved by hand (MLflow itself allows it): nothing the gatekeeper signed, so nothing loads
    client.set_registered_model_alias(name, "approved", bad.version)
    with pytest.raises(PromotionRefused) as e:
        mlflow.pyfunc.load_model(f"models:/{name}@approved")
    assert "no release attestation signed by the gatekeeper verifies for these weights" in e.value.message
    with pytest.raises(SynthgateError, match="release attestation: no signed attestation"):
        load_model(name, "approved", server)
    # MLflow's own configuration channels carry nothing that counts: the environment ...
    monkeypatch.setenv("MLFLOW_PYFUNC_INFERENCE_CONFIG", json.dumps({"gate_override": {"reason": "x"}}))
    with pytest.raises(PromotionRefused, match="no release attestation"):
        mlflow.pyfunc.load_model(f"models:/{name}@approved")
    monkeypatch.delenv("MLFLOW_PYFUNC_INFERENCE_CONFIG")
    # ... nor an override tag set by hand
    client.set_model_version_tag(name, bad.version, "override.reason", "trust me")
    with pytest.raises(SynthgateError, match="no signed attestation"):
        load_model(name, "approved", server)

    # an override signed by the gatekeeper (the admin is an owner) loads through both paths, with a warning
    promote(name, bad.version, uri=server, force=True, reason="committee decision 7")
    images = load_model(name, "approved", server).predict(pd.DataFrame({"class": ["a"], "count": [2], "steps": [2]}))
    assert images.shape == (2, 16, 16, 1)
    assert mlflow.pyfunc.load_model(f"models:/{name}@approved") is not None

    # an approved version loads through both paths and samples
    promote(name, ok.version, uri=server)
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@approved")
    assert loaded.predict(pd.DataFrame({"class": ["b"], "count": [1], "steps": [2]})).shape == (1, 16, 16, 1)
    assert load_model(name, "approved", server) is not None


def _verified(weights: str, verdict: str = "passed"):
    from synthgate.trust.attest import RELEASE, Verified, statement

    return Verified(statement(RELEASE, "m/1", weights, {"verdict": verdict, "override": {"reason": "x"}}), "k", "e")


def test_the_bundled_records_are_checked(model_dir, tmp_path):
    from synthgate.registry.pyfunc import verify_bundle

    weights = sha256_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    ev, gate_path = _gated(tmp_path, "ok")
    ok = {"model_dir": str(model_dir), "evaluation": str(ev), "gate": str(gate_path)}
    assert verify_bundle(ok, _verified(weights)).passed
    with pytest.raises(PromotionRefused, match="the weights were swapped after signing"):
        verify_bundle(ok, _verified("f" * 64))  # a release of other weights
    with pytest.raises(PromotionRefused, match="no release attestation signed by the gatekeeper"):
        verify_bundle(ok)  # a model folder outside the registry: no release to find
    with pytest.raises(PromotionRefused, match="carries no evaluation and no gate record"):
        verify_bundle({"model_dir": str(model_dir)})
    bad_ev, bad_gate = _gated(tmp_path, "bad", copies=3)
    record = json.loads(bad_gate.read_text())
    record["passed"] = True  # an edited verdict
    bad_gate.write_text(json.dumps(record))
    with pytest.raises(PromotionRefused, match="the recorded verdict .* differs from the decision recomputed"):
        verify_bundle({"model_dir": str(model_dir), "evaluation": str(bad_ev), "gate": str(bad_gate)}, _verified(weights))
    import shutil

    swapped = tmp_path / "swapped"
    shutil.copytree(model_dir, swapped)
    w = swapped / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:-8] + b"\0" * 8)  # other weights under the same description
    with pytest.raises(PromotionRefused, match="the weights were replaced after training"):
        verify_bundle({"model_dir": str(swapped), "evaluation": str(ev), "gate": str(gate_path)}, _verified(weights))
    other, other_gate = _gated(tmp_path, "other", synthetic__generator={**GENERATOR, "step": 99})
    with pytest.raises(PromotionRefused, match="step"):
        verify_bundle({"model_dir": str(model_dir), "evaluation": str(other), "gate": str(other_gate)},
                      _verified(weights))
    ev2, gate2 = _gated(tmp_path, "bad2", copies=3)
    bundle = {"model_dir": str(model_dir), "evaluation": str(ev2), "gate": str(gate2)}
    with pytest.raises(PromotionRefused, match="its release attestation is no override"):
        verify_bundle(bundle, _verified(weights))
    assert not verify_bundle(bundle, _verified(weights, "override")).passed


def test_the_gatekeeper_decides_under_its_own_pinned_policy(server, model_dir, tmp_path, monkeypatch):
    """A memorizing generator gated with a policy of the registrant's own (copies allowed) passes its
    own gate, but the gatekeeper recomputes the verdict under its pinned policy and refuses it; a
    pin written into the registry's tags by hand changes nothing; a pin set through the gatekeeper by
    an owner does, and is signed."""
    from synthgate.registry.registry import REQUIRED_POLICY_TAG, pin_policy

    client = connect(server)
    name = "pinned-generator"
    d = tmp_path / "lax"
    ev, _ = _gated(tmp_path, "lax", copies=3)
    lax = GatePolicy.model_validate({"memorization": {"max_flagged_copies": 1_000_000}})
    (d / "lax_gate").mkdir()
    gate(ev, lax, d / "lax_gate" / "gate.json")
    sneaky = register(model_dir, ev, d / "lax_gate" / "gate.json", uri=server, name=name)
    assert sneaky.gate_passed  # by its own policy
    with pytest.raises(PromotionRefused, match="(?s)failed its gate under the pinned policy .*max_flagged_copies"):
        promote(name, sneaky.version, uri=server)
    client.set_registered_model_tag(name, REQUIRED_POLICY_TAG, lax.policy_hash())  # the old pin: a tag anyone edits
    with pytest.raises(PromotionRefused, match="failed its gate under the pinned policy"):
        promote(name, sneaky.version, uri=server)

    lax_file = tmp_path / "lax.yaml"
    lax_file.write_text("memorization:\n  max_flagged_copies: 1000000\n")
    assert lax.policy_hash()[:16] in pin_policy(name, lax_file, server)  # the admin is an owner
    assert "gate.pinned_policy" in client.get_registered_model(name).tags  # the signed pin, shown in the UI
    assert "(gate passed)" in promote(name, sneaky.version, uri=server)
    # the version's own audit trail shows the refusals under the default, the pin, and the release under the pin
    from synthgate.registry.audit import entries

    trail = list(entries(client.get_model_version(name, sneaky.version).tags).values())
    assert [e["action"] for e in trail][-2:] == ["policy-pinned", "signed-passed"]
    assert all("the gatekeeper's default; no pin" in e["detail"] for e in trail if e["action"] == "refused")
    assert lax.policy_hash()[:16] in trail[-2]["detail"]
    assert f"policy {lax.policy_hash()[:16]} pinned by " in trail[-1]["detail"]
    pin_policy(name, None, server)  # back to the defaults
    with pytest.raises(PromotionRefused, match="failed its gate under the pinned policy"):
        promote(name, sneaky.version, uri=server)
    honest = register(model_dir, *_gated(tmp_path, "honest"), uri=server, name=name)
    assert "(gate passed)" in promote(name, honest.version, uri=server)
    with pytest.raises(SynthgateError, match="no registered model 'nope'"):
        pin_policy("nope", None, server)


def test_an_outage_is_not_a_missing_version(tmp_path):
    """A registry that fails (here: a server that answers 500) is RegistryUnavailable with MLflow's
    error code, not "no such version"; a missing version, alias or model is still named as such."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

    from synthgate.registry.client import unless_missing
    from synthgate.registry.registry import verify_version

    class Failing:
        _registry_uri = "http://mlflow.example:5000"

        def get_model_version(self, name, version):
            raise MlflowException("API request failed with error code 500", error_code=INTERNAL_ERROR)

    with pytest.raises(RegistryUnavailable, match=r"registry at http://mlflow.example:5000 failed \(INTERNAL_ERROR"):
        verify_version(Failing(), "m", "1")
    for code in (RESOURCE_DOES_NOT_EXIST, INVALID_PARAMETER_VALUE):
        assert unless_missing(MlflowException("gone", error_code=code)) is None

    class Missing:
        def get_model_version(self, name, version):
            raise MlflowException("Model Version (name=m, version=9) not found", error_code=RESOURCE_DOES_NOT_EXIST)

    with pytest.raises(DataError, match="model 'm' has no version '9'"):
        verify_version(Missing(), "m", "9")


def test_the_records_served_are_the_records_verified(server, model_dir, tmp_path):
    """A version whose model bundles other records than the ones registered with it (the run's copies
    and the tags taken from an approved version, the bundle a memorizing generator's) is refused:
    the model that would be served is not the model that was verified."""
    import mlflow

    from synthgate.registry.pyfunc import EVALUATION, GATE, MODEL_DIR, GeneratorModel

    client = connect(server)
    name = "served-generator"
    ok = register(model_dir, *_gated(tmp_path, "ok"), uri=server, name=name)
    bad_eval, bad_gate = _gated(tmp_path, "bad", copies=3)
    good_eval, good_gate = tmp_path / "ok" / "evaluation.json", tmp_path / "ok" / "gate" / "gate.json"
    from synthgate.registry.registry import _tracking_env  # the environment, never mlflow.set_tracking_uri

    with _tracking_env(server):
        with mlflow.start_run():  # what an EDIT account can do with MlflowClient, without synthgate register
            mlflow.log_artifact(str(good_eval), "evaluation")
            mlflow.log_artifact(str(good_gate), "gate")
            info = mlflow.pyfunc.log_model(name="generator", python_model=GeneratorModel(),
                                           artifacts={MODEL_DIR: str(model_dir), EVALUATION: str(bad_eval),
                                                      GATE: str(bad_gate)})
        mv = mlflow.register_model(info.model_uri, name)
    for k, v in client.get_model_version(name, ok.version).tags.items():
        if k.startswith(("gate.", "evaluation_hash", "lineage.")):
            client.set_model_version_tag(name, mv.version, k, v)
    with pytest.raises(PromotionRefused, match="the gate record bundled in the model is not the one registered"):
        promote(name, mv.version, uri=server)
    assert "approved" not in (client.get_registered_model(name).aliases or {})
