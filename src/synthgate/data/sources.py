"""Raw data sources: MedMNIST npz, image folders (plain or in .tar.gz/.zip archives), DICOM + label table.

Each reader returns a :class:`SourceData`: the raw items (still encoded, or as arrays), the class
names in label order, the input files with their sha256, and the source's own split if it has one.
An image folder is one sub-folder per class, optionally under split folders (``train``/``training``,
``val``/``valid``/``validation``, ``test``/``testing``, any case), or any folder of images with a
label table (CSV: ``file,label`` and optional ``split`` and ``group``/``patient`` columns), as a
DICOM folder is. Patient groups come from that table, from DICOM ``PatientID``, or from a regular
expression over the file path (``data.source.group_pattern``); :mod:`synthgate.data.prepare`
keeps only a salted hash of them.
Nothing is written to disk here; archives are read in memory, and an archive entry that would
escape its folder (``..`` or an absolute path) or is a link is refused before anything is used.
"""

from __future__ import annotations

import logging
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from synthgate.data.config import SourceConfig
from synthgate.data.imaging import IMAGE_SUFFIXES
from synthgate.errors import ConfigError, DataError
from synthgate.utils import sha256_file, sha256_tree

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Folder names (any case) and label-table values read as a source's own split.
SPLIT_ALIASES: dict[str, str] = {"train": "train", "training": "train", "val": "val", "valid": "val",
                                 "validation": "val", "test": "test", "testing": "test"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")

#: DICOM attributes that identify a patient directly (after DICOM PS3.15 Annex E, the Basic
#: Application Level Confidentiality Profile): present and non-empty -> PHI, always.
DIRECT_IDENTIFIERS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OtherPatientIDs",
    "OtherPatientNames",
    "OtherPatientIDsSequence",
    "PatientMotherBirthName",
    "MilitaryRank",
    "MedicalRecordLocator",
    "PatientComments",
    "IssuerOfPatientID",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "PerformingPhysicianName",
    "OperatorsName",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "AccessionNumber",
)
#: Attributes that link an image back to a patient through hospital systems (UIDs, dates,
#: devices). PHI unless the file declares PatientIdentityRemoved = YES (a de-identification tool
#: has already replaced them).
INDIRECT_IDENTIFIERS: tuple[str, ...] = (
    "StudyID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "StudyTime",
    "SeriesTime",
    "AcquisitionDateTime",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "DeviceSerialNumber",
    "StationName",
)
PHI_TAGS = DIRECT_IDENTIFIERS + INDIRECT_IDENTIFIERS


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
    from synthgate.data.ingest import resolve_ingested

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
        raise DataError(f"{path}: no such file or directory", hint="check data.source.path in params.yaml")
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


# --------------------------------------------------------------------------------------------
# MedMNIST npz


def medmnist_info(flag: str | None, path: Path) -> tuple[str | None, dict[str, Any] | None]:
    try:
        from medmnist.info import INFO  # the package's own registry of datasets and class names
    except ImportError:  # pragma: no cover - medmnist is a dependency
        return flag, None
    if flag is None:
        stem = path.name.removesuffix(".npz")
        base = stem.split("_")[0]  # pneumoniamnist_64.npz -> pneumoniamnist
        flag = base if base in INFO else None
    if flag is not None and flag not in INFO:
        raise ConfigError(
            f"unknown MedMNIST flag {flag!r}", hint=f"use one of: {', '.join(sorted(INFO))}"
        )
    return flag, (INFO[flag] if flag else None)


def download_medmnist(flag: str, root: Path) -> Path:
    """The real download path: URL and MD5 from the medmnist package's registry, fetched and
    checked by MONAI's downloader (medmnist's own ``download()`` needs torchvision)."""
    from medmnist.info import INFO
    from monai.apps import download_url

    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{flag}.npz"
    try:
        download_url(INFO[flag]["url"], str(target), hash_val=INFO[flag]["MD5"], hash_type="md5")
    except Exception as e:  # network errors come in many types
        raise DataError(
            f"{flag}: the file is not at data.source.path and could not be downloaded ({e})",
            hint="put the .npz file at data.source.path (no internet access here?)",
        ) from None
    return target


def read_medmnist(path: Path, flag: str | None = None, download_dir: Path | None = None) -> SourceData:
    """A MedMNIST ``.npz`` file: keys ``{train,val,test}_images`` and ``{train,val,test}_labels``.

    Class names come from ``medmnist.INFO`` (flag taken from the file name or ``flag``). The
    file's own split is kept. Multi-label tasks (ChestMNIST) are refused: the generators are
    conditioned on one class per image.
    """
    flag, info = medmnist_info(flag, path)
    if not path.exists():
        if flag is None or download_dir is None:
            raise DataError(f"{path}: no such file", hint="check data.source.path in params.yaml")
        path = download_medmnist(flag, Path(download_dir))
    try:
        npz = np.load(path, allow_pickle=False)
        keys = set(npz.files)
    except Exception as e:
        raise DataError(f"{path}: cannot read as an .npz file ({e})", hint="is the file complete?") from None
    present = [s for s in SPLITS if f"{s}_images" in keys or f"{s}_labels" in keys]
    if not present:
        raise DataError(
            f"{path}: no MedMNIST keys found; expected train_images/train_labels (and val_*, test_*), "
            f"found {sorted(keys)}",
            hint="rename the arrays to <split>_images and <split>_labels",
        )
    items: list[RawItem] = []
    all_labels: list[np.ndarray] = []
    for split in present:
        for part in ("images", "labels"):
            if f"{split}_{part}" not in keys:
                raise DataError(
                    f"{path}: has '{split}_{'labels' if part == 'images' else 'images'}' but no "
                    f"'{split}_{part}' (found {sorted(keys)})",
                    hint=f"add the missing '{split}_{part}' array or remove the other one",
                )
        images = npz[f"{split}_images"]
        labels = npz[f"{split}_labels"]
        if len(images) != len(labels):
            raise DataError(
                f"{path}: {split}_images has {len(images)} images but {split}_labels has {len(labels)} labels",
                hint="images and labels must have the same length",
            )
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[1] > 1:
            raise DataError(
                f"{path}: {split}_labels has shape {labels.shape}: multi-label tasks are not supported",
                hint="use a single-label (multi-class or binary) MedMNIST dataset",
            )
        labels = labels.reshape(len(labels)).astype(np.int64)
        if images.ndim not in (3, 4):
            raise DataError(
                f"{path}: {split}_images has shape {images.shape}; expected (N, H, W) or (N, H, W, C)"
            )
        all_labels.append(labels)
        for i in range(len(images)):
            items.append(RawItem(f"{path.name}:{split}[{i}]", str(int(labels[i])), images[i], split))
    label_ids = np.unique(np.concatenate(all_labels)) if all_labels else np.array([], int)
    if info is not None:
        names = {int(k): v for k, v in info["label"].items()}
        unknown = [int(v) for v in label_ids if int(v) not in names]
        if unknown:
            raise DataError(
                f"{path}: labels {unknown} are not classes of MedMNIST '{flag}' ({sorted(names)})",
                hint="check that the file matches its flag (data.source.flag)",
            )
    else:
        if label_ids.size and label_ids.min() < 0:
            raise DataError(f"{path}: negative labels {label_ids[label_ids < 0].tolist()}")
        names = {int(v): str(int(v)) for v in range(int(label_ids.max()) + 1 if label_ids.size else 0)}
    order = sorted(names)
    classes = [names[k] for k in order]
    for it in items:
        it.label = names[int(it.label)]
    return SourceData(
        kind="medmnist",
        items=items,
        classes=classes,
        inputs=[{"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}],
        has_split=set(present) == set(SPLITS),
        description=str(path),
    )


# --------------------------------------------------------------------------------------------
# image folders and archives


def _is_hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _safe_member(name: str, archive: Path) -> tuple[str, ...]:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DataError(
            f"{archive}: refusing archive entry '{name}': absolute path",
            hint="the archive is unsafe or malformed; re-create it with relative paths",
        )
    if ".." in p.parts:
        raise DataError(
            f"{archive}: refusing archive entry '{name}': '..' would escape the target folder",
            hint="the archive is unsafe or malformed; re-create it with relative paths",
        )
    return tuple(x for x in p.parts if x not in ("", "."))


def _read_archive(path: Path) -> tuple[dict[tuple[str, ...], bytes], set[tuple[str, ...]]]:
    files: dict[tuple[str, ...], bytes] = {}
    dirs: set[tuple[str, ...]] = set()
    name = path.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    parts = _safe_member(info.filename, path)
                    if not parts:
                        continue
                    if info.is_dir():
                        dirs.add(parts)
                    elif not _is_hidden(parts) and PurePosixPath(*parts).suffix.lower() in IMAGE_SUFFIXES:
                        files[parts] = zf.read(info)
        else:
            with tarfile.open(path, "r:*") as tf:
                for m in tf:
                    parts = _safe_member(m.name, path)
                    if not parts:
                        continue
                    if m.issym() or m.islnk():
                        raise DataError(
                            f"{path}: refusing archive entry '{m.name}': links are not allowed",
                            hint="re-create the archive without symbolic or hard links",
                        )
                    if m.isdir():
                        dirs.add(parts)
                    elif m.isfile() and not _is_hidden(parts):
                        if PurePosixPath(*parts).suffix.lower() in IMAGE_SUFFIXES:
                            f = tf.extractfile(m)
                            files[parts] = f.read() if f is not None else b""
    except DataError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise DataError(f"{path}: cannot read archive ({e})", hint="is the archive complete?") from None
    return files, dirs


def _class_layout(
    files: list[tuple[str, ...]], dirs: set[tuple[str, ...]], origin: Path
) -> tuple[tuple[str, ...], dict[str, list[tuple[str, ...]]]]:
    """Find the folder whose sub-folders are the classes; return its prefix and files per class.

    Descends through single wrapper folders (``MedNIST/`` in MedNIST.tar.gz) but never into a
    folder that holds images itself, so a one-class dataset keeps its class folder. Split folders
    are found by :func:`_split_layout`; here they are refused beside other folders (a class named
    like a split).
    """
    if not files:
        raise DataError(
            f"{origin}: no image files found ({', '.join(sorted(IMAGE_SUFFIXES))})",
            hint="expected one sub-folder per class containing images",
        )
    prefix, children = _descend(files, dirs, origin)
    n = len(prefix)
    where = origin / "/".join(prefix) if prefix else origin
    split_like = sorted(c for c in children if c.lower() in SPLIT_ALIASES)
    if split_like:
        others = sorted(set(children) - set(split_like))
        raise DataError(
            f"{where}: folder(s) named like a split ({', '.join(split_like)}) beside class folder(s) "
            f"({', '.join(others)}): expected either split folders (train/val/test) each holding the same class "
            "folders, or class folders only",
            hint="rename a class that is called like a split, or move the classes into the split folders")
    per_class: dict[str, list[tuple[str, ...]]] = {c: [] for c in children}
    for f in files:
        per_class.setdefault(f[n], []).append(f)
    empty = sorted(c for c, fs in per_class.items() if not fs)
    if empty:
        raise DataError(
            f"{where}: class folder '{empty[0]}' contains no images"
            + (f" (also empty: {', '.join(empty[1:])})" if len(empty) > 1 else ""),
            hint="add images to it or remove the empty folder",
        )
    return prefix, {c: sorted(fs) for c, fs in sorted(per_class.items())}


def _descend(files: list[tuple[str, ...]], dirs: set[tuple[str, ...]], origin: Path
             ) -> tuple[tuple[str, ...], set[str]]:
    """Through single wrapper folders to the first level with several folders (or one that holds
    images); refuses images lying at that level itself."""
    all_dirs = set(dirs) | {f[:i] for f in files for i in range(1, len(f))}
    prefix: tuple[str, ...] = ()
    while True:
        n = len(prefix)
        if any(len(f) == n + 1 and f[:n] == prefix for f in files):
            where = "/".join(prefix) or "the top level"
            raise DataError(
                f"{origin}: images directly in {where}; expected one sub-folder per class",
                hint="move the images into <class name>/ folders, or give a label table (data.source.labels)",
            )
        children = {d[n] for d in all_dirs if len(d) > n and d[:n] == prefix and not _is_hidden(d[n : n + 1])}
        if len(children) == 1:
            child = next(iter(children))
            if child.lower() not in SPLIT_ALIASES and not any(len(f) == n + 2 and f[n] == child for f in files):
                prefix = prefix + (child,)
                continue
        return prefix, children


def _split_layout(
    files: list[tuple[str, ...]], dirs: set[tuple[str, ...]], origin: Path
) -> tuple[dict[str, list[tuple[str, ...]]], dict[tuple[str, ...], str]] | None:
    """Split folders above class folders (``Training/<class>/*.jpg``, ``Testing/<class>/*.jpg``):
    the files per class and each file's canonical split, or ``None`` when the top level (below
    wrapper folders) holds no folder named like a split. Refuses split folders beside other
    folders, two folders for one split (``train`` and ``training``), a split folder without class
    folders, and classes that differ between splits, each naming what was found."""
    if not files:
        return None
    prefix, children = _descend(files, dirs, origin)
    split_like = {c for c in children if c.lower() in SPLIT_ALIASES}
    if not split_like:
        return None
    where = origin / "/".join(prefix) if prefix else origin
    if split_like != children:
        return None  # refused by _class_layout, which names both kinds of folder
    canon: dict[str, str] = {}
    for c in sorted(children):
        s = SPLIT_ALIASES[c.lower()]
        if s in canon:
            raise DataError(f"{where}: two folders for the {s} split: {canon[s]!r} and {c!r}",
                            hint="merge them into one")
        canon[s] = c
    if "train" not in canon:
        raise DataError(f"{where}: split folders {', '.join(sorted(children))} but none for training "
                        "(train or training)", hint="add the training split's folder")
    n = len(prefix)
    per_class: dict[str, list[tuple[str, ...]]] = {}
    split_of: dict[tuple[str, ...], str] = {}
    classes_in: dict[str, list[str]] = {}
    for s, folder in canon.items():
        sub = [f[n + 1:] for f in files if f[:n + 1] == prefix + (folder,)]
        sub_dirs = {d[n + 1:] for d in dirs if d[:n + 1] == prefix + (folder,) and len(d) > n + 1}
        if not sub:
            raise DataError(f"{where / folder}: split folder without images",
                            hint="put one folder per class inside it, or remove it")
        if any(len(f) == 1 for f in sub):
            raise DataError(f"{where / folder}: images directly in the split folder; expected one folder per class "
                            "inside it", hint=f"move them into {folder}/<class name>/")
        inner, per = _class_layout(sub, sub_dirs, where / folder)
        classes_in[folder] = sorted(per)
        for c, fs in per.items():
            for f in fs:
                full = prefix + (folder,) + f
                per_class.setdefault(c, []).append(full)
                split_of[full] = s
    first = classes_in[canon["train"]]
    differ = {k: v for k, v in classes_in.items() if v != first}
    if differ:
        listing = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(classes_in.items()))
        raise DataError(f"{where}: the split folders hold different classes ({listing})",
                        hint="every split folder needs the same class folders (a split without a class "
                             "cannot test it)")
    return {c: sorted(fs) for c, fs in sorted(per_class.items())}, split_of


def _split_value(value: str, where: str) -> str:
    s = SPLIT_ALIASES.get(value.strip().lower())
    if s is None:
        raise DataError(f"{where}: split {value!r} is not one of train, val, test "
                        f"(or {', '.join(sorted(set(SPLIT_ALIASES) - set(SPLITS)))})",
                        hint="use train, val or test in the split column, or leave the column out")
    return s


def read_label_table(labels: Path) -> tuple[Any, str | None, bool]:
    """A label table: CSV with columns ``file`` and ``label``, optional ``split`` and ``group`` (or
    ``patient``). Returns the table (strings, stripped), the group column's name and whether it has
    a split column; refuses a missing file or column, an empty label or group, an unknown split
    value and a file listed twice, each naming the row."""
    import pandas as pd

    if not labels.exists():
        raise DataError(f"{labels}: label table not found", hint="set data.source.labels to a CSV file")
    try:
        table = pd.read_csv(labels, dtype=str, keep_default_na=False)
    except Exception as e:
        raise DataError(f"{labels}: cannot read the label table as CSV ({e})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing_cols = {"file", "label"} - set(table.columns)
    if missing_cols:
        raise DataError(
            f"{labels}: label table lacks column(s) {sorted(missing_cols)}; found {list(table.columns)}",
            hint="the table needs columns 'file' (relative to the source folder) and 'label'",
        )
    if table.empty:
        raise DataError(f"{labels}: label table has no rows")
    if {"group", "patient"} <= set(table.columns):
        raise DataError(f"{labels}: both a 'group' and a 'patient' column; give one",
                        hint="keep the column that names the patient (or volume) of each image")
    group_col = "group" if "group" in table.columns else ("patient" if "patient" in table.columns else None)
    for col in ("file", "label", "split", *([group_col] if group_col else [])):
        if col in table.columns:
            table[col] = table[col].str.strip()
    for col in ("label", *([group_col] if group_col else [])):
        empty = table.index[table[col] == ""].tolist()
        if empty:
            raise DataError(f"{labels}: row {empty[0] + 2} has an empty {col}"
                            + (f" ({len(empty)} rows in all)" if len(empty) > 1 else ""),
                            hint=f"fill in every {col}")
    dup = table["file"][table["file"].duplicated()].tolist()
    if dup:
        raise DataError(f"{labels}: file {dup[0]!r} is listed more than once"
                        + (f" ({len(dup)} repeats in all)" if len(dup) > 1 else ""),
                        hint="one row per image")
    has_split = "split" in table.columns
    if has_split:
        for i, v in enumerate(table["split"]):
            table.loc[i, "split"] = _split_value(v, f"{labels}: row {i + 2}")
    return table, group_col, has_split


def _table_items(table: Any, labels: Path, available: dict[str, tuple[str, bytes | Path]], origin: Path,
                 group_col: str | None, has_split: bool) -> list[RawItem]:
    """Items for the rows of a label table, matched by ``file`` against the source's files
    (``available``: path inside the source -> (source name, bytes or file)); refuses rows naming a
    missing file and files the table does not list, each by name."""
    missing = [f for f in table["file"] if f not in available]
    if missing:
        raise DataError(
            f"{labels}: {len(missing)} listed file(s) not found in {origin}, e.g. {', '.join(missing[:3])}",
            hint="paths in the 'file' column are relative to the source folder (or the archive's root); "
                 f"found e.g. {', '.join(sorted(available)[:3])}")
    unlisted = sorted(set(available) - set(table["file"]))
    if unlisted:
        raise DataError(
            f"{labels}: {len(unlisted)} image file(s) in {origin} are not in the label table, e.g. "
            f"{', '.join(unlisted[:3])}",
            hint="add a row for each (file,label), or remove the files from the source")
    items = []
    for row in table.itertuples(index=False):
        name, payload = available[row.file]
        data = payload.read_bytes() if isinstance(payload, Path) else payload
        items.append(RawItem(name, row.label, data, split=row.split if has_split else None,
                             group=getattr(row, group_col) if group_col else None, path=row.file))
    return items


def read_folder(path: Path, labels: Path | None = None) -> SourceData:
    """Images in one sub-folder per class (optionally under split folders), or any images with a
    label table (``labels``): a directory, or a .tar(.gz)/.tgz/.zip archive of one."""
    if path.is_dir():
        all_paths = [p for p in path.rglob("*") if not _is_hidden(p.relative_to(path).parts)]
        img_paths = [p for p in all_paths if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        ignored = [str(p.relative_to(path)) for p in all_paths if p.is_file() and p not in set(img_paths)]
        rel = {p.relative_to(path).parts: p for p in img_paths}
        dirs = {p.relative_to(path).parts for p in all_paths if p.is_dir()}
        inputs = [{"path": str(path), "sha256": sha256_tree(path, img_paths), "files": len(img_paths)}]
        files: dict[tuple[str, ...], Any] = rel
        name_of = {f: str(p) for f, p in rel.items()}
    elif path.name.lower().endswith(ARCHIVE_SUFFIXES):
        files, dirs = _read_archive(path)
        inputs = [{"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}]
        ignored = []
        name_of = {f: f"{path.name}!{'/'.join(f)}" for f in files}
    else:
        raise ConfigError(
            f"{path}: not a folder or an archive ({', '.join(ARCHIVE_SUFFIXES)})",
            hint="point data.source.path at the folder of class sub-folders or its archive",
        )

    def payload(f: tuple[str, ...]) -> bytes:
        v = files[f]
        return v.read_bytes() if isinstance(v, Path) else v

    if labels is not None:
        if not files:
            raise DataError(f"{path}: no image files found ({', '.join(sorted(IMAGE_SUFFIXES))})")
        table, group_col, has_split = read_label_table(labels)
        split_dirs = sorted({f[0] for f in files if len(f) > 1 and f[0].strip().lower() in SPLIT_ALIASES})
        if split_dirs and not has_split:
            log.warning("%s: the label table has no 'split' column, so the split folder(s) %s are not used as the "
                        "source's split: a new split is drawn (add a split column to keep them)", path,
                        ", ".join(split_dirs))
        available = {"/".join(f): (name_of[f], files[f]) for f in files}
        items = _table_items(table, labels, available, path, group_col, has_split)
        inputs.append({"path": str(labels), "sha256": sha256_file(labels), "bytes": labels.stat().st_size})
        return SourceData("folder", items, sorted({it.label for it in items}), inputs, has_split=has_split,
                          ignored=ignored, description=str(path),
                          group_source=f"label table column {group_col!r}" if group_col else None,
                          split_source="label table column 'split'" if has_split else None)
    split = _split_layout(list(files), dirs, path)
    if split is not None:
        per_class, split_of = split
        items = [RawItem(name_of[f], c, payload(f), split=split_of[f], path="/".join(f))
                 for c, fs in per_class.items() for f in fs]
        found = sorted({s for s in split_of.values()}, key=SPLITS.index)
        return SourceData("folder", items, list(per_class), inputs, has_split=True, ignored=ignored,
                          description=str(path), split_source=f"split folders ({', '.join(found)})")
    prefix, per_class = _class_layout(list(files), dirs, path)
    items = [RawItem(name_of[f], c, payload(f), path="/".join(f)) for c, fs in per_class.items() for f in fs]
    return SourceData("folder", items, list(per_class), inputs, ignored=ignored, description=str(path))


def read_mednist(cfg: SourceConfig) -> SourceData:
    """MedNIST (MONAI): the archive or its extracted folder at ``cfg.path``.

    Where the path does not exist, the real loading path runs: MONAI's own resource URL and
    checksum for ``MedNISTDataset``, downloaded and extracted into ``cfg.download_dir``.
    """
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


# --------------------------------------------------------------------------------------------
# DICOM


def _dicom_pixels(ds: Any, name: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(
            f"{name}: DICOM file has no pixel data (a report or presentation state?)",
            hint="remove it from the label table",
        )
    try:
        arr = ds.pixel_array
    except Exception as e:
        raise DataError(
            f"{name}: cannot decode DICOM pixel data ({e})",
            hint="the transfer syntax may need a decoder plugin (pylibjpeg, gdcm), or the file is corrupt",
        ) from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(
            f"{name}: multi-frame DICOM ({frames} frames) is not supported",
            hint="export 2D slices (one frame per file) first",
        )
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric.startswith("MONOCHROME"):
        arr = apply_modality_lut(arr, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            arr = apply_voi_lut(arr, ds)
        arr = np.asarray(arr, dtype=np.float64)
        if photometric == "MONOCHROME1":
            arr = arr.max() - arr
    return np.asarray(arr)


def listed_file(labels: Path, root: Path, name: str) -> tuple[PurePosixPath, Path]:
    """A label table row's file: its path inside ``root`` and the file; refuses a path that leaves
    ``root`` and a file that does not exist, naming the row's value."""
    rel = PurePosixPath(str(name))
    if rel.is_absolute() or ".." in rel.parts:
        raise DataError(f"{labels}: file '{name}' must be a path inside {root}")
    f = root / rel
    if not f.is_file():
        raise DataError(f"{labels}: listed file '{name}' not found under {root}",
                        hint="paths in the 'file' column are relative to the source folder")
    return rel, f


def read_dicom(path: Path, labels: Path) -> SourceData:
    """DICOM files under ``path`` with a label table (CSV, columns ``file`` and ``label``, optional
    ``split`` and ``group``/``patient``; :func:`read_label_table`).

    Pixel values go through the modality and VOI LUTs (pydicom); MONOCHROME1 is inverted.
    The identifying tags (:data:`DIRECT_IDENTIFIERS`, and :data:`INDIRECT_IDENTIFIERS` unless the
    file declares PatientIdentityRemoved = YES) that are present and non-empty are recorded per
    item for the validation stage, which refuses them unless de-identification is requested.
    Without a group column, each image's group is its ``PatientID`` (read here, before any
    de-identification; prepare keeps only a salted hash) when every file has one.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_dir():
        raise DataError(f"{path}: a DICOM source must be a folder", hint="point data.source.path at it")
    table, group_col, has_split = read_label_table(labels)
    items: list[RawItem] = []
    tags: list[dict[str, str]] = []
    files: list[Path] = []
    patient_ids: list[str] = []
    for row in table.itertuples(index=False):
        rel, f = listed_file(labels, path, row.file)
        try:
            ds = pydicom.dcmread(f)
        except (InvalidDicomError, OSError, EOFError, ValueError) as e:
            raise DataError(f"{f}: not a readable DICOM file ({e})", hint="remove it from the label table") from None
        arr = _dicom_pixels(ds, str(f))
        found: dict[str, str] = {}
        identity_removed = str(ds.get("PatientIdentityRemoved", "")).strip().upper() == "YES"
        for kw in DIRECT_IDENTIFIERS if identity_removed else PHI_TAGS:
            if kw in ds:
                value = ds.get(kw)
                text = "" if value is None else str(value).strip()
                if text and text not in ("[]", "Sequence of 0 items"):
                    found[kw] = text
        tags.append(found)
        patient_ids.append(str(ds.get("PatientID", "") or "").strip())
        items.append(RawItem(str(f), str(row.label).strip(), arr, split=row.split if has_split else None,
                             group=getattr(row, group_col) if group_col else None, path=str(rel),
                             file_sha256=sha256_file(f)))
        files.append(f)
    group_source = f"label table column {group_col!r}" if group_col else None
    if group_col is None and all(patient_ids):
        for it, pid in zip(items, patient_ids, strict=True):
            it.group = pid
        group_source = "DICOM PatientID"
    elif group_col is None and any(patient_ids):
        missing = [it.path for it, pid in zip(items, patient_ids, strict=True) if not pid]
        raise DataError(
            f"{labels}: {len(missing)} of {len(items)} DICOM file(s) have no PatientID (e.g. {missing[0]}), the others "
            "do: the split cannot keep patients apart",
            hint="add a 'patient' (or 'group') column to the label table naming each image's patient")
    elif group_col is None:
        log.warning("%s: no DICOM file has a PatientID and the label table has no patient column: the split is "
                    "drawn per image, so one patient's images can land in training and in a held-out split",
                    path)
    classes = sorted({it.label for it in items})
    inputs = [
        {"path": str(path), "sha256": sha256_tree(path, files), "files": len(files)},
        {"path": str(labels), "sha256": sha256_file(labels), "bytes": labels.stat().st_size},
    ]
    listed = {f.resolve() for f in files}
    ignored = [str(p.relative_to(path)) for p in path.rglob("*.dcm") if p.resolve() not in listed]
    return SourceData("dicom", items, classes, inputs, has_split=has_split, ignored=ignored, dicom_tags=tags,
                      description=str(path), group_source=group_source,
                      split_source="label table column 'split'" if has_split else None)
