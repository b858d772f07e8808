import numpy as np
import pytest

from synthgate.data.complexity import delentropy, delentropy_reference, to_gray


def test_matches_histogram2d_reference_on_random_and_real_like_images():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(6, 32, 24, 1), dtype=np.uint8)
    imgs[1] = (np.linspace(0, 255, 24)[None, :, None] * np.ones((32, 1, 1))).astype(np.uint8)  # ramp
    imgs[2] = 7  # constant
    imgs[3, :, :12] = 0
    imgs[3, :, 12:] = 255  # one edge
    fast = delentropy(imgs)
    ref = np.array([delentropy_reference(im) for im in imgs])
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-12)


def test_constant_image_has_zero_and_noise_has_high_delentropy():
    rng = np.random.default_rng(1)
    const = np.full((1, 16, 16, 1), 128, np.uint8)
    noise = rng.integers(0, 256, size=(1, 64, 64, 1), dtype=np.uint8)
    assert delentropy(const)[0] == 0.0
    # 62*62 gradient vectors spread over a 511x511 grid: close to 0.5*log2(3844) bits
    assert delentropy(noise)[0] == pytest.approx(0.5 * np.log2(62 * 62), abs=0.1)


def test_ramp_has_single_gradient_bin():
    ramp = np.tile(np.arange(0, 64, dtype=np.uint8) * 2, (16, 1))[None, ..., None]
    assert delentropy(ramp)[0] == 0.0  # every gradient vector is (4, 0)


def test_rgb_is_reduced_to_luma_gray():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(2, 20, 20, 3), dtype=np.uint8)
    gray = to_gray(rgb)
    assert gray.shape == (2, 20, 20) and gray.dtype == np.uint8
    np.testing.assert_allclose(delentropy(rgb), delentropy(gray[..., None]))
