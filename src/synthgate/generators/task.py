"""What the shared training loop (:mod:`synthgate.generators.train`) needs from a model family.

A *task* owns the networks, their optimisers and the EMA of the weights that get saved. The loop
owns everything else (data, seeds, checkpoints, logging, metrics), so both families are trained by
one implementation.
"""

from __future__ import annotations

import abc
import contextlib
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synthgate.generators.config import GeneratorConfig, SampleConfig, TrainConfig


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast on CUDA when ``enabled``; plain fp32 otherwise."""
    if enabled and device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def make_optimizer(
    params: Any, device: torch.device, lr: float, betas: tuple[float, float], weight_decay: float | None = None
) -> torch.optim.Optimizer:
    """AdamW with ``weight_decay`` (diffusion), plain Adam without (GAN, S.3); fused on CUDA."""
    fused = device.type == "cuda" or None
    if weight_decay is None:
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=1e-8, fused=fused)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)


class TrainTask(abc.ABC):
    """Base of :class:`~synthgate.generators.diffusion.DiffusionTask` and
    :class:`~synthgate.generators.gan.GanTask`.

    Subclasses set ``modules`` (uncompiled, for state dicts), ``optimizers``, ``lrs`` (the configured
    learning rate per optimiser, re-applied on resume), ``ema`` (a diffusers ``EMAModel`` over the
    network that is saved) and ``ema_target`` (that network), and implement ``step``, ``sample`` and
    ``wrap_ddp`` (and ``save_extras`` when the saved model needs more than the network).
    """

    draws_per_step = 1  # real batches consumed per step
    preview_sampler = "ddim"  # the sampler of the training grids (a rectified-flow task: euler)
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    lrs: dict[str, float]
    ema: Any
    ema_target: nn.Module

    def __init__(self, gcfg: GeneratorConfig, tcfg: TrainConfig, resolution: int, channels: int,
                 n_classes: int, device: torch.device) -> None:
        self.gcfg, self.tcfg = gcfg, tcfg
        self.resolution, self.channels, self.n_classes = resolution, channels, n_classes
        self.device = device
        self.cuda = device.type == "cuda"
        self.amp = tcfg.bf16 and self.cuda
        self.memory_format = torch.channels_last if self.cuda else torch.contiguous_format

    @abc.abstractmethod
    def step(self, batches: list[tuple[torch.Tensor, torch.Tensor]], gen: torch.Generator) -> dict[str, torch.Tensor]:
        """One optimisation step on ``draws_per_step`` batches; returns detached losses (key ``loss`` first)."""

    @abc.abstractmethod
    def sample(self, module: nn.Module, labels: np.ndarray, cfg: SampleConfig) -> np.ndarray:
        """Sample one image per label from ``module`` (an :meth:`ema_module`) -> uint8 (N, H, W, C)."""

    @abc.abstractmethod
    def wrap_ddp(self, ddp: Callable[[nn.Module], nn.Module], compiled: Callable[[nn.Module], nn.Module]) -> None:
        """Route the training forward passes through ``ddp(module)`` (then ``compiled``), keeping
        ``modules``, the optimisers, the EMA and sampling on the plain modules
        (:func:`synthgate.generators.distributed.wrap_task` calls this on every rank)."""

    def prepare(self, ds: Any, reporter: Any) -> None:
        """Fit what the task needs from the training data before its first step (the latent family:
        its autoencoder, trained or taken from the cache). Rank 0 calls it first, then the others
        (who find rank 0's result in the cache); nothing by default."""
        return None

    def prepared_identity(self) -> str | None:
        """What :meth:`prepare` fitted, as a hash every rank must agree on (None: nothing)."""
        return None

    def save_extras(self) -> dict[str, Any]:
        """What the family's :meth:`~synthgate.generators.family.GeneratorFamily.write` needs beside
        the network (e.g. the noise schedule)."""
        return {}

    def save(self, model_dir: Path, module: nn.Module, **info: Any) -> Path:
        """Write ``module`` in the model format (:func:`synthgate.generators.model.save_generator`)."""
        from synthgate.generators.model import save_generator

        return save_generator(model_dir, module, self.gcfg, resolution=self.resolution, channels=self.channels,
                              extras=self.save_extras(), **info)

    def ema_module(self) -> nn.Module:
        """A copy of ``ema_target`` holding the EMA weights, in eval mode, contiguous memory format."""
        module = copy.deepcopy(self.ema_target)
        self.ema.copy_to(module.parameters())
        return module.to(memory_format=torch.contiguous_format).eval().requires_grad_(False)

    def state_dict(self) -> dict[str, Any]:
        return {
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "ema": self.ema.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint; the configured learning rates win over the checkpoint's."""
        for k, m in self.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
            for group in o.param_groups:
                group["lr"] = self.lrs[k]
        self.ema.load_state_dict(state["ema"])
        self.ema.shadow_params = [p.to(self.device) for p in self.ema.shadow_params]
