"""Class-conditional latent diffusion: a UNet (diffusers ``UNet2DModel``) or a DiT
(``DiTTransformer2DModel``) denoiser on the latents of an autoencoder trained on the same data
(:mod:`synthgate.generators.autoencoder`; niehues2024's KL-f8 / VQ-f8 LDMs, benitodelvalle's
U-Net and DiT denoisers).

The autoencoder is trained (or taken from its cache) before the denoiser, frozen, and bundled in
the model folder (``vae/``); a checkpoint records its sha256 and a resume with another one is
refused, as is sampling with an autoencoder other than the bundled one. The latents are scaled by
1 / their standard deviation over the training split. Labels and classifier-free guidance work as
in the pixel family (the null class is index ``n_classes``); a DiT drops 10% of the labels to the
null class itself (diffusers' ``LabelEmbedding``), so ``cond_drop_prob`` applies to the UNet only.
The objectives and samplers are the pixel family's (DDPM, or rectified flow with reflow: :mod:`.flow`,
:mod:`.reflow`), without clipping or thresholding (latents are not bounded); a reflow round's pairs are latents.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from synthgate.errors import ConfigError, DataError
from synthgate.generators import autoencoder as ae_mod
from synthgate.generators.config import GeneratorConfig, SampleConfig, TrainConfig
from synthgate.generators.diffusion import (
    build_scheduler,
    load_scheduler_config,
    objective_loss,
    sample_images,
)
from synthgate.generators.family import GeneratorFamily
from synthgate.generators.flow import default_sampler
from synthgate.generators.flow import describe as describe_objective
from synthgate.generators.task import TrainTask, autocast, make_optimizer
from synthgate.progress import NullReporter, Reporter

if TYPE_CHECKING:
    from synthgate.data.canonical import CanonicalDataset
    from synthgate.generators.reflow import Reflow

#: latent UNet widths per size (two or three levels: latents are small)
UNET_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"block_out_channels": (32, 64), "layers_per_block": 1, "norm_num_groups": 16},
    "small": {"block_out_channels": (64, 128, 128), "layers_per_block": 2, "norm_num_groups": 32},
    "base": {"block_out_channels": (128, 256, 256), "layers_per_block": 2, "norm_num_groups": 32},
}
#: DiT depth and width per size (base: DiT-S, Peebles and Xie 2023)
DIT_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 32},
    "small": {"num_layers": 6, "num_attention_heads": 4, "attention_head_dim": 64},
    "base": {"num_layers": 12, "num_attention_heads": 6, "attention_head_dim": 64},
}
DENOISER_FILES = ("denoiser/config.json", "denoiser/diffusion_pytorch_model.safetensors")
SCHEDULER_FILES = ("scheduler/scheduler_config.json",)
VAE_FILES = tuple(f"vae/{f}" for f in ae_mod.FILES)


def check_resolution(gcfg: GeneratorConfig, resolution: int) -> int:
    """The latent side; ConfigError when the autoencoder's factor, the UNet's levels or the DiT's
    patch do not divide it."""
    side = ae_mod.check_resolution(gcfg.autoencoder, resolution)
    if gcfg.denoiser == "dit":
        if side % gcfg.patch_size:
            raise ConfigError(
                f"generator.patch_size: {gcfg.patch_size} does not divide the latent side {side} (resolution "
                f"{resolution} / downsample {gcfg.autoencoder.downsample})",
                hint=f"use a patch size that divides {side} (e.g. 1 or 2)")
        return side
    factor = 2 ** (len(UNET_SIZES[gcfg.size]["block_out_channels"]) - 1)
    if side % factor or side < factor:
        raise ConfigError(
            f"prepare.resolution: {resolution}x{resolution} images give {side}x{side} latents, which the {gcfg.size} "
            f"latent UNet (it downsamples by {factor}) cannot take; use a latent side that is a multiple of {factor}",
            hint="prepare at a larger resolution, or set generator.autoencoder.downsample to 4")
    return side


def build_denoiser(gcfg: GeneratorConfig, side: int, channels: int, n_classes: int) -> nn.Module:
    """The class-conditional denoiser on ``channels`` x ``side`` x ``side`` latents (null class ``n_classes``)."""
    from diffusers import DiTTransformer2DModel, UNet2DModel

    if gcfg.denoiser == "dit":
        return DiTTransformer2DModel(in_channels=channels, out_channels=channels, sample_size=side,
                                     patch_size=gcfg.patch_size, num_embeds_ada_norm=n_classes,
                                     **DIT_SIZES[gcfg.size])
    size = UNET_SIZES[gcfg.size]
    n = len(size["block_out_channels"])
    down = ["AttnDownBlock2D" if i == n - 1 else "DownBlock2D" for i in range(n)]
    up = ["AttnUpBlock2D" if i == 0 else "UpBlock2D" for i in range(n)]
    return UNet2DModel(sample_size=side, in_channels=channels, out_channels=channels, down_block_types=tuple(down),
                       up_block_types=tuple(up), num_class_embeds=n_classes + 1, **size)


def _load_denoiser(folder: Path) -> nn.Module:
    from diffusers import DiTTransformer2DModel, UNet2DModel

    kind = json.loads((folder / "config.json").read_text()).get("_class_name")
    cls = DiTTransformer2DModel if kind == "DiTTransformer2DModel" else UNet2DModel
    return cls.from_pretrained(folder, low_cpu_mem_usage=False)


class LatentTask(TrainTask):
    """The denoiser, AdamW and EMA of a latent diffusion model; the frozen autoencoder beside them."""

    def __init__(self, gcfg: GeneratorConfig, tcfg: TrainConfig, resolution: int, channels: int,
                 n_classes: int, device: torch.device) -> None:
        from diffusers.training_utils import EMAModel

        super().__init__(gcfg, tcfg, resolution, channels, n_classes, device)
        self.side = check_resolution(gcfg, resolution)
        self.net = build_denoiser(gcfg, self.side, gcfg.autoencoder.latent_channels, n_classes).to(device)
        self.scheduler = build_scheduler(gcfg, pixel=False)
        self.forward = torch.compile(self.net) if (tcfg.compile and self.cuda) else self.net
        self.opt = make_optimizer(self.net.parameters(), device, tcfg.lr, (0.9, 0.999), tcfg.weight_decay)
        self.modules, self.optimizers, self.lrs = {"denoiser": self.net}, {"denoiser": self.opt}, {"denoiser": tcfg.lr}
        self.ema_target = self.net
        self.ema = EMAModel(self.net.parameters(), decay=tcfg.ema_decay, foreach=self.cuda)
        self.cond_drop = 0.0 if gcfg.denoiser == "dit" else gcfg.cond_drop_prob
        self.autoencoder: ae_mod.Autoencoder | None = None
        self.preview_sampler = default_sampler(gcfg.objective, preview=True)
        self.reflow: Reflow | None = None

    def prepare(self, ds: CanonicalDataset, reporter: Reporter) -> None:
        self.autoencoder = ae_mod.get_autoencoder(ds, self.gcfg.autoencoder, self.gcfg.size, self.device, reporter)
        if self.gcfg.flow.reflow_from is not None:  # a second rectified-flow round on the parent's latent pairs
            from diffusers.training_utils import EMAModel

            from synthgate.generators.reflow import start_reflow

            self.reflow = start_reflow(self, self.net, ds, reporter, autoencoder_sha256=self._ae().weights_sha256)
            self.ema = EMAModel(self.net.parameters(), decay=self.tcfg.ema_decay, foreach=self.cuda)

    def prepared_identity(self) -> str | None:
        pairs = f":{self.reflow.pairs_sha256}" if self.reflow is not None else ""
        return self._ae().weights_sha256 + pairs

    def _ae(self) -> ae_mod.Autoencoder:
        if self.autoencoder is None:
            raise RuntimeError("the latent task has no autoencoder: prepare() was not called")
        return self.autoencoder

    def step(self, batches: list[tuple[torch.Tensor, torch.Tensor]], gen: torch.Generator) -> dict[str, torch.Tensor]:
        (x0, y), = batches
        noise = None
        if self.reflow is not None:  # the parent's (noise, latent, label) triples instead of the real batch
            noise, z0, y = self.reflow.draw(len(x0), gen, self.device)
        else:
            z0 = self._ae().encode(x0)
        with autocast(self.device, self.amp):
            loss = objective_loss(self.forward, self.scheduler, self.gcfg, z0, y, null_class=self.n_classes,
                                  cond_drop_prob=self.cond_drop, generator=gen, noise=noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.tcfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.tcfg.grad_clip)
        self.opt.step()
        self.ema.step(self.net.parameters())
        return {"loss": loss.detach()}

    def sample(self, module: nn.Module, labels: np.ndarray, cfg: SampleConfig) -> np.ndarray:
        return sample_latent(module, (self.scheduler.config, self._ae()), labels, cfg, null_class=self.n_classes,
                             device=self.device, amp=self.amp)

    def wrap_ddp(self, ddp: Callable[[nn.Module], nn.Module], compiled: Callable[[nn.Module], nn.Module]) -> None:
        self.forward = compiled(ddp(self.net))

    def save_extras(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler, "autoencoder": self._ae(),
                "reflow": self.reflow.lineage() if self.reflow is not None else None}

    def state_dict(self) -> dict[str, Any]:
        reflow = self.reflow.state() if self.reflow is not None else {}
        return {**super().state_dict(), "autoencoder_sha256": self._ae().weights_sha256, **reflow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved, now = state.get("autoencoder_sha256"), self._ae().weights_sha256
        if saved != now:
            raise ConfigError(
                f"the checkpoint's denoiser was trained on the latents of autoencoder {str(saved)[:16]}, but this run's "
                f"autoencoder is {now[:16]} ({self._ae().folder})",
                hint="restore that autoencoder in generator.autoencoder.cache_dir, or train without resuming")
        if self.reflow is not None:
            self.reflow.check_state(state)
        super().load_state_dict(state)


@torch.no_grad()
def sample_latent(net: nn.Module, context: tuple[Any, ae_mod.Autoencoder], labels: np.ndarray, cfg: SampleConfig,
                  *, null_class: int, device: torch.device, amp: bool, reporter: Reporter | None = None) -> np.ndarray:
    """Denoise latents with the pixel family's samplers, then decode them -> uint8 (N, H, W, C)."""
    scheduler_config, ae = context
    return sample_images(net, scheduler_config, labels, cfg, null_class=null_class, device=device, amp=amp,
                         reporter=reporter or NullReporter(), decode=ae.decode, noise_tag="latent",
                         out_shape=(int(ae.info["resolution"]), int(ae.info["channels"])))


class LatentFamily(GeneratorFamily):
    """``denoiser/`` (UNet or DiT, EMA weights), ``scheduler/`` and ``vae/`` (the frozen autoencoder
    with its ``autoencoder.json``: dataset version, weights sha256, scaling factor, reconstruction quality)."""

    name = "latent"
    description = "latent diffusion: a KL or VQ autoencoder with a class-conditional UNet or DiT denoiser (diffusers)"
    files = (*DENOISER_FILES, *SCHEDULER_FILES, *VAE_FILES)
    weights = DENOISER_FILES[1]
    fingerprint_fields = ("autoencoder", "denoiser", "patch_size")  # the autoencoder's weights are checked too

    def check_resolution(self, gcfg: GeneratorConfig, resolution: int) -> None:
        check_resolution(gcfg, resolution)

    def describe(self, gcfg: GeneratorConfig, extras: dict[str, Any]) -> dict[str, Any]:
        return describe_objective(gcfg, extras)

    def make_task(self, gcfg: GeneratorConfig, tcfg: TrainConfig, resolution: int, channels: int,
                  n_classes: int, device: torch.device) -> LatentTask:
        return LatentTask(gcfg, tcfg, resolution, channels, n_classes, device)

    def write(self, folder: Path, module: nn.Module, extras: dict[str, Any]) -> None:
        if extras.get("scheduler") is None or extras.get("autoencoder") is None:
            raise ValueError("a latent model needs its scheduler and its autoencoder")
        module.save_pretrained(folder / "denoiser", safe_serialization=True)  # type: ignore[operator]
        extras["scheduler"].save_pretrained(folder / "scheduler")
        ae_mod.copy_autoencoder(extras["autoencoder"], folder / "vae")

    def load(self, model_dir: Path, gcfg: GeneratorConfig, info: dict[str, Any],
             device: torch.device) -> tuple[nn.Module, Any]:
        vae = ae_mod.load_autoencoder(model_dir / "vae", device, expect_dataset=info.get("dataset_content_hash"),
                                      expect_weights=(info.get("files") or {}).get(f"vae/{ae_mod.WEIGHTS}"))
        try:
            net = _load_denoiser(model_dir / "denoiser")
        except Exception as e:
            raise DataError(f"{model_dir / 'denoiser'}: cannot load the denoiser ({e})",
                            hint="re-run `synthgate train`") from None
        scheduler_config = load_scheduler_config(model_dir / "scheduler", gcfg)
        return net.to(device).eval().requires_grad_(False), (scheduler_config, vae)

    def sample(self, module: nn.Module, context: Any, labels: np.ndarray, cfg: SampleConfig, *, n_classes: int,
               device: torch.device, amp: bool, reporter: Reporter | None = None) -> np.ndarray:
        return sample_latent(module, context, labels, cfg, null_class=n_classes, device=device, amp=amp,
                             reporter=reporter)


FAMILY = LatentFamily()
