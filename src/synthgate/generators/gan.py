"""cpD-GAN (dumontschutte2021, S.2.2 and Fig. S1).

- Generator without progressive growing: a 4x4 (or 5-7 pixel) start block, then blocks of
  nearest-neighbour upsampling and two 3x3 convolutions, each followed by Leaky-ReLU and the
  *conditional* pixel-wise feature normalisation of Eq. 1 (scale and bias are affine maps of the
  concatenated noise and one-hot label, [z; y]). Output skips: a 1x1 toRGB at every resolution,
  summed into the upsampled image of the coarser ones (StyleGAN2 style).
- Discriminator of residual blocks (average-pool downsampling), the prog-GAN minibatch standard
  deviation feature, and a projection head (Miyato & Koyama 2018): ``psi(phi(x)) + <e_y, phi(x)>``.
- Wasserstein loss with gradient penalty (plus the prog-GAN drift term), Adam with betas (0, 0.99),
  equalised learning rate throughout (prog-GAN's "dynamically scaled He initialiser", S.2.1).
- Feature channels: 512 up to 32x32 and halved at each higher resolution (S.2.1/S.2.2) for
  ``size: base``; 128 and 32 at most for ``small`` and ``tiny``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthgate.errors import ConfigError, DataError
from synthgate.generators.common import per_image_noise, to_uint8
from synthgate.generators.config import GeneratorConfig, SampleConfig, TrainConfig
from synthgate.generators.family import GeneratorFamily
from synthgate.generators.task import TrainTask, autocast, make_optimizer
from synthgate.progress import NullReporter, Reporter

MAX_CHANNELS = {"tiny": 32, "small": 128, "base": 512}
#: The model folder's one file: the EMA generator's state dict.
GAN_WEIGHTS = "generator.pt"
SLOPE = 0.2


def check_resolution(gcfg: GeneratorConfig, resolution: int) -> None:
    if resolution < 8 or resolution % 4:
        raise ConfigError(
            f"prepare.resolution: {resolution}x{resolution} images are not supported by the GAN; "
            "supported sizes are multiples of 4 and at least 8, e.g. 32, 64, 128",
            hint="re-run `synthgate prepare` with such a resolution",
        )


def start_resolution(resolution: int) -> tuple[int, int]:
    """The smallest side >= 4 reached by halving ``resolution``, and the number of halvings."""
    n = 0
    while resolution % 2 == 0 and resolution // 2 >= 4:
        resolution //= 2
        n += 1
    return resolution, n


def feature_channels(res: int, max_channels: int) -> int:
    return max(min(max_channels, max_channels * 32 // res), 16)


class EqLinear(nn.Module):
    """Linear layer with equalised learning rate: N(0, 1) weights scaled by ``gain / sqrt(fan_in)`` at run time."""

    def __init__(self, cin: int, cout: int, gain: float = math.sqrt(2), bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init)))
        self.scale = gain / math.sqrt(cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class EqConv2d(nn.Module):
    """Convolution with equalised learning rate, "same" padding."""

    def __init__(self, cin: int, cout: int, kernel: int, gain: float = math.sqrt(2), bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale = gain / math.sqrt(cin * kernel * kernel)
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class CondPixelNorm(nn.Module):
    """Eq. 1 of S.2.2: ``b = a / sqrt(mean_j a_j^2 + 1e-8) * gamma + beta``, gamma/beta = W[z; y] + b."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.gamma = EqLinear(cond_dim, channels, gain=1.0, bias_init=1.0)
        self.beta = EqLinear(cond_dim, channels, gain=1.0)

    def forward(self, a: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b = a * torch.rsqrt(a.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        return b * self.gamma(cond)[:, :, None, None] + self.beta(cond)[:, :, None, None]


class GBlock(nn.Module):
    """Fig. S1 (right): [upsample] -> conv3x3 -> LReLU -> CPN -> conv3x3 -> LReLU -> CPN."""

    def __init__(self, cin: int, cout: int, cond_dim: int) -> None:
        super().__init__()
        self.conv1, self.norm1 = EqConv2d(cin, cout, 3), CondPixelNorm(cout, cond_dim)
        self.conv2, self.norm2 = EqConv2d(cout, cout, 3), CondPixelNorm(cout, cond_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.norm1(F.leaky_relu(self.conv1(x), SLOPE), cond)
        return self.norm2(F.leaky_relu(self.conv2(x), SLOPE), cond)


class CpdGenerator(nn.Module):
    """cpD-GAN generator with output skips (Fig. S1, left)."""

    def __init__(self, resolution: int, channels: int, n_classes: int, z_dim: int, max_channels: int) -> None:
        super().__init__()
        self.resolution, self.channels, self.n_classes, self.z_dim = resolution, channels, n_classes, z_dim
        self.start, n_up = start_resolution(resolution)
        cond_dim = z_dim + n_classes
        res = [self.start * 2**i for i in range(n_up + 1)]
        chans = [feature_channels(r, max_channels) for r in res]
        self.c0 = chans[0]
        self.input = EqLinear(cond_dim, chans[0] * self.start**2, gain=math.sqrt(2) / 4)
        self.norm0 = CondPixelNorm(chans[0], cond_dim)
        self.conv0, self.norm0b = EqConv2d(chans[0], chans[0], 3), CondPixelNorm(chans[0], cond_dim)
        self.blocks = nn.ModuleList(GBlock(chans[i], chans[i + 1], cond_dim) for i in range(n_up))
        self.to_rgb = nn.ModuleList(EqConv2d(c, channels, 1, gain=1.0) for c in chans)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cond = torch.cat([z, F.one_hot(labels, self.n_classes).to(z.dtype)], dim=1)
        x = F.leaky_relu(self.input(cond), SLOPE).view(-1, self.c0, self.start, self.start)
        x = self.norm0(x, cond)
        x = self.norm0b(F.leaky_relu(self.conv0(x), SLOPE), cond)
        rgb = self.to_rgb[0](x)
        for block, to_rgb in zip(self.blocks, self.to_rgb[1:], strict=True):
            x = block(x, cond)
            rgb = F.interpolate(rgb, scale_factor=2.0, mode="nearest") + to_rgb(x)
        return rgb


class DBlock(nn.Module):
    """Residual discriminator block: two 3x3 convs + average pool, 1x1 skip, summed / sqrt(2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = EqConv2d(cin, cin, 3), EqConv2d(cin, cout, 3)
        self.skip = EqConv2d(cin, cout, 1, gain=1.0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(x), SLOPE)), SLOPE)
        return (F.avg_pool2d(h, 2) + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


class CpdDiscriminator(nn.Module):
    """Residual discriminator with a projection head (S.2.2)."""

    def __init__(self, resolution: int, channels: int, n_classes: int, max_channels: int) -> None:
        super().__init__()
        start, n_down = start_resolution(resolution)
        res = [resolution // 2**i for i in range(n_down + 1)]
        chans = [feature_channels(r, max_channels) for r in res]
        self.from_rgb = EqConv2d(channels, chans[0], 1)
        self.blocks = nn.Sequential(*(DBlock(chans[i], chans[i + 1]) for i in range(n_down)))
        c = chans[-1]
        self.conv = EqConv2d(c + 1, c, 3)
        self.dense = EqLinear(c * start * start, c)
        self.psi = EqLinear(c, 1, gain=1.0)
        self.embed = nn.Parameter(torch.randn(n_classes, c))
        self.embed_scale = 1 / math.sqrt(c)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.blocks(F.leaky_relu(self.from_rgb(x), SLOPE))
        std = torch.sqrt(h.float().var(dim=0, unbiased=False) + 1e-8).mean().to(h.dtype)  # minibatch stddev
        h = torch.cat([h, std.expand(h.shape[0], 1, *h.shape[2:])], dim=1)
        phi = F.leaky_relu(self.dense(F.leaky_relu(self.conv(h), SLOPE).flatten(1)), SLOPE)
        projection = (self.embed[labels] * self.embed_scale * phi).sum(dim=1)
        return self.psi(phi).squeeze(1) + projection


def build_generator(gcfg: GeneratorConfig, resolution: int, channels: int, n_classes: int) -> CpdGenerator:
    check_resolution(gcfg, resolution)
    return CpdGenerator(resolution, channels, n_classes, gcfg.z_dim, MAX_CHANNELS[gcfg.size])


def build_gan(gcfg: GeneratorConfig, resolution: int, channels: int, n_classes: int) -> tuple[CpdGenerator, CpdDiscriminator]:
    return (build_generator(gcfg, resolution, channels, n_classes),
            CpdDiscriminator(resolution, channels, n_classes, MAX_CHANNELS[gcfg.size]))


def gradient_penalty(d: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor,
                     gen: torch.Generator) -> torch.Tensor:
    """WGAN-GP: ``(||grad_x D(x_hat)|| - 1)^2`` on random interpolates of real and fake images."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=gen, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x_hat, labels).sum(), x_hat, create_graph=True)
    return (grad.float().flatten(1).norm(dim=1) - 1).pow(2).mean()


@torch.no_grad()
def sample_images(g: CpdGenerator, labels: np.ndarray, cfg: SampleConfig, *, device: torch.device,
                  amp: bool = False, reporter: Reporter | None = None) -> np.ndarray:
    """One image per label from ``z ~ N(0, I)`` (seeded per image) -> uint8 (N, H, W, C)."""
    reporter = reporter or NullReporter()
    n = len(labels)
    out = [np.zeros((0, g.resolution, g.resolution, g.channels), np.uint8)]
    with reporter.task(f"Sampling {n} images (GAN)", n) as advance:
        for start in range(0, n, cfg.batch_size):
            y = torch.as_tensor(labels[start : start + cfg.batch_size], dtype=torch.long, device=device)
            z = per_image_noise((g.z_dim,), cfg.seed, start, len(y), "gan").to(device)
            with autocast(device, amp):
                out.append(to_uint8(g(z, y)))
            advance(len(y))
    return np.concatenate(out)


class GanTask(TrainTask):
    """cpD-GAN generator, discriminator, their Adam optimisers and the generator EMA (S.2.2, S.3).

    A step is ``n_critic`` discriminator updates (each on its own real batch) and one generator
    update. ``torch.compile`` applies to the generator only: the gradient penalty needs double
    backward through the discriminator, which compiled graphs do not support.
    """

    def __init__(self, gcfg: GeneratorConfig, tcfg: TrainConfig, resolution: int, channels: int,
                 n_classes: int, device: torch.device) -> None:
        from diffusers.training_utils import EMAModel

        super().__init__(gcfg, tcfg, resolution, channels, n_classes, device)
        self.draws_per_step = gcfg.n_critic
        g, d = build_gan(gcfg, resolution, channels, n_classes)
        self.g = g.to(device, memory_format=self.memory_format)
        self.d = d.to(device, memory_format=self.memory_format)
        self.g_forward = torch.compile(self.g) if (tcfg.compile and self.cuda) else self.g
        self.opt_g = make_optimizer(self.g.parameters(), device, gcfg.g_lr, gcfg.betas)
        self.opt_d = make_optimizer(self.d.parameters(), device, gcfg.d_lr, gcfg.betas)
        self.modules = {"generator": self.g, "discriminator": self.d}
        self.optimizers = {"generator": self.opt_g, "discriminator": self.opt_d}
        self.lrs = {"generator": gcfg.g_lr, "discriminator": gcfg.d_lr}
        self.ema_target = self.g
        self.ema = EMAModel(self.g.parameters(), decay=tcfg.ema_decay, foreach=self.cuda)

    def _z(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.gcfg.z_dim, generator=gen, device=self.device)

    def step(self, batches: list[tuple[torch.Tensor, torch.Tensor]], gen: torch.Generator) -> dict[str, torch.Tensor]:
        gc = self.gcfg
        for real, y in batches:
            with torch.no_grad(), autocast(self.device, self.amp):
                fake = self.g_forward(self._z(len(y), gen), y).float()
            with autocast(self.device, self.amp):
                d_real, d_fake = self.d(real, y).float(), self.d(fake, y).float()
                gp = gradient_penalty(self.d, real, fake, y, gen)
                d_loss = d_fake.mean() - d_real.mean() + gc.gp_weight * gp + gc.drift_weight * d_real.pow(2).mean()
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        self.d.requires_grad_(False)
        with autocast(self.device, self.amp):
            g_loss = -self.d(self.g_forward(self._z(len(y), gen), y), y).float().mean()
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.d.requires_grad_(True)
        self.ema.step(self.g.parameters())
        return {"loss": d_loss.detach(), "g_loss": g_loss.detach(), "gp": gp.detach(),
                "wasserstein": (d_real.mean() - d_fake.mean()).detach()}

    def sample(self, module: nn.Module, labels: np.ndarray, cfg: SampleConfig) -> np.ndarray:
        assert isinstance(module, CpdGenerator)
        return sample_images(module, labels, cfg, device=self.device, amp=self.amp)

    def wrap_ddp(self, ddp: Callable[[nn.Module], nn.Module], compiled: Callable[[nn.Module], nn.Module]) -> None:
        """Generator and discriminator. The WGAN-GP penalty runs ``autograd.grad(create_graph=True)``
        through the DDP-wrapped discriminator: that gradient is taken with respect to the
        interpolated images only, so it fires none of DDP's parameter hooks; the penalty's
        second-order gradient reaches the parameters in the one ``d_loss.backward()`` of the
        critic step, together with the Wasserstein terms, and is all-reduced there. Every
        discriminator parameter gets a gradient in that step and the discriminator is frozen
        (``requires_grad_(False)``) in the generator step, so ``find_unused_parameters`` stays off.
        Batch statistics (the minibatch standard deviation feature) are per rank."""
        self.g_forward = compiled(ddp(self.g))
        self.d = ddp(self.d)  # type: ignore[assignment]  (modules["discriminator"] stays the plain one)


class GanFamily(GeneratorFamily):
    """``generator.pt``: the state dict of the EMA generator (the discriminator is not released)."""

    name = "gan"
    description = "cpD-GAN: conditional pixel-norm generator, projection discriminator, WGAN-GP (dumontschutte2021)"
    files = (GAN_WEIGHTS,)
    weights = GAN_WEIGHTS

    def check_resolution(self, gcfg: GeneratorConfig, resolution: int) -> None:
        check_resolution(gcfg, resolution)

    def make_task(self, gcfg: GeneratorConfig, tcfg: TrainConfig, resolution: int, channels: int,
                  n_classes: int, device: torch.device) -> GanTask:
        return GanTask(gcfg, tcfg, resolution, channels, n_classes, device)

    def write(self, folder: Path, module: nn.Module, extras: dict[str, Any]) -> None:
        torch.save({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, folder / GAN_WEIGHTS)

    def load(self, model_dir: Path, gcfg: GeneratorConfig, info: dict[str, Any],
             device: torch.device) -> tuple[nn.Module, Any]:
        g = build_generator(gcfg, int(info["resolution"]), int(info["channels"]), len(info["classes"]))
        path = model_dir / GAN_WEIGHTS
        try:
            g.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as e:
            raise DataError(f"{path}: cannot load the generator weights ({e})",
                            hint="re-run `synthgate train`") from None
        return g.to(device).eval().requires_grad_(False), None

    def sample(self, module: nn.Module, context: Any, labels: np.ndarray, cfg: SampleConfig, *, n_classes: int,
               device: torch.device, amp: bool, reporter: Reporter | None = None) -> np.ndarray:
        assert isinstance(module, CpdGenerator)
        return sample_images(module, labels, cfg, device=device, amp=amp, reporter=reporter)


FAMILY = GanFamily()
