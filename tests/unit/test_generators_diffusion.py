import numpy as np
import pytest
import torch

from synthgate.errors import ConfigError
from synthgate.figures import make_grid
from synthgate.generators.common import make_generator
from synthgate.generators.config import SampleConfig
from synthgate.generators.diffusion import (
    DiffusionTask,
    build_scheduler,
    build_unet,
    diffusion_loss,
    make_sampler,
    sample_images,
)
from tests.unit.generators_helpers import quick, single_thread, tiny

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_unet_sizes_shapes_and_null_class():
    unet = build_unet(tiny(), 16, 1, 3)
    assert n_params(unet) < 1_500_000
    assert unet.class_embedding.num_embeddings == 4  # 3 classes + the null class
    out = unet(torch.randn(2, 1, 16, 16), torch.tensor([10, 500]), class_labels=torch.tensor([0, 3])).sample
    assert out.shape == (2, 1, 16, 16)
    with torch.device("meta"):
        small, base = (n_params(build_unet(tiny().model_copy(update={"size": s}), 64, 3, 10)) for s in ("small", "base"))
    assert 1_500_000 < small < base and 35_500_000 < base < 36_100_000  # base: the 35.8M UNet


@pytest.mark.parametrize("res", [4, 12, 20, 36])
def test_unsupported_resolution_names_it_and_the_sizes_that_work(res):
    with pytest.raises(ConfigError, match=rf"{res}x{res}.*multiples of 8 and at least 8"):
        build_unet(tiny(), res, 1, 2)


class Oracle(torch.nn.Module):
    """Stands in for the UNet: returns the exact epsilon or velocity target for the x_t it is given."""

    def __init__(self, scheduler, x0, kind):
        super().__init__()
        self.scheduler, self.x0, self.kind, self.labels = scheduler, x0, kind, None

    def forward(self, x_t, t, class_labels):
        self.labels = class_labels
        a = self.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (x_t - a.sqrt() * self.x0) / (1 - a).sqrt()
        out = eps if self.kind == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * self.x0
        return type("Out", (), {"sample": out})()


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_loss_targets_epsilon_or_velocity_and_drops_labels_to_null(prediction):
    sched = build_scheduler(tiny(prediction_type=prediction, beta_schedule="linear"))
    x0 = torch.rand(2000, 1, 2, 2) * 2 - 1
    labels = torch.zeros(2000, dtype=torch.long)
    gen = make_generator(CPU, 0)
    right = Oracle(sched, x0, prediction)
    loss = diffusion_loss(right, sched, x0, labels, null_class=7, cond_drop_prob=0.25, generator=gen)
    assert loss.item() < 1e-6
    assert 0.2 < (right.labels == 7).float().mean().item() < 0.3 and set(right.labels.tolist()) == {0, 7}
    wrong = Oracle(sched, x0, "v_prediction" if prediction == "epsilon" else "epsilon")
    assert diffusion_loss(wrong, sched, x0, labels, null_class=7, cond_drop_prob=0.0, generator=gen).item() > 0.01


def test_cosine_schedule_is_squaredcos():
    assert build_scheduler(tiny()).config.beta_schedule == "squaredcos_cap_v2"


class CountingUNet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet, self.calls, self.config = unet, [], unet.config

    def forward(self, x, t, class_labels):
        self.calls.append(len(x))
        return self.unet(x, t, class_labels=class_labels)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver++"])
@pytest.mark.parametrize("steps", [1, 4, 7])
def test_sampler_runs_exactly_the_requested_steps(sampler, steps):
    sched = build_scheduler(tiny())
    s = make_sampler(sched.config, sampler)
    s.set_timesteps(steps)
    assert len(s.timesteps) == steps
    if sampler == "dpmsolver++":
        assert s.config.algorithm_type == "dpmsolver++"
    unet = CountingUNet(build_unet(tiny(), 8, 1, 2).eval())
    cfg = SampleConfig(sampler=sampler, steps=steps, guidance_scale=2.0, per_class=1, batch_size=3)
    out = sample_images(unet, sched.config, np.array([0, 1, 1]), cfg, null_class=2, device=CPU)
    assert out.shape == (3, 8, 8, 1) and out.dtype == np.uint8
    assert unet.calls == [6] * steps  # conditional and unconditional halves in one batch


def test_conditioning_changes_samples_and_seed_reproduces_them():
    torch.manual_seed(0)
    unet = build_unet(tiny(), 16, 1, 2).eval()
    sched = build_scheduler(tiny())
    cfg = SampleConfig(sampler="ddim", steps=3, guidance_scale=1.0, per_class=2)
    a = sample_images(unet, sched.config, np.array([0, 0]), cfg, null_class=2, device=CPU)
    b = sample_images(unet, sched.config, np.array([1, 1]), cfg, null_class=2, device=CPU)
    again = sample_images(unet, sched.config, np.array([0, 0]), cfg.model_copy(update={"batch_size": 1}),
                          null_class=2, device=CPU)
    other_seed = sample_images(unet, sched.config, np.array([0, 0]), cfg.model_copy(update={"seed": 1}),
                               null_class=2, device=CPU)
    assert not np.array_equal(a, b)
    assert np.abs(a.astype(int) - again.astype(int)).max() <= 1  # per-image noise: batch size does not matter
    assert not np.array_equal(a, other_seed)
    with pytest.raises(ConfigError, match="sample.steps"):
        sample_images(unet, sched.config, np.array([0]), cfg.model_copy(update={"steps": 5000}), null_class=2,
                      device=CPU)


def test_ema_tracks_the_weights():
    task = DiffusionTask(tiny(), quick(ema_decay=0.9), 8, 1, 2, CPU)
    before = [p.detach().clone() for p in task.unet.parameters()]
    x, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 0, 1])
    for i in range(3):
        loss = task.step([(x, y)], make_generator(CPU, 0, i))["loss"]
        assert loss.ndim == 0 and torch.isfinite(loss)
    now = list(task.unet.parameters())
    shadow = task.ema.shadow_params
    assert task.ema.optimization_step == 3
    assert any(not torch.equal(s, b) for s, b in zip(shadow, before, strict=True))  # EMA moved
    assert any(not torch.equal(s, p) for s, p in zip(shadow, now, strict=True))  # but lags the weights
    ema = task.ema_module()
    assert all(torch.equal(p, s) for p, s in zip(ema.parameters(), shadow, strict=True))
    assert not ema.training


def test_make_grid_tiles_images():
    imgs = np.stack([np.full((4, 5, 1), i, np.uint8) for i in range(7)])
    grid = make_grid(imgs, nrow=3, pad=1)
    assert grid.shape == (3 * 5 + 1, 3 * 6 + 1, 1)
    assert grid[1, 1, 0] == 0 and grid[1 + 5, 1 + 6, 0] == 4 and grid[1 + 10, 1, 0] == 6
