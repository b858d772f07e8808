"""Raw data sources: MedMNIST npz, image folders (plain or in .tar.gz/.zip archives), DICOM + label table,
NIfTI volumes.

Each reader returns a :class:`SourceData`: the raw items (still encoded, or as arrays), the class
names in label order, the input files with their sha256, and the source's own split if it has one.
:func:`read_source` dispatches on the source type to the readers, one module each:
:mod:`~synthgate.data.folders` (image folders, archives, label tables), :mod:`~synthgate.data.medmnist`,
:mod:`~synthgate.data.dicom`, :mod:`~synthgate.data.nifti`; MedNIST (MONAI) is read here.
Patient groups come from a label table, from DICOM ``PatientID``, or from a regular expression over
the file path (``data.source.group_pattern``, :func:`apply_group_pattern`); :mod:`synthgate.data.prepare`
keeps only a salted hash of them. Nothing is written to disk here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthgate.data.config import SourceConfig
from synthgate.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Folder names (any case) and label-table values read as a source's own split.
SPLIT_ALIASES: dict[str, str] = {"train": "train", "training": "train", "val": "val", "valid": "val",
                                 "validation": "val", "test": "test", "testing": "test"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")



@dataclass
class RawItem:
    source: str  # where it came from, for messages and the metadata table
    label: str  # class name
    payload: bytes | np.ndarray  # encoded file bytes, or a decoded pixel array
    split: str | None = None  # the source's own split, if it has one
    group: str | None = None  # the patient (or volume) the image belongs to, raw: prepare hashes it
    path: str = ""  # the file's path inside the source (for group_pattern and the label table)
    #: sha256 of the raw file the item was read from (a DICOM file, a NIfTI volume); None: the
    #: payload's own bytes are the file (encoded images), and prepare hashes those
    file_sha256: str | None = None


@dataclass
class SourceData:
    kind: str
    items: list[RawItem]
    classes: list[str]
    inputs: list[dict[str, Any]]
    has_split: bool = False
    ignored: list[str] = field(default_factory=list)
    #: DICOM only: per item, the identifying tags present and non-empty (tag -> value).
    dicom_tags: list[dict[str, str]] | None = None
    description: str = ""
    #: where the items' groups came from ("label table column 'patient'", "DICOM PatientID", ...)
    group_source: str | None = None
    #: how the source's own split was given ("split folders", "label table column 'split'", ...)
    split_source: str | None = None
    #: what reading did, in one line (NIfTI: volumes, slices, selection, window); in the manifest
    detail: str | None = None


# --------------------------------------------------------------------------------------------
# detection


def detect_type(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".npz"):
        return "medmnist"
    if name.startswith("mednist") and (path.is_dir() or name.endswith(ARCHIVE_SUFFIXES)):
        return "mednist"
    if name.endswith(ARCHIVE_SUFFIXES):
        return "folder"
    if path.is_dir():
        if next(iter(path.rglob("*.dcm")), None) is not None:
            return "dicom"
        if any(p.name.lower().endswith((".nii", ".nii.gz")) for p in path.rglob("*.nii*")):
            return "nifti"
        return "folder"
    raise ConfigError(
        f"{path}: unknown source type (not an .npz file, an image folder, an archive "
        f"({', '.join(ARCHIVE_SUFFIXES)}), a DICOM folder or a folder of NIfTI volumes)",
        hint="set data.source.type to one of mednist, medmnist, folder, dicom, nifti",
    )


def read_source(cfg: SourceConfig) -> SourceData:
    """Dispatch on ``cfg.type`` (``auto`` detects it from the path). An ingest folder
    (``data/raw`` with ``ingest.json``) is read as the source it holds."""
    from synthgate.data.dicom import read_dicom
    from synthgate.data.folders import read_folder
    from synthgate.data.ingest import resolve_ingested
    from synthgate.data.medmnist import read_medmnist

    cfg = resolve_ingested(cfg)
    kind = cfg.type
    path = Path(cfg.path)
    if kind == "mednist":
        return read_mednist(cfg)
    if not path.exists():
        if kind == "medmnist" or (kind == "auto" and path.suffix == ".npz"):
            return read_medmnist(path, cfg.flag, download_dir=cfg.download_dir)
        if kind == "auto" and path.name.lower().startswith("mednist"):
            return read_mednist(cfg)  # as with type mednist: MONAI downloads it into download_dir
        raise DataError(f"{path}: no such file or directory", hint="check --source (or data.source.path in params.yaml)")
    if kind == "auto":
        kind = detect_type(path)
        if kind == "mednist":
            return read_mednist(cfg)
    if kind == "medmnist":
        data = read_medmnist(path, cfg.flag)
    elif kind == "folder":
        data = read_folder(path, Path(cfg.labels) if cfg.labels is not None else None)
    elif kind == "dicom":
        if cfg.labels is None:
            raise ConfigError(
                f"{path}: a DICOM source needs a label table",
                hint="set data.source.labels to a CSV with columns file,label (or pass --labels)",
            )
        data = read_dicom(path, Path(cfg.labels))
    elif kind == "nifti":
        from synthgate.data.nifti import read_nifti

        if cfg.labels is None:
            raise ConfigError(
                f"{path}: a NIfTI source needs a label table (one row per volume)",
                hint="set data.source.labels to a CSV with columns file,label (optional split, patient) or pass "
                     "--labels")
        data = read_nifti(path, Path(cfg.labels), cfg.volume, warn_groups=cfg.group_pattern is None)
    else:
        raise ConfigError(
            f"unknown source type {kind!r}", hint="use one of auto, mednist, medmnist, folder, dicom, nifti"
        )
    if cfg.group_pattern is not None:
        apply_group_pattern(data, cfg.group_pattern)
    return data


def apply_group_pattern(data: SourceData, pattern: str) -> None:
    """Each item's group from ``pattern`` (a regular expression searched in the file's path inside
    the source; the first capture group if it has one, else the whole match), replacing any other
    group. Refuses (naming them) files the pattern does not match, and a pattern that finds one
    group only (every image in one group cannot be split)."""
    import re

    rx = re.compile(pattern)
    missed: list[str] = []
    for it in data.items:
        where = it.path or it.source
        m = rx.search(where)
        if m is None:
            missed.append(where)
            continue
        it.group = m.group(1) if rx.groups else m.group(0)
    if missed:
        raise DataError(
            f"data.source.group_pattern {pattern!r} does not match {len(missed)} of {len(data.items)} file(s), "
            f"e.g. {', '.join(missed[:3])}",
            hint="every image needs a group: adjust the pattern (it is searched in the path inside the source)")
    if data.items and len({it.group for it in data.items}) == 1:
        raise DataError(
            f"data.source.group_pattern {pattern!r} puts all {len(data.items)} images in one group, so no split "
            "can keep patients apart",
            hint="use a capture group around the patient part of the path, e.g. '(patient_[0-9]+)/'")
    data.group_source = f"group_pattern {pattern!r}"




def read_mednist(cfg: SourceConfig) -> SourceData:
    """MedNIST (MONAI): the archive or its extracted folder at ``cfg.path``.

    Where the path does not exist, the real loading path runs: MONAI's own resource URL and
    checksum for ``MedNISTDataset``, downloaded and extracted into ``cfg.download_dir``.
    """
    from synthgate.data.folders import read_folder

    path = Path(cfg.path)
    if path.exists():
        return read_folder(path)
    root = Path(cfg.download_dir)
    extracted = root / "MedNIST"
    if not extracted.is_dir():
        try:
            from monai.apps import MedNISTDataset, download_and_extract
        except ImportError as e:  # pragma: no cover - monai is a dependency
            raise DataError(f"MONAI is needed to download MedNIST ({e})") from None
        root.mkdir(parents=True, exist_ok=True)
        log.info("%s not found: downloading MedNIST with MONAI into %s", path, root)
        try:
            download_and_extract(
                MedNISTDataset.resource, str(root / MedNISTDataset.compressed_file_name), str(root),
                MedNISTDataset.md5,
            )
        except Exception as e:
            raise DataError(
                f"{path} does not exist and MedNIST could not be downloaded ({e})",
                hint="set data.source.path (or $SYNTHGATE_SOURCE_PATH) to MedNIST.tar.gz",
            ) from None
    return read_folder(extracted)


