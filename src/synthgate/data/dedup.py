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

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from synthgate.data.complexity import to_gray

if TYPE_CHECKING:  # the search loads in the functions that use it
    import torch

    from synthgate.evaluation.memorization.search import SearchSpec, TrainIndex

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
    groups (:mod:`synthgate.data.leakage`, :mod:`synthgate.data.groups_inferred`).

    Only the scores this needs are computed (:func:`nearest_scores`): the full-image and the aligned
    correlation with their margin, not the smoothed and tile scores of the gate's search; the values are the
    search's own (``tests/unit/test_leakage.py`` checks them against :func:`search`)."""

    from synthgate.evaluation.memorization.search import gray_tensor

    ref = reference_index(gray_tensor(np.asarray(reference)))
    return nearest_scores(gray_tensor(np.asarray(queries)), ref, shortlist)


def reference_index(gray: torch.Tensor) -> TrainIndex:
    """The copy search's training index of (N, S, S) float32 luma images without its smoothed copy (which
    :func:`nearest_scores` does not use)."""
    from synthgate.evaluation.memorization.search import TrainIndex, _norm, coarse

    side = gray.shape[-1]
    return TrainIndex(gray, coarse(gray, 16 if side >= 16 else side), coarse(gray, 8 if side >= 8 else 4),
                      _norm(gray.reshape(len(gray), -1)), gray.new_zeros((0,)))


#: The copy search's settings the leakage diagnosis and the grouping were calibrated with (the gate's own search
#: aligns two rotations/flips per candidate and shifts its shortlist scan since 2026-12-07).
LEAKAGE_SEARCH: dict[str, int | bool] = {"dihedrals": 1, "shift_shortlist": False}


def nearest_scores(q_all: torch.Tensor, index: TrainIndex, shortlist: int = 16, memory_mb: int = 256
                   ) -> Nearest:
    """:func:`aligned_nearest` for (N, S, S) float32 luma queries against a prepared index: the copy search
    (:func:`synthgate.evaluation.memorization.search.search`) restricted to its pixel score, its aligned
    score and the aligned score's second-best training image, computed as it computes them."""
    import torch

    from synthgate.evaluation.memorization.search import (
        _aligned_scores,
        _norm,
        dihedral8,
        fisher_z,
        make_spec,
    )
    from synthgate.evaluation.memorization.search import shortlist as scan

    # the search as the leakage thresholds were calibrated with it (docs/leakage.md): one rotation/flip aligned
    # per candidate and no shifted shortlist scan; re-calibrate (benchmarks/leakage_reference.py) before changing
    spec = make_spec(int(q_all.shape[-1]), shortlist=shortlist, **LEAKAGE_SEARCH)
    cand = scan(q_all, index, spec.shortlist)
    n, k = cand.shape
    side = 2 * spec.max_shift + 1
    per_query = k * spec.template ** 2 * (len(spec.variants) + side * side + 8) * 4
    chunk = max(1, min(256, memory_mb * 2**20 // max(per_query, 1)))
    pixel = np.zeros(n, np.float32)
    pixel_index = np.zeros(n, np.int64)
    aligned = np.zeros(n, np.float32)
    aligned_index = np.zeros(n, np.int64)
    aligned_second = np.zeros(n, np.float32)
    scales = torch.tensor([s for s, _ in spec.variants])
    rots = torch.tensor([r for _, r in spec.variants])
    with torch.inference_mode():
        for i in range(0, n, chunk):
            q = q_all[i : i + chunk]
            c = len(q)
            cj = torch.from_numpy(cand[i : i + chunk])
            repeat = torch.zeros_like(cj, dtype=torch.bool)
            repeat[:, 1:] = cj[:, 1:] == cj[:, :1]
            d8 = dihedral8(q)
            qd = _norm(d8.reshape(c, 8, -1))
            full = torch.einsum("ctd,ckd->ckt", qd, index.full[cj]).abs()
            per_cand, best_t = full.max(dim=2)
            per_cand = per_cand.masked_fill(repeat, -2.0)
            top1 = torch.topk(per_cand, 1, dim=1)  # as the search takes it (the same index on ties)
            pixel[i : i + c] = top1.values[:, 0].numpy()
            pixel_index[i : i + c] = cj.gather(1, top1.indices)[:, 0].numpy()
            tsel = _warp_needed(d8, best_t, spec)
            s = _aligned_scores(tsel, index.images[cj.reshape(-1)], spec).reshape(c, k, -1)
            pair, arg = s.max(dim=2)
            pair = pair.masked_fill(repeat, -2.0)
            rows = torch.arange(c)
            best_pair = pair.argmax(dim=1)
            coarse_best = pair[rows, best_pair]
            r2 = min(2, k)
            top_r = torch.topk(pair, r2, dim=1).indices
            a_r = arg.gather(1, top_r)
            v_r, p_r = a_r // (side * side), a_r % (side * side)
            fine = _refine_fast(d8.repeat_interleave(r2, 0), index.images[cj.gather(1, top_r).reshape(-1)], spec,
                                best_t.gather(1, top_r).reshape(-1), scales[v_r].reshape(-1), rots[v_r].reshape(-1),
                                (p_r // side - spec.max_shift).reshape(-1), (p_r % side - spec.max_shift).reshape(-1))
            fine = fine.view(c, r2).masked_fill(repeat.gather(1, top_r), -2.0)
            fb, farg = fine.max(dim=1)
            better = fb > coarse_best
            aligned[i : i + c] = torch.maximum(fb, coarse_best).numpy() if better.any() else coarse_best.numpy()
            aligned_index[i : i + c] = torch.where(better, cj.gather(1, top_r)[rows, farg], cj[rows, best_pair]).numpy()
            both = torch.maximum(fine, pair.gather(1, top_r)).masked_fill(repeat.gather(1, top_r), -1.0)
            aligned_second[i : i + c] = (both.min(dim=1).values if r2 > 1 else torch.full((c,), -1.0)).numpy()
    pixel_wins = pixel >= aligned
    similarity = np.clip(np.maximum(pixel, aligned), 0.0, 1.0)
    best = np.where(pixel_wins, pixel_index, aligned_index)
    margin = np.nan_to_num(fisher_z(aligned) - fisher_z(aligned_second), nan=0.0, posinf=0.0, neginf=0.0)
    return Nearest(best.astype(np.int64), similarity.astype(np.float32), margin.astype(np.float32),
                   aligned_second.astype(np.float32))


def _warp_needed(d8: torch.Tensor, best_t: torch.Tensor, spec: SearchSpec) -> torch.Tensor:
    """The search's warped templates (:func:`synthgate.evaluation.memorization.search._warp_templates`) of the
    rotations/flips ``best_t`` (c, k) that the candidates chose, each computed once: (c, k, V, T*T). The search
    warps all 8 of every query; a query's candidates mostly choose one or two (the same values, fewer)."""
    import torch
    import torch.nn.functional as F

    from synthgate.evaluation.memorization.search import _norm

    c, _, h, w = d8.shape
    variants, t = spec.variants, spec.template
    frac = t / h
    theta = torch.tensor([[[s * math.cos(math.radians(r)) * frac, -s * math.sin(math.radians(r)) * frac, 0.0],
                           [s * math.sin(math.radians(r)) * frac, s * math.cos(math.radians(r)) * frac, 0.0]]
                          for s, r in variants], dtype=d8.dtype, device=d8.device)
    grid = F.affine_grid(theta, [len(variants), 1, t, t], align_corners=False).reshape(1, len(variants) * t, t, 2)
    key = (torch.arange(c, device=d8.device)[:, None] * 8 + best_t).reshape(-1)
    uniq, inv = torch.unique(key, return_inverse=True)
    src = d8.reshape(c * 8, 1, h, w)[uniq]
    out = F.grid_sample(src, grid.expand(len(uniq), -1, -1, -1), mode="bilinear", padding_mode="border",
                        align_corners=False)
    warped = _norm(out.reshape(len(uniq), len(variants), t * t))
    return warped[inv].reshape(c, best_t.shape[1], len(variants), t * t)


def _affine_grid(theta: torch.Tensor, t: int) -> torch.Tensor:
    """``F.affine_grid(theta, [N, 1, t, t], align_corners=False)`` as one batched product with a base grid that
    is shared, not copied for each of the N grids (2x faster on the CPU for many small grids; the same base
    grid and product, so the same values)."""
    import torch

    lin = torch.linspace(-1, 1, t, dtype=theta.dtype, device=theta.device) * (t - 1) / t
    base = torch.stack([lin[None, :].expand(t, t), lin[:, None].expand(t, t), torch.ones_like(lin)[None].expand(t, t)],
                       -1).reshape(1, t * t, 3)  # (x, y, 1) per output pixel, x along a row
    return torch.matmul(base, theta.transpose(1, 2)).view(len(theta), t, t, 2)


def _refine_fast(d8: torch.Tensor, ref: torch.Tensor, spec: SearchSpec, dih: torch.Tensor, scale: torch.Tensor,
                 rot: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """:func:`synthgate.evaluation.memorization.search._refine` (the finer grid around a found alignment) with
    its sampling grids made by :func:`_affine_grid`."""
    import torch
    import torch.nn.functional as F

    from synthgate.evaluation.memorization.search import (
        REFINE_OFFSETS,
        REFINE_ROTATIONS,
        REFINE_SCALES,
        _norm,
    )

    b, h = d8.shape[0], d8.shape[-1]
    t = spec.template
    frac = t / h
    grid_s = torch.tensor(REFINE_SCALES, device=d8.device)
    grid_r = torch.tensor(REFINE_ROTATIONS, device=d8.device)
    grid_o = torch.tensor(REFINE_OFFSETS, device=d8.device)
    ss, rr, oy, ox = torch.meshgrid(grid_s, grid_r, grid_o, grid_o, indexing="ij")
    ss, rr, oy, ox = (g.reshape(-1) for g in (ss, rr, oy, ox))
    nv = len(ss)
    sc = scale[:, None] * ss[None]
    an = torch.deg2rad(rot[:, None] + rr[None])
    theta = torch.stack([torch.stack([sc * torch.cos(an) * frac, -sc * torch.sin(an) * frac,
                                      (2 * ox[None] / h).expand(b, nv)], -1),
                         torch.stack([sc * torch.sin(an) * frac, sc * torch.cos(an) * frac,
                                      (2 * oy[None] / h).expand(b, nv)], -1)], -2).reshape(b * nv, 2, 3)
    src = d8[torch.arange(b, device=d8.device), dih]
    grid = _affine_grid(theta, t).reshape(b, nv * t, t, 2)
    warped = F.grid_sample(src[:, None], grid, mode="bilinear", padding_mode="border",
                           align_corners=False).reshape(b, nv, t * t)
    off = (h - t) // 2
    ys = (off + dy).long().clamp(0, h - t)
    xs = (off + dx).long().clamp(0, h - t)
    rows = torch.arange(t, device=d8.device)
    yy = (ys[:, None] + rows[None])[:, :, None].expand(b, t, t)
    xx = (xs[:, None] + rows[None])[:, None, :].expand(b, t, t)
    win = ref[torch.arange(b, device=d8.device)[:, None, None], yy, xx].reshape(b, t * t)
    return torch.einsum("bvd,bd->bv", _norm(warped), _norm(win)).abs().amax(dim=1)
