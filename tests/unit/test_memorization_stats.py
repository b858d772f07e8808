"""The statistics of the memorization gate: exact tests hold their level, the tail model is
calibrated on honest data and certifies copies, bounds cover, corrections are the textbook ones."""

import numpy as np
import pytest

from synthgate.evaluation.memorization.null import fit_null
from synthgate.evaluation.memorization.stats import (
    auc_bound,
    clopper_pearson,
    exceedance_test,
    fisher_z,
    reject,
    shift_bound,
)


def test_fisher_z_is_finite_for_exact_copies():
    z = fisher_z(np.array([0.0, 0.9, 1.0, 1.0000001]))
    assert np.isfinite(z).all() and z[2] == z[3] > 8 and z[0] == 0


def test_bh_and_holm_match_their_definitions():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    # Benjamini-Hochberg at 0.05: the largest i with p_(i) <= 0.05 i / 10 is i = 2
    assert reject(p, 0.05, "bh").tolist() == [True, True] + [False] * 8
    # Holm at 0.05: 0.001 <= 0.005, 0.008 <= 0.0056? no
    assert reject(p, 0.05, "holm").tolist() == [True] + [False] * 9
    from scipy.stats import false_discovery_control

    q = np.random.default_rng(0).uniform(0, 0.05, 40)
    assert (reject(q, 0.1, "bh") == (false_discovery_control(q) <= 0.1)).all()
    assert not reject(np.array([]), 0.05).size
    with pytest.raises(ValueError, match="unknown correction 'bonf'"):
        reject(p, 0.05, "bonf")


def test_exceedance_test_is_exact_under_exchangeability():
    """Honest synthetic scores drawn like the null: P(p <= a) <= a for every a, whatever n and m."""
    rng = np.random.default_rng(0)
    for n, m in ((60, 57), (300, 1000)):
        ps = np.array([exceedance_test(rng.normal(size=n), rng.normal(size=m), 0.95)["p"] for _ in range(2000)])
        for a in (0.01, 0.05, 0.2):
            assert (ps <= a).mean() <= a + 2.5 * np.sqrt(a * (1 - a) / len(ps)), (n, m, a)
    r = exceedance_test(np.arange(100.0), np.r_[np.arange(90.0), np.full(10, 500.0)], 0.99)
    assert r["order_statistic"] == 1 and r["threshold"] == 99 and r["exceedances"] == 10 and r["p"] < 1e-3


def test_auc_bound_covers_and_detects():
    rng = np.random.default_rng(1)
    lows = [auc_bound(rng.normal(size=60), rng.normal(size=60), 0.95)["lower_bound"] for _ in range(400)]
    assert np.mean(np.array(lows) > 0.5) < 0.09  # one-sided 95%: about 5% of honest bounds exceed 0.5
    leak = auc_bound(rng.normal(1.0, 1, 200), rng.normal(size=200), 0.99)
    assert leak["lower_bound"] > 0.65 and leak["p"] < 1e-10 and leak["se"] > 0
    from sklearn.metrics import roc_auc_score

    a, b = rng.normal(size=30), rng.normal(0.3, 1, size=40)
    assert auc_bound(a, b, 0.9)["auc"] == pytest.approx(roc_auc_score(np.r_[np.ones(30), np.zeros(40)], np.r_[a, b]))


def test_shift_bound_and_clopper_pearson():
    rng = np.random.default_rng(2)
    r = shift_bound(rng.normal(0.05, 0.02, 300), rng.normal(0.0, 0.02, 300), 0.99)
    assert 0.04 < r["lower_bound"] < r["shift"] < 0.06
    lo, hi = clopper_pearson(95, 100)
    assert lo == pytest.approx(0.8872, abs=1e-3) and hi == pytest.approx(0.9836, abs=1e-3)
    assert clopper_pearson(0, 10)[0] == 0 and clopper_pearson(10, 10)[1] == 1


def test_tail_model_is_calibrated_on_honest_scores_and_certifies_copies():
    """Gumbel-like null scores (a maximum of many correlations on the Fisher-z scale): honest images
    beyond the null's range get tail p-values whose smallest is rarely below alpha/m, while a copy far
    out gets a p-value small enough to be named among thousands of images."""
    rng = np.random.default_rng(3)
    below = 0
    for _ in range(60):
        null = fit_null("x", rng.gumbel(1.5, 0.08, 150), n_boot=40, gof_samples=0)
        honest = null.pvalues(rng.gumbel(1.5, 0.08, 150))
        below += honest.min() <= 0.005 / 150
    assert below <= 3  # the flags' family-wise level is 0.005: a few in 60 at most
    null = fit_null("x", rng.gumbel(1.5, 0.08, 150), n_boot=40, gof_samples=49)
    assert null.sufficient and null.xi == 0 and 0 < null.gof_p <= 1
    p_copy, p_edge = null.pvalues(np.array([fisher_z(0.9999), null.scores[-1] - 1e-9]))
    assert p_copy < 1e-9 and p_edge == pytest.approx(2 / 151)
    assert (np.diff(null.pvalues(np.linspace(1, 4, 50))) <= 1e-12).all()  # p falls as the score rises


def test_the_tail_shape_is_estimated_and_reported_and_heavier_models_exist():
    """The evaluation's exponential tail reports the shape the data suggest, so a reviewer sees a
    heavy-tailed null; the heavier models of benchmarks/null_calibration.py estimate it (never below 0)."""
    heavy = np.random.default_rng(5).standard_t(3, 1000)
    exp = fit_null("x", heavy, n_boot=20, gof_samples=19)
    assert exp.xi == 0 and exp.shape_estimate > 0.1 and exp.summary()["shape_estimate"] == exp.shape_estimate
    assert exp.summary()["tail"] == "exponential" and exp.gof_p is not None
    gpd = fit_null("x", heavy, n_boot=20, tail="gpd")
    assert gpd.xi == pytest.approx(exp.shape_estimate) and (gpd.boot[:, 2] == gpd.xi).all() and gpd.gof_p is None
    boot = fit_null("x", heavy, n_boot=20, tail="gpd_bootstrap")
    assert boot.boot[:, 2].std() > 0
    far = np.array([heavy.max() + 5.0])
    assert exp.pvalues(far)[0] < gpd.pvalues(far)[0]  # a heavier tail: a larger p-value far out
    light = fit_null("x", np.random.default_rng(6).uniform(size=300), n_boot=10, gof_samples=0, tail="gpd")
    assert light.xi == 0  # a bounded tail: the exponential, never a lighter model
    with pytest.raises(ValueError, match="unknown tail model 'pareto'"):
        fit_null("x", heavy, tail="pareto")


def test_a_small_null_says_how_many_images_it_needs():
    null = fit_null("x", np.random.default_rng(4).normal(size=40), min_exceedances=20)
    assert not null.sufficient and null.needed == 60
    s = null.summary()
    assert s["needed"] == 60 and "needs at least 60" in s["note"]
    assert null.pvalues(np.array([100.0]))[0] == pytest.approx(1 / 41)  # no extrapolation without a tail model
