"""Typed settings of the evaluation stage (``evaluate:`` in params.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderConfig(_Strict):
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


class MemorizationConfig(_Strict):
    max_train: int | None = Field(None, ge=1, description="compare against at most N training images (seeded)")
    max_synthetic: int | None = Field(None, ge=1)
    baseline_quantile: float = Field(
        0.999, gt=0.5, lt=1.0, description="near-copy threshold = this quantile of the held-out baseline"
    )
    top_k: int = Field(16, ge=1, description="most similar pairs shown in the report")
    planted: int = Field(100, ge=0, description="planted copies per kind used to measure detection power")
    chunk: int = Field(512, ge=16)


class FidelityConfig(_Strict):
    k: int = Field(5, ge=1, description="nearest neighbours for precision/recall/density/coverage")
    max_images: int | None = Field(10000, ge=2, description="images per set for FID/KID/PRDC (seeded subsample)")
    kid_subset_size: int = Field(1000, ge=2)
    kid_subsets: int = Field(50, ge=1)


class UtilityConfig(_Strict):
    enabled: bool = True
    arch: Literal["small", "densenet121", "resnet18"] = "small"
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    max_train_per_class: int | None = Field(1000, ge=1)
    synthetic_test_fraction: float = Field(0.2, gt=0, lt=1, description="held-out synthetic share for Delta_syn")
    settings: list[Literal["real", "synthetic", "augmented", "transfer"]] = Field(
        ["real", "synthetic", "augmented", "transfer"], min_length=1
    )

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        dup = sorted({s for s in v if v.count(s) > 1})
        if dup:
            raise ValueError(f"seeds must be distinct: {', '.join(map(str, dup))} repeated in {v} (a repeated seed "
                             "is the same run again and must not count towards the gate's min_seeds)")
        return v


class RealismConfig(_Strict):
    enabled: bool = True
    k: int = Field(3, ge=1)
    per_class: bool = Field(True, description="also compute the class-based realism score")
    filter: Literal["none", "global", "per_class"] = Field(
        "none", description="write a filtered synthetic set keeping R >= 1 (benitodelvalle Eq. 11)"
    )


class EvaluateConfig(_Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    encoder: EncoderConfig = EncoderConfig()
    fidelity: FidelityConfig = FidelityConfig()
    memorization: MemorizationConfig = MemorizationConfig()
    utility: UtilityConfig = UtilityConfig()
    realism: RealismConfig = RealismConfig()
    inception_weights: Path | None = Field(
        None, description="FID Inception weights file; adds standard Inception-FID next to the encoder FID"
    )
    fidelity_utility_gap: float = Field(
        0.05, gt=0, description="utility gap (AUC_real - AUC_syn) above which utility counts as poor"
    )
