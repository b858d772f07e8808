"""Decoding and geometry: any 2D image (bytes, array, DICOM pixels) -> canonical uint8 array."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm"})


class ImageDecodeError(Exception):
    """Raised by the decoders; the caller adds the file name and turns it into a DataError."""


@dataclass(frozen=True)
class Geometry:
    resolution: int
    channels: int
    resize: str  # crop | pad | stretch


@dataclass
class Decoded:
    image: np.ndarray  # (H, W, C) uint8, canonical geometry
    orig_height: int
    orig_width: int
    orig_channels: int
    nan_fraction: float


def to_uint8(arr: np.ndarray) -> tuple[np.ndarray, float]:
    """Scale an image array of any dtype to uint8. Returns the array and its fraction of NaN pixels.

    uint8 passes unchanged; other integer types and floats are min-max scaled to 0..255 (floats
    already in [0, 1] are multiplied by 255). NaN/inf pixels are counted and set to 0.
    """
    if arr.dtype == np.uint8:
        return arr, 0.0
    a = arr.astype(np.float64)
    bad = ~np.isfinite(a)
    nan_fraction = float(bad.mean()) if a.size else 0.0
    if bad.any():
        a[bad] = np.nan
    finite = a[~bad]
    if finite.size == 0:
        return np.zeros(arr.shape, np.uint8), nan_fraction
    lo, hi = float(finite.min()), float(finite.max())
    if np.issubdtype(arr.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    elif np.issubdtype(arr.dtype, np.integer) and lo >= 0 and hi <= 255:
        lo, hi = 0.0, 255.0
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = np.nan_to_num((a - lo) * scale, nan=0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), nan_fraction


def _fit(img: Image.Image, geo: Geometry) -> Image.Image:
    r = geo.resolution
    w, h = img.size
    if (w, h) == (r, r):
        return img
    if geo.resize == "stretch":
        return img.resize((r, r), Image.Resampling.BICUBIC)
    if geo.resize == "crop":
        s = r / min(w, h)
        nw, nh = max(r, round(w * s)), max(r, round(h * s))
        img = img.resize((nw, nh), Image.Resampling.BICUBIC) if (nw, nh) != (w, h) else img
        left, top = (nw - r) // 2, (nh - r) // 2
        return img.crop((left, top, left + r, top + r))
    # pad: scale the long side to r and centre on a black canvas
    s = r / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    canvas = Image.new(img.mode, (r, r))
    canvas.paste(img, ((r - nw) // 2, (r - nh) // 2))
    return canvas


def from_array(arr: np.ndarray, geo: Geometry) -> Decoded:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array of any dtype -> canonical image."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ImageDecodeError(f"unsupported image array shape {a.shape}; expected (H, W) or (H, W, 3)")
    if min(a.shape[:2]) < 1:
        raise ImageDecodeError(f"empty image array of shape {a.shape}")
    orig_c = 1 if a.ndim == 2 else a.shape[-1]
    a8, nan_fraction = to_uint8(a)
    img = Image.fromarray(a8)
    return _finish(img, geo, a.shape[0], a.shape[1], orig_c, nan_fraction)


def from_bytes(data: bytes, geo: Geometry) -> Decoded:
    """Encoded image file bytes (PNG, JPEG, TIFF, ...) -> canonical image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = img.mode
            w, h = img.size
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(img)
                return from_array(arr, geo)
            orig_c = {"1": 1, "L": 1, "P": 3, "LA": 1, "RGB": 3, "RGBA": 3, "CMYK": 3, "YCbCr": 3}.get(mode, 3)
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            return _finish(img, geo, h, w, orig_c, 0.0)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as e:  # PIL refuses to allocate it: a damaged header or a decompression bomb
        raise ImageDecodeError(f"image too large to decode ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageDecodeError(f"cannot decode image ({e})") from None


def _finish(img: Image.Image, geo: Geometry, h: int, w: int, c: int, nan_fraction: float) -> Decoded:
    img = img.convert("L" if geo.channels == 1 else "RGB")
    img = _fit(img, geo)
    out = np.asarray(img, dtype=np.uint8)
    if out.ndim == 2:
        out = out[..., None]
    return Decoded(out, h, w, c, nan_fraction)
