"""The prepare stage: any raw source -> one canonical dataset (see :mod:`synthgate.data.canonical`)."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from synthgate.config import PrepareConfig, SourceConfig
from synthgate.data.canonical import CanonicalDataset, image_stats, pixel_hashes, write_dataset
from synthgate.data.complexity import delentropy
from synthgate.data.imaging import Geometry, ImageDecodeError, from_array, from_bytes
from synthgate.data.sources import RawItem, SourceData, read_source
from synthgate.errors import DataError
from synthgate.progress import NullReporter, Reporter

log = logging.getLogger(__name__)

CHUNK = 1024
PARALLEL_MIN_ITEMS = 4096


@dataclass
class _Chunk:
    images: np.ndarray
    orig: np.ndarray  # (n, 3) height, width, channels
    nan_fraction: np.ndarray
    delentropy: np.ndarray
    sha256: list[str]
    source_sha256: list[str]
    failed: list[tuple[int, str]]  # (position in chunk, message)


def _decode_chunk(payloads: list[bytes | np.ndarray], geo: Geometry) -> _Chunk:
    r, c = geo.resolution, geo.channels
    out = np.zeros((len(payloads), r, r, c), np.uint8)
    orig = np.zeros((len(payloads), 3), np.int64)
    nan = np.zeros(len(payloads), np.float64)
    failed: list[tuple[int, str]] = []
    src_hash: list[str] = []
    for i, p in enumerate(payloads):
        raw = p if isinstance(p, bytes) else np.ascontiguousarray(p).tobytes()
        src_hash.append(hashlib.sha256(raw).hexdigest())
        try:
            d = from_bytes(p, geo) if isinstance(p, bytes) else from_array(p, geo)
        except ImageDecodeError as e:
            failed.append((i, str(e)))
            continue
        out[i] = d.image
        orig[i] = (d.orig_height, d.orig_width, d.orig_channels)
        nan[i] = d.nan_fraction
    return _Chunk(out, orig, nan, delentropy(out), pixel_hashes(out), src_hash, failed)


def assign_splits(labels: np.ndarray, n_classes: int, val: float, test: float, seed: int) -> np.ndarray:
    """Seeded stratified split: within each class, a shuffled ``round(n*val)`` go to val and
    ``round(n*test)`` to test, the rest to train (a class of one image stays in train)."""
    rng = np.random.default_rng(seed)
    splits = np.full(len(labels), "train", dtype=object)
    for k in range(n_classes):
        idx = np.flatnonzero(labels == k)
        rng.shuffle(idx)
        n = len(idx)
        n_val, n_test = int(round(n * val)), int(round(n * test))
        if n_val + n_test >= n:  # keep at least one training image
            n_val, n_test = (min(n_val, max(n - 1, 0)), 0) if n_val else (0, max(n - 1, 0))
        splits[idx[:n_val]] = "val"
        splits[idx[n_val : n_val + n_test]] = "test"
    return splits


def _subsample(items: list[RawItem], max_per_class: int, seed: int) -> list[RawItem]:
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_class.setdefault(it.label, []).append(i)
    keep: list[int] = []
    for idx in by_class.values():
        if len(idx) > max_per_class:
            idx = sorted(rng.choice(idx, size=max_per_class, replace=False).tolist())
        keep.extend(idx)
    return [items[i] for i in sorted(keep)]


def _decode_all(items: list[RawItem], geo: Geometry, workers: int, reporter: Reporter) -> list[_Chunk]:
    chunks = [[it.payload for it in items[i : i + CHUNK]] for i in range(0, len(items), CHUNK)]
    results: list[_Chunk] = []
    with reporter.task("Decoding images", len(items)) as advance:
        if workers <= 1 or len(items) < PARALLEL_MIN_ITEMS:
            for ch in chunks:
                results.append(_decode_chunk(ch, geo))
                advance(len(ch))
        else:
            ctx = mp.get_context("fork")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                for ch, res in zip(chunks, pool.map(_decode_chunk, chunks, [geo] * len(chunks)), strict=False):
                    results.append(res)
                    advance(len(ch))
    return results


def prepare(
    source: SourceConfig,
    cfg: PrepareConfig,
    out: Path,
    reporter: Reporter | None = None,
) -> CanonicalDataset:
    """Read ``source``, bring every image to ``cfg``'s geometry, split, and write a canonical dataset.

    Raises :class:`DataError` naming the file for unreadable inputs; nothing is written then.
    """
    reporter = reporter or NullReporter()
    data: SourceData = read_source(source)
    items = data.items
    if not items:
        raise DataError(f"{source.path}: no images found")
    dicom_tags = data.dicom_tags
    if cfg.max_per_class is not None:
        kept = _subsample(items, cfg.max_per_class, cfg.split.seed)
        if dicom_tags is not None:
            pos = {id(it): i for i, it in enumerate(items)}
            dicom_tags = [dicom_tags[pos[id(it)]] for it in kept]
        items = kept
    geo = Geometry(cfg.resolution, cfg.channels, cfg.resize)
    workers = cfg.workers or (os.cpu_count() or 1)
    chunks = _decode_all(items, geo, workers, reporter)

    failed = [(ci * CHUNK + i, msg) for ci, ch in enumerate(chunks) for i, msg in ch.failed]
    skipped: list[dict[str, str]] = []
    if failed:
        first, msg = failed[0]
        if cfg.on_error == "fail":
            more = f" ({len(failed) - 1} more unreadable)" if len(failed) > 1 else ""
            raise DataError(
                f"{items[first].source}: {msg}{more}",
                hint="remove or replace the file, or set prepare.on_error: skip to leave unreadable images out",
            )
        skipped = [{"source": items[i].source, "error": m} for i, m in failed]
        log.warning("skipped %d unreadable images, first: %s", len(failed), items[first].source)

    images = np.concatenate([c.images for c in chunks])
    orig = np.concatenate([c.orig for c in chunks])
    keep = np.ones(len(items), bool)
    keep[[i for i, _ in failed]] = False
    class_index = {c: k for k, c in enumerate(data.classes)}
    labels = np.array([class_index[it.label] for it in items], dtype=np.int64)
    if data.has_split:
        splits = np.array([it.split for it in items], dtype=object)
        split_note = "source"
    else:
        splits = assign_splits(labels, len(data.classes), cfg.split.val, cfg.split.test, cfg.split.seed)
        split_note = f"stratified seed={cfg.split.seed} val={cfg.split.val} test={cfg.split.test}"
    stats = image_stats(images)
    meta = pd.DataFrame(
        {
            "split": splits.astype(str),
            "label": labels,
            "label_name": [it.label for it in items],
            "sha256": [h for c in chunks for h in c.sha256],
            "source": [it.source for it in items],
            "source_sha256": [h for c in chunks for h in c.source_sha256],
            "orig_height": orig[:, 0],
            "orig_width": orig[:, 1],
            "orig_channels": orig[:, 2],
            "height": np.full(len(items), geo.resolution, np.int64),
            "width": np.full(len(items), geo.resolution, np.int64),
            "channels": np.full(len(items), geo.channels, np.int64),
            "mean": stats["mean"],
            "std": stats["std"],
            "min": stats["min"],
            "max": stats["max"],
            "nan_fraction": np.concatenate([c.nan_fraction for c in chunks]),
            "delentropy": np.concatenate([c.delentropy for c in chunks]),
        }
    )
    tags_df = None
    if dicom_tags is not None:
        rows = [(i, k, v) for i, t in enumerate(dicom_tags) for k, v in t.items()]
        tags_df = pd.DataFrame(rows, columns=["index", "tag", "value"])
    if not keep.all():
        idx = np.flatnonzero(keep)
        images, meta = images[idx], meta.iloc[idx]
        if tags_df is not None:
            remap = {old: new for new, old in enumerate(idx)}
            tags_df = tags_df[tags_df["index"].isin(remap)].assign(index=lambda d: d["index"].map(remap))
    config = {
        "source": source.model_dump(mode="json"),
        "prepare": cfg.model_dump(mode="json"),
    }
    extra = {
        "source_kind": data.kind,
        "source_description": data.description,
        "split_method": split_note,
        "skipped": skipped,
        "ignored_files": len(data.ignored),
        "dicom": dicom_tags is not None,
        "deidentified": False if dicom_tags is not None else None,
    }
    reporter.info(f"writing {len(images)} images to {out}")
    return write_dataset(
        out, images, meta, data.classes, stage="prepare", config=config, inputs=data.inputs,
        extra=extra, dicom_tags=tags_df,
    )
