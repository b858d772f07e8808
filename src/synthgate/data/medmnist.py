"""MedMNIST ``.npz`` files: the medmnist package's registry for class names, MONAI's downloader for the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synthgate.data.sources import SPLITS, RawItem, SourceData
from synthgate.errors import ConfigError, DataError
from synthgate.utils import sha256_file


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


#: The largest class index a label may hold (the class list runs from 0 to the largest index).
MAX_CLASS_INDEX = 9999


def _array(npz: Any, key: str, path: Path) -> np.ndarray:
    """One array of an .npz file, read now (``np.load`` reads the members on access): a damaged member is refused
    naming the file and the array."""
    import lzma
    import zipfile
    import zlib

    try:
        return np.asarray(npz[key])
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, NotImplementedError,
            RuntimeError) as e:  # npy header or data, zip member, decompression; encrypted or unknown method
        raise DataError(f"{path}: cannot read the array '{key}' ({type(e).__name__}: {e})",
                        hint="the file is damaged or incomplete: write it again (numpy.savez)") from None


def _class_indices(labels: np.ndarray, where: str) -> np.ndarray:
    """Labels as int64 class indices; refuses values that are not whole numbers in 0..MAX_CLASS_INDEX (those
    below 0 are refused where the class names are known, naming them)."""
    if labels.dtype.kind not in "biuf":
        raise DataError(f"{where}: labels of dtype {labels.dtype}; expected integer class indices",
                        hint="store the labels as integers 0..K-1")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
        raise DataError(f"{where}: labels that are not whole numbers (e.g. {labels[labels != np.round(labels)][:1]})",
                        hint="store the labels as integers 0..K-1")
    if labels.size and labels.max() > MAX_CLASS_INDEX:
        raise DataError(f"{where}: label {labels.max()} is not a class index (at most {MAX_CLASS_INDEX})",
                        hint="store the labels as class indices 0..K-1")
    return labels.astype(np.int64)


def read_medmnist(path: Path, flag: str | None = None, download_dir: Path | None = None) -> SourceData:
    """A MedMNIST ``.npz`` file: keys ``{train,val,test}_images`` and ``{train,val,test}_labels``.

    Class names come from ``medmnist.INFO`` (flag taken from the file name or ``flag``). The
    file's own split is kept. Multi-label tasks (ChestMNIST) are refused: the generators are
    conditioned on one class per image.
    """
    flag, info = medmnist_info(flag, path)
    if not path.exists():
        if flag is None or download_dir is None:
            raise DataError(f"{path}: no such file", hint="check --source (or data.source.path in params.yaml)")
        path = download_medmnist(flag, Path(download_dir))
    import zipfile

    if path.is_file() and not zipfile.is_zipfile(path):  # numpy would try it as a pickle and talk about allow_pickle
        raise DataError(f"{path}: not an .npz file (an .npz is a zip archive of arrays; this file is not a zip "
                        "archive: damaged, cut short, or another format renamed .npz)",
                        hint="download or copy the file again, or point data.source.path at the right file")
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
        images, labels = _array(npz, f"{split}_images", path), _array(npz, f"{split}_labels", path)
        if images.ndim not in (3, 4) or images.dtype.kind not in "biuf":
            raise DataError(
                f"{path}: {split}_images has shape {images.shape} and dtype {images.dtype}; expected numbers "
                "(integers or floats) of shape (N, H, W) or (N, H, W, C)",
                hint="store the images as a uint8 (or integer, float) array of shape (N, H, W) or (N, H, W, C)")
        if labels.ndim == 2 and labels.shape[1] > 1:
            raise DataError(
                f"{path}: {split}_labels has shape {labels.shape}: multi-label tasks are not supported",
                hint="use a single-label (multi-class or binary) MedMNIST dataset",
            )
        if labels.ndim not in (1, 2) or labels.size != len(labels):
            raise DataError(f"{path}: {split}_labels has shape {labels.shape}; expected (N,) or (N, 1), one class "
                            "index per image", hint="store one integer class index per image")
        if len(images) != len(labels):
            raise DataError(
                f"{path}: {split}_images has {len(images)} images but {split}_labels has {len(labels)} labels",
                hint="images and labels must have the same length",
            )
        labels = _class_indices(labels.reshape(len(labels)), f"{path}: {split}_labels")
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


