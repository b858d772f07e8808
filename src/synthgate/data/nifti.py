"""NIfTI volumes (``.nii``/``.nii.gz``): each 3D volume becomes 2D slices.

A NIfTI source is a folder of volumes and a label table (CSV, one row per volume: ``file,label``,
optional ``split`` and ``group``/``patient``; :func:`synthgate.data.folders.read_label_table`).
MONAI's ``NibabelReader`` loads each volume reoriented to the closest canonical (RAS+) orientation,
so ``data.source.volume.axis`` means the same anatomical direction in every volume whatever its
affine (0 sagittal, 1 coronal, 2 axial). Per volume:

1. **Window**: intensities are clipped to a window and scaled to 0..1: the volume's own
   percentiles (default 0.5-99.5; one scale for all its slices, not a min-max per slice) or fixed
   values (CT in Hounsfield units, e.g. -1000..400).
2. **Select**: all slices, a central range, or the non-empty ones (a share ``min_foreground`` of
   pixels above ``foreground`` after windowing), then every k-th of those.
3. **Group**: every slice of a volume gets the volume's group: the table's patient/group column
   when it has one (several volumes of one patient stay together), else the volume itself. The
   seeded split is grouped, so slices of one volume never straddle splits (neighbouring slices are
   near-copies of each other: straddling would contaminate every held-out baseline).

Provenance: each slice's ``source`` names the volume, the axis and the slice index
(``scan01.nii.gz#axis=2,slice=14``) and its ``source_sha256`` is the sha256 of the volume file, so a
slice leads back to the exact raw file.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import numpy as np

from synthgate.data.config import VolumeConfig
from synthgate.data.folders import listed_file, read_label_table
from synthgate.data.sources import RawItem, SourceData
from synthgate.errors import DataError
from synthgate.utils import sha256_file, sha256_tree

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(name: str) -> bool:
    return name.lower().endswith(NIFTI_SUFFIXES)


def load_volume(f: Path) -> np.ndarray:
    """The 3D voxel array of ``f`` in RAS+ orientation (MONAI's NibabelReader); a trailing
    singleton dimension is dropped. Refuses an unreadable file, a 2D image and a 4D volume."""
    from monai.data import NibabelReader

    reader = NibabelReader(as_closest_canonical=True, squeeze_non_spatial_dims=True)
    try:
        arr, _meta = reader.get_data(reader.read(str(f)))
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, zlib errors, ValueError
        raise DataError(f"{f}: not a readable NIfTI volume ({type(e).__name__}: {e})",
                        hint="re-export the volume, or remove it from the label table") from None
    arr = np.asarray(arr)
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        raise DataError(f"{f}: a 2D image (shape {arr.shape}), expected a 3D volume",
                        hint="put 2D images in an image folder source (data.source.type: folder) instead")
    if arr.ndim != 3:
        raise DataError(
            f"{f}: a {arr.ndim}D volume (shape {arr.shape}), expected a 3D volume",
            hint="a 4D file is a time series or several channels: split it into 3D volumes (one per time point or "
                 "channel) and list each in the label table")
    if min(arr.shape) < 1:
        raise DataError(f"{f}: an empty volume (shape {arr.shape})")
    return arr


def window(vol: np.ndarray, cfg: VolumeConfig) -> np.ndarray:
    """``vol`` clipped to the configured window and scaled to 0..1 (float32; NaN stays NaN)."""
    lo, hi = cfg.window_range()
    v = vol.astype(np.float32, copy=False)
    if cfg.window == "percentile":
        finite = v[np.isfinite(v)]
        if finite.size == 0:
            return np.full(v.shape, np.nan, np.float32)
        lo, hi = (float(x) for x in np.percentile(finite, [lo, hi]))
    if hi <= lo:  # a constant volume: everything at the window's floor
        return np.where(np.isfinite(v), 0.0, np.nan).astype(np.float32)
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def select_slices(w: np.ndarray, cfg: VolumeConfig) -> list[int]:
    """Indices along ``cfg.axis`` of the slices kept from the windowed volume ``w``."""
    n = w.shape[cfg.axis]
    if cfg.select == "all":
        idx = list(range(n))
    elif cfg.select == "central":
        k = max(1, int(round(cfg.central_fraction * n)))
        start = (n - k) // 2
        idx = list(range(start, start + k))
    else:
        planes = np.nan_to_num(np.moveaxis(w, cfg.axis, 0).reshape(n, -1), nan=0.0)
        share = (planes > cfg.foreground).mean(axis=1)
        idx = [i for i in range(n) if share[i] >= cfg.min_foreground]
    return idx[:: cfg.every]


def slice_image(w: np.ndarray, axis: int, k: int) -> np.ndarray:
    """Slice ``k`` along ``axis`` as an image: rotated a quarter turn so the second in-plane axis
    points up (anterior or superior at the top, as viewers show RAS+ data)."""
    return np.ascontiguousarray(np.rot90(np.take(w, k, axis=axis)))


def read_nifti(path: Path, labels: Path, cfg: VolumeConfig, warn_groups: bool = True) -> SourceData:
    """Every volume the label table lists under ``path``, windowed, sliced and selected by ``cfg``;
    one item per kept slice, labelled, split and grouped as its volume's row says. ``warn_groups``:
    warn when the table names no patient but folders hold several volumes (off when a group
    pattern will set the groups)."""
    if not path.is_dir():
        raise DataError(f"{path}: a NIfTI source must be a folder of .nii/.nii.gz volumes",
                        hint="point data.source.path at it")
    table, group_col, has_split = read_label_table(labels)
    items: list[RawItem] = []
    files: list[Path] = []
    per_volume: list[int] = []
    for row in table.itertuples(index=False):
        rel, f = listed_file(labels, path, row.file)
        if not is_nifti(f.name):
            raise DataError(f"{labels}: '{row.file}' is not a NIfTI volume (.nii or .nii.gz)",
                            hint="a NIfTI source lists one volume per row")
        w = window(load_volume(f), cfg)
        keep = select_slices(w, cfg)
        if not keep:
            raise DataError(
                f"{f}: no slice passes the selection (select {cfg.select}"
                + (f": no slice has {cfg.min_foreground:.0%} of its pixels above {cfg.foreground} after windowing"
                   if cfg.select == "nonempty" else "") + ")",
                hint="check the volume, lower data.source.volume.min_foreground, or use select: all")
        digest = sha256_file(f)
        group = getattr(row, group_col) if group_col else str(rel)
        for k in keep:
            items.append(RawItem(f"{f}#axis={cfg.axis},slice={k}", str(row.label).strip(),
                                 slice_image(w, cfg.axis, k).astype(np.float16),
                                 split=row.split if has_split else None, group=group, path=str(rel),
                                 file_sha256=digest))
        files.append(f)
        per_volume.append(len(keep))
    listed = {f.resolve() for f in files}
    ignored = [str(p.relative_to(path)) for p in sorted(path.rglob("*"))
               if p.is_file() and is_nifti(p.name) and p.resolve() not in listed]
    if ignored:
        log.warning("%s: %d NIfTI file(s) not in the label table are ignored, e.g. %s", path, len(ignored),
                    ", ".join(ignored[:3]))
    inputs = [
        {"path": str(path), "sha256": sha256_tree(path, files), "files": len(files)},
        {"path": str(labels), "sha256": sha256_file(labels), "bytes": labels.stat().st_size},
    ]
    lo, hi = cfg.window_range()
    detail = (f"{len(files)} volume(s), {len(items)} slice(s) along axis {cfg.axis} (RAS+), "
              f"select {cfg.select}{'' if cfg.every == 1 else f' every {cfg.every}'}, "
              f"{cfg.window} window {lo:g}..{hi:g}; slices per volume {min(per_volume)}-{max(per_volume)}")
    log.info("%s: %s", path, detail)
    if group_col is None and warn_groups:
        folders: dict[str, int] = {}
        for row in table.itertuples(index=False):
            parent = str(PurePosixPath(str(row.file)).parent)
            folders[parent] = folders.get(parent, 0) + 1
        shared = sorted(f for f, n in folders.items() if n > 1 and f != ".")
        if shared:
            log.warning("%s: the label table names no patient, so each volume is its own group, but %d folder(s) "
                        "hold several volumes (e.g. %s/): if those are one patient's scans they can land in "
                        "different splits. Add a 'patient' column, or set data.source.group_pattern, e.g. "
                        "'^([^/]+)/' for one folder per patient", path, len(shared), shared[0])
    return SourceData("nifti", items, sorted({it.label for it in items}), inputs, has_split=has_split,
                      ignored=ignored, description=str(path), detail=detail,
                      group_source=f"label table column {group_col!r}" if group_col else "NIfTI volume (file)",
                      split_source="label table column 'split'" if has_split else None)
