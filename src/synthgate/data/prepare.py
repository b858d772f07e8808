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

from synthgate.data.canonical import (
    CanonicalDataset,
    image_stats,
    pixel_hashes,
    refuse_one_class,
    write_dataset,
)
from synthgate.data.complexity import delentropy
from synthgate.data.config import PrepareConfig, SourceConfig
from synthgate.data.groups_inferred import InferredGroups, infer_groups, regroup_split
from synthgate.data.imaging import Geometry, ImageDecodeError, from_array, from_bytes
from synthgate.data.sources import RawItem, SourceData, read_source
from synthgate.errors import DataError
from synthgate.progress import NullReporter, Reporter
from synthgate.utils import printable

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


def assign_splits(labels: np.ndarray, n_classes: int, val: float, test: float, seed: int,
                  groups: np.ndarray | None = None) -> np.ndarray:
    """Seeded stratified split: within each class, a shuffled ``round(n*val)`` go to val and
    ``round(n*test)`` to test, the rest to train (a class of one image stays in train). With
    ``groups`` (one patient id per image) the split is grouped: :func:`grouped_splits`."""
    if groups is not None:
        return grouped_splits(labels, n_classes, val, test, seed, groups)
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


def grouped_splits(labels: np.ndarray, n_classes: int, val: float, test: float, seed: int,
                   groups: np.ndarray) -> np.ndarray:
    """A split stratified by class and grouped by patient: every image of a group lands in one
    split (the held-out baselines are then patient-disjoint by construction). Groups are taken in
    a seeded order, the largest first, and each goes to val or test where that brings the split's
    per-class counts closer to their targets (L1; on a tie, where the split has none of its classes
    yet), else to train (a greedy stratified group split, as scikit-learn's StratifiedGroupKFold
    balances folds). A class whose every group went to val or
    test gets its smallest group back into train."""
    labels = np.asarray(labels, dtype=np.int64)
    uniq, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    counts = np.zeros((len(uniq), n_classes), np.float64)
    np.add.at(counts, (inv, labels), 1.0)
    total = counts.sum(axis=0)
    target = {"val": val * total, "test": test * total}
    have = {"val": np.zeros(n_classes), "test": np.zeros(n_classes)}
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    assign = np.full(len(uniq), "train", dtype=object)
    for g in order:
        c = counts[g]
        best, best_gain = "train", 0.0
        for split in ("val", "test"):
            need = target[split] - have[split]
            # how much closer to its per-class target the split gets (L1); a tie still places the group
            # where the split has no image of its classes yet, so that small datasets get a held-out split
            gain = float(np.abs(need).sum() - np.abs(need - c).sum())
            first = gain == 0 and not np.any(have[split][c > 0]) and np.any(target[split][c > 0] > 0)
            if gain > best_gain or (first and best == "train" and best_gain == 0):
                best, best_gain = split, gain
        assign[g] = best
        if best != "train":
            have[best] += c
    for k in range(n_classes):
        members = np.flatnonzero(counts[:, k] > 0)
        if len(members) and not np.any(assign[members] == "train"):
            assign[members[np.argmin(counts[members].sum(axis=1))]] = "train"
    return assign[inv]


def hash_groups(raw: list[str], salt: bytes) -> np.ndarray:
    """HMAC-SHA256 of each raw group id under the secret ``salt`` (a patient id is PHI: only this is
    kept), 16 hex digits. Without the secret, a list of candidate ids cannot be tested against them."""
    import hmac

    cache: dict[str, str] = {}
    out = []
    for g in raw:
        if g not in cache:
            cache[g] = hmac.new(salt, g.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:16]
        out.append(cache[g])
    return np.array(out, dtype=object)


def group_salt() -> tuple[bytes, str]:
    """The secret for :func:`hash_groups` and where it came from: ``$SYNTHGATE_GROUP_SALT`` when set
    (share it between the machines that must reproduce the same hashes, e.g. as a Kubernetes Secret),
    else a random secret created once in ``$XDG_CONFIG_HOME/synthgate/group_salt`` (``~/.config``),
    mode 0600. Never derived from the data: the data's own hashes are in its metadata."""
    import secrets

    env = os.environ.get("SYNTHGATE_GROUP_SALT")
    if env:
        return env.encode(), "$SYNTHGATE_GROUP_SALT"
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "synthgate"
    path = home / "group_salt"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        log.warning("created a secret for hashing patient ids in %s (mode 0600): set $SYNTHGATE_GROUP_SALT to share "
                    "one between machines", path)
    return path.read_text().strip().encode(), f"a local secret ({path}); $SYNTHGATE_GROUP_SALT shares one"


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
    refuse_one_class(source.path, data.classes)
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

    failed, skipped = _failures(chunks, items, cfg)
    images = np.concatenate([c.images for c in chunks])
    keep = np.ones(len(items), bool)
    keep[[i for i, _ in failed]] = False
    class_index = {c: k for k, c in enumerate(data.classes)}
    labels = np.array([class_index[it.label] for it in items], dtype=np.int64)
    groups = _raw_groups(items, data, source)  # the raw ids order the grouped split; only their hash is kept
    inferred = None
    if groups is None and cfg.infer_groups.enabled:
        with reporter.task("Inferring acquisition groups", None):
            inferred = infer_groups(images, labels, data.classes, [it.path or it.source for it in items],
                                    cfg.infer_groups, cfg.split.seed)
        data.group_source = "groups inferred from the pixels"
    splits, split_note = _splits(labels, items, data, cfg, groups if inferred is None else inferred.ids)
    extra_columns, inferred_note = {}, None
    if inferred is not None:
        splits, split_note, extra_columns, inferred_note = _use_inferred(inferred, splits, split_note, labels, data,
                                                                         cfg, source)
    if data.has_split and not np.any(splits == "train"):
        raise DataError(f"{source.path}: the source's split ({data.split_source}) has no training images",
                        hint="mark the training images 'train' (or leave the split out and let prepare draw one)")
    group_note = None
    if groups is not None:
        _check_grouped_splits(splits, labels, groups, data, cfg, source)
        salt, salt_note = group_salt()
        raw_count = len(set(groups.tolist()))
        groups = hash_groups([str(g) for g in groups], salt)
        group_note = {"source": data.group_source, "hashed": f"HMAC-SHA256 with {salt_note}", "count": raw_count}
    meta = _metadata(images, chunks, items, splits, labels, geo)
    if groups is not None:
        meta["group"] = groups.astype(str)
    for col, values in extra_columns.items():
        meta[col] = values
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
        **({"source_detail": data.detail} if data.detail else {}),
        "split_method": split_note,
        "groups": group_note if inferred_note is None else inferred_note,
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


def _failures(chunks: list[_Chunk], items: list[RawItem], cfg: PrepareConfig
              ) -> tuple[list[tuple[int, str]], list[dict[str, str]]]:
    """The unreadable images: an error naming the first (``on_error: fail``), or the list of those skipped."""
    failed = [(ci * CHUNK + i, msg) for ci, ch in enumerate(chunks) for i, msg in ch.failed]
    skipped: list[dict[str, str]] = []
    if failed:
        first, msg = failed[0]
        if len(failed) == len(items):  # skipping them all would leave an empty dataset
            raise DataError(f"{items[first].source}: {msg}; none of the {len(items)} images can be read",
                            hint="check that data.source.path is the source meant, and that its files are images")
        if cfg.on_error == "fail":
            more = f" ({len(failed) - 1} more unreadable)" if len(failed) > 1 else ""
            raise DataError(
                f"{items[first].source}: {msg}{more}",
                hint="remove or replace the file, or set prepare.on_error: skip to leave unreadable images out",
            )
        skipped = [{"source": printable(items[i].source), "error": m} for i, m in failed]
        log.warning("skipped %d unreadable images, first: %s", len(failed), items[first].source)
    return failed, skipped


def _raw_groups(items: list[RawItem], data: SourceData, source: SourceConfig) -> np.ndarray | None:
    """Every image's patient group as the source gave it, or None; every image or none must have one."""
    with_group = [it.group is not None for it in items]
    if not any(with_group):
        return None
    if not all(with_group):
        n_without = sum(not w for w in with_group)
        raise DataError(f"{source.path}: {n_without} of {len(items)} image(s) have no patient group, while the "
                        f"others have one ({data.group_source})", hint="give every image a group, or none")
    return np.array([str(it.group) for it in items], dtype=object)


def _splits(labels: np.ndarray, items: list[RawItem], data: SourceData, cfg: PrepareConfig,
            groups: np.ndarray | None) -> tuple[np.ndarray, str]:
    """The source's own split (the missing held-out splits carved from its training split), or a
    stratified one (by patient with ``groups``); -> (split per image, how it was made)."""
    seed_note = f"seed={cfg.split.seed}"
    grouped = " grouped by patient," if groups is not None else ""
    if not data.has_split:
        splits = assign_splits(labels, len(data.classes), cfg.split.val, cfg.split.test, cfg.split.seed, groups)
        return splits, f"stratified,{grouped} {seed_note} val={cfg.split.val} test={cfg.split.test}"
    splits = np.array([it.split for it in items], dtype=object)
    split_note = f"source ({data.split_source})" if data.split_source else "source"
    missing = [s for s in ("val", "test") if not np.any(splits == s)]
    if missing:
        # the source gives train (and maybe one held-out split): carve the rest out of its training split
        tr = np.flatnonzero(splits == "train")
        frac = {"val": cfg.split.val if "val" in missing else 0.0, "test": cfg.split.test if "test" in missing else 0.0}
        sub = assign_splits(labels[tr], len(data.classes), frac["val"], frac["test"], cfg.split.seed,
                            None if groups is None else groups[tr])
        splits[tr] = sub
        split_note += (f"; {' and '.join(missing)} carved from its training split (stratified,{grouped} "
                       f"{seed_note} " + " ".join(f"{m}={frac[m]}" for m in missing) + ")")
    return splits, split_note


def _check_grouped_splits(splits: np.ndarray, labels: np.ndarray, groups: np.ndarray, data: SourceData,
                          cfg: PrepareConfig, source: SourceConfig) -> None:
    """A split by patient must leave no held-out split empty, and (when prepare drew it) no class
    without images in a held-out split."""
    empty = [sp for sp, frac in (("val", cfg.split.val), ("test", cfg.split.test))
             if (frac > 0 or data.has_split) and not np.any(splits == sp)]
    if empty:
        raise DataError(
            f"{source.path}: {len(set(groups.tolist()))} patient group(s) ({data.group_source}): a split grouped by "
            f"patient leaves the {' and '.join(empty)} split(s) empty",
            hint="a held-out split needs patients of its own: more patients, larger split fractions, or check "
                 "that the group source (e.g. every file's PatientID) is not the same for all images")
    for sp in ("val", "test") if not data.has_split else ():  # a split prepare drew by patient
        if not np.any(splits == sp):
            continue
        lacking = [data.classes[k] for k in range(len(data.classes))
                   if np.any(labels == k) and not np.any((labels == k) & (splits == sp))]
        if lacking:
            k = data.classes.index(lacking[0])
            n_pat = len(set(groups[labels == k].tolist()))
            raise DataError(
                f"{source.path}: class {lacking[0]!r} has no {sp} image: its {int(np.sum(labels == k))} image(s) "
                f"belong to {n_pat} patient(s), all in other splits"
                + (f" (also without {sp} images: {', '.join(lacking[1:])})" if len(lacking) > 1 else ""),
                hint=f"a held-out split without a class cannot test it: more patients of that class, a larger "
                     f"split.{sp}, or a source split that gives it {sp} patients")


def _use_inferred(inferred: InferredGroups, splits: np.ndarray, split_note: str, labels: np.ndarray,
                  data: SourceData, cfg: PrepareConfig, source: SourceConfig
                  ) -> tuple[np.ndarray, str, dict[str, np.ndarray], dict[str, object]]:
    """The split with inferred groups: prepare's own split is grouped by them already; a source's split is
    kept (the groups go to ``inferred_group``, the leakage diagnosis reports what straddles) or regrouped
    (the groups go to ``group``, each image's source split to ``source_split``). -> (splits, how they were
    made, extra metadata columns, the manifest's ``groups`` entry)."""
    ids = inferred.ids.astype(str)
    note: dict[str, object] = {"source": data.group_source, "hashed": None, "count": len(set(ids.tolist())),
                               **inferred.summary()}
    straddle = _straddling(ids, splits)
    if not data.has_split:
        _check_grouped_splits(splits, labels, ids, data, cfg, source)
        return splits, split_note, {"group": ids}, note
    if cfg.infer_groups.source_split == "keep":
        note.update(source_split="kept", groups_in_two_splits=straddle)
        return splits, split_note, {"inferred_group": ids}, note
    new, moved = regroup_split(splits, labels, data.classes, ids)
    moved_list = [{"source": data.items[i].source, "from": str(splits[i]), "to": str(new[i])} for i in moved]
    note.update(source_split="regrouped", groups_in_two_splits=straddle, moved=len(moved), moved_images=moved_list)
    split_note += f"; regrouped by inferred groups: {len(moved)} image(s) moved (manifest groups.moved_images)"
    return new, split_note, {"group": ids, "source_split": splits.astype(str)}, note


def _straddling(ids: np.ndarray, splits: np.ndarray) -> int:
    """How many groups have images in more than one split."""
    return int((pd.DataFrame({"g": ids, "s": splits.astype(str)}).groupby("g")["s"].nunique() > 1).sum())


def _metadata(images: np.ndarray, chunks: list[_Chunk], items: list[RawItem], splits: np.ndarray,
              labels: np.ndarray, geo: Geometry) -> pd.DataFrame:
    """``metadata.parquet``: one row per image (split, label, hashes, source, geometry, statistics)."""
    orig = np.concatenate([c.orig for c in chunks])
    source_hashes = [it.file_sha256 or h for it, h in zip(items, (h for c in chunks for h in c.source_sha256),
                                                          strict=True)]
    stats = image_stats(images)
    return pd.DataFrame(
        {
            "split": splits.astype(str),
            "label": labels,
            "label_name": [it.label for it in items],
            "sha256": [h for c in chunks for h in c.sha256],
            "source": [printable(it.source) for it in items],
            "source_sha256": source_hashes,
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
