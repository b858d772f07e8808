import time

import numpy as np
import pytest
import torch

from synthgate.evaluation import memorization as mem

CPU = torch.device("cpu")


def _images(n, seed, size=16):
    from tests.helpers import pattern

    return np.stack([np.asarray(pattern(seed * 10_000 + i, (size, size)))[..., None] for i in range(n)])


def _pearson(a, b):
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_pixel_scan_matches_brute_force_over_8_transforms():
    train, q = _images(30, 1), _images(7, 2)
    r = mem.pixel_nn(q, train, CPU, chunk=3)
    for i in range(len(q)):
        variants = [np.rot90(np.flip(q[i, ..., 0], 1) if f else q[i, ..., 0], k) for f in (0, 1) for k in range(4)]
        sims = np.array([[_pearson(v, t[..., 0]) for t in train] for v in variants])
        assert r.best[i] == pytest.approx(sims.max(), abs=1e-5)
        assert r.index[i] == sims.max(axis=0).argmax()
        assert r.second[i] == pytest.approx(np.sort(sims.max(axis=0))[-2], abs=1e-5)


@pytest.mark.parametrize("kind", ["exact", "flip", "rot90"])
def test_planted_copies_are_found(kind):
    train = _images(200, 3)
    copies, src = mem.plant_copies(train, 40, seed=0)
    r = mem.pixel_nn(copies[kind], train, CPU)
    assert np.allclose(r.best, 1.0, atol=1e-4)
    assert (r.index == src).all()


def test_bf16_scan_is_rescored_exactly():
    """The CUDA path (bf16 matmul, run here on the CPU): its raw correlations fall on steps of
    1/256 near 1.0, so the best candidates are re-scored in fp32 and match the fp32 scan."""
    train = _images(300, 4)
    copies, src = mem.plant_copies(train, 30, seed=1)
    queries = np.concatenate([copies["exact"], copies["flip"], copies["rot90"], copies["noise_0.03"], _images(30, 5)])
    fp32 = mem.pixel_nn(queries, train, CPU, chunk=40)
    bf16 = mem.pixel_nn(queries, train, CPU, chunk=40, dtype=torch.bfloat16)
    np.testing.assert_allclose(bf16.best, fp32.best, atol=1e-5)
    np.testing.assert_allclose(bf16.second, fp32.second, atol=1e-5)
    np.testing.assert_array_equal(bf16.index, fp32.index)
    np.testing.assert_array_equal(bf16.transform, fp32.transform)
    assert (bf16.index[:90] == np.tile(src, 3)).all() and np.allclose(bf16.best[:90], 1.0, atol=1e-5)
    # without the re-scoring, bf16 rounds the near-copies' correlations to a few values, some above 1
    raw = (mem._normalise(torch.from_numpy(copies["noise_0.03"][..., 0].astype(np.float32))).bfloat16()
           @ mem._normalise(torch.from_numpy(train[..., 0].astype(np.float32))).bfloat16().T).float().max(1).values
    assert len(np.unique(raw.numpy())) < len(np.unique(fp32.best[90:120]))


def test_compare_calibrates_threshold_on_baseline():
    rng = np.random.default_rng(0)
    base = mem.NNResult(rng.uniform(0.5, 0.9, 1000), rng.uniform(0.4, 0.5, 1000), np.zeros(1000, int), np.zeros(1000))
    copies = mem.NNResult(np.full(100, 0.999), np.full(100, 0.6), np.zeros(100, int), np.zeros(100))
    out = mem.compare(copies, base, 0.99, np.zeros(100, int), np.zeros(1000, int), ["a"])
    assert out["threshold"] == pytest.approx(np.quantile(base.best, 0.99))
    assert out["near_copy_fraction"] == 1.0 and out["held_out_above_threshold"] == pytest.approx(0.01, abs=0.002)
    same = mem.compare(base, base, 0.99, np.zeros(1000, int), np.zeros(1000, int), ["a"])
    assert same["near_copy_fraction"] == pytest.approx(0.01, abs=0.002)


def test_membership_auc_detects_replayed_training_features():
    rng = np.random.default_rng(1)
    members, nonmembers = rng.normal(size=(100, 8)), rng.normal(size=(100, 8))
    auc, p = mem.membership_auc(members, nonmembers, members[:80], CPU)
    assert auc > 0.85 and p < 1e-6
    auc, p = mem.membership_auc(members, nonmembers, rng.normal(size=(80, 8)), CPU)
    assert abs(auc - 0.5) < 0.15 and p > 0.01
    from sklearn.metrics import roc_auc_score

    m = mem.cosine_nn(members, members[:80], CPU).best
    n = mem.cosine_nn(nonmembers, members[:80], CPU).best
    assert mem.membership_auc(members, nonmembers, members[:80], CPU)[0] == pytest.approx(
        roc_auc_score(np.r_[np.ones(100), np.zeros(100)], np.r_[m, n]))


@pytest.mark.slow
def test_scan_speed_1000_by_10000_on_cpu():
    """The issue's CPU budget: 1,000 x 10,000 64x64 images x 8 transforms in seconds on 2 cores."""
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (1000, 64, 64, 1), dtype=np.uint8)
    ref = rng.integers(0, 256, (10000, 64, 64, 1), dtype=np.uint8)
    start = time.perf_counter()
    mem.pixel_nn(q, ref, CPU, chunk=250)
    assert time.perf_counter() - start < 60
