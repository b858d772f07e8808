"""The copy search in pixel space: for every query image (synthetic, held-out or planted), the training
image it is most likely a copy of, and how close it is under four scores.

1. **Shortlist.** A cheap, exhaustive scan over the whole training split picks ``shortlist``
   candidates per query: Pearson correlation of 16x16 and of 8x8 block means over the 8
   rotations/flips (the 8x8 one tolerates shifts of a few pixels), plus the nearest training images
   in the learned copy descriptor's space when one is given (``extra``). Never a subsample of the
   training split: every training image is a candidate for every query.
2. **pixel**: the highest full-resolution absolute Pearson correlation with a candidate over the 8
   rotations/flips (niehues2024 2.5). |r| is invariant to every affine intensity change, inversion
   (a negative gain) included; so are the scores below.
   **smooth**: the same after a median filter and a Gaussian blur of both images.
3. **margin**: Fisher z of the best minus that of the second-best training image (a copy is much
   closer to its source than to anything else; the team's design notes, "Measured on real data",
   measured this ratio's power on noisy and shifted copies). **smooth_margin** and
   **aligned_margin**: the same for the smoothed and for the aligned score (the two best candidates).
4. **aligned**: the central ``template`` x ``template`` part of the query, resampled at every
   (scale, rotation) of a grid (scale/crop about 0.85-1.15, rotations of a few degrees), correlated
   with every window of a candidate within ``max_shift`` pixels of its centre: one batched matrix
   product gives every shift at once (template matching, normalised cross-correlation).
5. **tiles**: the aligned template cut into tiles x tiles tiles, each re-aligned within
   ``tile_shift`` pixels of its place (local deformations), pooled into one correlation weighted by
   the tiles' contrast.
6. **structure**: what the best pixel match leaves unexplained, noise or anatomy (:mod:`.residual`): the share
   of the query's spatial structure (lag-1 autocovariance) left in the residual of a clipping-aware
   least-squares fit of the match's gain and offset. Noisy and contrast-changed copies leave white residuals.

Every score is reported with the training index and the transform that produced it. All of it runs
in chunked torch operations on CPU or GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from synthgate.data.complexity import to_gray
from synthgate.evaluation.memorization.align import _aligned_scores, _tile_scores
from synthgate.evaluation.memorization.filters import median3x3, smooth  # noqa: F401 (median3x3 re-exported)
from synthgate.evaluation.memorization.residual import residual_structure
from synthgate.evaluation.memorization.stats import fisher_z

#: Rotations/flips aligned per candidate: the best two by the unaligned pixel correlation. With one, a copy
#: of a near-symmetric slice shifted by a few pixels correlates better, unaligned, with the mirrored source, and
#: the right alignment (r about 1) is never tried: at 64x64 on MedNIST 20 of 60 copies shifted by 4 px were then
#: less copy-like than some unseen patient's image (8 aligned under a flip; docs/leakage.md).
ALIGN_DIHEDRALS = 2


@dataclass(frozen=True)
class SearchSpec:
    """Geometry of the search for images of side ``size``."""

    size: int
    max_shift: int
    scales: tuple[float, ...]
    rotations: tuple[float, ...]
    template: int
    shortlist: int
    tiles: int
    tile_shift: int
    dihedrals: int = 2  # rotations/flips aligned per candidate (ALIGN_DIHEDRALS)
    shift_shortlist: bool = True  # the 8x8 shortlist scan also tries the query shifted by +-max_shift

    @property
    def variants(self) -> list[tuple[float, float]]:
        return [(s, r) for s in self.scales for r in self.rotations]

    def describe(self) -> dict[str, object]:
        return {"size": self.size, "max_shift_px": self.max_shift, "scales": list(self.scales),
                "rotations_deg": list(self.rotations), "template_px": self.template, "shortlist": self.shortlist,
                "tiles": self.tiles, "tile_shift_px": self.tile_shift, "dihedrals_aligned": self.dihedrals,
                "shift_shortlist": self.shift_shortlist,
                "transforms_per_candidate": 8 + self.dihedrals * len(self.variants) * (2 * self.max_shift + 1) ** 2}


def make_spec(size: int, shortlist: int = 32, max_shift: int | None = None,
              scales: tuple[float, ...] = (0.85, 0.925, 1.0, 1.075, 1.15),
              rotations: tuple[float, ...] = (-8.0, 0.0, 8.0), tiles: int = 3, dihedrals: int | None = None,
              shift_shortlist: bool = True) -> SearchSpec:
    """Defaults scale with resolution: shifts of +-4 px and tile shifts of +-2 px at 64x64; ``dihedrals``
    defaults to :data:`ALIGN_DIHEDRALS`."""
    ms = max(1, round(4 * size / 64)) if max_shift is None else int(max_shift)
    template = min(int(round(size * 0.75 / 2)) * 2, size - 2 * ms)
    if template < 8:
        raise ValueError(f"images of {size}x{size} px are too small for a shift search of +-{ms} px")
    nd = ALIGN_DIHEDRALS if dihedrals is None else int(dihedrals)
    if not 1 <= nd <= 8:
        raise ValueError(f"dihedrals must be 1 to 8 (rotations/flips aligned per candidate), not {nd}")
    return SearchSpec(size, ms, tuple(scales), tuple(rotations), template, int(shortlist), int(tiles),
                      max(1, round(2 * size / 64)), nd, bool(shift_shortlist))


def gray_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W[, C]) uint8 -> (N, H, W) float32 luma."""
    return torch.from_numpy(to_gray(np.asarray(images)).astype(np.float32))


def _norm(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    x = x - x.mean(dim=dim, keepdim=True)
    return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-6)


def dihedral8(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, 8, H, W): the 4 rotations of the image and of its mirror image."""
    out = []
    for flip in (False, True):
        y = torch.flip(x, dims=(-1,)) if flip else x
        out.extend(torch.rot90(y, k, dims=(-2, -1)) for k in range(4))
    return torch.stack(out, 1)


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(N, H, W) shifted by (dy, dx) px, edges replicated (as :func:`synthgate.evaluation.memorization.planted.modify`
    shifts a copy)."""
    if not dy and not dx:
        return x
    h, w = x.shape[-2:]
    ys = (torch.arange(h, device=x.device) - dy).clamp(0, h - 1)
    xs = (torch.arange(w, device=x.device) - dx).clamp(0, w - 1)
    return x[:, ys][:, :, xs]


def coarse(x: torch.Tensor, side: int) -> torch.Tensor:
    """(N, H, W) -> (N, side*side) normalised block means."""
    return _norm(F.adaptive_avg_pool2d(x[:, None], side)[:, 0].reshape(len(x), -1))


@dataclass
class TrainIndex:
    """The training split prepared once for many searches (held-out, synthetic and planted queries)."""

    images: torch.Tensor  # (N, H, W) float32 luma, on the search device
    coarse16: torch.Tensor  # (N, 256)
    coarse8: torch.Tensor  # (N, 64)
    full: torch.Tensor  # (N, H*W) normalised
    smooth: torch.Tensor  # (N, H*W) normalised, after smoothing (:func:`smooth`)

    @classmethod
    def build(cls, train: np.ndarray, device: torch.device) -> TrainIndex:
        g = gray_tensor(train).to(device)
        return cls(g, coarse(g, 16 if g.shape[-1] >= 16 else g.shape[-1]), coarse(g, 8 if g.shape[-1] >= 8 else 4),
                   _norm(g.reshape(len(g), -1)), _norm(smooth(g).reshape(len(g), -1)))

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class SearchResult:
    """Per query: the four scores (higher = more copy-like) and what produced them."""

    pixel: np.ndarray  # max Pearson r over candidates x 8 transforms
    smooth: np.ndarray  # the same after smoothing both images
    smooth_second: np.ndarray  # the same for the best other training image
    pixel_second: np.ndarray  # the same for the best other training image
    pixel_index: np.ndarray  # training index of the best
    pixel_transform: np.ndarray  # 0-7: rot90^k, k = t % 4, of the image (t < 4) or its mirror (t >= 4)
    aligned: np.ndarray  # best normalised cross-correlation over shifts x scales x rotations
    aligned_index: np.ndarray
    aligned_transform: np.ndarray  # (n, 5): dihedral, scale, rotation (deg), dy, dx
    aligned_second: np.ndarray  # the same for the best other training image
    tiles: np.ndarray  # tile-wise re-aligned correlation
    tiles_index: np.ndarray
    candidates: np.ndarray  # (n, k) shortlisted training indices
    structure: np.ndarray  # share of the query's structure its pixel match leaves unexplained (:mod:`.residual`)

    @property
    def margin(self) -> np.ndarray:
        """Fisher z of the best minus the second-best training image's correlation."""
        return fisher_z(self.pixel) - fisher_z(self.pixel_second)

    @property
    def smooth_margin(self) -> np.ndarray:
        """The margin after smoothing both images: a noisy copy (speckle, grain) is close to its source
        once the noise is smoothed away, and much closer to it than to any other training image."""
        return fisher_z(self.smooth) - fisher_z(self.smooth_second)

    @property
    def aligned_margin(self) -> np.ndarray:
        """The same margin after alignment: a shifted, re-cropped or rotated copy is much closer to its
        source than to any other training image once both are aligned; an unseen patient's image is not."""
        return fisher_z(self.aligned) - fisher_z(self.aligned_second)

    def take(self, idx: np.ndarray) -> SearchResult:
        return SearchResult(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


def shortlist(queries: torch.Tensor, index: TrainIndex, k: int, extra: np.ndarray | None = None,
              chunk: int = 256, max_shift: int = 0) -> np.ndarray:
    """Candidate training indices per query (see the module docstring), duplicates removed. The 8x8 scan takes,
    for each training image, the best of the query shifted by 0 and +-``max_shift`` px in each direction (edges
    replicated): a copy shifted by the search's largest shift otherwise loses its source from the shortlist
    (at 32x32 on MedNIST, 10 of 12 such copies that were missed)."""
    n = len(queries)
    k16 = min(len(index), max(1, k // 2))
    k8 = min(len(index), max(1, k - k16))
    out = []
    r16, r8 = index.coarse16.T.contiguous(), index.coarse8.T.contiguous()
    side16, side8 = int(math.isqrt(index.coarse16.shape[1])), int(math.isqrt(index.coarse8.shape[1]))
    offsets = [(dy, dx) for dy in (-max_shift, 0, max_shift) for dx in (-max_shift, 0, max_shift)] if max_shift \
        else [(0, 0)]
    for i in range(0, n, chunk):
        q = dihedral8(queries[i : i + chunk]).reshape(-1, *queries.shape[1:])
        c = len(q) // 8
        s16 = (coarse(q, side16) @ r16).abs().view(c, 8, -1).amax(dim=1)
        s8 = torch.stack([(coarse(_shifted(q, dy, dx), side8) @ r8).abs().view(c, 8, -1).amax(dim=1)
                          for dy, dx in offsets]).amax(dim=0)
        top16 = torch.topk(s16, k16, dim=1).indices
        s8.scatter_(1, top16, -2.0)  # take the 8x8 scan's best among the others
        top8 = torch.topk(s8, k8, dim=1).indices
        out.append(torch.cat([top16, top8], 1).cpu().numpy())
    cand = np.concatenate(out) if out else np.zeros((0, k16 + k8), np.int64)
    if extra is not None and len(extra):
        cand = np.concatenate([cand, np.asarray(extra, np.int64)], axis=1)
    # unique per row, padded with the row's first candidate (scores of repeats are ignored below)
    rows = []
    width = cand.shape[1]
    for r in cand:
        u = list(dict.fromkeys(r.tolist()))
        rows.append(u + [u[0]] * (width - len(u)))
    return np.array(rows, np.int64).reshape(n, width)


def _warp_templates(d8: torch.Tensor, spec: SearchSpec) -> torch.Tensor:
    """(c, 8, H, W) queries' rotations/flips -> (c, 8, V, T*T): the central template of each,
    resampled at each (scale, rotation): the query mapped back by the hypothesised copy transform."""
    c, _, h, w = d8.shape
    q = d8
    variants = spec.variants
    t = spec.template
    frac = t / h
    theta = torch.tensor([[[s * math.cos(math.radians(r)) * frac, -s * math.sin(math.radians(r)) * frac, 0.0],
                           [s * math.sin(math.radians(r)) * frac, s * math.cos(math.radians(r)) * frac, 0.0]]
                          for s, r in variants], dtype=q.dtype, device=q.device)
    grid = F.affine_grid(theta, [len(variants), 1, t, t], align_corners=False).reshape(1, len(variants) * t, t, 2)
    d8 = d8.reshape(c * 8, 1, h, w)
    out = F.grid_sample(d8, grid.expand(c * 8, -1, -1, -1), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return _norm(out.reshape(c, 8, len(variants), t * t))


#: The refinement around the best alignment: relative scales, rotations (deg) and sub-pixel offsets (px).
REFINE_SCALES = (0.975, 1.0, 1.025)
REFINE_ROTATIONS = (-4.0, 0.0, 4.0)
REFINE_OFFSETS = (-0.5, 0.0, 0.5)


def _refine(d8: torch.Tensor, ref: torch.Tensor, spec: SearchSpec, dih: torch.Tensor, scale: torch.Tensor,
            rot: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Best correlation over a finer grid around a found alignment: relative scale, rotation and
    sub-pixel offsets (a crop resized back rarely lands on whole pixels). ``d8`` (b, 8, H, W) the
    queries' rotations/flips, ``ref`` (b, H, W) their candidates, the rest (b,) the alignment found on
    the coarse grid."""
    b, h = d8.shape[0], d8.shape[-1]
    q = d8
    t = spec.template
    frac = t / h
    grid_s = torch.tensor(REFINE_SCALES, device=q.device)
    grid_r = torch.tensor(REFINE_ROTATIONS, device=q.device)
    grid_o = torch.tensor(REFINE_OFFSETS, device=q.device)
    ss, rr, oy, ox = torch.meshgrid(grid_s, grid_r, grid_o, grid_o, indexing="ij")
    ss, rr, oy, ox = (g.reshape(-1) for g in (ss, rr, oy, ox))
    nv = len(ss)
    sc = scale[:, None] * ss[None]  # (b, nv)
    an = torch.deg2rad(rot[:, None] + rr[None])
    theta = torch.stack([torch.stack([sc * torch.cos(an) * frac, -sc * torch.sin(an) * frac,
                                      (2 * ox[None] / h).expand(b, nv)], -1),
                         torch.stack([sc * torch.sin(an) * frac, sc * torch.cos(an) * frac,
                                      (2 * oy[None] / h).expand(b, nv)], -1)], -2).reshape(b * nv, 2, 3)
    src = d8[torch.arange(b, device=q.device), dih]  # (b, H, W)
    # the nv grids of one query side by side in one sampling grid: each image is sampled where it lies
    grid = F.affine_grid(theta, [b * nv, 1, t, t], align_corners=False).reshape(b, nv * t, t, 2)
    warped = F.grid_sample(src[:, None], grid, mode="bilinear", padding_mode="border",
                           align_corners=False).reshape(b, nv, t * t)
    off = (h - t) // 2
    ys = (off + dy).long().clamp(0, h - t)
    xs = (off + dx).long().clamp(0, h - t)
    rows = torch.arange(t, device=q.device)
    yy = (ys[:, None] + rows[None])[:, :, None].expand(b, t, t)
    xx = (xs[:, None] + rows[None])[:, None, :].expand(b, t, t)
    win = ref[torch.arange(b, device=q.device)[:, None, None], yy, xx].reshape(b, t * t)
    return torch.einsum("bvd,bd->bv", _norm(warped), _norm(win)).abs().amax(dim=1)


def _align(d8: torch.Tensor, full: torch.Tensor, refs: torch.Tensor, spec: SearchSpec
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The aligned score of each (query, candidate): the candidate's ``spec.dihedrals`` best rotations/flips by the
    unaligned pixel correlation ``full`` (c, k, 8), each aligned over scale x rotation x shift against ``refs``
    (c*k, H, W); the candidate keeps the better. -> (best |r| (c, k), its index over variants x shifts, the
    rotation/flip it was found under, the warped templates of that rotation/flip (c, k, V, T*T))."""
    c, k = full.shape[:2]
    nd = spec.dihedrals
    rows = torch.arange(c, device=full.device)
    top_t = torch.topk(full, nd, dim=2).indices  # (c, k, nd)
    t_all = _warp_templates(d8, spec)[rows[:, None, None], top_t]  # (c, k, nd, V, T*T)
    s = _aligned_scores(t_all.reshape(c, k, nd * len(spec.variants), -1), refs, spec).reshape(c, k, nd, -1)
    pair_d, arg_d = s.max(dim=3)  # (c, k, nd)
    pair, dsel = pair_d.max(dim=2)  # (c, k)
    tsel = t_all[rows[:, None], torch.arange(k, device=full.device)[None, :], dsel]
    return pair, arg_d.gather(2, dsel[..., None])[..., 0], top_t.gather(2, dsel[..., None])[..., 0], tsel


def search(queries: np.ndarray, index: TrainIndex, spec: SearchSpec, extra: np.ndarray | None = None,
           chunk: int | None = None, tile_top: int = 3, memory_mb: int = 256,
           advance: Callable[[int], None] | None = None) -> SearchResult:
    """Run the search (module docstring) for ``queries`` (N, H, W[, C]) uint8 against ``index``;
    ``chunk`` queries at a time (default: as many as fit in about ``memory_mb`` of working memory)."""
    device = index.images.device
    q_all = gray_tensor(queries).to(device)
    if q_all.shape[1:] != index.images.shape[1:]:
        raise ValueError(f"queries are {tuple(q_all.shape[1:])}, training images {tuple(index.images.shape[1:])}")
    cand = shortlist(q_all, index, spec.shortlist, extra, max_shift=spec.max_shift if spec.shift_shortlist else 0)
    n, k = cand.shape
    side = 2 * spec.max_shift + 1
    if chunk is None:
        nv = spec.dihedrals * len(spec.variants)
        per_query = k * (spec.template ** 2 * (nv + side * side + 8) + nv * side * side) * 4
        chunk = max(1, min(256, memory_mb * 2**20 // max(per_query, 1)))
    out = {f: np.zeros(n, np.float32) for f in ("pixel", "smooth", "smooth_second", "pixel_second", "aligned",
                                                 "aligned_second", "tiles", "structure")}
    idx = {f: np.zeros(n, np.int64) for f in ("pixel_index", "aligned_index", "tiles_index")}
    ptrans = np.zeros(n, np.int64)
    atrans = np.zeros((n, 5), np.float32)
    scales = torch.tensor([s for s, _ in spec.variants], device=device)
    rots = torch.tensor([r for _, r in spec.variants], device=device)
    for i in range(0, n, chunk):
        q = q_all[i : i + chunk]
        c = len(q)
        cj = torch.from_numpy(cand[i : i + chunk]).to(device)  # (c, k)
        repeat = torch.zeros_like(cj, dtype=torch.bool)
        repeat[:, 1:] = cj[:, 1:] == cj[:, :1]  # padding repeats of the first candidate
        # pixel: full-resolution correlation over the 8 rotations/flips
        d8 = dihedral8(q)  # (c, 8, H, W)
        qd = _norm(d8.reshape(c, 8, -1))  # (c, 8, d)
        full = torch.einsum("ctd,ckd->ckt", qd, index.full[cj]).abs()  # (c, k, 8); |r|: inverted copies too
        per_cand, best_t = full.max(dim=2)
        per_cand = per_cand.masked_fill(repeat, -2.0)
        top2 = torch.topk(per_cand, min(2, k), dim=1)
        out["pixel"][i : i + c] = top2.values[:, 0].cpu().numpy()
        out["pixel_second"][i : i + c] = (top2.values[:, -1] if k > 1 else torch.full((c,), -1.0)).cpu().numpy()
        idx["pixel_index"][i : i + c] = cj.gather(1, top2.indices[:, :1])[:, 0].cpu().numpy()
        ptrans[i : i + c] = best_t.gather(1, top2.indices[:, :1])[:, 0].cpu().numpy()
        rows = torch.arange(c, device=device)
        best = top2.indices[:, 0]  # structure: what the best pixel match leaves unexplained, noise or anatomy
        out["structure"][i : i + c] = residual_structure(d8[rows, best_t[rows, best]], index.images[cj[rows, best]]).cpu().numpy()
        qs = _norm(dihedral8(smooth(q)).reshape(c, 8, -1))
        sm = torch.einsum("ctd,ckd->ckt", qs, index.smooth[cj]).abs().amax(dim=2).masked_fill(repeat, -2.0)
        sm2 = torch.topk(sm, min(2, k), dim=1).values
        out["smooth"][i : i + c] = sm2[:, 0].cpu().numpy()
        out["smooth_second"][i : i + c] = (sm2[:, -1].clamp_min(-1.0) if k > 1 else torch.full((c,), -1.0)).cpu().numpy()
        pair, arg, best_ta, tsel = _align(d8, full, index.images[cj.reshape(-1)], spec)
        pair = pair.masked_fill(repeat, -2.0)
        best_pair = pair.argmax(dim=1)
        a = arg[rows, best_pair]
        v, p = a // (side * side), a % (side * side)
        out["aligned"][i : i + c] = pair[rows, best_pair].cpu().numpy()
        idx["aligned_index"][i : i + c] = cj[rows, best_pair].cpu().numpy()
        atrans[i : i + c] = torch.stack([best_ta[rows, best_pair].float(), scales[v], rots[v],
                                         (p // side - spec.max_shift).float(),
                                         (p % side - spec.max_shift).float()], 1).cpu().numpy()
        # refinement of the best two candidates' alignments on a finer grid (sub-pixel offsets)
        r2 = min(2, k)
        top_r = torch.topk(pair, r2, dim=1).indices  # (c, r2)
        a_r = arg.gather(1, top_r)
        v_r, p_r = a_r // (side * side), a_r % (side * side)
        fine = _refine(d8.repeat_interleave(r2, 0), index.images[cj.gather(1, top_r).reshape(-1)], spec,
                       best_ta.gather(1, top_r).reshape(-1), scales[v_r].reshape(-1), rots[v_r].reshape(-1),
                       (p_r // side - spec.max_shift).reshape(-1), (p_r % side - spec.max_shift).reshape(-1))
        fine = fine.view(c, r2).masked_fill(repeat.gather(1, top_r), -2.0)
        fb, farg = fine.max(dim=1)
        better = fb > pair[rows, best_pair]
        if better.any():
            out["aligned"][i : i + c] = torch.maximum(fb, pair[rows, best_pair]).cpu().numpy()
            idx["aligned_index"][i : i + c] = torch.where(better, cj.gather(1, top_r)[rows, farg],
                                                          cj[rows, best_pair]).cpu().numpy()
        # the best other training image after alignment: the lower of the two refined candidates (the
        # third candidate's coarse score is below both); -1 when the shortlist holds one image only
        both = torch.maximum(fine, pair.gather(1, top_r)).masked_fill(repeat.gather(1, top_r), -1.0)
        out["aligned_second"][i : i + c] = (both.min(dim=1).values if r2 > 1 else torch.full((c,), -1.0)).cpu().numpy()
        # tiles: the top candidates' aligned templates, re-aligned tile by tile
        r = min(tile_top, k)
        top = torch.topk(pair, r, dim=1).indices  # (c, r)
        a_sel = arg.gather(1, top)
        v_sel, p_sel = a_sel // (side * side), a_sel % (side * side)
        t = spec.template
        tmpl = tsel[rows[:, None], top, v_sel].reshape(c * r, t, t)
        refs = index.images[cj.gather(1, top).reshape(-1)]
        ts = _tile_scores(tmpl, refs, spec, (p_sel // side - spec.max_shift).reshape(-1),
                          (p_sel % side - spec.max_shift).reshape(-1)).view(c, r)
        ts = ts.masked_fill(repeat.gather(1, top), -2.0)
        tb, targ = ts.max(dim=1)
        out["tiles"][i : i + c] = tb.cpu().numpy()
        idx["tiles_index"][i : i + c] = cj.gather(1, top)[rows, targ].cpu().numpy()
        if advance is not None:
            advance(c)
    return SearchResult(out["pixel"], out["smooth"], out["smooth_second"], out["pixel_second"], idx["pixel_index"], ptrans, out["aligned"],
                        idx["aligned_index"], atrans, out["aligned_second"], out["tiles"], idx["tiles_index"], cand,
                        out["structure"])

