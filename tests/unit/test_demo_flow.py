"""The demo's flow (``synthgate.demo``): its caps, the stage order, the override policy, and the one
``published.json`` schema that every shell writes. The stages are replaced by recorders here; the
e2e test (tests/e2e/test_demo.py) runs the real ones."""

import inspect
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from synthgate import demo, stages
from synthgate.config import load_params
from synthgate.errors import SynthgateError
from synthgate.publish.package import PublishResult, not_published_record


def test_caps_lower_the_params_files_values_only():
    p = load_params(None, {"train.steps": 600, "prepare.max_per_class": None, "sample.steps": 20,
                           "evaluate.utility.max_steps": 2000})
    assert demo.demo_caps(p, 1000, 400, 10, 1000) == {"prepare.max_per_class": 1000, "train.steps": 400,
                                                      "sample.steps": 10, "evaluate.utility.max_steps": 1000}
    p = load_params(None, {"train.steps": 300, "prepare.max_per_class": 500, "sample.steps": 8,
                           "evaluate.utility.max_steps": 800})
    assert demo.demo_caps(p, 1000, 400, 10, 1000) == {}
    assert demo.demo_caps(load_params(None, {"train.steps": 600}), 0, 0, 0, 0) == {}  # 0: the params file's value


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def stage(self, n, title):
        self.events.append(("stage", n))

    def done(self, stage, result):
        self.events.append(("done", stage))

    def note(self, message, level="info"):
        self.events.append((level, message))


def _fake_stages(monkeypatch, tmp_path, gate_passes: bool):
    calls: list[tuple] = []
    ds = SimpleNamespace(root=tmp_path / "ds", manifest={"num_images": 3})

    def rec(name, value):
        real = inspect.signature(getattr(stages, name))

        def f(*a, **k):
            real.bind(*a, **k)  # the fake takes what the real stage takes: keyword-only stays keyword-only
            calls.append((name, a, k))
            return value(*a, **k) if callable(value) else value
        return f

    def promote(name, version, *, alias, tracking_uri, force=False, reason=None, gatekeeper=None):
        calls.append(("promote", force, reason))
        if not force and not gate_passes:
            raise SynthgateError(f"refusing to promote {name} version {version}:\n  the gate failed")
        return f"{name} version {version} is now @{alias}" + (" (override recorded)" if force else "")

    monkeypatch.setattr(stages, "prepare", rec("prepare", ds))
    monkeypatch.setattr(stages, "validate", rec("validate", SimpleNamespace(dataset=ds)))
    monkeypatch.setattr(stages, "train", rec("train", SimpleNamespace(model_dir=tmp_path / "model")))
    monkeypatch.setattr(stages, "sample", rec("sample", SimpleNamespace(root=tmp_path / "samples")))
    monkeypatch.setattr(stages, "evaluate", rec("evaluate", SimpleNamespace(path=tmp_path / "ev" / "evaluation.json")))
    monkeypatch.setattr(stages, "gate", rec("gate", SimpleNamespace(passed=gate_passes)))
    monkeypatch.setattr(stages, "register", rec("register", SimpleNamespace(name="m-generator", version="1")))
    monkeypatch.setattr(stages, "promote", promote)
    monkeypatch.setattr(stages, "publish", rec("publish", SimpleNamespace(name="m-synthetic", version="v1")))
    monkeypatch.setattr(stages, "pull", rec("pull", SimpleNamespace()))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")  # a given registry: no local server started
    monkeypatch.setenv("SYNTHGATE_GATEKEEPER_URL", "http://127.0.0.1:2")  # ... and a given gatekeeper
    monkeypatch.setenv("SYNTHGATE_TRUST_ROOT", str(tmp_path / "trust.json"))
    return calls


def test_the_flow_runs_every_stage_in_order_with_the_stages_default_paths(monkeypatch, tmp_path):
    calls = _fake_stages(monkeypatch, tmp_path, gate_passes=True)
    obs = _Recorder()
    r = demo.run_demo(load_params(None, {}), tmp_path, observer=obs)
    assert [c[0] for c in calls] == ["prepare", "validate", "train", "sample", "evaluate", "gate", "register",
                                     "promote", "publish", "pull"]
    assert [n for kind, n in obs.events if kind == "stage"] == list(range(1, demo.STAGES + 1))
    assert calls[0][2]["out"] == tmp_path / stages.DEFAULT_PREPARED
    assert calls[6][2]["record"] == tmp_path / stages.DEFAULT_REGISTERED
    assert r.promotion.refused is None and r.promotion.override_reason is None
    assert r.ui == "http://127.0.0.1:1/#/models/m-generator/versions/1"
    assert calls[-2][2]["store"] == str(tmp_path / "data/published")  # the params file's store, under the workdir


def test_the_demo_splits_its_data_by_inferred_acquisition_groups():
    """MedNIST names no patients and a random split of it leaks (docs/leakage.md): the params file the demo
    runs prepares it split by inferred groups, with the calibrated rule, so that the gate's null holds other
    scans and a passing generator needs no override."""
    from synthgate.data.config import LEAK_MARGIN, LEAK_SIMILARITY

    groups = load_params(Path(__file__).resolve().parents[2] / "params.yaml", {}).prepare.infer_groups
    assert groups.enabled and (groups.similarity, groups.margin) == (LEAK_SIMILARITY, LEAK_MARGIN)
    assert "refused" in demo.OVERRIDE_REASON and "not for release" in demo.OVERRIDE_REASON


def test_a_failed_gate_is_promoted_only_by_a_recorded_override(monkeypatch, tmp_path):
    calls = _fake_stages(monkeypatch, tmp_path, gate_passes=False)
    obs = _Recorder()
    r = demo.run_demo(load_params(None, {}), tmp_path, observer=obs)
    assert [c[1:] for c in calls if c[0] == "promote"] == [(False, None), (True, demo.OVERRIDE_REASON)]
    assert r.promotion.refused == "refusing to promote m-generator version 1: the gate failed"
    assert r.promotion.override_reason == demo.OVERRIDE_REASON
    assert any(kind == "warning" and "override recorded" in msg for kind, msg in obs.events)


def test_without_override_a_failed_gate_stops_the_demo_before_publishing(monkeypatch, tmp_path):
    calls = _fake_stages(monkeypatch, tmp_path, gate_passes=False)
    with pytest.raises(SynthgateError, match=r"the gate failed, so nothing can be published \(demo run with "
                                             r"--no-override\)"):
        demo.run_demo(load_params(None, {}), tmp_path, override=False)
    assert "publish" not in [c[0] for c in calls]


class _Artifact:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.metadata: dict = {}


def test_every_shell_writes_the_same_published_record(tmp_path):
    from synthgate.kubeflow.io import published_out

    r = PublishResult("m-synthetic", "v1", "data/published/m-synthetic/v1", 6,
                      {"files": [{"path": "a"}, {"path": "b"}], "model": {"name": "m-generator", "version": "1"}},
                      bytes=10, seconds=0.25, notes=["sampled afresh"], timings={"package": 0.1})
    art = _Artifact(tmp_path / "publication")
    assert published_out(art, r) == r.uri
    assert json.loads(Path(art.path).read_text()) == json.loads(json.dumps(r.record()))  # the CLI writes r.record()
    assert r.record()["published"] is True and r.record()["files"] == 2
    assert art.metadata == {"name": "m-synthetic", "version": "v1", "uri": r.uri, "num_images": 6}
    nothing = not_published_record("m-generator has no version @approved")
    assert nothing["published"] is False and set(nothing) == {"published", "reason", "checked"}
