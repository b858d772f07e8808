import numpy as np
import pytest
import torch

import synthgate.generators.diffusion as diffusion
from synthgate.data.canonical import load_dataset
from synthgate.errors import ConfigError, SynthgateError
from synthgate.generators.config import GeneratorConfig, SampleConfig
from synthgate.generators.model import load_generator
from synthgate.generators.sample import sample
from synthgate.generators.train import list_checkpoints, read_checkpoint, train
from synthgate.monitoring.metrics import REGISTRY
from tests.unit.generators_helpers import (  # noqa: F401 (fixtures)
    RecordingReporter,
    dataset_fixture,
    make_dataset,
    one_thread_fixture,
    quick,
    tiny,
)


def flat_state(path):
    state = read_checkpoint(path)["task"]
    out = {f"{k}.{n}": t for k, m in state["modules"].items() for n, t in m.items()}
    out |= {f"ema.{i}": t for i, t in enumerate(state["ema"]["shadow_params"])}
    for k, opt in state["optimizers"].items():
        for pid, s in opt["state"].items():
            out |= {f"opt.{k}.{pid}.{n}": t for n, t in s.items() if torch.is_tensor(t)}
    extra = [(k, v) for k, v in state.items() if k not in ("modules", "ema", "optimizers")]  # a family's own state
    while extra:
        k, v = extra.pop()
        if isinstance(v, dict):
            extra += [(f"{k}.{n}", x) for n, x in v.items()]
        elif torch.is_tensor(v) or isinstance(v, int | float):  # numbers; e.g. the latent family's hashes are not
            out[k] = torch.as_tensor(v)
    return out


#: per family, settings under which everything it checkpoints changes within the 6 steps (stylegan2:
#: R1 and path length at steps 0, 2, 4, ADA's p adjusted after steps 2, 4, 6 with augmentation on)
RESUME_SETTINGS = {"gan": {"n_critic": 2},
                   "stylegan2": {"z_dim": 16, "stylegan2": {"mapping_layers": 2, "r1_interval": 2, "pl_interval": 2,
                                                            "ada_interval": 2, "ada_images": 200, "augment_p": 0.2}}}


@pytest.mark.parametrize("kind", ["diffusion", "gan", "stylegan2"])
def test_resumed_run_equals_uninterrupted_run(kind, dataset, tmp_path):
    gcfg = tiny(kind, **RESUME_SETTINGS.get(kind, {}))
    full = train(dataset.root, gcfg, quick(steps=6, checkpoint_every=3), tmp_path / "full")
    part = train(dataset.root, gcfg, quick(steps=3, checkpoint_every=3), tmp_path / "split")
    assert part.steps == 3 and [p.name for p in list_checkpoints(tmp_path / "split")] == ["step_00000003.pt"]
    resumed = train(dataset.root, gcfg, quick(steps=6, checkpoint_every=3), tmp_path / "split")
    assert resumed.resumed_from == 3 and resumed.steps == 6
    a, b = flat_state(full.checkpoint), flat_state(resumed.checkpoint)
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert read_checkpoint(resumed.checkpoint)["step"] == 6
    assert resumed.final_loss == pytest.approx(full.final_loss, rel=1e-4)
    cfg = SampleConfig(steps=2, per_class=1)
    np.testing.assert_array_equal(load_generator(full.model_dir, "cpu").sample(np.array([0, 1]), cfg),
                                  load_generator(resumed.model_dir, "cpu").sample(np.array([0, 1]), cfg))


def test_keeps_the_newest_checkpoints_and_restarts_without_resume(dataset, tmp_path):
    r = train(dataset.root, tiny(), quick(steps=5, checkpoint_every=1, keep_checkpoints=2), tmp_path / "o")
    assert [p.name for p in list_checkpoints(tmp_path / "o")] == ["step_00000004.pt", "step_00000005.pt"]
    assert r.checkpoint == tmp_path / "o" / "checkpoints" / "step_00000005.pt"
    again = train(dataset.root, tiny(), quick(steps=2), tmp_path / "o", resume=False)
    assert again.resumed_from == 0 and [p.name for p in list_checkpoints(tmp_path / "o")] == ["step_00000002.pt"]


def test_checkpoint_of_another_configuration_is_refused(dataset, tmp_path):
    train(dataset.root, tiny(), quick(steps=2), tmp_path / "o")
    other = make_dataset(tmp_path / "other", seed=1)
    with pytest.raises(ConfigError) as e:
        train(other.root, tiny(prediction_type="v_prediction"), quick(steps=4), tmp_path / "o")
    msg = str(e.value)
    assert "step_00000002.pt" in msg and "generator.prediction_type: checkpoint 'epsilon', now 'v_prediction'" in msg
    assert "dataset_content_hash" in msg and "generator.size" not in msg
    assert "start over" in e.value.hint


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(dataset, tmp_path, monkeypatch):
    real = diffusion.diffusion_loss
    calls = []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) >= 5 else loss

    monkeypatch.setattr(diffusion, "diffusion_loss", poisoned)
    with pytest.raises(SynthgateError) as e:
        train(dataset.root, tiny(), quick(steps=10, checkpoint_every=2, log_every=3), tmp_path / "o")
    good = tmp_path / "o" / "checkpoints" / "step_00000004.pt"
    assert "NaN/inf at step 5" in str(e.value) and f"last good checkpoint is {good}" in str(e.value)
    assert list_checkpoints(tmp_path / "o")[-1] == good
    assert all(torch.isfinite(t).all() for t in flat_state(good).values())
    assert not (tmp_path / "o" / "model").exists()


def test_bad_inputs_are_refused_with_a_clear_message(dataset, tmp_path):
    with pytest.raises(ConfigError, match="unknown model type 'vae'"):
        train(dataset.root, GeneratorConfig.model_construct(type="vae", size="tiny"), quick(), tmp_path / "o")
    one = make_dataset(tmp_path / "one", {"lung": 6})
    with pytest.raises(ConfigError, match="1 class .*at least 2 classes"):
        train(one.root, tiny(), quick(), tmp_path / "o")
    odd = make_dataset(tmp_path / "odd", res=12)
    with pytest.raises(ConfigError, match="12x12 images are not supported"):
        train(odd.root, tiny(), quick(), tmp_path / "o")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="train.device: cuda requested but torch sees no CUDA GPU"):
            train(dataset.root, tiny(), quick(device="cuda"), tmp_path / "o")


def test_end_to_end_with_mlflow_prometheus_and_sampling(dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    steps_before = REGISTRY.get_sample_value("synthgate_train_steps_total", {"model_type": "diffusion"}) or 0.0
    rep = RecordingReporter()
    out = tmp_path / "run"
    r = train(dataset.root, tiny(), quick(steps=4, mlflow=True, sample_grid_every=4, sample_grid_per_class=2,
                                          sample_grid_steps=2), out, reporter=rep)
    assert r.steps == 4 and np.isfinite(r.final_loss) and r.images_per_second > 0 and r.mlflow_run_id
    assert rep.tasks[0][1] == 4 and rep.advanced == 4
    assert any("loss" in m and "images/s" in m for m in rep.messages)
    assert REGISTRY.get_sample_value("synthgate_train_steps_total", {"model_type": "diffusion"}) == steps_before + 4
    assert REGISTRY.get_sample_value("synthgate_train_loss", {"model_type": "diffusion"}) == pytest.approx(r.final_loss)
    assert REGISTRY.get_sample_value("synthgate_train_images_per_second", {"model_type": "diffusion"}) > 0
    assert (out / "grids" / "step_00000004.png").exists()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    run = client.get_run(r.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["generator.type"] == "diffusion" and run.data.params["train.steps"] == "4"
    assert {"loss", "images_per_second"} <= set(run.data.metrics)
    assert [a.path for a in client.list_artifacts(r.mlflow_run_id, "grids")] == ["grids/step_00000004.png"]
    assert str(out / "mlruns") in run.info.artifact_uri
    more = train(dataset.root, tiny(), quick(steps=6, mlflow=True), out)  # resuming continues the MLflow run
    assert more.resumed_from == 4 and more.mlflow_run_id == r.mlflow_run_id
    assert [m.step for m in client.get_metric_history(r.mlflow_run_id, "loss")] == [2, 4, 6]

    sample(r.model_dir, SampleConfig(sampler="ddim", steps=2, match_real=True), tmp_path / "syn", dataset.root)
    opened = load_dataset(tmp_path / "syn")
    assert len(opened.images) == len(dataset.split_indices("train")) and opened.classes == dataset.classes
    assert opened.manifest["generator"]["dataset_content_hash"] == dataset.content_hash


def test_a_time_budget_stops_at_a_log_step_and_saves_there(dataset, tmp_path):
    """train.max_seconds: the run stops at the first step past the budget, checkpoints and saves the
    model of that step (benchmarks compare families at equal wall-clock budgets)."""
    r = train(dataset.root, tiny(), quick(steps=10, log_every=5, checkpoint_every=5, max_seconds=1e-6),
              tmp_path / "run")
    assert r.steps == 1 and [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_00000001.pt"]
    assert load_generator(r.model_dir, "cpu").info["step"] == 1
    unlimited = train(dataset.root, tiny(), quick(steps=4, log_every=2, max_seconds=3600), tmp_path / "long")
    assert unlimited.steps == 4
