"""The ``structure`` detector (evaluation/memorization/residual.py): what a match leaves unexplained, noise or
anatomy. Checked on images the test makes: smooth random fields stand in for anatomy."""

import numpy as np
import pytest
import torch

from synthgate.evaluation.memorization.residual import STRUCTURE_FLOOR, residual_structure


def _fields(n, size=32, seed=0, sigma=3.0):
    """Smooth random images in 0..255 (spatially correlated, like anatomy at this scale)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g)
    k = torch.arange(-8, 9, dtype=torch.float32)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = k / k.sum()
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (8, 8, 8, 8), mode="circular"), k.view(1, 1, 1, -1))
    x = torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1))[:, 0]
    x = (x - x.mean((1, 2), keepdim=True)) / x.std((1, 2), keepdim=True)
    return (128 + 40 * x).clamp(0, 255)


def test_noisy_copies_leave_white_residuals_other_images_do_not():
    src = _fields(40, seed=1)
    rng = torch.Generator().manual_seed(2)
    noisy = (src + 0.03 * 255 * torch.randn(src.shape, generator=rng)).round().clamp(0, 255)
    others = _fields(40, seed=3)
    s_copy = residual_structure(noisy, src)
    s_other = residual_structure(others, src)
    # white noise has no lag-1 autocovariance: the copies' share scatters around 0, far below other images'
    assert s_copy.abs().max() < 0.05
    assert s_other.min() > 0.5
    # the same noise on a low-contrast image: correlation falls (the correlation detectors' blind spot), the share
    # does not rise
    low = 128 + (src - 128) * 0.2
    noisy_low = (low + 0.03 * 255 * torch.randn(low.shape, generator=rng)).round().clamp(0, 255)
    r = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(noisy_low.numpy(), low.numpy(), strict=True)]
    assert max(r) < 0.95
    assert residual_structure(noisy_low, low).abs().max() < 0.1


def test_contrast_changes_that_clip_are_still_copies():
    src = _fields(20, seed=4)
    copy = ((src - 128) * 1.6 + 128 + 30).round().clamp(0, 255)  # many pixels clip at 255
    assert (copy == 255).float().mean() > 0.05
    assert residual_structure(copy, src).abs().max() < 0.02
    inverted = 255 - src  # a negative gain is a copy too
    assert residual_structure(inverted, src).abs().max() < 1e-3


def test_images_without_structure_have_no_evidence():
    src = _fields(5, seed=5)
    blank = torch.full_like(src, 40.0)
    noise = (128 + 20 * torch.randn(src.shape, generator=torch.Generator().manual_seed(6))).clamp(0, 255)
    assert torch.equal(residual_structure(blank, src), torch.ones(5))
    assert torch.equal(residual_structure(noise, src), torch.ones(5))


def test_detector_score_is_finite_and_higher_for_copies():
    from synthgate.evaluation.memorization.evidence import DETECTORS, Scored
    from synthgate.evaluation.memorization.search import TrainIndex, make_spec, search

    train = _fields(30, seed=7).round().numpy().astype(np.uint8)[..., None]
    rng = np.random.default_rng(8)
    copies = np.clip(np.rint(train[:5] + rng.normal(0, 0.03 * 255, train[:5].shape)), 0, 255).astype(np.uint8)
    exact = train[5:8]
    others = _fields(10, seed=9).round().numpy().astype(np.uint8)[..., None]
    r = search(np.concatenate([copies, exact, others]), TrainIndex.build(train, torch.device("cpu")),
               make_spec(32, shortlist=8))
    s = Scored(r, np.zeros(len(r.pixel)), np.zeros(len(r.pixel), int)).scores()
    assert "structure" in s and set(s) == set(DETECTORS)
    assert np.isfinite(s["structure"]).all() and s["structure"].max() <= -np.log(STRUCTURE_FLOOR) + 1e-9
    assert s["structure"][:8].min() > s["structure"][8:].max() + 2  # e^2: the copies' share 7x smaller at least
    assert (r.pixel_index[:8] == np.arange(8)).all()


@pytest.mark.parametrize("shape", [(3, 16, 16), (2, 8, 24)])
def test_shapes(shape):
    x = torch.rand(shape) * 255
    assert residual_structure(x, x).shape == (shape[0],)
