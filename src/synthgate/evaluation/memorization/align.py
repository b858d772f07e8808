"""The alignment kernels of the copy search (:mod:`.search`): the normalised cross-correlation of warped
templates with every window of their candidates within the search's shifts (one batched matrix product, the
windows' norms from box sums), and the tile-wise re-alignment."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from synthgate.evaluation.memorization.search import SearchSpec


def _aligned_scores(tsel: torch.Tensor, ref: torch.Tensor, spec: SearchSpec) -> torch.Tensor:
    """|normalised cross-correlation| of templates (c, k, V, T*T), each of zero mean and unit norm,
    with their candidates (c*k, H, W) at every shift within max_shift -> (c, k, V, P). The windows are
    not normalised one by one: for such a template t, t . (w - mean w) = t . w, and each window's norm
    comes from box sums of its region (integral images), so the windows are only read once, by the
    matrix product, a few candidates at a time (together 5x faster on the CPU than normalising every
    window of a chunk, ``benchmarks/copy_search_speed.py``).
    A window without contrast (a constant one) scores 0."""
    c, k = tsel.shape[:2]
    h = ref.shape[-1]
    t, ms = spec.template, spec.max_shift
    off = (h - t) // 2 - ms
    region = ref[:, off : off + t + 2 * ms, off : off + t + 2 * ms]
    region = region - region.mean(dim=(1, 2), keepdim=True)  # small sums: t . w stays exact for flat windows
    # every window of a few candidates at a time, so that they are written and read while in the CPU's cache
    flat = tsel.reshape(c * k, -1, t * t)
    num = torch.empty(c * k, flat.shape[1], (2 * ms + 1) ** 2, dtype=tsel.dtype, device=tsel.device)
    step = 4 if tsel.device.type == "cpu" else len(flat)
    for i in range(0, len(flat), step):
        torch.bmm(flat[i : i + step], _patches(region[i : i + step], t).transpose(1, 2), out=num[i : i + step])
    num = num.view(c, k, -1, num.shape[-1])
    r = region.double()
    s1, s2 = _box_sums(r, t), _box_sums(r * r, t)
    var = (s2 - s1 * s1 / (t * t)).reshape(c, k, 1, -1)  # sum of squared deviations, in grey levels^2
    # uint8 images: a window that is not constant has var >= 1 - 1/(t t)
    return torch.where(var > 0.5, num / var.clamp_min(0.5).sqrt().to(num.dtype), torch.zeros_like(num)).abs()


def _box_sums(x: torch.Tensor, size: int) -> torch.Tensor:
    """(b, L, L) -> (b, (L-size+1)^2): the sum of every size x size window, in the order of
    :func:`_patches` (row-major over the window's top-left corner)."""
    i = F.pad(x.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    box = i[:, size:, size:] - i[:, :-size, size:] - i[:, size:, :-size] + i[:, :-size, :-size]
    return box.reshape(len(x), -1)


def _patches(x: torch.Tensor, size: int) -> torch.Tensor:
    """(b, L, L) -> (b, P, size*size): every size x size patch (stride 1), by strided views (``F.unfold``'s
    im2col is much slower on the CPU for large kernels)."""
    b = x.shape[0]
    return x.unfold(1, size, 1).unfold(2, size, 1).reshape(b, -1, size * size)


def _tile_scores(tmpl: torch.Tensor, ref: torch.Tensor, spec: SearchSpec, dy: torch.Tensor,
                 dx: torch.Tensor) -> torch.Tensor:
    """Tile-wise score of aligned templates (b, T, T) against their candidates (b, H, W) placed at
    shift (dy, dx): each tile's best correlation within ``tile_shift``, pooled by tile contrast."""
    b, t, _ = tmpl.shape
    h = ref.shape[-1]
    nt, ts = spec.tiles, spec.tile_shift
    side = t // nt
    length = side + 2 * ts
    off = (h - t) // 2
    num = torch.zeros(b, device=tmpl.device)
    den = torch.zeros(b, device=tmpl.device)
    rows = torch.arange(length, device=tmpl.device)
    for ty in range(nt):
        for tx in range(nt):
            a = tmpl[:, ty * side : (ty + 1) * side, tx * side : (tx + 1) * side].reshape(b, -1)
            a = a - a.mean(1, keepdim=True)
            an = a.norm(dim=1)
            y0 = (off + ty * side + dy - ts).clamp(0, h - length)
            x0 = (off + tx * side + dx - ts).clamp(0, h - length)
            yy = (y0[:, None] + rows[None])[:, :, None].expand(b, length, length)
            xx = (x0[:, None] + rows[None])[:, None, :].expand(b, length, length)
            region = ref[torch.arange(b, device=ref.device)[:, None, None], yy, xx]
            cols = _patches(region, side)
            cols = cols - cols.mean(2, keepdim=True)
            ncc = (torch.einsum("bd,bpd->bp", a, cols) / (an[:, None] * cols.norm(dim=2)).clamp_min(1e-6)).abs()
            num += ncc.amax(dim=1) * an
            den += an
    return num / den.clamp_min(1e-6)
