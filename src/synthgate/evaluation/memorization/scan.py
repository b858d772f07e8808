"""Exhaustive nearest-neighbour scans: the highest Pearson correlation of each query image with any
reference image over the 8 rotations/flips (niehues2024 2.5; flips catch mirrored copies too), and
the highest cosine similarity of feature vectors. Both are chunked matrix products (one matmul per
chunk covering all 8 transforms) on CPU or GPU. The membership-inference test
(:mod:`.evidence`) uses them with the synthetic set as the reference; the copy search itself is
:mod:`.search`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from synthgate.data.complexity import to_gray


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 rotations/flips of a batch (N, H, W)."""
    out = []
    for flip in (False, True):
        y = torch.flip(x, dims=(-1,)) if flip else x
        out.extend(torch.rot90(y, k, dims=(-2, -1)) for k in range(4))
    return out


def _normalise(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(len(x), -1).float()
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)


@dataclass
class NNResult:
    best: np.ndarray  # (n,) highest similarity
    second: np.ndarray  # (n,) second-highest, over other reference images
    index: np.ndarray  # (n,) index of the best reference image
    transform: np.ndarray  # (n,) which of the 8 transforms matched (pixel scan only)


#: Candidates per query re-scored in fp32 after a bf16 scan (pixel_nn on CUDA).
RESCORE = 8


def pixel_nn(queries: np.ndarray, reference: np.ndarray, device: torch.device, chunk: int = 512,
             transforms: bool = True, dtype: torch.dtype | None = None) -> NNResult:
    """Max Pearson correlation of each query with any reference image over the 8 transforms.

    One matmul per chunk of queries covers all 8 transforms. ``dtype`` is that matmul's: fp32 on
    the CPU, bf16 on CUDA (default). bf16 operands and results carry 8 mantissa bits, so near 1.0
    the scan's correlations fall on steps of 1/256, too coarse for a threshold calibrated at the
    0.999 quantile: there the best ``RESCORE`` reference images of each query are re-scored in fp32
    over the 8 transforms, and best, second, index and transform come from that exact score.
    """
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    q_all = torch.from_numpy(to_gray(np.asarray(queries)).astype(np.float32))
    ref = _normalise(torch.from_numpy(to_gray(np.asarray(reference)).astype(np.float32))).to(device)
    ref_t = ref.to(dtype).T.contiguous()
    n, n_ref = len(q_all), len(ref)
    best, second = np.empty(n, np.float32), np.empty(n, np.float32)
    index, which = np.empty(n, np.int64), np.empty(n, np.int64)
    for i in range(0, n, chunk):
        q = q_all[i : i + chunk].to(device)
        variants = dihedral(q) if transforms and q.shape[-1] == q.shape[-2] else [q]
        stacked = _normalise(torch.cat(variants))  # (T*c, d) fp32
        sims = (stacked.to(dtype) @ ref_t).view(len(variants), len(q), -1)  # (T, c, R): one matmul per chunk
        s, t = sims.max(dim=0)  # best transform per (query, reference)
        s = s.float()
        if dtype == torch.float32:
            top = torch.topk(s, k=min(2, n_ref), dim=1)
            values, idx, trans = top.values, top.indices, t.gather(1, top.indices)
        else:  # re-score the bf16 scan's best candidates exactly
            cand = torch.topk(s, k=min(RESCORE, n_ref), dim=1).indices  # (c, k)
            exact = torch.einsum("tcd,ckd->tck", stacked.view(len(variants), len(q), -1), ref[cand])
            es, et = exact.max(dim=0)  # (c, k)
            top = torch.topk(es, k=min(2, es.shape[1]), dim=1)
            values, idx, trans = top.values, cand.gather(1, top.indices), et.gather(1, top.indices)
        best[i : i + chunk] = values[:, 0].cpu().numpy()
        second[i : i + chunk] = values[:, min(1, values.shape[1] - 1)].cpu().numpy()
        index[i : i + chunk] = idx[:, 0].cpu().numpy()
        which[i : i + chunk] = trans[:, 0].cpu().numpy()
    return NNResult(best, second, index, which)


def cosine_nn(queries: np.ndarray, reference: np.ndarray, device: torch.device, chunk: int = 4096) -> NNResult:
    """Highest cosine similarity of each query feature vector with any reference feature vector."""
    ref = torch.nn.functional.normalize(torch.from_numpy(np.asarray(reference, np.float32)), dim=1).to(device)
    n = len(queries)
    best, second = np.empty(n, np.float32), np.empty(n, np.float32)
    index = np.empty(n, np.int64)
    for i in range(0, n, chunk):
        q = torch.nn.functional.normalize(torch.from_numpy(np.asarray(queries[i : i + chunk], np.float32)), dim=1)
        s = q.to(device) @ ref.T
        top = torch.topk(s, k=min(2, s.shape[1]), dim=1)
        best[i : i + chunk] = top.values[:, 0].cpu().numpy()
        second[i : i + chunk] = top.values[:, -1].cpu().numpy()
        index[i : i + chunk] = top.indices[:, 0].cpu().numpy()
    return NNResult(best, second, index, np.zeros(n, np.int64))


def distribution(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    if len(v) == 0:
        return {"n": 0}
    return {"n": int(len(v)), "mean": float(v.mean()), "median": float(np.median(v)),
            "p5": float(np.percentile(v, 5)), "p95": float(np.percentile(v, 95)),
            "p99": float(np.percentile(v, 99)), "max": float(v.max())}
