"""Settings of the generators: what model to build, how to train it, how to sample from it.

GAN defaults follow dumontschutte2021 S.2.2 / S.3 (cpD-GAN: WGAN-GP, Adam with the prog-GAN
betas (0, 0.99), learning rate 0.005, one discriminator update per generator update, 512 feature
channels at ``size: base``). StyleGAN2 defaults follow StyleGAN2-ADA (Karras et al. 2020: lazy R1
every 16 and path length every 4 steps, learning rate 0.0025, ADA target 0.6 over 500k images).
Diffusion defaults follow the DDPM recipe of diffusers' examples; rectified-flow defaults follow SD3
(Esser et al. 2024: logit-normal timesteps with mean 0 and standard deviation 1).
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


#: ADA's augmentations (Karras et al. 2020, Fig. 2's pixel blitting and general geometric groups, and two
#: colour transforms), each applied with probability p to real and generated images alike.
AugmentOp = Literal["xflip", "rotate90", "xint", "scale", "brightness", "contrast"]
AUGMENT_OPS: tuple[AugmentOp, ...] = ("xflip", "rotate90", "xint", "scale", "brightness", "contrast")


class StyleGan2Config(Strict):
    """The stylegan2 family (Karras et al. 2020, StyleGAN2 and StyleGAN2-ADA): a conditional mapping network,
    lazy R1 and path-length regularisation, and adaptive discriminator augmentation (ADA)."""

    mapping_layers: int = Field(8, ge=1, le=16, description="layers of the mapping network z,y -> w (ADA's "
                                                            "small-data configs: 2)")
    style_mixing: float = Field(0.9, ge=0.0, le=1.0, description="share of generator batches trained with two ws "
                                                                  "(style-mixing regularisation)")
    g_lr: float = Field(0.0025, gt=0.0, description="generator learning rate (Adam; rescaled for lazy regularisation)")
    d_lr: float = Field(0.0025, gt=0.0, description="discriminator learning rate (Adam; rescaled likewise)")
    betas: tuple[float, float] = Field((0.0, 0.99), description="Adam betas")
    r1_gamma: float | None = Field(None, ge=0.0, description="R1 weight; null: StyleGAN2-ADA's heuristic "
                                                             "0.0002 * resolution^2 / train.batch_size")
    r1_interval: int = Field(16, ge=1, description="lazy R1: every N discriminator steps, weighted by N")
    pl_weight: float = Field(2.0, ge=0.0, description="path-length regularisation weight (0: off)")
    pl_interval: int = Field(4, ge=1, description="lazy path-length regularisation: every N generator steps")
    pl_decay: float = Field(0.01, gt=0.0, le=1.0, description="decay of the running mean path length")
    w_avg_beta: float = Field(0.995, ge=0.0, lt=1.0, description="EMA of each class's mean w (truncation's centre)")
    augment: Literal["ada", "fixed", "none"] = Field(
        "ada", description="ada: p tuned from the discriminator's overfitting | fixed: p = augment_p | none")
    augment_ops: tuple[AugmentOp, ...] = Field(AUGMENT_OPS, description="the augmentations, each with probability p")
    augment_p: float = Field(0.0, ge=0.0, le=1.0, description="ada: initial p | fixed: the p")
    ada_target: float = Field(0.6, description="ada: the target of r_t = E[sign D(real)], in (0, 1)")
    ada_images: int = Field(500_000, ge=1, description="ada: real images over which p can move from 0 to 1 "
                                                       "(StyleGAN2-ADA: 500k; lower it for short runs)")
    ada_interval: int = Field(4, ge=1, description="ada: adjust p every N steps")

    @field_validator("ada_target")
    @classmethod
    def _target(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"{v} is outside (0, 1): r_t = E[sign D(real)] lies in [-1, 1] and ADA raises p while "
                             "it is above the target; set a value strictly between 0 and 1 (StyleGAN2-ADA: 0.6)")
        return v


#: the training objectives of the diffusion families (generator.objective), and the samplers each can use
OBJECTIVE_SAMPLERS: dict[str, tuple[str, ...]] = {"ddpm": ("ddpm", "ddim", "dpmsolver++"),
                                                  "rectified_flow": ("euler", "heun")}
#: the families that take generator.objective (and generator.flow)
OBJECTIVE_FAMILIES = ("diffusion", "latent")


class FlowConfig(Strict):
    """Rectified flow (Liu et al. 2023; SD3's timesteps, Esser et al. 2024), with ``generator.objective:
    rectified_flow``: x_t = (1 - t) x0 + t noise for an image x0 and t in [0, 1], the network predicts the
    velocity noise - x0 (diffusers' flow-matching convention). Reflow (Liu et al.'s second round): a model
    trained on (noise, image) pairs drawn from a first flow model, initialised with its weights."""

    timesteps: Literal["logit_normal", "uniform"] = Field(
        "logit_normal", description="training t: sigmoid(N(logit_mean, logit_std)) (SD3) | uniform on [0, 1)")
    logit_mean: float = Field(0.0, description="logit_normal: mean of the normal before the sigmoid (SD3: 0)")
    logit_std: float = Field(1.0, gt=0.0, description="logit_normal: its standard deviation (SD3: 1)")
    reflow_from: Path | None = Field(None, description="reflow: the first-round rectified-flow model folder whose "
                                                       "(noise, image) pairs this model trains on (null: no reflow)")
    reflow_pairs: int = Field(0, ge=0, description="reflow: how many pairs to draw from reflow_from (>= 1 with it)")
    reflow_sampler: Literal["euler", "heun"] = Field("euler", description="reflow: the sampler drawing the pairs")
    reflow_steps: int = Field(25, ge=1, description="reflow: its steps")
    reflow_guidance_scale: float = Field(1.0, ge=0.0, description="reflow: guidance of the pairs (1: none; above 1 "
                                                                  "the second model learns the guided flow)")
    reflow_seed: int = Field(0, description="reflow: the pairs' noise seed")
    reflow_cache_dir: Path = Field(Path("data/reflow"), description="the pairs, kept per first model's weights "
                                                                     "and these settings")

    @model_validator(mode="after")
    def _pairs(self) -> FlowConfig:
        if self.reflow_from is not None and self.reflow_pairs < 1:
            raise ValueError("reflow_from is set but reflow_pairs is 0: set how many (noise, image) pairs to draw "
                             "from the first model (e.g. 10000)")
        if self.reflow_from is None and self.reflow_pairs:
            raise ValueError("reflow_pairs is set without reflow_from: name the first-round model folder to draw "
                             "the pairs from, or set reflow_pairs: 0")
        return self


class GeneratorConfig(Strict):
    """The model: its family and size, and the family's own settings."""

    type: str = Field("diffusion", description="the generator family: one of synthgate.generators.family.FAMILIES "
                                                "(diffusion: class-conditional DDPM UNet, gan: cpD-GAN, latent: latent diffusion, "
                                                "stylegan2: StyleGAN2 with ADA)")
    size: Literal["tiny", "small", "base"] = Field(
        "base", description="tiny (<1.5M parameters, CPU tests) | small | base (35.8M-parameter UNet / 512-channel GAN)"
    )
    # diffusion and latent
    objective: Literal["ddpm", "rectified_flow"] = Field(
        "ddpm", description="diffusion and latent: ddpm (noise schedule, prediction_type; samplers ddpm, ddim, "
                            "dpmsolver++) | rectified_flow (velocity, generator.flow; samplers euler, heun)")
    flow: FlowConfig = Field(default_factory=FlowConfig)
    prediction_type: Literal["epsilon", "v_prediction"] = Field("epsilon", description="ddpm: what the UNet predicts")
    beta_schedule: Literal["linear", "cosine"] = Field("cosine", description="ddpm: noise schedule (cosine = "
                                                                             "squaredcos_cap_v2)")
    num_train_timesteps: int = Field(1000, ge=10)
    cond_drop_prob: float = Field(
        0.1, ge=0.0, lt=1.0, description="classifier-free guidance: fraction of labels replaced by the null class"
    )
    # gan (dumontschutte2021 S.2.2, S.3)
    z_dim: int = Field(128, ge=1, description="GAN and StyleGAN2 noise dimension")
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
    # stylegan2 (Karras et al. 2020): also z_dim above
    stylegan2: StyleGan2Config = Field(default_factory=StyleGan2Config)

    @field_validator("type")
    @classmethod
    def _family(cls, v: str) -> str:
        if v not in FAMILIES:
            names = [repr(n) for n in FAMILIES]
            listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
            raise ValueError(f"unknown model type {v!r}: input should be {listed} (the registered generator families)")
        return v

    @model_validator(mode="after")
    def _objective(self) -> GeneratorConfig:
        if self.type not in OBJECTIVE_FAMILIES and (self.objective != "ddpm" or self.flow.reflow_from is not None):
            raise ValueError(f"objective {self.objective!r} / flow.reflow_from apply to the "
                             f"{' and '.join(OBJECTIVE_FAMILIES)} families only, not to type {self.type!r}")
        if self.flow.reflow_from is not None and self.objective != "rectified_flow":
            raise ValueError("flow.reflow_from trains a second rectified-flow round: set objective: rectified_flow")
        return self


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
    sample_grid_steps: int = Field(25, ge=1, description="sampler steps for the sample grids (DDIM; rectified flow: "
                                                             "Euler)")
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
    """Sampling a synthetic dataset. ``sampler``, ``steps`` and ``guidance_scale`` apply to diffusion only,
    ``truncation_psi`` to stylegan2 only."""

    sampler: Literal["ddpm", "ddim", "dpmsolver++", "euler", "heun"] = Field(
        "dpmsolver++", description="ddpm models: ddpm | ddim | dpmsolver++; rectified-flow models: euler | heun")
    steps: int = Field(25, ge=1, description="sampler steps (heun: 2 x steps - 1 network evaluations)")
    guidance_scale: float = Field(
        1.5, ge=0.0, description="classifier-free guidance scale (1: conditional model only, no guidance)"
    )
    truncation_psi: float = Field(
        1.0, description="stylegan2: w pulled toward its class's mean w, w_c + psi (w - w_c); in (0, 1], 1: none")
    per_class: int | None = Field(None, ge=0, description="images per class (when match_real is false; left out: "
                                                          f"{DEFAULT_PER_CLASS})")
    match_real: bool = Field(False, description="follow the real train split's class distribution")
    total: int | None = Field(None, ge=1, description="with match_real: images in all (null: as many as the real train split)")
    batch_size: int = Field(256, ge=1)
    seed: int = 0
    device: Device = "auto"

    @field_validator("truncation_psi")
    @classmethod
    def _psi(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise ValueError(f"{v} is outside (0, 1]: set 1 to sample without truncation, or a value such as 0.7 "
                             "to trade variety for typical images (0 would give every image of a class the same w)")
        return v

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
