"""FID/KID and PRDC checked against independent reference implementations on the same features."""

import numpy as np
import pytest
from scipy import linalg

from synthgate.errors import DataError
from synthgate.evaluation.fidelity import fid, kid, prdc
from synthgate.evaluation.realism import realism_scores


def _features(seed, n=300, d=16, shift=0.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ a + shift


def _fid_reference(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _kid_reference(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m = len(x)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


@pytest.mark.parametrize("shift", [0.0, 0.3, 2.0])
def test_fid_matches_scipy_reference(shift):
    x, y = _features(0), _features(1, shift=shift)
    assert fid(x, y) == pytest.approx(_fid_reference(x, y), rel=1e-4, abs=1e-4)


def test_kid_matches_unbiased_mmd_reference():
    x, y = _features(2, n=200), _features(3, n=200, shift=0.5)
    mean, std = kid(x, y, subset_size=200, subsets=1)
    assert mean == pytest.approx(_kid_reference(x, y), abs=1e-4)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prdc_matches_prdc_package(k, capsys):
    from prdc import compute_prdc

    x, y = _features(4, n=250), _features(5, n=180, shift=0.4)
    ours = prdc(x, y, k=k, chunk=64)
    ref = compute_prdc(x.astype(np.float32), y.astype(np.float32), k)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(ref[key]), abs=1e-4), key
    assert ours["f1"] == pytest.approx(2 * ours["precision"] * ours["recall"] / (ours["precision"] + ours["recall"]))


def test_prdc_needs_more_than_k_images():
    with pytest.raises(DataError, match=r"need more than k images in each set \(real 50, synthetic 4\)"):
        prdc(_features(0, n=50), _features(1, n=4), k=5)


def test_identical_sets_score_perfectly():
    x = _features(6, n=200)
    assert fid(x, x) == pytest.approx(0.0, abs=1e-3)
    p = prdc(x, x, k=3)
    assert p["precision"] == 1.0 and p["recall"] == 1.0 and p["coverage"] == 1.0


def test_realism_score_planted():
    real = _features(7, n=200)
    inside = real[:20] + 1e-3
    far = real[:20] + 100.0
    assert (realism_scores(real, inside, k=3) >= 1).all()
    assert (realism_scores(real, far, k=3) < 1).all()
