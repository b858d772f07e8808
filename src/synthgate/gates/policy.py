"""The release policy, ``gates.yaml``: thresholds on memorization/privacy, utility, fidelity and
sample counts. Typed with pydantic: an unknown rule or a threshold of the wrong type is refused
with its name. A rule set to ``null`` is not applied (and the decision says so); a policy that
applies no rule, or no memorization rule, fails every decision (see :mod:`synthgate.gates.decision`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from synthgate.config import parse_model
from synthgate.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemorizationRules(_Strict):
    max_pixel_near_copy_fraction: float | None = Field(
        0.01, ge=0, le=1, description="share of synthetic images above the held-out p99.9 pixel correlation")
    max_feature_near_copy_fraction: float | None = Field(
        0.01, ge=0, le=1, description="the same in reference-encoder feature space")
    max_pixel_median_shift: float | None = Field(
        0.02, description="median max-correlation of synthetic minus that of real held-out images")
    max_membership_auc: float | None = Field(
        0.6, ge=0.5, le=1, description="membership-inference AUC (features); 0.5 = no leak")
    max_membership_auc_pixel: float | None = Field(0.6, ge=0.5, le=1)


class UtilityRules(_Strict):
    max_auc_gap: float | None = Field(0.05, description="AUC_real (TRTR) - AUC_syn (TSTR)")
    max_delta_syn: float | None = Field(0.1, description="label overfitting: AUC_syn(X_syn) - AUC_syn(X_real)")
    min_augmentation_gain: float | None = Field(None, description="AUC(real+synthetic) - AUC(real)")
    max_augmentation_p: float | None = Field(None, gt=0, le=1, description="paired Wilcoxon p of that gain")
    min_seeds: int | None = Field(3, ge=1, description="repeats behind the utility numbers")


class FidelityRules(_Strict):
    max_fid_ratio: float | None = Field(None, gt=0, description="FID / FID(real test vs real train)")
    min_precision: float | None = Field(None, ge=0, le=1)
    min_recall: float | None = Field(None, ge=0, le=1)


class SampleRules(_Strict):
    min_synthetic_images: int | None = Field(100, ge=1)
    min_per_class: int | None = Field(10, ge=1)


class GatePolicy(_Strict):
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
