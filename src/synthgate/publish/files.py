"""The files of a published dataset: ``images/shard-*.npz``, per-class PNG archives under ``png/`` and
``labels.csv``, written in parallel threads from a canonical sample set.

The files are deterministic: the same samples give the same bytes (every zip member dated
:data:`ZIP_DATE`, members in index order, PNGs without timestamps), so two publishes of the same
samples can be compared by their files' sha256 ("already published with the same content")."""

from __future__ import annotations

import csv
import io
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

#: The date of every zip member (the earliest a zip can hold): a package's bytes never depend on the clock.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _member(name: str, compress_type: int, level: int | None = None) -> zipfile.ZipInfo:
    """A zip member dated :data:`ZIP_DATE` (``ZipFile.open(name)`` would date it now)."""
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = compress_type
    info._compresslevel = level  # type: ignore[attr-defined]  # what ZipFile.open(name) sets from compresslevel
    info.external_attr = 0o644 << 16
    return info


def _png_bytes(image: np.ndarray, level: int) -> bytes:
    from PIL import Image

    arr = image[..., 0] if image.shape[-1] == 1 else image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def _write_shard(path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str], level: int) -> None:
    """An ``.npz`` readable by ``np.load``, deflated at ``level`` (numpy's savez_compressed is fixed at 6)."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for key, arr in (("images", images), ("labels", labels), ("classes", np.array(classes))):
            with zf.open(_member(f"{key}.npy", zipfile.ZIP_DEFLATED, level), "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
    tmp.rename(path)


def _write_png_zip(path: Path, images: np.ndarray, indices: np.ndarray, level: int) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:  # PNG is compressed already
        for i in indices:
            zf.writestr(_member(f"{i:06d}.png", zipfile.ZIP_STORED), _png_bytes(images[i], level))


def build_package(samples: Path, out: Path, shard_size: int = 5000, png: bool = True, level: int = 3,
                  workers: int = 8, exclude: list[int] | None = None) -> dict[str, Any]:
    """Write shards, PNG zips and labels.csv for the canonical dataset at ``samples`` into ``out``,
    without the images at the indices ``exclude`` (copies flagged by the memorization evidence).

    Shards and per-class PNG archives are written in parallel threads (zlib and PIL's encoder
    release the GIL); ``level`` is the deflate level of both (3: most of level 6's size at a
    fraction of its time on image data)."""
    import hashlib

    from synthgate.data.canonical import load_dataset

    ds = load_dataset(samples)
    excluded = sorted({int(i) for i in (exclude or [])})
    keep = np.setdiff1d(np.arange(len(ds.meta)), np.asarray(excluded, np.int64))
    images, labels, classes = np.asarray(ds.images)[keep], ds.labels()[keep], ds.classes
    (out / "images").mkdir(parents=True)
    rows = []
    n_shards = max(1, -(-len(images) // shard_size))
    jobs: list[Any] = []
    for s in range(n_shards):
        sl = slice(s * shard_size, (s + 1) * shard_size)
        name = f"images/shard-{s:05d}.npz"
        jobs.append((_write_shard, out / name, images[sl], labels[sl], classes, level))
        for i in range(*sl.indices(len(images))):
            rows.append({"index": i, "source_index": int(keep[i]), "class": classes[labels[i]],
                         "label": int(labels[i]), "shard": name, "shard_index": i - s * shard_size,
                         "png": f"png/{classes[labels[i]]}.zip:{i:06d}.png" if png else ""})
    if png:
        (out / "png").mkdir()
        jobs += [(_write_png_zip, out / "png" / f"{c}.zip", images, np.flatnonzero(labels == k), level)
                 for k, c in enumerate(classes)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for fut in [pool.submit(fn, *a) for fn, *a in jobs]:
            fut.result()
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["index", "source_index", "class", "label", "shard", "shard_index", "png"])
        w.writeheader()
        w.writerows(rows)
    counts = {c: int((labels == k).sum()) for k, c in enumerate(classes)}
    content = ds.content_hash if not excluded else hashlib.sha256(
        f"{ds.content_hash}:excluded:{','.join(map(str, excluded))}".encode()).hexdigest()
    return {"num_images": int(len(images)), "classes": classes, "counts": counts, "resolution": ds.resolution,
            "channels": ds.channels, "content_hash": content, "evaluated_content_hash": ds.content_hash,
            "excluded": excluded, "shards": n_shards, "source_manifest": ds.manifest}
