"""Typed settings of the evaluation stage (``evaluate:`` in params.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from synthgate.strict import Strict


class EncoderConfig(Strict):
    """The reference encoder: a classifier trained on the real training split (MONAI network)."""

    arch: Literal["small", "densenet121", "resnet18"] = Field(
        "small", description="small: a compact MONAI DenseNet for CPU runs; densenet121 as in dumontschutte2021"
    )
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    max_train_per_class: int | None = Field(2000, ge=1, description="subsample the training split per class")
    seed: int = 0
    cache_dir: Path = Field(Path("data/encoders"), description="trained encoders, keyed by dataset content hash")
    weights: Path | None = Field(None, description="use this encoder directory instead of training/caching one")


class DescriptorConfig(Strict):
    """The learned copy descriptor (SSCD-style contrastive encoder) trained on the real training split."""

    steps: int = Field(600, ge=1, description="training steps (two modified copies of each image per batch)")
    batch_size: int = Field(128, ge=4)
    lr: float = Field(3e-3, gt=0)
    width: int = Field(16, ge=4, description="channels of the first stage (x2, x4, x8 after)")
    dim: int = Field(128, ge=8, description="descriptor dimension")
    input_size: int = Field(32, ge=8, description="images are area-resized to at most this side")
    temperature: float = Field(0.1, gt=0, description="InfoNCE temperature")
    koleo: float = Field(0.1, ge=0, description="weight of the KoLeo differential-entropy term")
    seed: int = 0
    cache_dir: Path = Field(Path("data/encoders"), description="trained descriptors, keyed by dataset content hash")


class MemorizationConfig(Strict):
    """The copy search, its held-out null and the planted-copy self-test (see
    :mod:`synthgate.evaluation.memorization`)."""

    max_train: int | None = Field(
        None, ge=1, description="compare against at most N training images (seeded). Below the training split's "
        "size the coverage is partial and the gate fails: every training image must be searched")
    max_held_out: int | None = Field(
        5000, ge=1, description="held-out (val + test) images that calibrate the null (seeded subsample)")
    shortlist: int = Field(32, ge=2, description="training candidates per image for the full search")
    max_shift: int | None = Field(None, ge=1, description="largest shift in px (default: 4 px at 64x64, scaled)")
    scales: list[float] = Field([0.85, 0.925, 1.0, 1.075, 1.15], min_length=1,
                                description="scale/crop factors searched (refined +-2.5% around the best)")
    rotations: list[float] = Field([-8.0, 0.0, 8.0], min_length=1,
                                   description="rotations in degrees searched (refined +-4 around the best)")
    tiles: int = Field(3, ge=1, le=8, description="tiles per side for tile-wise scoring")
    tail_fraction: float = Field(0.2, gt=0, lt=1, description="share of the null whose tail is modelled")
    min_exceedances: int = Field(20, ge=5, description="null scores the tail model needs above its threshold "
                                 "(a null of fewer than 3x this many images cannot be certified)")
    bootstrap: int = Field(100, ge=10, description="bootstrap refits for the tail model's upper bound")
    alpha: float = Field(0.005, gt=0, lt=1, description="level of the per-image copy flags in this evaluation's "
                         "report and exclusions (the gate applies its policy's own level)")
    correction: Literal["bh", "holm"] = Field("bh", description="multiplicity correction of the copy flags")
    top_k: int = Field(16, ge=1, description="most significant images shown in the report")
    planted: int = Field(100, ge=0, description="planted copies per kind used to measure detection power")
    chunk: int = Field(512, ge=16)
    descriptor: DescriptorConfig = DescriptorConfig()


class FidelityConfig(Strict):
    k: int = Field(5, ge=1, description="nearest neighbours for precision/recall/density/coverage")
    max_images: int | None = Field(10000, ge=2, description="images per set for FID/KID/PRDC (seeded subsample)")
    kid_subset_size: int = Field(1000, ge=2)
    kid_subsets: int = Field(50, ge=1)


class UtilityConfig(Strict):
    """The downstream classifiers (synthgate.evaluation.utility): trained to convergence with early
    stopping on the real validation split (dumontschutte2021 S.4), repeated over ``seeds``."""

    enabled: bool = True
    arch: Literal["small", "densenet121", "resnet18"] = "small"
    seeds: list[int] = Field([0, 1, 2, 3, 4], min_length=1,
                             description="one paired repeat each; a one-sided bound at `confidence` needs "
                                         "log2(1/(1-confidence)) of them (5 at 0.95)")
    confidence: float = Field(0.95, gt=0.5, lt=1,
                              description="level of the one-sided bounds in the report (the gate uses its own)")
    max_steps: int = Field(2000, ge=1, description="step budget per classifier")
    eval_every: int = Field(100, ge=1, description="steps between validation AUROCs")
    patience: int = Field(5, ge=1, description="validation AUROCs without improvement before stopping")
    epochs: int | None = Field(None, ge=1, description="also stop after this many passes over the training set")
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0, description="peak AdamW learning rate (one-cycle: warm-up, cosine decay)")
    weight_decay: float = Field(1e-4, ge=0)
    warmup: float = Field(0.05, ge=0, lt=1, description="share of max_steps spent warming up")
    balanced: bool = Field(True, description="class-balanced batches (false: class-weighted loss)")
    shift: int = Field(2, ge=0, description="augmentation: random translation in pixels")
    intensity: float = Field(0.1, ge=0, lt=1, description="augmentation: intensity scale/offset jitter")
    flip: bool = Field(False, description="augmentation: horizontal flips (off: laterality can carry the label)")
    min_val_per_class: int = Field(10, ge=1, description="fewer validation images of a class: no early "
                                                         "stopping, the fixed budget is trained (recorded)")
    max_val_per_class: int | None = Field(500, ge=1, description="validation images per class used for "
                                                                  "early stopping (seeded subsample)")
    max_train_per_class: int | None = Field(None, ge=1, description="real (full) and synthetic images per class")
    synthetic_test_fraction: float = Field(0.2, gt=0, lt=1, description="held-out synthetic share for Delta_syn")
    resample_fraction: float = Field(
        0.5, gt=0, lt=1, description="share of the smaller pool (per class) each seed's matched real and synthetic "
                                     "training sets draw afresh: the seeds then vary over training sets, and the "
                                     "gate's bounds include the pools' own sampling variance (Nadeau-Bengio)")
    settings: list[Literal["real", "real_full", "synthetic", "augmented", "transfer"]] = Field(
        ["real", "real_full", "synthetic", "augmented", "transfer"], min_length=1,
        description="real: TRTR matched per class to the synthetic set; real_full: TRTR on the whole split"
    )

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        dup = sorted({s for s in v if v.count(s) > 1})
        if dup:
            raise ValueError(f"seeds must be distinct: {', '.join(map(str, dup))} repeated in {v} (a repeated seed "
                             "is the same run again and must not count towards the gate's min_seeds)")
        return v


class RealismConfig(Strict):
    enabled: bool = True
    k: int = Field(3, ge=1)
    per_class: bool = Field(True, description="also compute the class-based realism score")
    filter: Literal["none", "global", "per_class"] = Field(
        "none", description="write a filtered synthetic set keeping R >= 1 (benitodelvalle Eq. 11)"
    )


class EvaluateConfig(Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    encoder: EncoderConfig = EncoderConfig()
    fidelity: FidelityConfig = FidelityConfig()
    memorization: MemorizationConfig = MemorizationConfig()
    utility: UtilityConfig = UtilityConfig()
    realism: RealismConfig = RealismConfig()
    reader_study: Path | None = Field(
        None, description="a reader study folder (`synthgate reader-study create`) of these datasets: its readers' "
        "accuracy goes in evaluation.json (section readers) for the gate rule fidelity.max_reader_accuracy"
    )
    inception_weights: Path | None = Field(
        None, description="FID Inception weights file; adds standard Inception-FID next to the encoder FID"
    )
    fidelity_utility_gap: float = Field(
        0.05, gt=0, description="utility gap (AUC_real - AUC_syn) above which utility counts as poor"
    )
