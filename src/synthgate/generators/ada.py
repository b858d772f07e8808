"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"), written for the stylegan2 family.

:class:`AugmentPipe` applies each configured augmentation with probability ``p`` to a batch, per
image, differentiably: the discriminator sees real and generated images through the same pipeline
(so the generator learns the clean distribution as long as p stays below ~0.8, the paper's
"non-leaking" condition), and the generator's gradient flows back through it.

- geometric (one affine resampling with ``F.affine_grid`` / ``F.grid_sample``, bilinear, reflection
  padding): ``xflip`` (a flip, with probability 1/2 when chosen), ``rotate90`` (0, 90, 180 or 270
  degrees), ``xint`` (integer translation up to 1/8 of the side), ``scale`` (isotropic, log2-normal
  with standard deviation 0.2);
- colour: ``brightness`` (add N(0, 0.2^2)), ``contrast`` (multiply by log2-normal, standard
  deviation 0.5), on images in [-1, 1] as StyleGAN2-ADA does.

The paper's fractional translation, arbitrary rotation, anisotropic scaling, luma flip, hue,
saturation and its FIR-filtered resampling are left out.

:class:`AdaController` tunes p from the discriminator's overfitting heuristic r_t = E[sign D(real)]
over the last ``ada_interval`` steps: p rises by ``batch x interval / ada_images`` when r_t is above
``ada_target`` and falls by as much below (clamped to [0, 1]), so p can move from 0 to 1 in
``ada_images`` real images. Under DDP the sign statistics are summed over the ranks, so every rank
keeps the same p.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from synthgate.generators.config import AugmentOp

GEOMETRIC = ("xflip", "rotate90", "xint", "scale")
XINT_MAX, SCALE_STD, BRIGHTNESS_STD, CONTRAST_STD = 0.125, 0.2, 0.2, 0.5


def _chosen(n: int, p: float, gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Which images get an augmentation: a Bernoulli(p) mask. Every draw is made whether or not the
    image is chosen, so the stream of random numbers depends only on the batch (and on p > 0)."""
    return torch.rand(n, generator=gen, device=device) < p


class AugmentPipe:
    """The augmentations in ``ops``, each applied with probability ``p`` per image."""

    def __init__(self, ops: tuple[AugmentOp, ...]) -> None:
        self.ops = tuple(ops)
        self.geometric = any(op in GEOMETRIC for op in self.ops)

    def __call__(self, x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
        if p <= 0 or not self.ops:
            return x
        n, dev = x.shape[0], x.device
        if self.geometric:
            x = self._geometric(x, p, gen)
        if "brightness" in self.ops:
            b = torch.randn(n, generator=gen, device=dev) * BRIGHTNESS_STD
            x = x + torch.where(_chosen(n, p, gen, dev), b, torch.zeros_like(b)).to(x.dtype)[:, None, None, None]
        if "contrast" in self.ops:
            c = torch.exp2(torch.randn(n, generator=gen, device=dev) * CONTRAST_STD)
            x = x * torch.where(_chosen(n, p, gen, dev), c, torch.ones_like(c)).to(x.dtype)[:, None, None, None]
        return x

    def matrices(self, n: int, p: float, gen: torch.Generator | None, side: int, device: torch.device
                 ) -> torch.Tensor:
        """(n, 2, 3) inverse affine maps (output -> input) in ``affine_grid``'s normalised coordinates."""
        eye = torch.eye(3, device=device).expand(n, 3, 3)
        m = eye.clone()

        def then(a: torch.Tensor) -> None:
            nonlocal m
            m = m @ a

        if "xflip" in self.ops:
            flip = torch.floor(torch.rand(n, generator=gen, device=device) * 2) * _chosen(n, p, gen, device)
            a = eye.clone()
            a[:, 0, 0] = 1 - 2 * flip
            then(a)
        if "rotate90" in self.ops:
            k = (torch.floor(torch.rand(n, generator=gen, device=device) * 4) * _chosen(n, p, gen, device)).long()
            cos, sin = torch.tensor([1.0, 0.0, -1.0, 0.0], device=device), torch.tensor([0.0, 1.0, 0.0, -1.0], device=device)
            a = eye.clone()
            a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1] = cos[k], -sin[k], sin[k], cos[k]
            then(a)
        if "xint" in self.ops:
            t = (torch.rand(n, 2, generator=gen, device=device) * 2 - 1) * XINT_MAX
            pixels = torch.round(t * side) * _chosen(n, p, gen, device)[:, None]
            a = eye.clone()
            a[:, :2, 2] = pixels * 2 / side  # whole pixels in normalised units (align_corners=False)
            then(a)
        if "scale" in self.ops:
            s = torch.exp2(torch.randn(n, generator=gen, device=device) * SCALE_STD)
            s = torch.where(_chosen(n, p, gen, device), s, torch.ones_like(s))
            a = eye.clone()
            a[:, 0, 0], a[:, 1, 1] = 1 / s, 1 / s
            then(a)
        return m[:, :2, :]

    def _geometric(self, x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
        theta = self.matrices(x.shape[0], p, gen, x.shape[-1], x.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="reflection", align_corners=False)


class AdaController:
    """The augmentation probability p and, with ``adaptive``, its tuning from r_t."""

    def __init__(self, p: float, adaptive: bool, target: float, interval: int, images: int,
                 device: torch.device) -> None:
        self.p, self.adaptive, self.target, self.interval, self.images = float(p), adaptive, target, interval, images
        self.signs = torch.zeros(2, dtype=torch.float64, device=device)  # sum of sign D(real), count
        self.rt = math.nan
        self.steps = 0

    def observe(self, d_real: torch.Tensor) -> None:
        if self.adaptive:
            self.signs += torch.stack([d_real.detach().sign().sum().double(),
                                       torch.tensor(d_real.numel(), dtype=torch.float64, device=d_real.device)])

    def step(self, images_per_step: int) -> None:
        """After every training step; every ``interval`` steps p moves toward the target."""
        self.steps += 1
        if not self.adaptive or self.steps % self.interval:
            return
        signs = self.signs
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            signs = signs.clone()
            torch.distributed.all_reduce(signs)
            images_per_step *= torch.distributed.get_world_size()
        total, count = signs.tolist()
        self.signs.zero_()
        if count == 0:
            return
        self.rt = total / count
        adjust = math.copysign(1.0, self.rt - self.target) if self.rt != self.target else 0.0
        self.p = min(max(self.p + adjust * images_per_step * self.interval / self.images, 0.0), 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "rt": self.rt, "steps": self.steps, "signs": self.signs.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p, self.rt, self.steps = float(state["p"]), float(state["rt"]), int(state["steps"])
        self.signs.copy_(state["signs"])
