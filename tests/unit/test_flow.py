"""Rectified flow (issue 37, item 1): the samplers against velocity fields with known solutions, the loss and
its timesteps, a tiny flow model trained, resumed exactly, sampled with euler and heun and recorded, a reflow
round on its pairs (resumed exactly, its parent recorded), and each bad input the issue names."""

import json
import shutil

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from synthgate.errors import ConfigError, DataError
from synthgate.generators.common import make_generator
from synthgate.generators.config import AutoencoderConfig, GeneratorConfig, SampleConfig
from synthgate.generators.diffusion import build_scheduler, build_unet, denoise, sample_images
from synthgate.generators.family import get_family
from synthgate.generators.flow import flow_loss
from synthgate.generators.model import load_generator
from synthgate.generators.reflow import PAIRS_INFO, make_pairs
from synthgate.generators.sample import lineage_tags, sample
from synthgate.generators.train import train
from synthgate.utils import sha256_file
from tests.unit.generators_helpers import make_dataset, one_thread_fixture, quick, tiny  # noqa: F401 (fixture)
from tests.unit.test_train_loop import flat_state

CPU = torch.device("cpu")
FLOW = tiny(objective="rectified_flow")


class Field(torch.nn.Module):
    """A velocity field v(x, t) in the UNet's calling convention (t = 1000 x the flow time)."""

    def __init__(self, v):
        super().__init__()
        self.v, self.calls = v, 0

    def forward(self, x, t, class_labels):
        self.calls += 1
        s = (t.float() / 1000).view(-1, 1, 1, 1)
        return type("Out", (), {"sample": self.v(x, s, class_labels)})()


def integrate(field, x1, sampler, steps, guidance=1.0):
    cfg = SampleConfig(sampler=sampler, steps=steps, guidance_scale=guidance, per_class=1)
    y = torch.zeros(len(x1), dtype=torch.long)
    return denoise(field, build_scheduler(FLOW).config, x1, y, cfg, null_class=1, device=CPU, amp=False,
                   generator=make_generator(CPU, 0))


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_the_samplers_follow_straight_paths_exactly(sampler, steps):
    """Constant velocity and the straight path of rectified flow to a known image: one step is as good as many."""
    x1 = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    c = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    # diffusers' Heun turns the velocity into a derivative through x - (x - v t) over t, which at its t = 0.001
    # costs float32 ~1e-4; Euler adds the velocity times the step directly
    tol = 2e-4 if sampler == "heun" else 1e-6
    const = Field(lambda x, s, y: c.expand_as(x))
    torch.testing.assert_close(integrate(const, x1, sampler, steps), x1 - c, rtol=0, atol=tol)
    assert const.calls == (2 * steps - 1 if sampler == "heun" else steps)
    x0 = torch.rand(3, 1, 4, 4) * 2 - 1  # the images the straight paths from x1 end at: v = (x - x0) / t
    straight = Field(lambda x, s, y: (x - torch.cat([x0] * (len(x) // len(x0)))) / s)
    torch.testing.assert_close(integrate(straight, x1, sampler, steps), x0, rtol=0, atol=10 * tol)
    torch.testing.assert_close(integrate(straight, x1, sampler, steps, guidance=3.0), x0, rtol=0, atol=10 * tol)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_euler_is_first_order_and_heun_second_on_a_time_dependent_field(steps):
    """v = c t: the exact endpoint is x1 - c / 2; Euler's equal steps give x1 - c (N + 1) / (2N), off by c / (2N),
    Heun's trapezoids are exact (but for its last step, Euler from t = 0.001, and float32 round-off)."""
    x1, c = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)
    field = Field(lambda x, s, y: c * s)
    euler = integrate(field, x1, "euler", steps)
    torch.testing.assert_close(euler, x1 - c * (steps + 1) / (2 * steps), rtol=0, atol=1e-6)
    if steps > 1:
        torch.testing.assert_close(integrate(field, x1, "heun", steps), x1 - c / 2, rtol=0, atol=2e-4)


@pytest.mark.parametrize(("timesteps", "mean", "median", "std"),
                         [("logit_normal", 0.0, 0.5, 0.21), ("logit_normal", 1.0, 0.73, 0.18), ("uniform", 0.0, 0.5, 0.289)])
def test_the_loss_is_the_velocity_error_at_the_configured_times(timesteps, mean, median, std):
    fcfg = tiny(objective="rectified_flow", flow={"timesteps": timesteps, "logit_mean": mean}).flow
    x0 = torch.rand(4000, 1, 2, 2) * 2 - 1
    seen = {}

    def exact(x, s, y):  # knows the images, so it reads the velocity off x_t = (1 - t) x0 + t x1
        seen["t"], seen["y"] = s.flatten(), y
        return (x - x0) / s

    loss = flow_loss(Field(exact), fcfg, 1000, x0, torch.zeros(4000, dtype=torch.long), null_class=5,
                     cond_drop_prob=0.2, generator=make_generator(CPU, 0))
    assert loss.item() < 1e-8
    t = seen["t"]
    assert 0 < t.min() and t.max() < 1
    assert t.median().item() == pytest.approx(median, abs=0.02) and t.std().item() == pytest.approx(std, abs=0.01)
    assert 0.17 < (seen["y"] == 5).float().mean().item() < 0.23  # labels dropped to the null class
    backwards = Field(lambda x, s, y: (x0 - x) / s)  # the velocity of the other convention (noise <- image)
    assert flow_loss(backwards, fcfg, 1000, x0, torch.zeros(4000, dtype=torch.long), null_class=5, cond_drop_prob=0,
                     generator=make_generator(CPU, 0)).item() > 1.0


def test_a_sampler_of_the_other_objective_is_refused_naming_the_models_samplers():
    unet = build_unet(tiny(), 8, 1, 2).eval()
    labels = np.array([0, 1])
    with pytest.raises(ConfigError, match=r"sample.sampler: 'dpmsolver\+\+' samples ddpm models; this model's "
                                          r"objective is rectified_flow, which samples with euler or heun"):
        sample_images(unet, build_scheduler(FLOW).config, labels, SampleConfig(per_class=1), null_class=2, device=CPU)
    with pytest.raises(ConfigError, match=r"sample.sampler: 'heun' samples rectified_flow models; this model's "
                                          r"objective is ddpm, which samples with ddpm, ddim or dpmsolver\+\+"):
        sample_images(unet, build_scheduler(tiny()).config, labels, SampleConfig(sampler="heun", per_class=1),
                      null_class=2, device=CPU)
    with pytest.raises(ValidationError, match="flow.reflow_from trains a second rectified-flow round: set objective"):
        tiny(flow={"reflow_from": "models/first", "reflow_pairs": 10})
    with pytest.raises(ValidationError, match="reflow_from is set but reflow_pairs is 0"):
        tiny(objective="rectified_flow", flow={"reflow_from": "models/first"})
    with pytest.raises(ValidationError, match="apply to the diffusion and latent families only, not to type 'gan'"):
        tiny("gan", objective="rectified_flow")


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "ds")


@pytest.fixture(scope="module")
def flow_run(ds, tmp_path_factory):
    """A tiny rectified-flow model, 4 steps, checkpointed at 2 and 4."""
    return train(ds.root, FLOW, quick(steps=4, checkpoint_every=2), tmp_path_factory.mktemp("flow") / "run")


def assert_same_state(a, b):
    a, b = flat_state(a.checkpoint), flat_state(b.checkpoint)
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_a_flow_model_resumes_exactly_samples_with_euler_and_heun_and_records_them(ds, flow_run, tmp_path):
    part = train(ds.root, FLOW, quick(steps=2, checkpoint_every=2), tmp_path / "split")
    resumed = train(ds.root, FLOW, quick(steps=4, checkpoint_every=2), tmp_path / "split")
    assert part.steps == 2 and resumed.resumed_from == 2 and resumed.steps == 4
    assert_same_state(flow_run, resumed)
    info = json.loads((flow_run.model_dir / "synthgate_generator.json").read_text())
    assert info["objective"] == "rectified_flow" and info["samplers"] == ["euler", "heun"] and "reflow" not in info
    assert json.loads((flow_run.model_dir / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == \
        "FlowMatchEulerDiscreteScheduler"
    for sampler, nfe in (("euler", 3), ("heun", 5)):
        cfg = SampleConfig(sampler=sampler, steps=3, per_class=2, device="cpu")
        out = sample(flow_run.model_dir, cfg, tmp_path / sampler)
        images = np.asarray(out.images)
        assert images.shape == (4, 16, 16, 1) and images.std() > 0
        g = out.manifest["generator"]
        assert (g["objective"], g["sampler"], g["steps"], g["network_evaluations"]) == ("rectified_flow", sampler, 3, nfe)
        assert lineage_tags(g) == {"lineage.generator_objective": "rectified_flow", "lineage.sampler": sampler,
                                   "lineage.sampler_steps": "3", "lineage.network_evaluations": str(nfe)}
        np.testing.assert_array_equal(images, load_generator(resumed.model_dir, "cpu").sample(np.repeat([0, 1], 2), cfg))
    with pytest.raises(ConfigError, match=r"'ddim' samples ddpm models; this model's objective is rectified_flow"):
        sample(flow_run.model_dir, SampleConfig(sampler="ddim", per_class=1, device="cpu"), tmp_path / "ddim")


def reflow_cfg(parent, tmp_path, pairs=6):
    return tiny(objective="rectified_flow", flow={"reflow_from": str(parent), "reflow_pairs": pairs, "reflow_steps": 2,
                                                   "reflow_cache_dir": str(tmp_path / "pairs")})


def test_a_reflow_round_trains_on_its_parents_pairs_resumes_exactly_and_records_its_parent(ds, flow_run, tmp_path):
    gcfg = reflow_cfg(flow_run.model_dir, tmp_path)
    full = train(ds.root, gcfg, quick(steps=4, checkpoint_every=2), tmp_path / "full")
    folder, = (tmp_path / "pairs").iterdir()  # drawn once: the runs below read them
    drawn = folder.stat().st_mtime_ns
    train(ds.root, gcfg, quick(steps=2, checkpoint_every=2), tmp_path / "split")
    resumed = train(ds.root, gcfg, quick(steps=4, checkpoint_every=2), tmp_path / "split")
    assert resumed.resumed_from == 2 and folder.stat().st_mtime_ns == drawn
    assert_same_state(full, resumed)
    parent_sha = sha256_file(flow_run.model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    info = json.loads((full.model_dir / "synthgate_generator.json").read_text())
    assert info["reflow"]["round"] == 2 and info["reflow"]["parent"]["weights_sha256"] == parent_sha
    assert info["reflow"]["parent"]["step"] == 4 and info["reflow"]["pairs"]["count"] == 6
    pairs = torch.load(folder / "pairs.pt", weights_only=True)
    assert pairs["noise"].shape == pairs["targets"].shape == (6, 1, 16, 16)
    # the pairs are the parent's Euler ODE from their noise (2 steps, no guidance)
    parent = load_generator(flow_run.model_dir, "cpu")
    again = denoise(parent.module, parent.context, pairs["noise"][:2], pairs["labels"][:2],
                    SampleConfig(sampler="euler", steps=2, guidance_scale=1.0, per_class=1), null_class=2, device=CPU,
                    amp=False, generator=make_generator(CPU, 0))
    torch.testing.assert_close(again, pairs["targets"][:2])
    task = get_family("diffusion").make_task(gcfg, quick(), 16, 1, 2, CPU)
    task.prepare(ds, None)  # the second round starts from the first's weights (and its EMA from them)
    for name, p in parent.module.state_dict().items():
        torch.testing.assert_close(task.unet.state_dict()[name], p, rtol=0, atol=0)
    assert all(torch.equal(e, p) for e, p in zip(task.ema.shadow_params, task.unet.parameters(), strict=True))
    out = sample(full.model_dir, SampleConfig(sampler="euler", steps=1, per_class=1, device="cpu"), tmp_path / "s")
    assert out.manifest["generator"]["reflow"] == {"round": 2, "parent_weights_sha256": parent_sha}
    tags = lineage_tags(out.manifest["generator"])  # what the registry sets on the version
    assert tags["lineage.reflow_parent_sha256"] == parent_sha and tags["lineage.reflow_round"] == "2"


def test_reflow_bad_inputs_name_what_is_wrong(ds, flow_run, tmp_path):
    ddpm = train(ds.root, tiny(), quick(steps=1, checkpoint_every=1), tmp_path / "ddpm")
    with pytest.raises(ConfigError, match=rf"generator.flow.reflow_from: {ddpm.model_dir} is a ddpm model; reflow "
                                          r"draws its pairs from a rectified-flow model"):
        train(ds.root, reflow_cfg(ddpm.model_dir, tmp_path), quick(steps=1), tmp_path / "r0")
    with pytest.raises(ConfigError, match=r"generator.objective: checkpoint 'ddpm', now 'rectified_flow'"):
        train(ds.root, FLOW, quick(steps=2), tmp_path / "ddpm")  # a DDPM run's checkpoint is not resumed as a flow
    with pytest.raises(ConfigError, match=r"is not a first round of this model; mismatching fields:\n  "
                                          r"generator.size: .* 'tiny', this run 'small'"):
        train(ds.root, reflow_cfg(flow_run.model_dir, tmp_path).model_copy(update={"size": "small"}), quick(steps=1),
              tmp_path / "r1")
    run = train(ds.root, reflow_cfg(flow_run.model_dir, tmp_path), quick(steps=2, checkpoint_every=2), tmp_path / "r")
    # pairs drawn from another model (here the reflow model itself) in the parent's place are refused
    folder, = (tmp_path / "pairs").iterdir()
    other = tmp_path / "other-pairs"
    make_pairs(load_generator(run.model_dir, "cpu"), np.array([0, 1, 0, 1, 0, 1]), FLOW.flow.model_copy(
        update={"reflow_steps": 2}), other, dataset_hash=ds.content_hash)
    shutil.rmtree(folder)
    shutil.copytree(other, folder)
    run_sha = json.loads((other / PAIRS_INFO).read_text())["parent"]["weights_sha256"]
    with pytest.raises(DataError, match=rf"these reflow pairs were drawn from model {run_sha[:16]} \({run.model_dir}\), "
                                        rf"not from generator.flow.reflow_from {flow_run.model_dir}"):
        train(ds.root, reflow_cfg(flow_run.model_dir, tmp_path), quick(steps=4), tmp_path / "r")
    # resuming the reflow run with another first-round model in reflow_from (here a copy of the reflow model)
    shutil.copytree(run.model_dir, tmp_path / "another")
    with pytest.raises(ConfigError, match=r"the checkpoint's reflow round started from model .*, but generator.flow."
                                          rf"reflow_from \({tmp_path / 'another'}\) now holds model {run_sha[:16]}"):
        train(ds.root, reflow_cfg(tmp_path / "another", tmp_path), quick(steps=4), tmp_path / "r")


def test_a_latent_flow_model_trains_and_samples_with_heun(tmp_path):
    ds = make_dataset(tmp_path / "ds", {"lung": 12, "bone": 10}, res=16, val_every=4)
    ae = AutoencoderConfig(kind="kl", steps=10, batch_size=8, cache_dir=tmp_path / "autoencoders")
    gcfg = GeneratorConfig(type="latent", size="tiny", objective="rectified_flow", autoencoder=ae)
    run = train(ds.root, gcfg, quick(steps=2, checkpoint_every=2), tmp_path / "run")
    gen = load_generator(run.model_dir, "cpu")
    assert gen.info["objective"] == "rectified_flow"
    images = gen.sample(np.array([0, 1]), SampleConfig(sampler="heun", steps=2, per_class=1))
    assert images.shape == (2, 16, 16, 1) and images.dtype == np.uint8
    with pytest.raises(ConfigError, match=r"'ddpm' samples ddpm models; this model's objective is rectified_flow"):
        gen.sample(np.array([0]), SampleConfig(sampler="ddpm", per_class=1))
