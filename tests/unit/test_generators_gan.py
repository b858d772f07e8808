import numpy as np
import pytest
import torch

from synthgate.errors import ConfigError
from synthgate.generators.common import make_generator
from synthgate.generators.config import SampleConfig
from synthgate.generators.gan import (
    CondPixelNorm,
    CpdDiscriminator,
    GanTask,
    build_gan,
    gradient_penalty,
    sample_images,
    start_resolution,
)
from tests.unit.generators_helpers import quick, single_thread, tiny

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


@pytest.mark.parametrize(("res", "start", "n"), [(8, 4, 1), (16, 4, 2), (24, 6, 2), (40, 5, 3), (64, 4, 4)])
def test_start_resolution(res, start, n):
    assert start_resolution(res) == (start, n)


@pytest.mark.parametrize(("res", "channels"), [(16, 1), (24, 3)])
def test_generator_and_discriminator_shapes(res, channels):
    g, d = build_gan(tiny("gan", z_dim=16), res, channels, 3)
    z, y = torch.randn(5, 16), torch.tensor([0, 1, 2, 0, 1])
    x = g(z, y)
    assert x.shape == (5, channels, res, res)
    assert d(x, y).shape == (5,)
    assert len(g.to_rgb) == start_resolution(res)[1] + 1  # an output skip at every resolution


def test_unsupported_resolution():
    with pytest.raises(ConfigError, match=r"10x10.*multiples of 4 and at least 8"):
        build_gan(tiny("gan"), 10, 1, 2)


def test_conditional_pixel_norm_is_eq1():
    norm = CondPixelNorm(6, 4)
    a, cond = torch.randn(3, 6, 5, 5), torch.randn(3, 4)
    b = a / torch.sqrt((a**2).mean(dim=1, keepdim=True) + 1e-8)
    gamma = cond @ (norm.gamma.weight * norm.gamma.scale).T + norm.gamma.bias
    beta = cond @ (norm.beta.weight * norm.beta.scale).T + norm.beta.bias
    torch.testing.assert_close(norm(a, cond), b * gamma[:, :, None, None] + beta[:, :, None, None])
    # scale and bias depend on [z; y]: another condition gives another output
    assert not torch.allclose(norm(a, cond), norm(a, cond + 1))


def test_projection_head_uses_the_label():
    torch.manual_seed(0)
    d = CpdDiscriminator(8, 1, 3, 16)
    x = torch.randn(4, 1, 8, 8)
    out0, out1 = d(x, torch.zeros(4, dtype=torch.long)), d(x, torch.ones(4, dtype=torch.long))
    phi_diff = out1 - out0  # = <e_1 - e_0, phi(x)>: the projection term only
    assert not torch.allclose(out0, out1) and phi_diff.abs().min() > 0


def test_gradient_penalty_is_zero_for_unit_gradient():
    class Linear(torch.nn.Module):
        def forward(self, x, y):
            return x.flatten(1).sum(1) / np.sqrt(x[0].numel())  # |grad| = 1 everywhere

    real, fake = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    gp = gradient_penalty(Linear(), real, fake, torch.zeros(4, dtype=torch.long), make_generator(CPU, 0))
    assert gp.item() == pytest.approx(0.0, abs=1e-10)


def test_conditioning_changes_samples():
    torch.manual_seed(0)
    g, _ = build_gan(tiny("gan"), 16, 1, 2)
    g.eval()
    cfg = SampleConfig(per_class=3, seed=4)
    a, b = (sample_images(g, np.full(3, k), cfg, device=CPU) for k in (0, 1))
    assert a.shape == (3, 16, 16, 1) and a.dtype == np.uint8
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, sample_images(g, np.zeros(3, int), cfg.model_copy(update={"batch_size": 1}),
                                                   device=CPU))


def test_train_step_updates_both_networks_and_ema():
    task = GanTask(tiny("gan", n_critic=2), quick(ema_decay=0.5), 8, 1, 2, CPU)
    assert task.draws_per_step == 2
    g0 = [p.detach().clone() for p in task.g.parameters()]
    d0 = [p.detach().clone() for p in task.d.parameters()]
    x, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 0, 1])
    losses = task.step([(x, y), (x, y)], make_generator(CPU, 0, 0))
    assert set(losses) == {"loss", "g_loss", "gp", "wasserstein"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, task.g.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, task.d.parameters(), strict=True))
    assert all(p.requires_grad for p in task.d.parameters())
    assert task.ema.optimization_step == 1
