"""Settings of the data stages (``data.source``, ``prepare``, ``validate`` in ``params.yaml``).

The data package imports these and nothing from the stages above it; :mod:`synthgate.config`
composes them with the other stages' settings into ``Params``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from synthgate.strict import Strict

SourceType = Literal["auto", "mednist", "medmnist", "folder", "dicom", "nifti"]

#: Default location of MedNIST on the build machines, relative to the project root.
DEFAULT_MEDNIST = "../shared/data/mednist/MedNIST.tar.gz"


class VolumeConfig(Strict):
    """NIfTI sources: how each 3D volume becomes 2D slices (``data.source.volume``)."""

    axis: int = Field(2, ge=0, le=2, description="slicing axis after reorientation to RAS+ (closest canonical): "
                                                 "0 sagittal, 1 coronal, 2 axial")
    select: Literal["all", "central", "nonempty"] = Field(
        "nonempty", description="all slices; a central range (central_fraction of them); or slices whose share of "
                                "pixels above `foreground` (windowed, 0..1) is at least `min_foreground`")
    central_fraction: float = Field(0.5, gt=0.0, le=1.0, description="select central: share of slices kept")
    foreground: float = Field(0.1, ge=0.0, lt=1.0, description="select nonempty: windowed intensity that counts "
                                                               "as foreground")
    min_foreground: float = Field(0.05, gt=0.0, le=1.0, description="select nonempty: share of foreground pixels")
    every: int = Field(1, ge=1, description="then keep every k-th selected slice")
    window: Literal["percentile", "fixed"] = Field(
        "percentile", description="intensity window per volume: percentiles of the volume, or fixed values "
                                  "(e.g. CT in HU)")
    low: float | None = Field(None, description="lower end of the window (percentile: default 0.5; fixed: "
                                                "required)")
    high: float | None = Field(None, description="upper end (percentile: default 99.5; fixed: required)")

    @model_validator(mode="after")
    def _window(self) -> VolumeConfig:
        if self.window == "fixed" and (self.low is None or self.high is None):
            raise ValueError("window: fixed needs low and high (e.g. low: -1000, high: 400 for CT in HU)")
        lo, hi = self.window_range()
        if self.window == "percentile" and not (0.0 <= lo < hi <= 100.0):
            raise ValueError(f"percentile window needs 0 <= low < high <= 100 (got {lo}, {hi})")
        if lo >= hi:
            raise ValueError(f"window low must be below high (got {lo}, {hi})")
        return self

    def window_range(self) -> tuple[float, float]:
        if self.window == "percentile":
            return (0.5 if self.low is None else self.low, 99.5 if self.high is None else self.high)
        assert self.low is not None and self.high is not None
        return (self.low, self.high)


class SourceConfig(Strict):
    """Where the raw images come from."""

    type: SourceType = Field("auto", description="mednist | medmnist | folder | dicom | nifti | auto (by path)")
    path: Path = Field(Path(DEFAULT_MEDNIST), description="file or folder with the raw images")
    labels: Path | None = Field(None, description="label table (CSV: file,label; optional split and group or "
                                                  "patient columns): required for DICOM, optional for a folder "
                                                  "or archive of images")
    group_pattern: str | None = Field(
        None, description="regular expression over each file's path inside the source whose first capture group "
                          "(or whole match) names the image's patient, e.g. '(patient[0-9]+)/'")
    volume: VolumeConfig = Field(VolumeConfig(), description="NIfTI only: slicing, slice selection, windowing")
    flag: str | None = Field(None, description="MedMNIST only: dataset flag, e.g. pneumoniamnist")
    download_dir: Path = Field(
        Path("data/raw"), description="where MONAI/medmnist download to when the path does not exist"
    )

    @field_validator("group_pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        import re

        if v is not None:
            try:
                rx = re.compile(v)
            except re.error as e:
                raise ValueError(f"group_pattern {v!r} is not a regular expression: {e}") from None
            if rx.groups > 1:
                raise ValueError(f"group_pattern {v!r} has {rx.groups} capture groups; give one (the patient part)")
        return v


#: The leakage reference (``benchmarks/leakage_reference.py``, measured 2026-12-03 on 2 CPU cores): PneumoniaMNIST's
#: official split is patient-disjoint (Kermany et al. 2018: the test patients are not training patients). Each of
#: its 624 test images, at 32x32, was searched against the 4,708 training images with the copy search; an image
#: of an unseen patient reaches an aligned similarity of at most 0.975 and an aligned margin of at most 0.528.
#: The two thresholds are the 99.5th percentiles over the test split; an image is flagged when it passes
#: either. False alarms on held-out PneumoniaMNIST images (two-fold, calibrated on one half of the test split,
#: counted on the other, 20 seeded halvings): see README "Validation".
LEAK_SIMILARITY = 0.9718
LEAK_MARGIN = 0.333
#: The resolution at which the reference was measured; every dataset is compared at this size.
LEAK_RESOLUTION = 32


class LeakThresholds(Strict):
    """When a held-out image is "closer to a training image than unseen patients' images are": its nearest
    training image, found by the copy search at ``resolution`` px, has an aligned similarity of at least
    ``similarity`` or is closer than the second nearest by an aligned margin (Fisher z) of at least ``margin``.
    Both defaults are calibrated on a patient-disjoint split (PneumoniaMNIST's official one; ``LEAK_*``)."""

    similarity: float = Field(LEAK_SIMILARITY, gt=0.0, le=1.0, description="aligned |r| to the nearest training "
                              "image at or above which two images likely show one patient (PneumoniaMNIST's "
                              "unseen test patients: 99.5th percentile)")
    margin: float = Field(LEAK_MARGIN, gt=0.0, description="aligned margin (Fisher z, nearest minus second nearest) "
                          "at or above which two images likely show one patient (the same calibration)")
    resolution: int = Field(LEAK_RESOLUTION, ge=16, description="images are compared at this size (the "
                            "calibration's): resized to it by area averaging")
    shortlist: int = Field(16, ge=2, description="candidates per image in the copy search")


class LeakageConfig(LeakThresholds):
    """The leakage diagnosis of ``validate`` (``validate.leakage``)."""

    enabled: bool = Field(True, description="diagnose the split: how many held-out images likely share a patient "
                                            "with training (reported, never fails validation)")
    pairs_shown: int = Field(16, ge=0, description="the closest held-out/training pairs shown side by side in "
                                                   "leakage_pairs.png")
    reference: int = Field(2000, ge=0, description="training images in the leave-group-out reference that checks the "
                                                   "held-out set is representative (synthgate.data.representative); "
                                                   "0 = no check")


class InferGroupsConfig(LeakThresholds):
    """Acquisition groups (same scan, same patient) inferred from the pixels when the source names no patients
    (``prepare.infer_groups``): the images of a class are linked to their nearest images by the same rule as the
    leakage diagnosis, and linked images form a group."""

    enabled: bool = Field(False, description="infer groups and split by them (a source that names patients "
                                             "keeps its own groups)")
    pattern: str | None = Field(None, description="regular expression over each file's path inside the source: "
                                "images whose first capture group (or whole match) is equal are linked too, e.g. "
                                "'(scan[0-9]+)_slice'")
    source_split: Literal["keep", "regroup"] = Field(
        "keep", description="a source with its own split: keep it (the groups are recorded and the leakage "
                            "diagnosis reports what straddles), or regroup (every group that straddles moves to the "
                            "split holding most of its images; the moved images are listed)")
    rounds: int = Field(3, ge=1, le=8, description="search rounds; each links every image to its nearest image outside "
                                                   "its group (groups dealt into random folds)")
    folds: int = Field(4, ge=2, le=32, description="folds per round (an image's nearest image is searched among "
                                                   "the other folds)")
    max_group_size: int = Field(256, ge=2, description="links that would make a group larger are not made (no "
                                                       "chaining into a giant group)")
    max_group_share: float = Field(0.5, gt=0.0, le=1.0, description="refuse when a group holds more than this share "
                                                                    "of its class (the groups collapsed)")

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        return SourceConfig._regex(v)  # type: ignore[no-any-return]


class SplitConfig(Strict):
    val: float = Field(0.1, ge=0.0, lt=1.0)
    test: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 0

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.val + self.test >= 1.0:
            raise ValueError(f"split.val + split.test must be < 1 (got {self.val} + {self.test})")
        return self


#: The largest side prepare accepts (a 1024x1024 grey image is 1 MiB; medical generators here train at <= 512).
MAX_RESOLUTION = 1024


class PrepareConfig(Strict):
    resolution: int = Field(64, description="output height and width in pixels (a multiple of 8)")
    channels: Literal[1, 3] = 1
    resize: Literal["crop", "pad", "stretch"] = Field(
        "crop", description="crop: scale the short side then centre-crop; pad: letterbox; stretch"
    )
    split: SplitConfig = SplitConfig()
    max_per_class: int | None = Field(None, ge=1, description="keep at most N images per class (seeded)")
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="an unreadable image stops the stage (fail) or is skipped and listed (skip)"
    )
    workers: int = Field(0, ge=0, description="decoding processes; 0 = one per CPU core")
    infer_groups: InferGroupsConfig = InferGroupsConfig()

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: int) -> int:
        if v <= 0 or v % 8 != 0:
            raise ValueError(
                f"resolution must be a positive multiple of 8 (got {v}); the generators downsample by 8"
            )
        if v > MAX_RESOLUTION:
            raise ValueError(f"resolution {v} is above {MAX_RESOLUTION}: a canonical dataset holds every image at "
                             f"this size in one array ({v}x{v} px is {v * v / 2**20:.0f} MiB per grey image)")
        return v


class ValidateConfig(Strict):
    min_images_per_class: int = Field(10, ge=1, description="minimum training images per class")
    max_class_imbalance: float | None = Field(
        None, gt=1.0, description="fail if the largest/smallest class ratio exceeds this"
    )
    near_duplicate_threshold: float = Field(
        0.99, gt=0.0, le=1.0, description="Pearson correlation at or above which two images are near copies"
    )
    aligned_duplicates: bool = Field(
        True, description="also find held-out images that are a training image moved, flipped, rotated or re-cropped "
        "(the memorization evaluation's copy search)")
    drop_duplicates: bool = Field(False, description="drop the val/test member of every cross-split duplicate")
    drop_empty: bool = Field(False, description="drop constant (empty) images instead of failing")
    deidentify: bool = Field(False, description="strip DICOM identifying tags instead of refusing")
    leakage: LeakageConfig = LeakageConfig()


class DataConfig(Strict):
    source: SourceConfig = SourceConfig()
