"""The stylegan2 family at tiny sizes on CPU: the networks' parts against their definitions, ADA's
augmentations and its p controller, the bad inputs issue #36 names, and a few training steps that go
through the shared loop, the model folder, sampling with truncation and Prometheus/MLflow logging."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthgate.config import load_params
from synthgate.errors import ConfigError
from synthgate.generators.ada import AdaController, AugmentPipe
from synthgate.generators.common import make_generator
from synthgate.generators.config import SampleConfig
from synthgate.generators.model import load_generator
from synthgate.generators.sample import sample
from synthgate.generators.stylegan2 import StyleGan2Task, build_discriminator, build_generator, sample_images
from synthgate.generators.stylegan2_nets import ModConv
from synthgate.generators.tracking import TrainTracker
from synthgate.generators.train import train
from synthgate.monitoring.metrics import REGISTRY
from tests.unit.generators_helpers import (  # noqa: F401 (fixtures)
    dataset_fixture,
    make_dataset,
    one_thread_fixture,
    quick,
    tiny,
)

CPU = torch.device("cpu")


def sg(**kw):
    """A tiny StyleGAN2 whose lazy regularisers and ADA all act within a few steps."""
    return tiny("stylegan2", z_dim=16, stylegan2={"mapping_layers": 2, "r1_interval": 2, "pl_interval": 2,
                                                    "ada_interval": 2, "ada_images": 200, **kw})


@pytest.mark.parametrize(("res", "channels", "num_ws"), [(16, 1, 6), (28, 3, 6), (8, 1, 4)])
def test_generator_and_discriminator_shapes(res, channels, num_ws):
    g, d = build_generator(sg(), res, channels, 3), build_discriminator(sg(), res, channels, 3)
    y = torch.tensor([0, 1, 2, 0, 1])
    img, ws = g(torch.randn(5, 16), y, return_ws=True)
    assert img.shape == (5, channels, res, res) and ws.shape == (5, num_ws, 32) and g.num_ws == num_ws
    assert d(img, y).shape == (5,)


def test_modulated_convolution_equals_the_demodulated_grouped_convolution():
    torch.manual_seed(0)
    conv = ModConv(3, 4, 3, w_dim=8)
    x, w = torch.randn(2, 3, 5, 5), torch.randn(2, 8)
    styles = conv.affine(w)
    weight = conv.weight[None] * conv.weight_gain * styles[:, None, :, None, None]  # (N, out, in, k, k)
    weight = weight / weight.square().sum(dim=(2, 3, 4), keepdim=True).add(1e-8).sqrt()  # demodulation, Eq. 3
    ref = F.conv2d(x.reshape(1, 6, 5, 5), weight.reshape(8, 3, 3, 3), padding=1, groups=2).reshape(2, 4, 5, 5)
    torch.testing.assert_close(conv(x, w), ref, rtol=1e-4, atol=1e-5)


def test_class_means_of_w_and_truncation_toward_them():
    torch.manual_seed(0)
    g = build_generator(sg(w_avg_beta=0.5), 16, 1, 3)
    w = torch.randn(4, 32)
    g.track_w_avg(w, torch.tensor([0, 0, 1, 1]))  # a first update is the batch mean (no pull toward zero)
    torch.testing.assert_close(g.w_avg[:2], torch.stack([w[:2].mean(0), w[2:].mean(0)]))
    assert g.w_avg[2].abs().sum() == 0 and g.w_avg_updates.tolist() == [1, 1, 0]
    g.track_w_avg(torch.zeros(2, 32), torch.tensor([0, 0]))  # then a running mean (here beta 0.5)
    torch.testing.assert_close(g.w_avg[0], w[:2].mean(0) / 2)
    z, y = torch.randn(3, 16), torch.tensor([0, 1, 0])
    noise = g.noise(3, make_generator(CPU, 1), CPU)
    _, ws = g(z, y, noise=noise, return_ws=True)
    _, ws_t = g(z, y, noise=noise, truncation_psi=0.25, return_ws=True)
    torch.testing.assert_close(ws_t, g.w_avg[y][:, None] + 0.25 * (ws - g.w_avg[y][:, None]))


def test_sampling_is_seeded_per_image_and_follows_label_and_psi():
    torch.manual_seed(0)
    g = build_generator(sg(), 16, 1, 2).eval()
    g.w_avg.normal_()
    cfg = SampleConfig(per_class=3, seed=4)
    a, b = (sample_images(g, np.full(3, k), cfg, device=CPU) for k in (0, 1))
    assert a.shape == (3, 16, 16, 1) and a.dtype == np.uint8 and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, sample_images(g, np.zeros(3, int), cfg.model_copy(update={"batch_size": 1}),
                                                   device=CPU))
    assert not np.array_equal(a, sample_images(g, np.zeros(3, int), cfg.model_copy(update={"truncation_psi": 0.5}),
                                               device=CPU))


def test_augmentations_are_exact_differentiable_and_off_at_p0():
    x = torch.randn(64, 1, 8, 8, requires_grad=True)
    gen = make_generator(CPU, 0)
    assert AugmentPipe(("xflip", "scale", "contrast"))(x, 0.0, gen) is x
    rot = AugmentPipe(("rotate90",))(x, 1.0, gen)
    found = [next(k for k in range(4) if torch.allclose(rot[i], torch.rot90(x[i], k, (1, 2)), atol=1e-5))
             for i in range(64)]  # raises StopIteration if an image is not a quarter-turn of its source
    assert set(found) == {0, 1, 2, 3}
    flip = AugmentPipe(("xflip",))(x, 0.5, gen)
    assert all(torch.allclose(flip[i], x[i], atol=1e-5) or torch.allclose(flip[i], x[i].flip(-1), atol=1e-5)
               for i in range(64))
    shift = AugmentPipe(("xint",))(x, 1.0, gen)  # integer translation: every output pixel is an input pixel
    assert torch.isin(shift[0].detach().round(decimals=4), x[0].detach().round(decimals=4)).all()
    every = AugmentPipe(("xflip", "rotate90", "xint", "scale", "brightness", "contrast"))(x, 0.8, gen)
    (grad,) = torch.autograd.grad(every.square().sum(), x)
    assert every.shape == x.shape and grad.abs().sum() > 0  # the generator's gradient passes through


def test_ada_moves_p_toward_the_target_at_the_configured_speed():
    ada = AdaController(0.0, True, target=0.6, interval=2, images=100, device=CPU)
    for _ in range(4):  # D calls real images real: r_t = 1 > 0.6, p rises by 4 x 2 / 100 per interval
        ada.observe(torch.ones(4))
        ada.step(4)
    assert ada.p == pytest.approx(0.16) and ada.rt == 1.0
    saved = ada.state_dict()
    for _ in range(40):  # then fooled: r_t = -1, p falls to 0 and stays there
        ada.observe(-torch.ones(4))
        ada.step(4)
    assert ada.p == 0.0
    ada.load_state_dict(saved)
    assert ada.p == pytest.approx(0.16) and ada.steps == 4
    fixed = AdaController(0.3, False, target=0.6, interval=1, images=1, device=CPU)
    fixed.observe(torch.ones(4))
    fixed.step(4)
    assert fixed.p == 0.3


def test_train_step_regularises_lazily_and_updates_everything():
    task = StyleGan2Task(sg(augment_p=0.5), quick(ema_decay=0.5), 16, 1, 2, CPU)
    g0, d0 = ([p.detach().clone() for p in m.parameters()] for m in (task.g, task.d))
    x, y = torch.rand(4, 1, 16, 16) * 2 - 1, torch.tensor([0, 1, 0, 1])
    losses = [task.step([(x, y)], make_generator(CPU, 0, s)) for s in range(3)]
    assert set(losses[0]) == {"loss", "g_loss", "d_real_sign", "r1", "pl_mean", "augment_p"}
    assert all(torch.isfinite(v) for step in losses for v in step.values())
    assert losses[0]["r1"] > 0 and losses[1]["r1"] == losses[0]["r1"] != losses[2]["r1"]  # R1 at steps 0, 2
    assert losses[0]["pl_mean"] > 0 and losses[1]["pl_mean"] == losses[0]["pl_mean"]  # path length at 0, 2
    assert losses[0]["augment_p"] == 0.5 and losses[2]["augment_p"] != 0.5  # ADA adjusted p after 2 steps
    assert any(not torch.equal(a, b) for a, b in zip(g0, task.g.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, task.d.parameters(), strict=True))
    assert all(p.requires_grad for p in task.d.parameters()) and task.ema.optimization_step == 3
    assert task.g.w_avg_updates.tolist() == [3, 3]
    assert task.lrs["generator"] == pytest.approx(0.0025 * 2 / 3)  # lazy regularisation's rescaled lr


def test_bad_settings_name_the_field_and_the_fix(tmp_path):
    p = tmp_path / "params.yaml"
    for text, field, fix in [
        ("generator: {type: stylegan2, stylegan2: {ada_target: 1.0}}", "generator.stylegan2.ada_target",
         "strictly between 0 and 1"),
        ("generator: {stylegan2: {ada_target: 0}}", "generator.stylegan2.ada_target", "(StyleGAN2-ADA: 0.6)"),
        ("sample: {truncation_psi: 0}", "sample.truncation_psi", "set 1 to sample without truncation"),
        ("sample: {truncation_psi: 1.5}", "sample.truncation_psi", "is outside (0, 1]"),
    ]:
        p.write_text(text + "\n")
        with pytest.raises(ConfigError) as e:
            load_params(p)
        assert f"{p}: {field}: " in e.value.message and fix in e.value.message, e.value.message
        assert e.value.hint == f"fix the setting(s) above in {p}"


def test_a_resolution_that_is_no_base_times_a_power_of_two_is_refused(tmp_path):
    ds = make_dataset(tmp_path / "ds36", {"a": 3, "b": 3}, res=36)
    with pytest.raises(ConfigError, match=r"prepare.resolution: 36x36 .* base of 4 to 7 pixels times a power of two") as e:
        train(ds.root, sg(), quick(steps=1), tmp_path / "run")
    assert "re-run `synthgate prepare`" in e.value.hint and not (tmp_path / "run").exists()


def test_the_command_line_truncation_is_checked_before_any_work(cli, tmp_path):
    code, _, err = cli("sample", "--model", "nowhere", "--truncation-psi", "1.2", cwd=tmp_path)
    assert code != 0 and "the command-line value of sample.truncation_psi: 1.2 is outside (0, 1]" in err


def test_trains_logs_p_saves_and_samples_through_the_shared_path(dataset, tmp_path):
    r = train(dataset.root, sg(augment_p=0.2), quick(steps=2, log_every=2), tmp_path / "run")
    assert REGISTRY.get_sample_value("synthgate_train_augment_p", {"model_type": "stylegan2"}) == pytest.approx(0.2)
    gen = load_generator(r.model_dir, "cpu")
    assert gen.type == "stylegan2" and gen.module.w_avg_updates.tolist() == [2, 2]
    cfg = SampleConfig(per_class=2, seed=1, truncation_psi=0.7, device="cpu")
    out = sample(r.model_dir, cfg, tmp_path / "samples")
    assert out.manifest["generator"]["type"] == "stylegan2" and out.manifest["sampler"]["truncation_psi"] == 0.7
    np.testing.assert_array_equal(np.asarray(out.images), gen.sample(np.array([0, 0, 1, 1]), cfg))


def test_p_goes_to_mlflow_and_prometheus_with_the_losses():
    logged = []

    class Run:
        run_id = "r"

        def metrics(self, values, step):
            logged.append((values, step))

    TrainTracker("stylegan2", Run()).losses({"loss": 1.0, "augment_p": 0.25}, 10.0, 7)
    assert logged == [({"loss": 1.0, "augment_p": 0.25, "images_per_second": 10.0}, 7)]
    assert REGISTRY.get_sample_value("synthgate_train_augment_p", {"model_type": "stylegan2"}) == 0.25


def test_a_checkpoint_of_another_mapping_network_is_refused(dataset, tmp_path):
    train(dataset.root, sg(), quick(steps=1), tmp_path / "run")
    with pytest.raises(ConfigError, match=r"generator.stylegan2.mapping_layers: checkpoint 2, now 3"):
        train(dataset.root, sg(mapping_layers=3), quick(steps=2), tmp_path / "run")
