"""Exact and near duplicates across splits.

A training image that reappears (exactly, or re-encoded/resized) in the validation or test split
inflates every later metric: the classifier and the generator have seen the "held-out" image.
Exact duplicates are found by the sha256 of the canonical pixels. Near duplicates are pairs in
different splits whose Pearson correlation at full canonical resolution reaches a threshold; a
16x16 block-mean descriptor prefilters candidate pairs in chunked matrix products (correlation
at 16x16 >= threshold - ``PREFILTER_MARGIN``) and every candidate is confirmed at full
resolution. Aligned duplicates (``kind`` "aligned") are held-out images that reach the threshold
once moved, flipped, rotated or re-cropped onto a training image, found with the memorization
evaluation's copy search (on BreastMNIST's official split, for instance, re-cropped frames of one
ultrasound image sit in train and test). Constant images have no correlation; they are left to the
empty-image check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from synthgate.data.complexity import to_gray

PREFILTER_SIZE = 16
PREFILTER_MARGIN = 0.05
#: When two splits share a duplicate, the member in the split with the lower rank is dropped.
KEEP_RANK = {"train": 3, "test": 2, "val": 1}


@dataclass
class DuplicateReport:
    pairs: pd.DataFrame  # columns: index_a, split_a, index_b, split_b, kind, correlation
    within_split_exact: int  # images that duplicate another image of the same split

    @property
    def cross_split(self) -> pd.DataFrame:
        return self.pairs

    def to_drop(self) -> np.ndarray:
        """Indices to drop so that no duplicate pair spans two splits (held-out members go)."""
        drop: set[int] = set()
        for r in self.pairs.itertuples(index=False):
            if r.index_a in drop or r.index_b in drop:
                continue
            lose = r.index_a if KEEP_RANK[r.split_a] < KEEP_RANK[r.split_b] else r.index_b
            drop.add(int(lose))
        return np.array(sorted(drop), dtype=np.int64)


def _descriptors(gray: np.ndarray, size: int) -> np.ndarray:
    n, h, w = gray.shape
    if h % size == 0 and w % size == 0 and h >= size:
        small = gray.reshape(n, size, h // size, size, w // size).astype(np.float32).mean(axis=(2, 4))
    else:
        small = gray.astype(np.float32)
    return _normalise(small.reshape(n, -1))


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32) - x.mean(axis=1, keepdims=True, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows of two (n, d) arrays (0 where one row is constant)."""
    return np.einsum("ij,ij->i", _normalise(a.reshape(len(a), -1)), _normalise(b.reshape(len(b), -1)))


def find_duplicates(
    images: np.ndarray,
    splits: np.ndarray,
    sha256: np.ndarray,
    threshold: float,
    chunk: int = 2048,
    aligned: bool = True,
) -> DuplicateReport:
    splits = np.asarray(splits).astype(str)
    sha256 = np.asarray(sha256).astype(str)
    rows: list[tuple[int, str, int, str, str, float]] = []
    seen: set[tuple[int, int]] = set()

    # exact: same pixel hash, different split (one pair per held-out image and its first match)
    df = pd.DataFrame({"sha": sha256, "split": splits, "i": np.arange(len(splits))})
    dup = df[df.duplicated("sha", keep=False)]
    within = 0
    for _, g in dup.groupby("sha", sort=False):
        if g["split"].nunique() == 1:
            within += len(g) - 1
            continue
        ordered = g.sort_values("split", key=lambda s: s.map(KEEP_RANK), ascending=False)
        keep = ordered.iloc[0]
        for r in ordered.iloc[1:].itertuples(index=False):
            if r.split == keep["split"]:
                within += 1
                continue
            a, b = int(keep["i"]), int(r.i)
            seen.add((min(a, b), max(a, b)))
            rows.append((a, str(keep["split"]), b, str(r.split), "exact", 1.0))

    # near: prefilter on block means, confirm at full resolution
    gray = to_gray(np.asarray(images))
    std = gray.reshape(len(gray), -1).std(axis=1)
    usable = std > 0
    desc = _descriptors(gray, PREFILTER_SIZE)
    pairs_of_splits = [("val", "train"), ("test", "train"), ("test", "val")]
    for s_q, s_r in pairs_of_splits:
        q_idx = np.flatnonzero((splits == s_q) & usable)
        r_idx = np.flatnonzero((splits == s_r) & usable)
        if len(q_idx) == 0 or len(r_idx) == 0:
            continue
        ref = desc[r_idx]
        for start in range(0, len(q_idx), chunk):
            q = q_idx[start : start + chunk]
            sim = desc[q] @ ref.T
            qi, ri = np.nonzero(sim >= threshold - PREFILTER_MARGIN)
            if len(qi) == 0:
                continue
            a_idx, b_idx = r_idx[ri], q[qi]
            corr = pearson_rows(gray[a_idx], gray[b_idx])
            for a, b, c in zip(a_idx, b_idx, corr, strict=False):
                key = (min(a, b), max(a, b))
                if c >= threshold and key not in seen:
                    seen.add(key)
                    rows.append((int(a), s_r, int(b), s_q, "near", float(c)))
    if aligned:
        rows += _aligned_pairs(gray, splits, usable, threshold, seen)
    pairs = pd.DataFrame(rows, columns=["index_a", "split_a", "index_b", "split_b", "kind", "correlation"])
    return DuplicateReport(pairs, within)


def _aligned_pairs(gray: np.ndarray, splits: np.ndarray, usable: np.ndarray, threshold: float,
                   seen: set[tuple[int, int]]) -> list[tuple[int, str, int, str, str, float]]:
    """Held-out images that are a training image moved, flipped, rotated, rescaled or re-cropped: the
    memorization evaluation's copy search (:mod:`synthgate.evaluation.memorization.search`: rotations/
    flips, shifts, scale/crop, small rotations), its best absolute correlation at or above ``threshold``.
    The gate's held-out null must not contain copies of training images; validation and the gate use
    the same definition of a copy."""
    import torch

    from synthgate.evaluation.memorization.search import TrainIndex, make_spec, search

    tr = np.flatnonzero((splits == "train") & usable)
    held = np.flatnonzero(np.isin(splits, ("val", "test")) & usable)
    if len(tr) == 0 or len(held) == 0 or gray.shape[1] < 16 or gray.shape[1] != gray.shape[2]:
        return []
    index = TrainIndex.build(gray[tr][..., None], torch.device("cpu"))
    res = search(gray[held][..., None], index, make_spec(gray.shape[1], shortlist=16))
    out = []
    for j, q in enumerate(held):
        score = max(float(res.pixel[j]), float(res.aligned[j]))
        if score < threshold:
            continue
        a = int(tr[res.pixel_index[j] if res.pixel[j] >= res.aligned[j] else res.aligned_index[j]])
        key = (min(a, int(q)), max(a, int(q)))
        if key not in seen and not any(int(q) in k for k in seen):
            seen.add(key)
            out.append((a, "train", int(q), str(splits[q]), "aligned", min(score, 1.0)))
    return out


@dataclass
class Nearest:
    """Per query: its nearest reference image under the copy search's aligned similarity."""

    index: np.ndarray  # position in the reference array
    similarity: np.ndarray  # max(full-image |r| over rotations/flips, aligned |r|), clipped to [0, 1]
    margin: np.ndarray  # Fisher z of the best minus the second-best reference image after alignment
    second: np.ndarray  # aligned |r| of the second-best reference image (-1 when there is none)


def aligned_nearest(queries: np.ndarray, reference: np.ndarray, shortlist: int = 16) -> Nearest:
    """The nearest image in ``reference`` of every image in ``queries`` (both (N, S, S[, C]) uint8 of one
    size), found by the memorization evaluation's copy search (:func:`synthgate.evaluation.memorization.search
    .search`: rotations/flips, shifts, scale/crop and small rotations); the same definition of "close" as the
    aligned duplicates above and the gate's copy detectors. Used by the leakage diagnosis and the inferred
    groups (:mod:`synthgate.data.leakage`, :mod:`synthgate.data.groups_inferred`)."""
    import torch

    from synthgate.evaluation.memorization.search import TrainIndex, make_spec, search

    index = TrainIndex.build(np.asarray(reference), torch.device("cpu"))
    res = search(np.asarray(queries), index, make_spec(int(np.asarray(queries).shape[1]), shortlist=shortlist))
    pixel_wins = res.pixel >= res.aligned
    similarity = np.clip(np.maximum(res.pixel, res.aligned), 0.0, 1.0)
    best = np.where(pixel_wins, res.pixel_index, res.aligned_index)
    margin = np.nan_to_num(res.aligned_margin, nan=0.0, posinf=0.0, neginf=0.0)
    return Nearest(best.astype(np.int64), similarity.astype(np.float32), margin.astype(np.float32),
                   res.aligned_second.astype(np.float32))
