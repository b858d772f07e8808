"""Settings of the generators: what model to build, how to train it, how to sample from it.

GAN defaults follow dumontschutte2021 S.2.2 / S.3 (cpD-GAN: WGAN-GP, Adam with the prog-GAN
betas (0, 0.99), learning rate 0.005, one discriminator update per generator update, 512 feature
channels at ``size: base``). Diffusion defaults follow the DDPM recipe of diffusers' examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from synthgate.generators.family import FAMILIES
from synthgate.strict import Strict

Device = Literal["auto", "cpu", "cuda"]


class AutoencoderConfig(Strict):
    """The latent family's autoencoder (niehues2024: KL-f8 / VQ-f8; benitodelvalle): trained on the
    real training split once per dataset version and these settings, then cached and frozen."""

    kind: Literal["kl", "vq"] = Field("kl", description="kl: diffusers AutoencoderKL | vq: VQModel")
    downsample: Literal[4, 8] = Field(4, description="spatial downsampling factor (resolution / latent side)")
    latent_channels: int = Field(4, ge=1, le=64)
    codebook_size: int = Field(256, ge=2, description="vq: codebook entries")
    steps: int = Field(2000, ge=1, description="optimisation steps")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0.0, description="AdamW learning rate")
    recon: Literal["l1", "l2"] = Field("l1", description="pixel reconstruction loss")
    ms_ssim_weight: float = Field(0.2, ge=0.0, description="weight of 1 - MS-SSIM (torchmetrics) in the loss")
    kl_weight: float = Field(1e-6, ge=0.0, description="kl: weight of the KL term")
    discriminator_weight: float = Field(0.0, ge=0.0, description="weight of a PatchGAN hinge loss (0: off)")
    discriminator_start: int = Field(500, ge=0, description="step from which the patch discriminator trains")
    seed: int = 0
    cache_dir: Path = Field(Path("data/autoencoders"), description="trained autoencoders, keyed by dataset content "
                                                                   "hash and these settings")


class GeneratorConfig(Strict):
    """The model: its family and size, and the family's own settings."""

    type: str = Field("diffusion", description="the generator family: one of synthgate.generators.family.FAMILIES "
                                                "(diffusion: class-conditional DDPM UNet, gan: cpD-GAN)")
    size: Literal["tiny", "small", "base"] = Field(
        "base", description="tiny (<1.5M parameters, CPU tests) | small | base (35.8M-parameter UNet / 512-channel GAN)"
    )
    # diffusion
    prediction_type: Literal["epsilon", "v_prediction"] = Field("epsilon", description="what the UNet predicts")
    beta_schedule: Literal["linear", "cosine"] = Field("cosine", description="noise schedule (cosine = squaredcos_cap_v2)")
    num_train_timesteps: int = Field(1000, ge=10)
    cond_drop_prob: float = Field(
        0.1, ge=0.0, lt=1.0, description="classifier-free guidance: fraction of labels replaced by the null class"
    )
    # gan (dumontschutte2021 S.2.2, S.3)
    z_dim: int = Field(128, ge=1, description="GAN noise dimension")
    gp_weight: float = Field(10.0, ge=0.0, description="WGAN-GP gradient penalty weight")
    drift_weight: float = Field(0.001, ge=0.0, description="prog-GAN drift penalty on D(real)^2")
    n_critic: int = Field(1, ge=1, description="discriminator updates per generator update")
    g_lr: float = Field(0.005, gt=0.0, description="GAN generator learning rate (Adam)")
    d_lr: float = Field(0.005, gt=0.0, description="GAN discriminator learning rate (Adam)")
    betas: tuple[float, float] = Field((0.0, 0.99), description="GAN Adam betas (prog-GAN)")
    # latent (niehues2024, xing2023, benitodelvalle): a diffusion model on an autoencoder's latents
    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    denoiser: Literal["unet", "dit"] = Field("unet", description="latent: UNet2DModel | DiTTransformer2DModel")
    patch_size: int = Field(2, ge=1, description="latent DiT: patch side in latent pixels (divides the latent side)")

    @field_validator("type")
    @classmethod
    def _family(cls, v: str) -> str:
        if v not in FAMILIES:
            names = [repr(n) for n in FAMILIES]
            listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
            raise ValueError(f"unknown model type {v!r}: input should be {listed} (the registered generator families)")
        return v


class TrainConfig(Strict):
    """The training loop (shared by both model families)."""

    steps: int = Field(20_000, ge=1, description="optimisation steps (GAN: generator updates)")
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-4, gt=0.0, description="diffusion AdamW learning rate (the GAN uses generator.g_lr/d_lr)")
    weight_decay: float = Field(0.0, ge=0.0, description="diffusion AdamW weight decay")
    grad_clip: float | None = Field(1.0, gt=0.0, description="diffusion: clip the gradient norm to this (null: off)")
    ema_decay: float = Field(0.9999, ge=0.0, le=1.0, description="EMA of the weights that are saved and sampled")
    seed: int = 0
    device: Device = "auto"
    compile: bool = Field(False, description="torch.compile the network (CUDA only)")
    bf16: bool = Field(True, description="bf16 autocast (CUDA only; CPU trains in fp32)")
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(50, ge=1)
    sample_grid_every: int = Field(2000, ge=0, description="per-class sample grid every N steps and at the end (0: never)")
    sample_grid_per_class: int = Field(8, ge=1)
    sample_grid_steps: int = Field(25, ge=1, description="DDIM steps for the sample grids")
    mlflow: bool = True
    # FID early stopping (dumontschutte2021 S.3): FID of the EMA model against real training images,
    # in the reference encoder's features; stop after fid_patience evaluations without improvement.
    fid_every: int = Field(
        0, ge=0, description="FID of the EMA model every N steps and at the end; 0: off (train for `steps`)"
    )
    fid_images: int = Field(
        10_000, ge=2, description="images per FID evaluation, real and synthetic alike (S.3: 10,000)"
    )
    fid_patience: int = Field(
        2, ge=1, description="stop after this many FID evaluations in a row without improvement (S.3: 2)"
    )
    fid_min_steps: int = Field(0, ge=0, description="never stop early before this step (S.3: a minimum budget)")
    fid_min_delta: float = Field(
        0.0, ge=0.0, description="an evaluation improves when FID drops below best - fid_min_delta"
    )
    grace_seconds: float = Field(
        25.0, gt=0.0, description="after SIGTERM (a preempted pod), the time the last step and its checkpoint must "
                                  "fit in; set the pod's terminationGracePeriodSeconds above it (k8s/training)")
    max_seconds: float | None = Field(
        None, gt=0.0, description="stop (checkpoint and save) once training has taken this long (null: no limit); "
                                  "for comparisons at equal wall-clock budgets (benchmarks/generators.py)"
    )
    data_on_gpu: Literal["auto", "always", "never"] = Field(
        "auto", description="hold the training images on the GPU (auto: when they take < 25% of free memory)"
    )


#: Images per class a sampling run draws when neither ``per_class`` nor ``match_real`` is set.
DEFAULT_PER_CLASS = 100


class SampleConfig(Strict):
    """Sampling a synthetic dataset. ``sampler``, ``steps`` and ``guidance_scale`` apply to diffusion only."""

    sampler: Literal["ddpm", "ddim", "dpmsolver++"] = "dpmsolver++"
    steps: int = Field(25, ge=1, description="sampler steps")
    guidance_scale: float = Field(
        1.5, ge=0.0, description="classifier-free guidance scale (1: conditional model only, no guidance)"
    )
    per_class: int | None = Field(None, ge=0, description="images per class (when match_real is false; left out: "
                                                          f"{DEFAULT_PER_CLASS})")
    match_real: bool = Field(False, description="follow the real train split's class distribution")
    total: int | None = Field(None, ge=1, description="with match_real: images in all (null: as many as the real train split)")
    batch_size: int = Field(256, ge=1)
    seed: int = 0
    device: Device = "auto"

    @model_validator(mode="before")
    @classmethod
    def _default_count(cls, data: Any) -> Any:
        """``SampleConfig()`` is valid: without per_class and match_real, DEFAULT_PER_CLASS per class."""
        if isinstance(data, dict) and "per_class" not in data and not data.get("match_real"):
            return {**data, "per_class": DEFAULT_PER_CLASS}
        return data

    @model_validator(mode="after")
    def _how_many(self) -> SampleConfig:
        if self.match_real and self.per_class is not None:
            raise ValueError("set either per_class or match_real, not both")
        if not self.match_real and self.per_class is None:
            raise ValueError("set per_class (images per class) or match_real: true (with an optional total)")
        if not self.match_real and self.total is not None:
            raise ValueError("total applies with match_real: true only; use per_class otherwise")
        return self
