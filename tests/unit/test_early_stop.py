"""FID early stopping (dumontschutte2021 S.3): the decision rule, the monitor, and the training loop
keeping the best evaluation's weights, across a resume."""

import math

import numpy as np
import pytest
import torch

import synthgate.evaluation.encoder as encoder_mod
import synthgate.generators.train as train_mod
from synthgate.evaluation.config import EncoderConfig
from synthgate.generators.config import SampleConfig
from synthgate.generators.early_stop import FidMonitor, FidState
from synthgate.generators.model import load_generator, read_generator_info
from synthgate.generators.train import list_checkpoints, read_checkpoint, train
from synthgate.monitoring.metrics import REGISTRY
from tests.unit.generators_helpers import RecordingReporter, dataset_fixture, one_thread_fixture, quick, tiny  # noqa: F401 (fixtures)

# --- the rule ---------------------------------------------------------------------------------------

def test_stops_after_patience_evaluations_without_improvement():
    cfg = quick(fid_every=1, fid_patience=2)
    st = FidState()
    assert st.update(1, 10.0, cfg) and st.update(2, 8.0, cfg)
    assert not st.update(3, 8.5, cfg) and st.stopped_at is None and st.since_best == 1
    assert not st.update(4, 9.0, cfg) and st.stopped_at == 4
    assert (st.best_step, st.best_fid) == (2, 8.0) and st.history == [(1, 10.0), (2, 8.0), (3, 8.5), (4, 9.0)]


def test_an_improvement_resets_the_patience_and_min_delta_counts():
    cfg = quick(fid_every=1, fid_patience=2, fid_min_delta=0.5)
    st = FidState()
    st.update(1, 10.0, cfg)
    assert not st.update(2, 9.7, cfg) and st.since_best == 1  # better, but by less than min_delta
    assert st.update(3, 9.0, cfg) and st.since_best == 0 and st.best_step == 3
    assert not st.update(4, math.nan, cfg) and st.since_best == 1  # a NaN FID never counts as better
    assert not st.update(5, 9.0, cfg) and st.stopped_at == 5


def test_no_stop_before_the_minimum_step_and_state_round_trips():
    cfg = quick(fid_every=1, fid_patience=1, fid_min_steps=3)
    st = FidState()
    st.update(1, 5.0, cfg)
    st.update(2, 6.0, cfg)
    assert st.stopped_at is None  # patience used up, but step 2 < fid_min_steps
    st.update(3, 7.0, cfg)
    assert st.stopped_at == 3
    back = FidState.from_dict(st.to_dict())
    assert back == st
    assert FidState.from_dict(FidState().to_dict()) == FidState()  # no evaluation yet: best_fid inf <-> None


# --- the monitor ------------------------------------------------------------------------------------

class _PixelEncoder:
    """Features = 4x4 average-pooled pixels: a stand-in that makes FID track the images."""

    encoder_id = "pixels-4x4"

    def features(self, images):
        x = torch.from_numpy(np.asarray(images, np.float32)).permute(0, 3, 1, 2)
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1).numpy()


class _CopyTask:
    """Samples = real training images of the requested labels, or noise."""

    def __init__(self, images, labels, noise=False):
        self.images, self.labels, self.noise = images, labels, noise
        self.calls = []

    def sample(self, module, labels, cfg):
        self.calls.append((np.asarray(labels).copy(), cfg))
        if self.noise:
            return np.random.default_rng(0).integers(0, 256, (len(labels), *self.images.shape[1:]), dtype=np.uint8)
        rng = np.random.default_rng(1)
        return np.stack([self.images[rng.choice(np.flatnonzero(self.labels == k))] for k in labels])


def test_monitor_uses_fixed_real_images_labels_and_noise(dataset):
    idx = dataset.split_indices("train")
    images, labels = np.asarray(dataset.images[idx]), dataset.labels()[idx]
    cfg = quick(fid_every=1, fid_images=8, seed=3)
    mon = FidMonitor(_PixelEncoder(), images, labels, cfg, SampleConfig(sampler="ddim", steps=7, per_class=50))
    assert mon.n == 8 and len(mon.labels) == 8 and mon.real_features.shape == (8, 4)
    close, noise = _CopyTask(images, labels), _CopyTask(images, labels, noise=True)
    a, b = mon(close, None), mon(noise, None)
    assert np.isfinite(a) and a < b  # real-like samples score better than noise
    lab1, cfg1 = close.calls[0]
    np.testing.assert_array_equal(lab1, mon.labels)  # one sample per drawn real label
    assert (cfg1.sampler, cfg1.steps, cfg1.per_class) == ("ddim", 7, 1)
    mon(close, None)
    assert close.calls[1][1].seed == cfg1.seed  # the same noise at every evaluation
    assert FidMonitor(_PixelEncoder(), images, labels, quick(fid_every=1, fid_images=10_000)).n == len(images)
    assert mon.describe() == {"encoder_id": "pixels-4x4", "images": 8, "sampler": "ddim", "sampler_steps": 7,
                              "guidance_scale": 1.5}


def test_monitor_refuses_too_few_images():
    one = np.zeros((1, 16, 16, 1), np.uint8)
    with pytest.raises(Exception, match="FID needs at least 2 training images"):
        FidMonitor(_PixelEncoder(), one, np.zeros(1, int), quick(fid_every=1))


# --- the training loop ------------------------------------------------------------------------------

class _Scripted:
    """Replaces FidMonitor in the loop: returns the scripted FIDs in order, records the steps."""

    values: list[float] = []
    seen: list[int] = []

    def __init__(self, encoder, images, labels, tcfg, sampling=None):
        self.n = min(tcfg.fid_images, len(images))
        self.encoder_id = encoder.encoder_id

    def __call__(self, task, module):
        _Scripted.seen.append(len(_Scripted.seen))
        return _Scripted.values.pop(0)

    def describe(self):
        return {"encoder_id": self.encoder_id, "images": self.n, "sampler": "ddim", "sampler_steps": 2,
                "guidance_scale": 1.0}


@pytest.fixture
def scripted(monkeypatch):
    monkeypatch.setattr(train_mod, "FidMonitor", _Scripted)
    monkeypatch.setattr(encoder_mod, "get_encoder", lambda *a, **k: _PixelEncoder())
    _Scripted.values, _Scripted.seen = [], []
    return _Scripted


def _weights(model_dir):
    m = load_generator(model_dir, "cpu")
    return {k: v.clone() for k, v in m.module.state_dict().items()}


def test_training_stops_early_and_saves_the_best_steps_weights(dataset, tmp_path, scripted):
    scripted.values = [5.0, 3.0, 4.0, 4.5, 1.0, 1.0]
    rep = RecordingReporter()
    r = train(dataset.root, tiny(), quick(steps=6, fid_every=1, fid_patience=2, checkpoint_every=100), tmp_path / "o",
              reporter=rep)
    assert r.steps == 4 and r.stopped_early  # evaluations 3 and 4 did not beat step 2's 3.0
    assert r.fid["best_step"] == 2 and r.fid["best_fid"] == 3.0 and r.fid["stopped_at"] == 4
    assert [s for s, _ in r.fid["history"]] == [1, 2, 3, 4] and r.fid["encoder_id"] == "pixels-4x4"
    assert scripted.values == [1.0, 1.0]  # no evaluation after the stop
    assert [p.name for p in list_checkpoints(tmp_path / "o")] == ["step_00000004.pt"]  # written at the stop
    info = read_generator_info(r.model_dir)
    assert info["step"] == 2 and info["selection"] == {"by": "fid", "step": 2, "fid": 3.0, "trained_steps": 4,
                                                       "stopped_early": True, "encoder_id": "pixels-4x4"}
    assert any("early stop at step 4" in m and "step 2" in m for m in rep.messages)
    assert REGISTRY.get_sample_value("synthgate_train_fid_best", {"model_type": "diffusion"}) == 3.0
    assert REGISTRY.get_sample_value("synthgate_train_fid", {"model_type": "diffusion"}) == 4.5

    # the saved weights are the EMA weights after step 2: the same as a run that stops at step 2
    two = train(dataset.root, tiny(), quick(steps=2, checkpoint_every=100), tmp_path / "two")
    saved, ref = _weights(r.model_dir), _weights(two.model_dir)
    assert saved.keys() == ref.keys()
    for k in saved:
        torch.testing.assert_close(saved[k], ref[k], rtol=0, atol=0, msg=k)
    last = read_checkpoint(r.checkpoint)
    assert last["fid"]["best_step"] == 2 and set(last["fid_best_weights"]) == set(saved)

    # resuming a run that stopped early trains no further and keeps the same model
    again = train(dataset.root, tiny(), quick(steps=6, fid_every=1, fid_patience=2, checkpoint_every=100),
                  tmp_path / "o")
    assert again.resumed_from == 4 and again.steps == 4 and again.stopped_early and scripted.values == [1.0, 1.0]
    for k, v in _weights(again.model_dir).items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0)


def test_budget_end_is_not_an_early_stop_and_resume_continues_the_history(dataset, tmp_path, scripted):
    cfg = dict(fid_every=2, fid_patience=2, checkpoint_every=2)
    scripted.values = [4.0, 5.0]
    first = train(dataset.root, tiny(), quick(steps=4, **cfg), tmp_path / "o")
    assert first.steps == 4 and not first.stopped_early and first.fid["since_best"] == 1
    assert read_generator_info(first.model_dir)["step"] == 2  # step 4 was worse
    scripted.values = [3.0, 3.5, 3.6]
    more = train(dataset.root, tiny(), quick(steps=10, **cfg), tmp_path / "o")
    # evaluations continue from the checkpoint's state: 4.0 (2), 5.0 (4), 3.0 (6), 3.5 (8), 3.6 (10)
    assert [v for _, v in more.fid["history"]] == [4.0, 5.0, 3.0, 3.5, 3.6]
    assert more.stopped_early is False and more.steps == 10  # 8 and 10 without improvement, but 10 is the end
    assert more.fid["best_step"] == 6 and read_generator_info(more.model_dir)["step"] == 6


def test_with_the_reference_encoder_and_mlflow(dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    enc = EncoderConfig(arch="small", epochs=1, batch_size=8, cache_dir=tmp_path / "encoders")
    r = train(dataset.root, tiny(), quick(steps=4, fid_every=2, fid_images=8, mlflow=True), tmp_path / "o",
              encoder=enc, fid_sampling=SampleConfig(sampler="ddim", steps=2, per_class=1, guidance_scale=1.0))
    assert [s for s, _ in r.fid["history"]] == [2, 4] and all(np.isfinite(v) and v >= 0 for _, v in r.fid["history"])
    assert r.fid["images"] == 8 and r.fid["encoder_id"].startswith("small-")
    cached = list((tmp_path / "encoders").iterdir())
    assert len(cached) == 1  # the evaluation stage finds and reuses it (same cache key)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'o' / 'mlflow.db'}")
    run = client.get_run(r.mlflow_run_id)
    assert [m.step for m in client.get_metric_history(r.mlflow_run_id, "fid")] == [2, 4]
    assert run.data.params["fid.encoder_id"] == r.fid["encoder_id"] and run.data.params["fid.images"] == "8"


def test_fid_off_changes_nothing(dataset, tmp_path, scripted):
    r = train(dataset.root, tiny(), quick(steps=2), tmp_path / "o")
    assert r.fid is None and not r.stopped_early and scripted.seen == []
    assert "selection" not in read_generator_info(r.model_dir)
