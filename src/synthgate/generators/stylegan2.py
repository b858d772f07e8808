"""StyleGAN2 with adaptive discriminator augmentation (Karras et al. 2020a "Analyzing and Improving
the Image Quality of StyleGAN", 2020b "Training Generative Adversarial Networks with Limited Data"),
class-conditional, the GAN niehues2024 compares its latent diffusion models with.

- Networks (:mod:`~synthgate.generators.stylegan2_nets`): a mapping network with a class embedding,
  modulated and demodulated convolutions with noise inputs, a "skip" generator and a "resnet"
  discriminator with a projection onto the label's embedding.
- Loss: non-saturating logistic, *lazy* R1 on real images every ``r1_interval`` discriminator steps
  and path-length regularisation every ``pl_interval`` generator steps (each weighted by its
  interval; Adam's learning rate and betas rescaled by ``interval / (interval + 1)``, Appendix B),
  style mixing, an EMA of the generator (``train.ema_decay``) which is what is saved and sampled.
- ADA (:mod:`~synthgate.generators.ada`): the discriminator sees real and generated images
  through the same differentiable augmentations with probability p, tuned from r_t = E[sign D(real)]
  toward ``ada_target``; p and r_t are logged (MLflow ``augment_p``/``d_real_sign``, Prometheus
  ``synthgate_train_augment_p``).
- Sampling: ``w`` per image from seeded ``z`` and noise maps, optionally truncated toward the mean
  ``w`` of its class (``sample.truncation_psi``).
- bf16 autocast on CUDA (``train.bf16``) like the other families; ``torch.compile`` (CUDA) applies to
  the generator's passes without the path-length penalty (its double backward is not compiled).

A step: one discriminator update (with R1 when due) and one generator update (with the path-length
penalty when due), each on the step's real batch and labels.
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
from synthgate.generators.ada import AdaController, AugmentPipe
from synthgate.generators.common import per_image_noise, to_uint8
from synthgate.generators.config import GeneratorConfig, SampleConfig, TrainConfig
from synthgate.generators.family import GeneratorFamily
from synthgate.generators.gan import start_resolution
from synthgate.generators.stylegan2_nets import (
    MAX_CHANNELS,
    W_DIM,
    StyleGan2Discriminator,
    StyleGan2Generator,
)
from synthgate.generators.task import TrainTask, autocast, make_optimizer
from synthgate.progress import NullReporter, Reporter

#: The model folder's one file: the EMA generator's state dict (with each class's mean w).
WEIGHTS = "generator.pt"


def check_resolution(gcfg: GeneratorConfig, resolution: int) -> None:
    base, n_up = start_resolution(resolution)
    if n_up < 1 or not 4 <= base <= 7:
        raise ConfigError(
            f"prepare.resolution: {resolution}x{resolution} images are not supported by StyleGAN2: the side must be "
            "a base of 4 to 7 pixels times a power of two (2 or more), e.g. 16, 28, 32, 64, 128, 224 or 256",
            hint="re-run `synthgate prepare` with such a resolution (prepare.resolution)",
        )


def build_generator(gcfg: GeneratorConfig, resolution: int, channels: int, n_classes: int) -> StyleGan2Generator:
    check_resolution(gcfg, resolution)
    sc = gcfg.stylegan2
    return StyleGan2Generator(resolution, channels, n_classes, gcfg.z_dim, W_DIM[gcfg.size], sc.mapping_layers,
                              MAX_CHANNELS[gcfg.size], sc.w_avg_beta)


def build_discriminator(gcfg: GeneratorConfig, resolution: int, channels: int, n_classes: int
                        ) -> StyleGan2Discriminator:
    check_resolution(gcfg, resolution)
    return StyleGan2Discriminator(resolution, channels, n_classes, W_DIM[gcfg.size], gcfg.stylegan2.mapping_layers,
                                  MAX_CHANNELS[gcfg.size])


def r1_penalty(d_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1: the mean squared norm of grad_x D(x) on real images (``real`` requires grad)."""
    (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    return grad.float().square().sum(dim=(1, 2, 3)).mean()


def path_lengths(img: torch.Tensor, ws: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per image |J_w^T y| for y ~ N(0, I) / sqrt(pixels) (StyleGAN2's Eq. 4), differentiable."""
    y = torch.randn(img.shape, generator=gen, device=img.device) / math.sqrt(img.shape[2] * img.shape[3])
    (grad,) = torch.autograd.grad((img.float() * y).sum(), ws, create_graph=True)
    return grad.float().square().sum(dim=2).mean(dim=1).sqrt()


@torch.no_grad()
def sample_images(g: StyleGan2Generator, labels: np.ndarray, cfg: SampleConfig, *, device: torch.device,
                  amp: bool = False, reporter: Reporter | None = None) -> np.ndarray:
    """One image per label from seeded ``z`` and noise maps (the same per image whatever the batch),
    ``w`` truncated toward its class's mean by ``cfg.truncation_psi`` -> uint8 (N, H, W, C)."""
    reporter = reporter or NullReporter()
    n = len(labels)
    out = [np.zeros((0, g.resolution, g.resolution, g.channels), np.uint8)]
    with reporter.task(f"Sampling {n} images (StyleGAN2)", n) as advance:
        for start in range(0, n, cfg.batch_size):
            y = torch.as_tensor(labels[start : start + cfg.batch_size], dtype=torch.long, device=device)
            z = per_image_noise((g.z_dim,), cfg.seed, start, len(y), "stylegan2").to(device)
            noise = g.split_noise(per_image_noise((g.noise_size,), cfg.seed, start, len(y), "stylegan2-noise").to(device))
            with autocast(device, amp):
                out.append(to_uint8(g(z, y, noise=noise, truncation_psi=cfg.truncation_psi)))
            advance(len(y))
    return np.concatenate(out)


class StyleGan2Task(TrainTask):
    """Generator, discriminator, their Adam optimisers, the generator EMA, the running mean path
    length and the ADA state (all in the checkpoint, so a resumed run continues bit-identically on CPU)."""

    def __init__(self, gcfg: GeneratorConfig, tcfg: TrainConfig, resolution: int, channels: int,
                 n_classes: int, device: torch.device) -> None:
        from diffusers.training_utils import EMAModel

        super().__init__(gcfg, tcfg, resolution, channels, n_classes, device)
        sc = self.sc = gcfg.stylegan2
        self.g = build_generator(gcfg, resolution, channels, n_classes).to(device, memory_format=self.memory_format)
        self.d = build_discriminator(gcfg, resolution, channels, n_classes).to(device, memory_format=self.memory_format)
        self.g_fast: nn.Module = torch.compile(self.g) if (tcfg.compile and self.cuda) else self.g
        self.g_reg: nn.Module = self.g  # the path-length penalty's double backward: never compiled
        self.r1_gamma = sc.r1_gamma if sc.r1_gamma is not None else 0.0002 * resolution**2 / tcfg.batch_size
        # lazy regularisation (StyleGAN2, Appendix B): lr and betas scaled by interval / (interval + 1)
        c_g = sc.pl_interval / (sc.pl_interval + 1) if sc.pl_weight > 0 else 1.0
        c_d = sc.r1_interval / (sc.r1_interval + 1) if self.r1_gamma > 0 else 1.0
        self.lrs = {"generator": sc.g_lr * c_g, "discriminator": sc.d_lr * c_d}
        self.opt_g = make_optimizer(self.g.parameters(), device, self.lrs["generator"],
                                    (sc.betas[0] ** c_g, sc.betas[1] ** c_g))
        self.opt_d = make_optimizer(self.d.parameters(), device, self.lrs["discriminator"],
                                    (sc.betas[0] ** c_d, sc.betas[1] ** c_d))
        self.modules = {"generator": self.g, "discriminator": self.d}
        self.optimizers = {"generator": self.opt_g, "discriminator": self.opt_d}
        self.ema_target = self.g
        self.ema = EMAModel(self.g.parameters(), decay=tcfg.ema_decay, foreach=self.cuda)
        self.augment = AugmentPipe(sc.augment_ops) if sc.augment != "none" else None
        self.ada = AdaController(sc.augment_p if self.augment else 0.0, sc.augment == "ada", sc.ada_target,
                                 sc.ada_interval, sc.ada_images, device)
        self.pl_mean = torch.zeros((), device=device)
        self.r1_last = torch.zeros((), device=device)
        self.steps_done = 0

    def _z(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.gcfg.z_dim, generator=gen, device=self.device)

    def _aug(self, x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
        return self.augment(x, p, gen) if self.augment is not None else x

    def _d_step(self, real: torch.Tensor, y: torch.Tensor, p: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
        sc = self.sc
        do_r1 = self.r1_gamma > 0 and self.steps_done % sc.r1_interval == 0
        with torch.no_grad(), autocast(self.device, self.amp):
            fake = self.g_fast(self._z(len(y), gen), y, gen=gen, mixing=sc.style_mixing, track=True).float()
        real = real.detach().requires_grad_(do_r1)
        with autocast(self.device, self.amp):
            d_fake = self.d(self._aug(fake, p, gen), y).float()
            d_real = self.d(self._aug(real, p, gen), y).float()
            d_loss = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
            if do_r1:
                r1 = r1_penalty(d_real, real)
                d_loss = d_loss + r1 * (self.r1_gamma / 2 * sc.r1_interval)
                self.r1_last = r1.detach()
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        self.ada.observe(d_real)
        return {"loss": d_loss.detach(), "d_real_sign": d_real.detach().sign().mean(), "r1": self.r1_last.clone()}

    def _g_step(self, y: torch.Tensor, p: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
        sc = self.sc
        do_pl = sc.pl_weight > 0 and self.steps_done % sc.pl_interval == 0
        self.d.requires_grad_(False)
        with autocast(self.device, self.amp):
            if do_pl:
                img, ws = self.g_reg(self._z(len(y), gen), y, gen=gen, mixing=sc.style_mixing, return_ws=True)
            else:
                img = self.g_fast(self._z(len(y), gen), y, gen=gen, mixing=sc.style_mixing)
            g_adv = F.softplus(-self.d(self._aug(img, p, gen), y).float()).mean()
            g_loss = g_adv
            if do_pl:
                lengths = path_lengths(img, ws, gen)
                self.pl_mean = self.pl_mean.lerp(lengths.mean().detach(), sc.pl_decay)
                g_loss = g_loss + (lengths - self.pl_mean).square().mean() * (sc.pl_weight * sc.pl_interval)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.d.requires_grad_(True)
        return {"g_loss": g_adv.detach(), "pl_mean": self.pl_mean.detach().clone()}

    def step(self, batches: list[tuple[torch.Tensor, torch.Tensor]], gen: torch.Generator) -> dict[str, torch.Tensor]:
        (real, y), p = batches[0], self.ada.p
        losses = self._d_step(real, y, p, gen) | self._g_step(y, p, gen)
        self.ema.step(self.g.parameters())
        self.ada.step(len(y))
        self.steps_done += 1
        return {**losses, "augment_p": torch.tensor(p, device=self.device)}

    def sample(self, module: nn.Module, labels: np.ndarray, cfg: SampleConfig) -> np.ndarray:
        assert isinstance(module, StyleGan2Generator)
        return sample_images(module, labels, cfg, device=self.device, amp=self.amp)

    def wrap_ddp(self, ddp: Callable[[nn.Module], nn.Module], compiled: Callable[[nn.Module], nn.Module]) -> None:
        """Generator and discriminator, as the GAN family: R1 and the path-length penalty take
        ``autograd.grad`` with respect to the images and the ws only (no DDP hook fires), their
        second-order gradients reach the parameters in the one ``backward`` of their step, and every
        parameter gets a gradient there (the discriminator is frozen in the generator step), so
        ``find_unused_parameters`` stays off. The ADA statistics are summed over the ranks
        (:class:`~synthgate.generators.ada.AdaController`); the class means of w are DDP buffers,
        rank 0's broadcast at each forward. Not run on several processes yet."""
        self.g_reg = ddp(self.g)
        self.g_fast = compiled(self.g_reg)
        self.d = ddp(self.d)  # type: ignore[assignment]  (modules["discriminator"] stays the plain one)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stylegan2": {"steps_done": self.steps_done, "pl_mean": self.pl_mean,
                                                      "r1_last": self.r1_last, "ada": self.ada.state_dict()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        extra = state["stylegan2"]
        self.steps_done = int(extra["steps_done"])
        self.pl_mean, self.r1_last = extra["pl_mean"].to(self.device), extra["r1_last"].to(self.device)
        self.ada.load_state_dict(extra["ada"])


class StyleGan2Family(GeneratorFamily):
    """``generator.pt``: the state dict of the EMA generator, with each class's mean w (the discriminator
    is not released)."""

    name = "stylegan2"
    description = "StyleGAN2 with adaptive discriminator augmentation (ADA), class-conditional (Karras et al. 2020)"
    files = (WEIGHTS,)
    weights = WEIGHTS
    fingerprint_fields = ("stylegan2.mapping_layers",)

    def check_resolution(self, gcfg: GeneratorConfig, resolution: int) -> None:
        check_resolution(gcfg, resolution)

    def make_task(self, gcfg: GeneratorConfig, tcfg: TrainConfig, resolution: int, channels: int,
                  n_classes: int, device: torch.device) -> StyleGan2Task:
        return StyleGan2Task(gcfg, tcfg, resolution, channels, n_classes, device)

    def write(self, folder: Path, module: nn.Module, extras: dict[str, Any]) -> None:
        torch.save({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, folder / WEIGHTS)

    def load(self, model_dir: Path, gcfg: GeneratorConfig, info: dict[str, Any],
             device: torch.device) -> tuple[nn.Module, Any]:
        g = build_generator(gcfg, int(info["resolution"]), int(info["channels"]), len(info["classes"]))
        path = model_dir / WEIGHTS
        try:
            g.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as e:
            raise DataError(f"{path}: cannot load the StyleGAN2 generator weights ({e})",
                            hint="re-run `synthgate train`") from None
        return g.to(device).eval().requires_grad_(False), None

    def sample(self, module: nn.Module, context: Any, labels: np.ndarray, cfg: SampleConfig, *, n_classes: int,
               device: torch.device, amp: bool, reporter: Reporter | None = None) -> np.ndarray:
        assert isinstance(module, StyleGan2Generator)
        return sample_images(module, labels, cfg, device=device, amp=amp, reporter=reporter)


FAMILY = StyleGan2Family()
