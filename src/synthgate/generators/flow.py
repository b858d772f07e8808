"""Rectified flow as the training objective of the diffusion families (``generator.objective: rectified_flow``).

Convention (diffusers' flow matching, as SD3): an image ``x0``, noise ``x1 ~ N(0, I)`` and ``t`` in [0, 1],

    x_t = (1 - t) x0 + t x1,        velocity v = dx_t/dt = x1 - x0,

and the network, given ``x_t``, the timestep ``t * num_train_timesteps`` and the label, predicts ``v``; the loss
is the MSE between the predicted and the true velocity (Liu et al. 2023). Training draws ``t`` logit-normally,
``sigmoid(N(logit_mean, logit_std))`` (SD3's default 0, 1), or uniformly, with diffusers'
``compute_density_for_timestep_sampling`` (seeded by the step's generator, so a resumed run is identical).
Sampling integrates dx/dt = v from ``t = 1`` (noise) to ``t = 0`` with diffusers'
``FlowMatchEulerDiscreteScheduler`` (``euler``: ``steps`` equal steps, one network evaluation each) or
``FlowMatchHeunDiscreteScheduler`` (``heun``: steps - 1 Heun steps from t = 1 to 0.001 and a last Euler step to
0, 2 x steps - 1 evaluations). The training "scheduler" saved with a model is the Euler scheduler's config.

This module holds what depends on the objective alone; :mod:`synthgate.generators.diffusion` calls it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthgate.errors import ConfigError
from synthgate.generators.config import OBJECTIVE_SAMPLERS, FlowConfig, GeneratorConfig

FLOW = "rectified_flow"
DDPM = "ddpm"


def objective_of(scheduler_config: Any) -> str:
    """The objective a saved scheduler config belongs to: a flow-matching scheduler has a ``shift`` and no betas."""
    return FLOW if ("shift" in scheduler_config and "beta_schedule" not in scheduler_config) else DDPM


def check_sampler(objective: str, sampler: str) -> None:
    """ConfigError naming the samplers an ``objective`` model supports when ``sampler`` is not one of them."""
    allowed = OBJECTIVE_SAMPLERS[objective]
    if sampler not in allowed:
        other = next(o for o, s in OBJECTIVE_SAMPLERS.items() if sampler in s) if any(
            sampler in s for s in OBJECTIVE_SAMPLERS.values()) else None
        why = f"{sampler!r} samples {other} models" if other else f"unknown sampler {sampler!r}"
        raise ConfigError(f"sample.sampler: {why}; this model's objective is {objective}, which samples with "
                          f"{' or '.join(', '.join(allowed).rsplit(', ', 1))}",
                          hint=f"set sample.sampler: {default_sampler(objective)} (or --sampler)")


def default_sampler(objective: str, preview: bool = False) -> str:
    """The sampler used where none is configured: dpmsolver++ (a DDIM preview in training) or euler."""
    if objective == FLOW:
        return "euler"
    return "ddim" if preview else "dpmsolver++"


def describe(gcfg: GeneratorConfig, extras: dict[str, Any]) -> dict[str, Any]:
    """What a diffusion family's ``synthgate_generator.json`` says of its objective: the objective, the samplers
    it supports (the first the default), and for a reflow model its parent and pairs (:mod:`~.reflow`)."""
    out: dict[str, Any] = {"objective": gcfg.objective, "samplers": list(OBJECTIVE_SAMPLERS[gcfg.objective])}
    out["samplers"].sort(key=lambda s: s != default_sampler(gcfg.objective))
    if extras.get("reflow"):
        out["reflow"] = extras["reflow"]
    return out


def network_evaluations(sampler: str, steps: int) -> int:
    """Network evaluations per image of ``steps`` sampler steps (without guidance's doubled batch)."""
    return 2 * steps - 1 if sampler == "heun" else steps


def build_flow_scheduler(gcfg: GeneratorConfig) -> Any:
    """The scheduler config a flow model is saved with (no shift: the plain rectified-flow path)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=gcfg.num_train_timesteps, shift=1.0)


def start_flow_sampler(scheduler_config: Any, sampler: str, steps: int, device: torch.device | None = None) -> Any:
    """A fresh Euler or Heun scheduler over ``steps`` steps from t = 1 to 0. Euler gets equal steps
    (diffusers' default would end its grid at t = 0.001 and spend the last step on the remaining 0.001)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

    check_sampler(FLOW, sampler)
    if sampler == "euler":
        sched = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
        sched.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps, endpoint=False).tolist(), device=device)
    else:
        sched = FlowMatchHeunDiscreteScheduler.from_config(
            {k: scheduler_config[k] for k in ("num_train_timesteps", "shift")})
        sched.set_timesteps(steps, device=device)
    return sched


def flow_timesteps(fcfg: FlowConfig, n: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """``n`` training times t in [0, 1): logit-normal (SD3) or uniform, from diffusers' SD3 helper."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    scheme = "logit_normal" if fcfg.timesteps == "logit_normal" else "uniform"
    return compute_density_for_timestep_sampling(scheme, n, logit_mean=fcfg.logit_mean, logit_std=fcfg.logit_std,
                                                 device=device, generator=generator)


def flow_loss(
    net: nn.Module, fcfg: FlowConfig, num_train_timesteps: int, x0: torch.Tensor, labels: torch.Tensor, *,
    null_class: int, cond_drop_prob: float, generator: torch.Generator, noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE between the predicted and the true velocity ``noise - x0`` at x_t = (1 - t) x0 + t noise.
    ``noise``: the noise paired with ``x0`` (reflow), else drawn here."""
    b = x0.shape[0]
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    t = flow_timesteps(fcfg, b, x0.device, generator)
    if cond_drop_prob > 0:
        drop = torch.rand(b, generator=generator, device=x0.device) < cond_drop_prob
        labels = torch.where(drop, torch.full_like(labels, null_class), labels)
    s = t.to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    x_t = (1 - s) * x0 + s * noise
    inp = x_t.contiguous(memory_format=torch.channels_last) if x0.is_cuda and x0.ndim == 4 else x_t
    pred = net(inp, t * num_train_timesteps, class_labels=labels).sample
    return F.mse_loss(pred.float(), (noise - x0).float())
