"""Class-conditional diffusion with diffusers' ``UNet2DModel``: DDPM, or rectified flow (:mod:`.flow`).

Labels enter through the UNet's class embedding (``num_class_embeds = n_classes + 1``); index
``n_classes`` is the null class, so one network is both the conditional and the unconditional
model of classifier-free guidance (labels are dropped to it with ``cond_drop_prob`` in training).
Images are scaled uint8 -> [-1, 1]. ``generator.objective: ddpm`` samples with diffusers' DDPM, DDIM or
DPM-Solver++ schedulers, ``rectified_flow`` with its flow-matching Euler or Heun schedulers, with any number
of steps; a rectified-flow model can be trained a second round on its own pairs (reflow, :mod:`.reflow`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthgate.errors import ConfigError, DataError
from synthgate.generators.common import make_generator, per_image_noise, to_uint8
from synthgate.generators.config import GeneratorConfig, SampleConfig, TrainConfig
from synthgate.generators.family import GeneratorFamily
from synthgate.generators.flow import (
    FLOW,
    build_flow_scheduler,
    check_sampler,
    default_sampler,
    flow_loss,
    objective_of,
    start_flow_sampler,
)
from synthgate.generators.flow import describe as describe_objective
from synthgate.generators.task import TrainTask, autocast, make_optimizer
from synthgate.progress import NullReporter, Reporter
from synthgate.utils import read_json

if TYPE_CHECKING:
    from synthgate.generators.reflow import Reflow

#: UNet widths per size. ``base`` is the 35.8M-parameter UNet of the GPU benchmarks.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"block_out_channels": (32, 48, 64, 64), "layers_per_block": 1, "norm_num_groups": 16},
    "small": {"block_out_channels": (64, 128, 128, 128), "layers_per_block": 2, "norm_num_groups": 32},
    "base": {"block_out_channels": (128, 256, 256, 256), "layers_per_block": 2, "norm_num_groups": 32},
}
#: The model folder's files (diffusers' layout).
UNET_FILES = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors")
SCHEDULER_FILES = ("scheduler/scheduler_config.json",)
#: Self-attention sits in this block: 16x16 for 64x64 inputs (and in the mid block).
ATTN_LEVEL = 2
BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def _sampler_classes() -> dict[str, Any]:
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    return {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpmsolver++": DPMSolverMultistepScheduler}


def check_resolution(gcfg: GeneratorConfig, resolution: int) -> None:
    """The UNet halves the image ``len(blocks) - 1`` times: the side must divide evenly and be >= 8."""
    factor = 2 ** (len(SIZES[gcfg.size]["block_out_channels"]) - 1)
    if resolution < 8 or resolution % factor:
        raise ConfigError(
            f"prepare.resolution: {resolution}x{resolution} images are not supported by the {gcfg.size} "
            f"diffusion UNet (it downsamples by {factor}); supported sizes are multiples of {factor} "
            f"and at least 8, e.g. 32, 64, 128",
            hint="re-run `synthgate prepare` with such a resolution",
        )


def build_unet(gcfg: GeneratorConfig, resolution: int, channels: int, n_classes: int) -> nn.Module:
    """A class-conditional ``UNet2DModel`` with ``n_classes + 1`` class embeddings (the last is null)."""
    from diffusers import UNet2DModel

    check_resolution(gcfg, resolution)
    size = SIZES[gcfg.size]
    n = len(size["block_out_channels"])
    down = ["AttnDownBlock2D" if i == ATTN_LEVEL else "DownBlock2D" for i in range(n)]
    up = ["AttnUpBlock2D" if n - 1 - i == ATTN_LEVEL else "UpBlock2D" for i in range(n)]
    return UNet2DModel(
        sample_size=resolution,
        in_channels=channels,
        out_channels=channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        num_class_embeds=n_classes + 1,
        **size,
    )


def build_scheduler(gcfg: GeneratorConfig, pixel: bool = True) -> Any:
    """The training noise schedule (a ``DDPMScheduler``; rectified flow: a ``FlowMatchEulerDiscreteScheduler``);
    samplers are built from its config. ``pixel``: the data lie in [-1, 1] and DDPM predictions are clipped
    there (not so for latents)."""
    from diffusers import DDPMScheduler

    if gcfg.objective == FLOW:
        return build_flow_scheduler(gcfg)
    return DDPMScheduler(
        num_train_timesteps=gcfg.num_train_timesteps,
        beta_schedule=BETA_SCHEDULES[gcfg.beta_schedule],
        prediction_type=gcfg.prediction_type,
        clip_sample=pixel,
    )


def load_scheduler_config(folder: Path, gcfg: GeneratorConfig) -> Any:
    """The saved training scheduler's config (DDPM, or flow matching for ``objective: rectified_flow``);
    DataError when it cannot be read or belongs to the other objective."""
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

    cls = FlowMatchEulerDiscreteScheduler if gcfg.objective == FLOW else DDPMScheduler
    try:
        saved = read_json(folder / "scheduler_config.json").get("_class_name")
        config = cls.from_pretrained(folder).config
    except Exception as e:
        raise DataError(f"{folder}: cannot load the scheduler ({e})") from None
    if saved != cls.__name__:
        raise DataError(f"{folder}: a {saved} config, but the model's objective {gcfg.objective} needs a {cls.__name__}",
                        hint="the model folder is inconsistent; re-run `synthgate train`")
    return config


def make_sampler(scheduler_config: Any, sampler: str) -> Any:
    """DDPM / DDIM / DPM-Solver++ (2nd order, multistep) over the training schedule, trailing spacing;
    ConfigError naming the samplers of the model's objective when ``sampler`` is not one of them."""
    check_sampler(objective_of(scheduler_config), sampler)
    kwargs: dict[str, Any] = {"timestep_spacing": "trailing"}
    if sampler == "dpmsolver++" and scheduler_config.clip_sample:
        # Pixel-space model: keep the solver's data (x0) predictions inside [-1, 1] with dynamic
        # thresholding (Saharia et al.), as DDPM/DDIM do with clip_sample. Without it the x0
        # prediction at t~T under the cosine schedule (alpha_bar ~ 0) explodes and the images saturate.
        kwargs.update(algorithm_type="dpmsolver++", solver_order=2, thresholding=True, sample_max_value=1.0)
    try:
        cls = _sampler_classes()[sampler]
    except KeyError:
        raise ConfigError(f"sample.sampler: unknown sampler {sampler!r}", hint="use ddpm, ddim or dpmsolver++") from None
    return cls.from_config(scheduler_config, **kwargs)


def start_sampler(scheduler_config: Any, sampler: str, steps: int, device: torch.device | None = None) -> Any:
    """A fresh sampler of the model's objective, its timesteps set for ``steps`` steps."""
    if objective_of(scheduler_config) == FLOW:
        return start_flow_sampler(scheduler_config, sampler, steps, device)
    sched = make_sampler(scheduler_config, sampler)
    sched.set_timesteps(steps, device=device)
    return sched


def diffusion_loss(
    unet: nn.Module, scheduler: Any, x0: torch.Tensor, labels: torch.Tensor, *,
    null_class: int, cond_drop_prob: float, generator: torch.Generator,
) -> torch.Tensor:
    """The DDPM objective: MSE between the UNet output and the noise (epsilon) or velocity target."""
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator, device=x0.device)
    if cond_drop_prob > 0:
        drop = torch.rand(b, generator=generator, device=x0.device) < cond_drop_prob
        labels = torch.where(drop, torch.full_like(labels, null_class), labels)
    x_t = scheduler.add_noise(x0, noise, t)
    target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
    pred = unet(x_t.contiguous(memory_format=torch.channels_last) if x0.is_cuda else x_t, t, class_labels=labels).sample
    return F.mse_loss(pred.float(), target.float())


def objective_loss(
    net: nn.Module, scheduler: Any, gcfg: GeneratorConfig, x0: torch.Tensor, labels: torch.Tensor, *,
    null_class: int, cond_drop_prob: float, generator: torch.Generator, noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss of ``generator.objective``: :func:`diffusion_loss` or :func:`~.flow.flow_loss` (``noise``: a
    reflow pair's noise, flow only)."""
    if gcfg.objective == FLOW:
        return flow_loss(net, gcfg.flow, int(scheduler.config.num_train_timesteps), x0, labels,
                         null_class=null_class, cond_drop_prob=cond_drop_prob, generator=generator, noise=noise)
    return diffusion_loss(net, scheduler, x0, labels, null_class=null_class, cond_drop_prob=cond_drop_prob,
                          generator=generator)


@torch.no_grad()
def denoise(net: nn.Module, scheduler_config: Any, x: torch.Tensor, y: torch.Tensor, cfg: SampleConfig, *,
            null_class: int, device: torch.device, amp: bool, generator: torch.Generator) -> torch.Tensor:
    """From the noise ``x`` to data with ``cfg.sampler`` over ``cfg.steps`` steps, guided by ``cfg.guidance_scale``
    (conditional and unconditional predictions in one batch, ``uncond + scale * (cond - uncond)``; at 1 only the
    conditional half is evaluated). Returns the final float tensor, unclipped."""
    sched = start_sampler(scheduler_config, cfg.sampler, cfg.steps, device)
    guided = cfg.guidance_scale != 1.0
    yy = torch.cat([y, torch.full_like(y, null_class)]) if guided else y
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        tt = t.expand(len(yy))  # one timestep per image (a DiT takes no scalar)
        with autocast(device, amp):
            pred = net(torch.cat([inp, inp]) if guided else inp, tt, class_labels=yy).sample.float()
        if guided:
            cond, uncond = pred.chunk(2)
            pred = uncond + cfg.guidance_scale * (cond - uncond)
        x = sched.step(pred, t, x, generator=generator).prev_sample
    return x


@torch.no_grad()
def sample_images(
    unet: nn.Module, scheduler_config: Any, labels: np.ndarray, cfg: SampleConfig, *,
    null_class: int, device: torch.device, amp: bool = False, reporter: Reporter | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None, out_shape: tuple[int, int] | None = None,
    noise_tag: str = "diffusion",
) -> np.ndarray:
    """Sample one image per label with classifier-free guidance (:func:`denoise`) -> uint8 (N, H, W, C).

    ``decode`` maps the denoised tensors to images in [-1, 1] (a
    latent model's autoencoder; ``out_shape``: the images' side and channels), else they are the images.
    """
    reporter = reporter or NullReporter()
    res, ch = int(unet.config.sample_size), int(unet.config.in_channels)
    n = len(labels)
    if n == 0:
        side, channels = out_shape or (res, ch)
        return np.zeros((0, side, side, channels), np.uint8)
    if cfg.steps > scheduler_config.num_train_timesteps:
        raise ConfigError(
            f"sample.steps: {cfg.steps} is more than the model's {scheduler_config.num_train_timesteps} training timesteps",
            hint="use fewer sampler steps",
        )
    check_sampler(objective_of(scheduler_config), cfg.sampler)
    out = []
    with reporter.task(f"Sampling {n} images ({cfg.sampler}, {cfg.steps} steps)", n) as advance:
        for start in range(0, n, cfg.batch_size):
            y = torch.as_tensor(labels[start : start + cfg.batch_size], dtype=torch.long, device=device)
            x = per_image_noise((ch, res, res), cfg.seed, start, len(y), noise_tag).to(device)
            x = denoise(unet, scheduler_config, x, y, cfg, null_class=null_class, device=device, amp=amp,
                        generator=make_generator(device, cfg.seed, "ddpm-step", start))
            out.append(to_uint8(decode(x) if decode is not None else x))
            advance(len(y))
    return np.concatenate(out)


class DiffusionTask(TrainTask):
    """UNet, AdamW and EMA of a class-conditional DDPM or rectified flow for the shared training loop; a
    reflow round (``generator.flow.reflow_from``) starts from its parent's weights and trains on its pairs."""

    def __init__(self, gcfg: GeneratorConfig, tcfg: TrainConfig, resolution: int, channels: int,
                 n_classes: int, device: torch.device) -> None:
        from diffusers.training_utils import EMAModel

        super().__init__(gcfg, tcfg, resolution, channels, n_classes, device)
        self.unet = build_unet(gcfg, resolution, channels, n_classes).to(device, memory_format=self.memory_format)
        self.scheduler = build_scheduler(gcfg)
        self.forward = torch.compile(self.unet) if (tcfg.compile and self.cuda) else self.unet
        self.opt = make_optimizer(self.unet.parameters(), device, tcfg.lr, (0.9, 0.999), tcfg.weight_decay)
        self.modules, self.optimizers, self.lrs = {"unet": self.unet}, {"unet": self.opt}, {"unet": tcfg.lr}
        self.ema_target = self.unet
        self.ema = EMAModel(self.unet.parameters(), decay=tcfg.ema_decay, foreach=self.cuda)
        self.preview_sampler = default_sampler(gcfg.objective, preview=True)
        self.reflow: Reflow | None = None

    def prepare(self, ds: Any, reporter: Any) -> None:
        if self.gcfg.flow.reflow_from is not None:
            from diffusers.training_utils import EMAModel

            from synthgate.generators.reflow import start_reflow

            self.reflow = start_reflow(self, self.unet, ds, reporter)
            self.ema = EMAModel(self.unet.parameters(), decay=self.tcfg.ema_decay, foreach=self.cuda)

    def prepared_identity(self) -> str | None:
        return self.reflow.pairs_sha256 if self.reflow is not None else None

    def step(self, batches: list[tuple[torch.Tensor, torch.Tensor]], gen: torch.Generator) -> dict[str, torch.Tensor]:
        (x0, y), = batches
        noise = None
        if self.reflow is not None:  # the parent's (noise, image, label) triples instead of the real batch
            noise, x0, y = self.reflow.draw(len(x0), gen, self.device)
        with autocast(self.device, self.amp):
            loss = objective_loss(self.forward, self.scheduler, self.gcfg, x0, y, null_class=self.n_classes,
                                  cond_drop_prob=self.gcfg.cond_drop_prob, generator=gen, noise=noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.tcfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.unet.parameters(), self.tcfg.grad_clip)
        self.opt.step()
        self.ema.step(self.unet.parameters())
        return {"loss": loss.detach()}

    def sample(self, module: nn.Module, labels: np.ndarray, cfg: SampleConfig) -> np.ndarray:
        return sample_images(module, self.scheduler.config, labels, cfg, null_class=self.n_classes,
                             device=self.device, amp=self.amp)

    def wrap_ddp(self, ddp: Callable[[nn.Module], nn.Module], compiled: Callable[[nn.Module], nn.Module]) -> None:
        self.forward = compiled(ddp(self.unet))

    def save_extras(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler, "reflow": self.reflow.lineage() if self.reflow is not None else None}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        return {**state, **self.reflow.state()} if self.reflow is not None else state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.reflow is not None:
            self.reflow.check_state(state)
        super().load_state_dict(state)


class DiffusionFamily(GeneratorFamily):
    """``unet/`` (diffusers ``save_pretrained``, EMA weights) and ``scheduler/`` (the training noise
    schedule, from which every sampler is built)."""

    name = "diffusion"
    description = "class-conditional DDPM UNet (diffusers UNet2DModel), classifier-free guidance"
    files = (*UNET_FILES, *SCHEDULER_FILES)
    weights = UNET_FILES[1]

    def check_resolution(self, gcfg: GeneratorConfig, resolution: int) -> None:
        check_resolution(gcfg, resolution)

    def describe(self, gcfg: GeneratorConfig, extras: dict[str, Any]) -> dict[str, Any]:
        return describe_objective(gcfg, extras)

    def make_task(self, gcfg: GeneratorConfig, tcfg: TrainConfig, resolution: int, channels: int,
                  n_classes: int, device: torch.device) -> DiffusionTask:
        return DiffusionTask(gcfg, tcfg, resolution, channels, n_classes, device)

    def write(self, folder: Path, module: nn.Module, extras: dict[str, Any]) -> None:
        if extras.get("scheduler") is None:
            raise ValueError("a diffusion model needs its scheduler")
        module.save_pretrained(folder / "unet", safe_serialization=True)  # type: ignore[operator]
        extras["scheduler"].save_pretrained(folder / "scheduler")

    def load(self, model_dir: Path, gcfg: GeneratorConfig, info: dict[str, Any],
             device: torch.device) -> tuple[nn.Module, Any]:
        from diffusers import UNet2DModel

        try:
            unet = UNet2DModel.from_pretrained(model_dir / "unet", low_cpu_mem_usage=False)
        except Exception as e:
            raise DataError(f"{model_dir / 'unet'}: cannot load the UNet ({e})", hint="re-run `synthgate train`") from None
        return unet.to(device).eval().requires_grad_(False), load_scheduler_config(model_dir / "scheduler", gcfg)

    def sample(self, module: nn.Module, context: Any, labels: np.ndarray, cfg: SampleConfig, *, n_classes: int,
               device: torch.device, amp: bool, reporter: Reporter | None = None) -> np.ndarray:
        return sample_images(module, context, labels, cfg, null_class=n_classes, device=device, amp=amp,
                             reporter=reporter)


FAMILY = DiffusionFamily()
