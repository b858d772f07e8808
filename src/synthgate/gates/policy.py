"""The release policy, ``gates.yaml``: thresholds on memorization/privacy, utility, fidelity and
sample counts. Typed with pydantic: an unknown rule or a threshold of the wrong type is refused
with its name. A rule set to ``null`` is not applied (and the decision says so); a policy that
applies no rule, or no memorization rule, fails every decision (see :mod:`synthgate.gates.decision`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, model_validator

from synthgate.config import parse_model
from synthgate.errors import ConfigError
from synthgate.strict import Strict

#: The planted copy kinds the default policy rules on: every kind of
#: :data:`synthgate.evaluation.memorization.planted.KINDS` but blends (a test keeps the two in step).
RULED_PLANTED_KINDS = ("exact", "flip", "rot90", "shift_1px", "shift_2px", "shift_4px", "crop_resize",
                       "brightness_contrast", "noise")


class MemorizationRules(Strict):
    """Memorization rules, decided at a stated false-alarm rate: the chance that an honest generator
    (its images no closer to the training images than unseen patients' images are) fails any of them.
    Half of ``false_alarm_rate`` goes to the per-image copy flags (a multiplicity correction over the
    synthetic set), half is split evenly over the set-level tests (Bonferroni)."""

    false_alarm_rate: float = Field(
        0.01, gt=0, le=0.2, description="family-wise false-alarm rate of the memorization rules (not a rule)")
    correction: Literal["bh", "holm"] = Field(
        "bh", description="multiplicity correction of the per-image copy flags: Benjamini-Hochberg or Holm")
    max_flagged_copies: int | None = Field(
        0, ge=0, description="synthetic images flagged as copies of a training image (they are never released)")
    min_planted_detection: float | None = Field(
        0.9, ge=0, le=1, description="share of planted copies flagged, for every planted kind but blends")
    planted_kinds: list[str] = Field(
        default_factory=lambda: list(RULED_PLANTED_KINDS), min_length=1,
        description="the planted copy kinds min_planted_detection rules on; the policy decides, never the evaluation "
                    "(a kind missing from the evaluation fails the rule)")
    copy_excess_test: bool | None = Field(
        True, description="exact test of more synthetic images above the null's 99th percentile than chance, "
        "per detector (null = off)")
    max_membership_auc: float | None = Field(
        0.55, ge=0.5, le=1, description="lower confidence bound of the membership-inference AUC (copy descriptor)")
    max_membership_auc_pixel: float | None = Field(
        0.55, ge=0.5, le=1, description="the same with pixel correlation")
    max_pixel_median_shift: float | None = Field(
        0.02, description="lower confidence bound of the median best-r shift, synthetic minus held-out")

    #: fields that set levels, not rules
    LEVELS: ClassVar[tuple[str, ...]] = ("false_alarm_rate", "correction", "planted_kinds")

    def set_level_tests(self, detectors: int) -> int:
        """How many set-level tests share half the false-alarm rate."""
        return ((detectors if self.copy_excess_test else 0) + (self.max_membership_auc is not None)
                + (self.max_membership_auc_pixel is not None) + (self.max_pixel_median_shift is not None))


class UtilityRules(Strict):
    """Utility rules decide on one-sided confidence bounds of the mean over the evaluation's seeds
    (dumontschutte2021 S.5 repeats every experiment over seeds), at level ``confidence``: the gap
    and Delta_syn on their upper bound, the augmentation gain on its lower bound. The bound's
    standard error covers the seeds, the sampling of the training pools the seeds resample
    (corrected resampled t, Nadeau and Bengio 2003) and of the test split (DeLong)."""

    confidence: float = Field(0.95, gt=0.5, lt=1, description="level of the one-sided bounds (not a rule)")
    max_auc_gap: float | None = Field(
        0.05, description="upper bound of AUC_real (TRTR, matched) - AUC_syn (TSTR), paired by seed")
    max_delta_syn: float | None = Field(
        0.1, description="upper bound of label overfitting: AUC_syn(X_syn) - AUC_syn(X_real)")
    min_augmentation_gain: float | None = Field(None, description="lower bound of AUC(real+synthetic) - AUC(real)")
    max_augmentation_p: float | None = Field(None, gt=0, le=1, description="paired Wilcoxon p of that gain")
    min_seeds: int | None = Field(5, ge=1, description="repeats behind the utility numbers")
    min_resample_fraction: float | None = Field(
        0.5, gt=0, lt=1, description="evaluate.utility.resample_fraction at least this: tiny matched training sets "
                                     "push both classifiers towards chance and the gap towards 0")

    @model_validator(mode="after")
    def _enough_seeds_for_the_level(self) -> UtilityRules:
        from synthgate.evaluation.bounds import min_seeds_for

        need = min_seeds_for(self.confidence)
        if self.min_seeds is not None and self.min_seeds < need:
            raise ValueError(
                f"min_seeds {self.min_seeds} is too few for confidence {self.confidence:g}: a one-sided test at "
                f"this level needs at least {need} seeds (0.5^n <= {1 - self.confidence:.3g}); set min_seeds: "
                f"{need} or more (and evaluate.utility.seeds to as many), or lower utility.confidence")
        return self


class FidelityRules(Strict):
    """Fidelity rules: plain thresholds on the evaluation's numbers, and the reader study's rule
    (:mod:`synthgate.gates.reader_rules`): the readers' mean accuracy within [1 - max, max] on its
    confidence bounds over readers and images, no reader alone better or worse than chance, in a
    study half real that every reader added finished."""

    max_fid_ratio: float | None = Field(None, gt=0, description="FID / FID(real test vs real train)")
    min_precision: float | None = Field(None, ge=0, le=1)
    min_recall: float | None = Field(None, ge=0, le=1)
    max_reader_accuracy: float | None = Field(
        None, gt=0.5, lt=1, description="confidence bounds of the readers' accuracy at telling synthetic from real "
        "within [1 - this, this] (evaluate.reader_study; 0.5 = chance)")
    reader_confidence: float = Field(0.95, gt=0.5, lt=1, description="level of those bounds and of the per-reader "
                                     "tests (not a rule)")
    min_readers: int = Field(5, ge=2, description="readers who finished the study, at least (part of that rule)")
    min_images: int = Field(50, ge=2, description="images in the study, at least (part of that rule)")

    #: fields of the reader rule, not plain thresholds
    READER_FIELDS: ClassVar[tuple[str, ...]] = ("max_reader_accuracy", "reader_confidence", "min_readers",
                                                "min_images")


class SampleRules(Strict):
    min_synthetic_images: int | None = Field(100, ge=1)
    min_per_class: int | None = Field(10, ge=1)


class GatePolicy(Strict):
    memorization: MemorizationRules = MemorizationRules()
    utility: UtilityRules = UtilityRules()
    fidelity: FidelityRules = FidelityRules()
    samples: SampleRules = SampleRules()

    def policy_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def load_policy(path: Path | None) -> GatePolicy:
    """Read ``gates.yaml``; ``None`` gives the defaults."""
    if path is None:
        return GatePolicy()
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: gate policy not found", hint="pass --policy gates.yaml")
    try:
        data: Any = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of rule groups")
    return parse_model(GatePolicy, data, str(path))
