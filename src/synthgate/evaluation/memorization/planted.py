"""Planted copies of training images: the evidence of each detector's power.

Every evaluation plants modified copies of training images drawn from the *whole* training split
(never a subsample: a copy of any patient must be findable) and scores them exactly as it scores the
synthetic images. The kinds named in :data:`KINDS` are the copy modifications the release policy
demands power against (``memorization.min_planted_detection``); blends are measured and reported but
not demanded (:data:`NOT_RULED`). Pixel amounts are given at 64x64 and scale with the resolution.

Modifications a detector is checked on but that are not planted here live in
``benchmarks/copy_modifications.py``: the evaluation never sees them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: kind -> what it is (the report prints this).
KINDS: dict[str, str] = {
    "exact": "an exact copy",
    "flip": "mirrored left-right",
    "rot90": "rotated by 90 degrees",
    "shift_1px": "shifted by 1 px (at 64x64) in a random direction, edges replicated",
    "shift_2px": "shifted by 2 px (at 64x64)",
    "shift_4px": "shifted by 4 px (at 64x64)",
    "crop_resize": "central 90% cropped and resized back (bicubic)",
    "brightness_contrast": "contrast x1.3 and brightness +15 grey levels",
    "noise": "Gaussian noise, sigma 0.03 of the grey range",
    "blend": "70/30 blend with another training image",
}
def shift_px(kind: str, size: int) -> int:
    """The pixels a ``shift_Npx`` copy moves at images of side ``size`` (N is given at 64x64; at least 1)."""
    return max(1, round(int(kind.removeprefix("shift_").removesuffix("px")) * size / 64))


def describe(kind: str, size: int) -> str:
    """What ``kind`` is at images of side ``size``: the pixel amounts as planted at that resolution (they are
    given at 64x64 in :data:`KINDS` and scale with it)."""
    if kind.startswith("shift_"):
        n = int(kind.removeprefix("shift_").removesuffix("px"))
        at = f"{shift_px(kind, size)} px at {size}x{size}" + (f" ({n} px at 64x64)" if size != 64 else "")
        return f"shifted by {at} in a random direction, edges replicated"
    return KINDS[kind]


#: Kinds reported but not demanded by the policy rule (a 30% blend is half a new image).
NOT_RULED = ("blend",)


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    h, w = x.shape[:2]
    return x[np.clip(np.arange(h) - dy, 0, h - 1)][:, np.clip(np.arange(w) - dx, 0, w - 1)]


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) uint8 -> (size, size, C), bicubic per channel."""
    chans = [np.asarray(Image.fromarray(x[..., c]).resize((size, size), Image.Resampling.BICUBIC))
             for c in range(x.shape[-1])]
    return np.stack(chans, -1)


def modify(kind: str, x: np.ndarray, rng: np.random.Generator, other: np.ndarray) -> np.ndarray:
    """One modified copy of ``x`` (H, W, C) uint8; ``other`` is the image blended in."""
    h = x.shape[0]
    if kind == "exact":
        return x.copy()
    if kind == "flip":
        return x[:, ::-1].copy()
    if kind == "rot90":
        return np.rot90(x, 1).copy() if x.shape[0] == x.shape[1] else x[::-1].copy()
    if kind.startswith("shift_"):
        s = shift_px(kind, h)
        a = rng.uniform(0, 2 * np.pi)
        dy, dx = int(round(s * np.sin(a))), int(round(s * np.cos(a)))
        if dy == 0 and dx == 0:
            dx = s
        return _shift(x, dy, dx)
    if kind == "crop_resize":
        c = int(round(h * 0.9))
        o = (h - c) // 2
        return _resize(np.ascontiguousarray(x[o : o + c, o : o + c]), h)
    if kind == "brightness_contrast":
        return np.clip(np.rint((x.astype(np.float32) - 128) * 1.3 + 128 + 15), 0, 255).astype(np.uint8)
    if kind == "noise":
        return np.clip(np.rint(x + rng.normal(0, 0.03 * 255, x.shape)), 0, 255).astype(np.uint8)
    if kind == "blend":
        return np.clip(np.rint(0.7 * x.astype(np.float32) + 0.3 * other), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown planted copy kind {kind!r}; known: {', '.join(KINDS)}")


def plant(train: np.ndarray, n: int, seed: int, kinds: tuple[str, ...] | None = None
          ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``n`` modified copies per kind of training images drawn from the whole of ``train`` (N, H, W, C);
    returns {kind: copies} and {kind: the training indices they copy}. Each kind draws its own sources."""
    rng = np.random.default_rng(seed)
    copies: dict[str, np.ndarray] = {}
    sources: dict[str, np.ndarray] = {}
    for kind in kinds or tuple(KINDS):
        idx = rng.choice(len(train), size=min(n, len(train)), replace=False)
        others = rng.choice(len(train), size=len(idx), replace=True)
        copies[kind] = np.stack([modify(kind, np.asarray(train[i]), rng, np.asarray(train[j]))
                                 for i, j in zip(idx, others, strict=True)])
        sources[kind] = idx
    return copies, sources
