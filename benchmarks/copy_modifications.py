"""Copy modifications that synthgate's evaluation never plants: the detectors are checked on them in
``benchmarks/memorization_gate.py`` and nowhere else (no test, no planted self-test, no descriptor
training uses this module). ``IN_DESCRIPTOR_AUGMENTATIONS`` names the few that resemble an
augmentation the copy descriptor is trained with, so that a reader can tell "not planted" from
"never seen by any part of the detector". Pixel amounts are given at 64x64 and scale with resolution.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

#: kind -> description
KINDS: dict[str, str] = {
    "gamma_0.6": "gamma 0.6 (a non-affine intensity change)",
    "sharpen": "unsharp mask (radius 2, 150%)",
    "posterize_3bit": "posterized to 3 bits",
    "salt_pepper_4pct": "4% salt-and-pepper pixels",
    "cutout": "a quarter-side square replaced by the median grey",
    "zoom_out_0.88": "shrunk to 88% and padded with the median grey",
    "rotate_7deg_shift": "rotated by 7 degrees and shifted by 3 px",
    "flip_shift_contrast": "mirrored, shifted by (3, -2) px, contrast x0.8",
    "vertical_flip": "mirrored top-bottom",
    "invert": "grey levels inverted (255 - x)",
    "jpeg_q30": "JPEG quality 30 (libjpeg via Pillow)",
    "gaussian_blur": "Gaussian blur, radius 1.5 px",
    "elastic": "smooth elastic deformation (scipy map_coordinates)",
    # added 2026-12-01, before any run of the detector on them; speckle_0.15 and shear_0.12 then
    # failed on PneumoniaMNIST and the smooth_margin detector was added after seeing them: from then
    # on those two rows are design inputs, not held-out evidence (the four kinds below are)
    "shear_0.12": "horizontal shear 0.12 about the centre",
    "rotate_4deg_zoom_1.06": "rotated by 4 degrees and magnified 1.06x about the centre",
    "down_up_2x": "downsampled to half size (box) and upsampled back (bicubic)",
    "speckle_0.15": "multiplicative speckle noise, sigma 0.15",
    "motion_blur_5": "horizontal motion blur over 5 px (at 64x64)",
    # added 2026-12-01 after smooth_margin, before any run of the detector on them
    "poisson_dose_20": "Poisson (photon) noise at 20 counts per unit intensity",
    "median_3": "3x3 median filter",
    "gamma_1.5_shift_2": "gamma 1.5 and shifted by (2, 2) px (at 64x64)",
    "keystone": "perspective tilt: top edge narrowed by 8% (at 64x64)",
    # rician_0.1 was measured in the smoothing-scale sweep that chose smooth()'s 1.5 px (2026-12-02):
    # a design input like poisson_dose_20. The three after it were added before any run on them.
    "rician_0.1": "Rician (magnitude MR) noise, sigma 0.1 of full scale",
    "bias_field_0.3": "a smooth multiplicative intensity field (MR bias field), 0.7x to 1.3x",
    "gibbs_k0.5": "k-space truncated to the central half per axis (Gibbs ringing, partial resolution)",
    "stripes": "additive periodic stripes (amplitude 12 grey levels, period 6 px at 64x64), random phase",
    # bias_field_0.3 (2/5 gates failed) and shear_0.12 (4/5) then passed the gate on PneumoniaMNIST; an
    # exceedance test at the null's maximum was tried after seeing them and not kept (it cost more in
    # Bonferroni than it found: shear 3/5, bias field 2/5). The three below were added before any run.
    "ghosting_0.2": "an MR ghost: 20% of the image added back shifted by half the field of view (vertically)",
    "defocus_disk_2": "defocus: mean over a disk of radius 2 px (at 64x64)",
    "window_clip": "re-windowed: clipped to its 10th-90th percentiles and stretched to 0-255",
    # 2026-12-07: the structure detector (evaluation/memorization/residual.py) was designed on the *planted*
    # kinds noise, brightness_contrast and crop_resize of MedNIST (their residuals against their sources), with
    # none of the kinds above run on it first; poisson_dose_20, rician_0.1 and speckle_0.15 were known blind spots
    # of the correlation detectors from the tables in docs/leakage.md, so their rows after it are not blind.
}
IN_DESCRIPTOR_AUGMENTATIONS = ("jpeg_q30", "gaussian_blur", "elastic")


def _pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(x[..., 0])


def _np(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.uint8)[..., None]


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    h, w = x.shape[:2]
    return x[np.clip(np.arange(h) - dy, 0, h - 1)][:, np.clip(np.arange(w) - dx, 0, w - 1)]


def modify(kind: str, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A modified copy of the grey image ``x`` (H, W, 1) uint8."""
    h = x.shape[0]
    px = h / 64
    med = int(np.median(x))
    if kind == "gamma_0.6":
        return np.clip(np.rint(255 * (x / 255.0) ** 0.6), 0, 255).astype(np.uint8)
    if kind == "sharpen":
        return _np(_pil(x).filter(ImageFilter.UnsharpMask(radius=2, percent=150, threshold=0)))
    if kind == "posterize_3bit":
        return (x & 0xE0).astype(np.uint8)
    if kind == "salt_pepper_4pct":
        y = x.copy()
        m = rng.random(x.shape[:2])
        y[m < 0.02] = 0
        y[m > 0.98] = 255
        return y
    if kind == "cutout":
        y = x.copy()
        s = h // 4
        oy, ox = rng.integers(0, h - s, 2)
        y[oy : oy + s, ox : ox + s] = med
        return y
    if kind == "zoom_out_0.88":
        c = int(round(h * 0.88))
        out = np.full((h, h), med, np.uint8)
        o = (h - c) // 2
        out[o : o + c, o : o + c] = np.asarray(_pil(x).resize((c, c), Image.Resampling.BICUBIC))
        return out[..., None]
    if kind == "rotate_7deg_shift":
        y = _np(_pil(x).rotate(7, resample=Image.Resampling.BILINEAR, fillcolor=med))
        s = max(1, round(3 * px))
        return _shift(y, s, 0)
    if kind == "flip_shift_contrast":
        y = _shift(x[:, ::-1], max(1, round(3 * px)), -max(1, round(2 * px)))
        return np.clip(np.rint((y.astype(np.float32) - 128) * 0.8 + 128), 0, 255).astype(np.uint8)
    if kind == "vertical_flip":
        return x[::-1].copy()
    if kind == "invert":
        return (255 - x).astype(np.uint8)
    if kind == "jpeg_q30":
        buf = io.BytesIO()
        _pil(x).save(buf, format="JPEG", quality=30)
        return _np(Image.open(buf).convert("L"))
    if kind == "gaussian_blur":
        return _np(_pil(x).filter(ImageFilter.GaussianBlur(radius=1.5 * px)))
    if kind == "elastic":
        from scipy.ndimage import gaussian_filter, map_coordinates

        dx = gaussian_filter(rng.uniform(-1, 1, (h, h)), 4 * px) * 6 * px
        dy = gaussian_filter(rng.uniform(-1, 1, (h, h)), 4 * px) * 6 * px
        yy, xx = np.meshgrid(np.arange(h), np.arange(h), indexing="ij")
        out = map_coordinates(x[..., 0].astype(np.float32), [yy + dy, xx + dx], order=1, mode="reflect")
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)[..., None]
    if kind == "shear_0.12":
        c = (h - 1) / 2
        img = _pil(x).transform((h, h), Image.Transform.AFFINE, (1, 0.12, -0.12 * c, 0, 1, 0),
                                resample=Image.Resampling.BILINEAR, fillcolor=med)
        return _np(img)
    if kind == "rotate_4deg_zoom_1.06":
        y = _pil(x).rotate(4, resample=Image.Resampling.BICUBIC, fillcolor=med)
        c = int(round(h / 1.06))
        o = (h - c) // 2
        return _np(y.crop((o, o, o + c, o + c)).resize((h, h), Image.Resampling.BICUBIC))
    if kind == "down_up_2x":
        return _np(_pil(x).resize((h // 2, h // 2), Image.Resampling.BOX).resize((h, h), Image.Resampling.BICUBIC))
    if kind == "speckle_0.15":
        y = x.astype(np.float32) * (1 + 0.15 * rng.standard_normal(x.shape))
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)
    if kind == "motion_blur_5":
        from scipy.ndimage import uniform_filter1d

        n = max(2, round(5 * px))
        return np.clip(np.rint(uniform_filter1d(x.astype(np.float32), n, axis=1, mode="nearest")), 0,
                       255).astype(np.uint8)
    if kind == "poisson_dose_20":
        y = rng.poisson(np.maximum(x.astype(np.float64), 0) / 255.0 * 20) / 20 * 255.0
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)
    if kind == "median_3":
        return _np(_pil(x).filter(ImageFilter.MedianFilter(3)))
    if kind == "gamma_1.5_shift_2":
        y = np.clip(np.rint(255 * (x / 255.0) ** 1.5), 0, 255).astype(np.uint8)
        s = max(1, round(2 * px))
        return _shift(y, s, s)
    if kind == "keystone":
        d = 0.04 * h
        quad = (d, 0, 0, h, h, h, h - d, 0)  # source corners: upper-left, lower-left, lower-right, upper-right
        return _np(_pil(x).transform((h, h), Image.Transform.QUAD, quad, resample=Image.Resampling.BILINEAR,
                                     fillcolor=med))
    if kind == "rician_0.1":
        f = x[..., 0].astype(np.float64) / 255.0
        re_, im = f + 0.1 * rng.standard_normal(f.shape), 0.1 * rng.standard_normal(f.shape)
        return np.clip(np.rint(255 * np.hypot(re_, im)), 0, 255).astype(np.uint8)[..., None]
    if kind == "bias_field_0.3":
        yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, h), indexing="ij")
        a, b, c = rng.uniform(-1, 1, 3)
        field = a * yy + b * xx + c * (yy**2 + xx**2 - 2 / 3)
        field = 1 + 0.3 * field / max(1e-6, float(np.abs(field).max()))
        return np.clip(np.rint(x[..., 0] * field), 0, 255).astype(np.uint8)[..., None]
    if kind == "gibbs_k0.5":
        k = np.fft.fftshift(np.fft.fft2(x[..., 0].astype(np.float64)))
        keep = np.zeros_like(k)
        lo, hi = h // 4, h - h // 4
        keep[lo:hi, lo:hi] = k[lo:hi, lo:hi]
        out = np.real(np.fft.ifft2(np.fft.ifftshift(keep)))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)[..., None]
    if kind == "stripes":
        period = 6 * px
        phase = rng.uniform(0, 2 * np.pi)
        s = 12 * np.sin(2 * np.pi * np.arange(h) / period + phase)
        return np.clip(np.rint(x[..., 0].astype(np.float32) + s[:, None]), 0, 255).astype(np.uint8)[..., None]
    if kind == "ghosting_0.2":
        f = x[..., 0].astype(np.float32)
        return np.clip(np.rint(0.8 * f + 0.2 * np.roll(f, h // 2, axis=0)), 0, 255).astype(np.uint8)[..., None]
    if kind == "defocus_disk_2":
        from scipy.ndimage import convolve

        r = max(1.0, 2 * px)
        ri = int(np.ceil(r))
        yy, xx = np.mgrid[-ri : ri + 1, -ri : ri + 1]
        disk = (yy**2 + xx**2 <= r * r).astype(np.float32)
        out = convolve(x[..., 0].astype(np.float32), disk / disk.sum(), mode="nearest")
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)[..., None]
    if kind == "window_clip":
        f = x[..., 0].astype(np.float32)
        lo, hi = np.percentile(f, [10, 90])
        return np.clip(np.rint((np.clip(f, lo, hi) - lo) / max(hi - lo, 1.0) * 255), 0, 255).astype(np.uint8)[..., None]
    raise ValueError(f"unknown modification {kind!r}")


def make(kind: str, sources: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([modify(kind, np.asarray(x), rng) for x in sources])
