"""The canonical dataset: the one on-disk format every stage reads, real or synthetic.

A dataset is a directory with

- ``images.npy``       uint8 array (N, H, W, C), memory-mappable
- ``metadata.parquet`` one row per image: index, split, label, label_name, sha256 (of the
                       canonical pixels), source, source_sha256, original size/channels, intensity
                       statistics (mean, std, min, max), nan_fraction, delentropy
- ``manifest.json``    what produced it (stage, config, synthgate version), from which inputs
                       (sha256), the class list, counts per split and class, and ``content_hash``,
                       the dataset's identity (sha256 over pixels, labels and splits)
- ``dicom_tags.parquet`` DICOM sources only, until validation de-identifies: the identifying
                       tags found per image. Never published.

Directories are written through :func:`synthgate.utils.atomic_directory`: a reader sees the old
dataset or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthgate import __version__
from synthgate.errors import DataError
from synthgate.utils import atomic_directory, read_json, utc_now, write_json_atomic

FORMAT = "synthgate.dataset/v1"
IMAGES = "images.npy"
METADATA = "metadata.parquet"
MANIFEST = "manifest.json"
DICOM_TAGS = "dicom_tags.parquet"
SPLIT_NAMES = ("train", "val", "test")

METADATA_COLUMNS = (
    "index", "split", "label", "label_name", "sha256", "source", "source_sha256",
    "orig_height", "orig_width", "orig_channels", "height", "width", "channels",
    "mean", "std", "min", "max", "nan_fraction", "delentropy",
)


def image_stats(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image intensity statistics of a (N, H, W, C) uint8 batch."""
    flat = images.reshape(len(images), -1)
    f = flat.astype(np.float32)
    return {
        "mean": f.mean(axis=1).astype(np.float64),
        "std": f.std(axis=1).astype(np.float64),
        "min": flat.min(axis=1).astype(np.int64) if flat.size else np.zeros(0, np.int64),
        "max": flat.max(axis=1).astype(np.int64) if flat.size else np.zeros(0, np.int64),
    }


def pixel_hashes(images: np.ndarray) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images]


def metadata_for(
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    splits: np.ndarray | str,
    sources: list[str],
    source_sha256: list[str] | None = None,
) -> pd.DataFrame:
    """A complete metadata table for images made in memory (synthetic samples, test fixtures)."""
    from synthgate.data.complexity import delentropy

    n = len(images)
    stats = image_stats(images)
    labels = np.asarray(labels, dtype=np.int64)
    hashes = pixel_hashes(images)
    return pd.DataFrame({
        "split": np.broadcast_to(np.asarray(splits, dtype=object), (n,)).astype(str),
        "label": labels,
        "label_name": [classes[k] for k in labels],
        "sha256": hashes,
        "source": list(sources),
        "source_sha256": list(source_sha256) if source_sha256 is not None else hashes,
        "orig_height": np.full(n, images.shape[1], np.int64),
        "orig_width": np.full(n, images.shape[2], np.int64),
        "orig_channels": np.full(n, images.shape[3], np.int64),
        "height": np.full(n, images.shape[1], np.int64),
        "width": np.full(n, images.shape[2], np.int64),
        "channels": np.full(n, images.shape[3], np.int64),
        **stats,
        "nan_fraction": np.zeros(n),
        "delentropy": delentropy(images) if n else np.zeros(0),
    })


def content_hash(images: np.ndarray, labels: np.ndarray, splits: np.ndarray, classes: list[str]) -> str:
    """Identity of a dataset's content: pixels, labels, split assignment and class names."""
    h = hashlib.sha256()
    h.update(FORMAT.encode())
    h.update(repr(tuple(images.shape)).encode())
    h.update(repr(list(classes)).encode())
    step = 4096
    for i in range(0, len(images), step):
        h.update(np.ascontiguousarray(images[i : i + step]).tobytes())
    h.update(np.asarray(labels, dtype=np.int64).tobytes())
    h.update("\n".join(map(str, splits)).encode())
    return h.hexdigest()


@dataclass
class CanonicalDataset:
    root: Path
    images: np.ndarray
    meta: pd.DataFrame
    manifest: dict[str, Any]
    dicom_tags: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def content_hash(self) -> str:
        return str(self.manifest["content_hash"])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    def split_indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.meta["split"].to_numpy() == split)

    def labels(self) -> np.ndarray:
        return self.meta["label"].to_numpy(dtype=np.int64)

    def counts(self) -> dict[str, dict[str, int]]:
        return counts_table(self.meta, self.classes)


def counts_table(meta: pd.DataFrame, classes: list[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for split in SPLIT_NAMES:
        sub = meta[meta["split"] == split]
        out[split] = {c: int((sub["label"] == i).sum()) for i, c in enumerate(classes)}
    return out


def load_dataset(root: Path, mmap: bool = True) -> CanonicalDataset:
    """Open a canonical dataset; refuse anything that does not look like one, naming the file."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such dataset folder",
                        hint="run `synthgate prepare` (or the stage that writes it) first, or check the path")
    for name in (IMAGES, METADATA, MANIFEST):
        if not (root / name).exists():
            raise DataError(
                f"{root}: not a synthgate dataset ({name} missing)",
                hint="run `synthgate prepare` first, or point at the dataset directory",
            )
    manifest = read_json(root / MANIFEST)
    if manifest.get("format") != FORMAT:
        raise DataError(f"{root / MANIFEST}: unknown dataset format {manifest.get('format')!r}; expected {FORMAT}")
    try:
        images = np.load(root / IMAGES, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as e:
        raise DataError(f"{root / IMAGES}: cannot read ({e})", hint="re-run the stage that wrote it") from None
    meta = pd.read_parquet(root / METADATA)
    if images.ndim != 4 or len(images) != len(meta):
        raise DataError(
            f"{root}: images.npy has shape {images.shape} but metadata has {len(meta)} rows",
            hint="the dataset is inconsistent; re-run the stage that wrote it",
        )
    tags = pd.read_parquet(root / DICOM_TAGS) if (root / DICOM_TAGS).exists() else None
    return CanonicalDataset(root, images, meta, manifest, tags)


def write_dataset(
    root: Path,
    images: np.ndarray,
    meta: pd.DataFrame,
    classes: list[str],
    *,
    stage: str,
    config: dict[str, Any],
    inputs: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
    dicom_tags: pd.DataFrame | None = None,
) -> CanonicalDataset:
    """Write a canonical dataset atomically and return it (opened from its final location)."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    meta = meta.reset_index(drop=True).copy()
    meta["index"] = np.arange(len(meta), dtype=np.int64)
    labels = meta["label"].to_numpy(dtype=np.int64)
    splits = meta["split"].to_numpy()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "stage": stage,
        "created": utc_now(),
        "synthgate_version": __version__,
        "content_hash": content_hash(images, labels, splits, classes),
        "num_images": int(len(images)),
        "shape": [int(s) for s in images.shape[1:]],
        "dtype": "uint8",
        "classes": list(classes),
        "counts": counts_table(meta, classes),
        "config": config,
        "inputs": inputs,
    }
    if extra:
        manifest.update(extra)
    with atomic_directory(Path(root)) as tmp:
        np.save(tmp / IMAGES, np.ascontiguousarray(images))
        meta.to_parquet(tmp / METADATA, index=False)
        if dicom_tags is not None:
            dicom_tags.to_parquet(tmp / DICOM_TAGS, index=False)
        write_json_atomic(tmp / MANIFEST, manifest)
    return load_dataset(Path(root))


def refuse_one_class(where: object, classes: list[str]) -> None:
    """Refuse a dataset of fewer than 2 classes: every stage after it works per class (class-conditional
    generators, the utility classifier, the per-class evaluation)."""
    if len(classes) < 2:
        raise DataError(f"{where}: the dataset has one class only ({', '.join(map(str, classes)) or 'none'}); "
                        "synthgate's generators are class-conditional and its utility evaluation trains a classifier, "
                        "so it needs at least 2 classes",
                        hint="give the source two or more classes (a folder per class, a label table's label column, "
                             "or the npz labels), e.g. normal and abnormal")
