import numpy as np
import pytest
from PIL import Image

from synthgate.data.imaging import Geometry, ImageDecodeError, from_array, from_bytes, to_uint8
from tests.helpers import pattern, png_bytes


@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
def test_any_size_and_mode_to_canonical_geometry(mode):
    for size, m in [((100, 60), "RGB"), ((30, 90), "L"), ((64, 64), "RGBA")]:
        d = from_bytes(png_bytes(pattern(1, size, m)), Geometry(32, 1, mode))
        assert d.image.shape == (32, 32, 1) and d.image.dtype == np.uint8
        assert (d.orig_width, d.orig_height) == size
    d = from_bytes(png_bytes(pattern(1, (50, 40), "L")), Geometry(16, 3, mode))
    assert d.image.shape == (16, 16, 3)
    assert d.orig_channels == 1


def test_crop_keeps_centre_and_pad_adds_border():
    arr = np.zeros((20, 40), np.uint8)
    arr[:, 10:30] = 200  # bright centre block
    crop = from_array(arr, Geometry(16, 1, "crop")).image[..., 0]
    pad = from_array(arr, Geometry(16, 1, "pad")).image[..., 0]
    assert crop.mean() > 190  # centre crop is all bright
    assert pad[0].max() == 0 and pad[-1].max() == 0  # letterbox rows are black


def test_16bit_and_float_arrays_are_scaled_and_nan_counted():
    a16 = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    out, nan = to_uint8(a16)
    assert out.min() == 0 and out.max() == 255 and nan == 0
    f = np.linspace(0, 1, 100).reshape(10, 10)
    f[0, :5] = np.nan
    out, nan = to_uint8(f)
    assert nan == pytest.approx(0.05)
    assert out[-1, -1] == 255


def test_16bit_png_decodes():
    arr = (np.arange(32 * 32).reshape(32, 32) * 50).astype(np.uint16)
    img = Image.fromarray(arr)
    d = from_bytes(png_bytes(img), Geometry(32, 1, "crop"))
    assert d.image.max() == 255 and d.image.min() == 0


def test_corrupt_and_truncated_bytes_raise():
    good = png_bytes(pattern(3, (40, 40)), "JPEG")
    with pytest.raises(ImageDecodeError, match="cannot decode image"):
        from_bytes(good[: len(good) // 2], Geometry(32, 1, "crop"))
    with pytest.raises(ImageDecodeError, match="cannot decode image"):
        from_bytes(b"definitely not an image", Geometry(32, 1, "crop"))
