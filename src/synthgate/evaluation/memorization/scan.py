"""Memorization and privacy: does the synthetic set contain copies of training images?

- Pixel space (niehues2024, 2.5): for each synthetic image the highest Pearson correlation with
  any grayscale training image over the 8 rotations/flips (niehues uses the 4 rotations; flips
  catch mirrored copies too). The same statistic for the real held-out split is the baseline:
  different real patients already correlate highly (DESIGN.md: mean 0.88 on PneumoniaMNIST), so
  the near-copy threshold is a quantile of that baseline (0.999 -> a 0.1% false-positive rate on
  real, unseen images), never a fixed number. The ratio (1 - r_NN1) / (1 - r_NN2), small when
  one training image is much closer than all others, is reported beside it.
- Feature space (dumontschutte2021 S.6): cosine similarity of encoder features to the nearest
  training image, with the same baseline and calibration; it is invariant to the shifts that
  pixel correlation misses.
- Membership inference: how well the distance to the nearest synthetic image separates training
  members from held-out non-members (ROC AUC; 0.5 = no leak).

Both nearest-neighbour scans are chunked matrix products (one matmul per chunk and transform) on
CPU or GPU. Planted copies of training images (exact, flipped, rotated, noisy, shifted) measure
each detector's detection rate at its calibrated threshold in every evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def compare(synthetic: NNResult, baseline: NNResult, quantile: float, syn_labels: np.ndarray,
            base_labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Synthetic vs held-out distributions, the calibrated near-copy threshold and the fractions above it."""
    from scipy.stats import mannwhitneyu

    threshold = float(np.quantile(baseline.best, quantile))
    ratio_s = (1 - synthetic.best) / np.maximum(1 - synthetic.second, 1e-6)
    ratio_b = (1 - baseline.best) / np.maximum(1 - baseline.second, 1e-6)
    ratio_threshold = float(np.quantile(ratio_b, 1 - quantile))
    above = synthetic.best > threshold
    test = mannwhitneyu(synthetic.best, baseline.best, alternative="greater")
    per_class = {}
    for k, c in enumerate(classes):
        s, b = synthetic.best[syn_labels == k], baseline.best[base_labels == k]
        per_class[c] = {"synthetic": distribution(s), "held_out": distribution(b),
                        "near_copy_fraction": float((s > threshold).mean()) if len(s) else None}
    return {
        "synthetic": distribution(synthetic.best),
        "held_out": distribution(baseline.best),
        "threshold": threshold,
        "threshold_quantile": quantile,
        "near_copy_fraction": float(above.mean()),
        "near_copy_count": int(above.sum()),
        "held_out_above_threshold": float((baseline.best > threshold).mean()),
        "median_shift": float(np.median(synthetic.best) - np.median(baseline.best)),
        "mannwhitney_u_p_greater": float(test.pvalue),
        "ratio_threshold": ratio_threshold,
        "ratio_flag_fraction": float((ratio_s < ratio_threshold).mean()),
        "per_class": per_class,
    }


def _auc_and_p(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> tuple[float, float]:
    """ROC AUC of 'member scores higher' (= Mann-Whitney U / (n1 n2)) and its one-sided p-value."""
    from scipy.stats import mannwhitneyu

    test = mannwhitneyu(member_scores, nonmember_scores, alternative="greater")
    return float(test.statistic / (len(member_scores) * len(nonmember_scores))), float(test.pvalue)


def membership_auc(member_feats: np.ndarray, nonmember_feats: np.ndarray, synthetic_feats: np.ndarray,
                   device: torch.device) -> tuple[float, float]:
    """AUC of 'closer to a synthetic image' as a test for training membership (0.5 = no leak),
    with the one-sided Mann-Whitney p-value of members being closer than non-members."""
    m = cosine_nn(member_feats, synthetic_feats, device).best
    n = cosine_nn(nonmember_feats, synthetic_feats, device).best
    return _auc_and_p(m, n)


def membership_auc_pixels(members: np.ndarray, nonmembers: np.ndarray, synthetic: np.ndarray,
                          device: torch.device, chunk: int) -> tuple[float, float]:
    m = pixel_nn(members, synthetic, device, chunk).best
    n = pixel_nn(nonmembers, synthetic, device, chunk).best
    return _auc_and_p(m, n)


PLANTED_KINDS = ("exact", "flip", "rot90", "noise_0.03", "shift_1px", "shift_2px")


def plant_copies(train: np.ndarray, n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Modified copies of ``n`` random training images, one set per kind; returns them and the sources."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(train), size=min(n, len(train)), replace=False)
    src = np.asarray(train[idx])
    out: dict[str, np.ndarray] = {
        "exact": src.copy(),
        "flip": src[:, :, ::-1].copy(),
        "rot90": np.rot90(src, 1, axes=(1, 2)).copy() if src.shape[1] == src.shape[2] else src.copy(),
    }
    noisy = src.astype(np.float32) + rng.normal(0, 0.03 * 255, src.shape)
    out["noise_0.03"] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    for s in (1, 2):
        shifted = np.roll(src, s, axis=2)
        shifted[:, :, :s] = src[:, :, :1]  # replicate the edge instead of wrapping around
        out[f"shift_{s}px"] = shifted
    return out, idx
