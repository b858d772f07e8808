"""The downstream classifier and the utility protocol: the stopping rule, the threshold chosen on
validation, matched sizes, the confidence bound (against scipy), and the bad inputs (tiny images,
CPU, a few dozen steps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthgate.errors import ConfigError, DataError
from synthgate.evaluation.classifier import (
    TrainSettings,
    augment_batch,
    choose_threshold,
    classification_scores,
    train_classifier,
)
from synthgate.evaluation.config import UtilityConfig
from synthgate.evaluation.utility import (
    auc_influence,
    bound_components,
    confidence_bound,
    delong_variance,
    min_seeds_for,
    set_ratio,
    utility,
)

CPU = torch.device("cpu")


def _images(n_per_class: list[int], seed: int, size: int = 16, noise: float = 60.0,
            flip_share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Class k: a bright square in quadrant k on noise (separable, but not trivially with noise);
    ``flip_share`` of the labels drawn at random (so the AUROC does not saturate)."""
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    h = size // 2
    for k, n in enumerate(n_per_class):
        x = rng.normal(100, noise, (n, size, size, 1))
        r, c = divmod(k % 4, 2)
        x[:, r * h:(r + 1) * h, c * h:(c + 1) * h] += 60
        imgs.append(np.clip(x, 0, 255).astype(np.uint8))
        labels.append(np.full(n, k))
    y = np.concatenate(labels)
    noisy = rng.random(len(y)) < flip_share
    y[noisy] = rng.integers(0, len(n_per_class), int(noisy.sum()))
    return np.concatenate(imgs), y


FAST = TrainSettings(max_steps=60, batch_size=16, lr=3e-3, eval_every=5, patience=3)


def test_early_stopping_keeps_the_best_weights():
    x, y = _images([60, 60], 0, flip_share=0.3)
    xv, yv = _images([20, 20], 1, flip_share=0.3)
    t = train_classifier(x, y, xv, yv, arch="small", n_classes=2, seed=0, device=CPU, settings=FAST)
    assert t.stopped == "early" and t.selection == "validation"
    best = t.history[t.best_epoch]
    assert best["step"] == t.best_step
    # stopped `patience` evaluations after the best one, none of which improved on it
    assert t.steps == t.best_step + FAST.patience * FAST.eval_every
    assert all(h["val_auroc"] <= best["val_auroc"] + FAST.min_delta for h in t.history[t.best_epoch + 1:])
    # the model returned is the best one, not the last one
    assert t.val_auroc == pytest.approx(best["val_auroc"], abs=1e-6)
    # max_epochs caps the budget too: 2 passes over 120 images at batch 16 = 15 steps
    capped = train_classifier(x, y, xv, yv, arch="small", n_classes=2, seed=0, device=CPU,
                              settings=TrainSettings(max_steps=500, batch_size=16, eval_every=100, max_epochs=2))
    assert capped.steps == 15 and capped.stopped == "budget"


def test_a_validation_split_too_small_for_early_stopping_trains_the_fixed_budget():
    x, y = _images([40, 40], 0)
    xv, yv = _images([30, 3], 1)  # 3 images of class 1 < min_val_per_class
    t = train_classifier(x, y, xv, yv, arch="small", n_classes=2, seed=0, device=CPU,
                         settings=TrainSettings(max_steps=12, batch_size=16, eval_every=4, patience=1,
                                                min_val_per_class=5))
    assert (t.selection, t.stopped, t.steps) == ("fixed", "fixed", 12)
    assert all(np.isnan(h["val_auroc"]) for h in t.history)


def test_threshold_is_chosen_on_validation_for_balanced_accuracy():
    y = np.array([0] * 8 + [1] * 2)
    p1 = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9])  # argmax would call 6 of 8 negatives right
    proba = np.stack([1 - p1, p1], 1)
    thr = choose_threshold(y, proba, 2)
    assert thr == pytest.approx(0.85)
    s = classification_scores(y, proba, 2, thr)
    assert s["accuracy"] == 1.0 and s["balanced_accuracy"] == 1.0 and s["auroc"] == 1.0
    at_half = classification_scores(y, proba, 2, None)  # argmax
    assert at_half["accuracy"] == pytest.approx(0.7) and at_half["balanced_accuracy"] == pytest.approx(0.8125)
    assert choose_threshold(np.zeros(4, int), proba[:4], 2) is None  # one class: no ROC, argmax
    assert choose_threshold(y, np.ones((10, 3)) / 3, 3) is None  # multi-class: argmax


def test_augmentation_shifts_within_bounds_and_flips_only_when_asked():
    x = torch.zeros(32, 1, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the centre
    gen = torch.Generator().manual_seed(0)
    out = augment_batch(x, gen, shift=2, intensity=0.0, flip=False)
    pos = [divmod(int(v.argmax()), 9) for v in out[:, 0]]
    assert all(abs(r - 4) <= 2 and abs(c - 4) <= 2 for r, c in pos) and len(set(pos)) > 3
    ramp = torch.linspace(-1, 1, 9).expand(32, 1, 9, 9).clone()
    assert torch.equal(augment_batch(ramp, gen, 0, 0.0, False), ramp)
    flipped = augment_batch(ramp, gen, 0, 0.0, True)
    n_flipped = sum(bool(torch.equal(f, ramp[0].flip(-1))) for f in flipped)
    assert 0 < n_flipped < 32
    jitter = augment_batch(ramp, gen, 0, 0.1, False)
    scale = (jitter[:, 0, 0, -1] - jitter[:, 0, 0, 0]) / 2
    assert torch.all((scale >= 0.9 - 1e-6) & (scale <= 1.1 + 1e-6)) and scale.std() > 0


def test_confidence_bound_agrees_with_scipy_and_the_seed_minimum():
    from scipy.stats import ttest_1samp

    v = [0.012, -0.004, 0.031, 0.008, 0.020, -0.001]
    upper = ttest_1samp(v, 0.0, alternative="less").confidence_interval(0.95).high
    lower = ttest_1samp(v, 0.0, alternative="greater").confidence_interval(0.9).low
    assert confidence_bound(v, 0.95, "upper") == pytest.approx(upper)
    assert confidence_bound(v, 0.9, "lower") == pytest.approx(lower)
    assert np.isnan(confidence_bound([0.1], 0.95, "upper"))
    assert [min_seeds_for(c) for c in (0.9, 0.95, 0.975, 0.99)] == [4, 5, 6, 7]
    assert 0.5 ** min_seeds_for(0.95) <= 0.05 < 0.5 ** (min_seeds_for(0.95) - 1)


def _delong(y: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> tuple[float, float, float]:
    """DeLong's variances of two binary AUROCs on the same images and their covariance, written out
    from the pairwise kernel (an independent implementation of DeLong et al. 1988)."""
    pos, neg = y == 1, y == 0

    def comps(s):
        k = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        return k.mean(axis=1), k.mean(axis=0)

    (a10, a01), (b10, b01) = comps(s1), comps(s2)
    m, n = pos.sum(), neg.sum()
    var = [np.var(a10, ddof=1) / m + np.var(a01, ddof=1) / n, np.var(b10, ddof=1) / m + np.var(b01, ddof=1) / n]
    cov = np.cov(a10, b10)[0, 1] / m + np.cov(a01, b01)[0, 1] / n
    return float(var[0]), float(var[1]), float(cov)


def test_test_set_variance_is_delongs_for_one_auroc_and_for_a_paired_difference():
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.4).astype(int)
    s1 = np.round(y * 0.8 + rng.normal(0, 0.6, 200), 2)  # rounded: ties count one half
    s2 = np.round(0.5 * s1 + y * 0.4 + rng.normal(0, 0.6, 200), 2)
    p1, p2 = np.stack([1 - s1, s1], 1), np.stack([1 - s2, s2], 1)
    v1, v2, cov = _delong(y, s1, s2)
    psi1, psi2 = auc_influence(y, p1, 2), auc_influence(y, p2, 2)
    assert delong_variance(y, psi1) == pytest.approx(v1, rel=1e-9)
    assert delong_variance(y, psi1 - psi2) == pytest.approx(v1 + v2 - 2 * cov, rel=1e-9)
    # multi-class macro one-vs-rest: close to the bootstrap variance of the AUROC over test sets
    from synthgate.evaluation.classifier import auroc

    y3 = rng.integers(0, 3, 600)
    logits = rng.normal(0, 1, (600, 3)) + 1.2 * np.eye(3)[y3]
    pr = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    boot = [auroc(y3[i], pr[i], 3) for i in (rng.integers(0, 600, 600) for _ in range(400))]
    assert delong_variance(y3, auc_influence(y3, pr, 3)) == pytest.approx(np.var(boot), rel=0.25)


def test_clustered_test_variance_counts_patients_not_images():
    """Five identical images per patient carry the information of one: the clustered variance is the
    40 patients' DeLong variance, the per-image one about a fifth of it (too narrow)."""
    rng = np.random.default_rng(1)
    y = np.array([0] * 20 + [1] * 20)
    s = np.round(y * 0.7 + rng.normal(0, 0.6, 40), 3)
    p = np.stack([1 - s, s], 1)
    one = delong_variance(y, auc_influence(y, p, 2))
    y5, p5, g5 = np.repeat(y, 5), np.repeat(p, 5, axis=0), np.repeat(np.arange(40), 5)
    psi5 = auc_influence(y5, p5, 2)
    assert delong_variance(y5, psi5, g5) == pytest.approx(one, rel=0.1)
    assert delong_variance(y5, psi5) == pytest.approx(one / 5, rel=0.15)


def test_patient_groups_draw_the_matched_real_sets_by_patient():
    real = _images([40, 40], 0)
    groups = np.repeat(np.arange(16), 5)  # 16 patients of 5 images, one class each
    val, test = _images([10, 10], 1), _images([15, 15], 2)
    u = utility(real, val, test, _images([40, 40], 3), 2, _cfg(seeds=[0, 1, 2, 3, 4], settings=["real", "synthetic"]),
                CPU, train_groups=groups, test_groups=np.repeat(np.arange(6), 5))
    # half of the 16 patients per seed: two seeds share about half of them
    assert u["train_sizes"]["set_ratios"]["real"] == pytest.approx(8 / 8)
    assert u["train_sizes"]["set_ratios"]["real_groups"] == 16.0
    d = u["paired"]["variance"]["auc_gap"]
    assert d["test_variance"] > 0 and u["stats"]["auc_gap_upper"] is not None


def test_bound_components_add_the_pools_and_the_test_split_in_quadrature():
    gaps = [0.01, 0.03, 0.02, 0.00, 0.04]
    real = [0.90, 0.93, 0.88, 0.91, 0.92]
    design = {"components": [{"name": "real", "values": real, "ratio": 1.0},
                             {"name": "syn", "values": [0.9] * 5, "ratio": 0.1}], "test_variance": 1e-4}
    parts = bound_components(gaps, design)
    assert parts["seeds"] == pytest.approx(np.var(gaps, ddof=1) / 5)
    assert parts["sets"] == pytest.approx(np.var(real, ddof=1))
    assert parts["se"] == pytest.approx((parts["seeds"] + parts["sets"] + 1e-4) ** 0.5)
    assert confidence_bound(gaps, 0.95, "upper", {**design, "components": [
        {"name": "syn", "values": real, "ratio": None}]}) == float("inf")
    # overlap of two seeds' draws: half of a class -> 1; all of it -> not resampled (infinite)
    assert set_ratio({0: 50, 1: 10}, {0: 100, 1: 40}) == 1.0
    assert set_ratio({0: 50, 1: 10}, {0: 50, 1: 40}) == float("inf")


def _cfg(**kw) -> UtilityConfig:
    base = dict(max_steps=10, eval_every=5, patience=1, batch_size=16, seeds=[0, 1, 2, 3, 4], min_val_per_class=3)
    return UtilityConfig(**{**base, **kw})


def test_matched_sizes_paired_values_and_bounds():
    real = _images([40, 30], 0)
    val = _images([10, 10], 1)
    test = _images([15, 15], 2)
    syn = _images([10, 6], 3)  # fewer synthetic images than real ones: the real set is matched to them
    u = utility(real, val, test, syn, 2, _cfg(), CPU, class_names=["a", "b"])
    sizes = u["train_sizes"]
    # 20% of each synthetic class held out for Delta_syn (2 and 1), the rest matched by the real set
    assert sizes["synthetic_held_out_per_class"] == {"a": 2, "b": 1}
    assert sizes["synthetic_train_per_class"] == {"a": 8, "b": 5}
    # each seed draws half of the smaller pool afresh (resample_fraction 0.5): floor(8 / 2), floor(5 / 2)
    assert sizes["matched_per_class"] == {"a": 4, "b": 2} and sizes["resample_fraction"] == 0.5
    # how much two seeds' draws overlap: real 4 of 40 and 2 of 30; synthetic 4 of 10, 2 of 6
    assert sizes["set_ratios"]["real"] == pytest.approx(max(4 / 36, 2 / 28))
    assert sizes["set_ratios"]["synthetic"] == pytest.approx(max(4 / 6, 2 / 4))
    assert sizes["real_full_per_class"] == {"a": 40, "b": 30}
    n = {s: {r["n_train"] for r in rs} for s, rs in u["runs"].items()}
    assert n == {"real": {6}, "synthetic": {6}, "real_full": {70}, "augmented": {83}, "transfer": {70}}
    p = u["paired"]
    assert p["seeds"] == [0, 1, 2, 3, 4]
    real_auc = [r["auroc"] for r in u["runs"]["real"]]
    syn_auc = [r["auroc"] for r in u["runs"]["synthetic"]]
    assert p["auc_gap"] == pytest.approx(np.subtract(real_auc, syn_auc).tolist())
    st = u["stats"]
    design = p["variance"]["auc_gap"]
    assert [c["values"] for c in design["components"]] == [pytest.approx(real_auc), pytest.approx(syn_auc)]
    assert design["test_variance"] > 0
    assert st["auc_gap_upper"] == pytest.approx(confidence_bound(p["auc_gap"], 0.95, "upper", design))
    # wider than the seeds-only paired t: the pools and the test split add their variance
    assert st["auc_gap_upper"] > confidence_bound(p["auc_gap"], 0.95, "upper")
    assert st["augmented_gain_lower"] == pytest.approx(
        confidence_bound(p["augmented_gain"], 0.95, "lower", p["variance"]["augmented_gain"]))
    assert len(p["delta_syn"]) == 5 and "delta_syn_upper" in st and "note" not in st
    assert u["validation"]["early_stopping"] and u["validation"]["note"] is None
    for r in u["runs"]["real"]:
        assert {"accuracy", "balanced_accuracy", "threshold", "steps", "best_step"} <= set(r)


def test_bad_inputs_are_refused_or_recorded():
    real, test = _images([30, 30, 30], 0), _images([8, 8, 8], 2)
    val = _images([8, 8, 8], 1)
    # a class without synthetic images: refused, naming it
    no_c = _images([6, 6, 0], 3)
    with pytest.raises(DataError, match=r"no images of class\(es\) 'tumour' \(synthetic counts: a=6, b=6, "
                                        r"tumour=0\)") as e:
        utility(real, val, test, no_c, 3, _cfg(), CPU, class_names=["a", "b", "tumour"])
    assert "sample every class" in e.value.hint
    # a validation split too small for early stopping: said, fallen back to the fixed budget, recorded
    small_val = _images([8, 8, 2], 1)
    u = utility(real, small_val, test, _images([6, 6, 6], 3), 3,
                _cfg(seeds=[0], settings=["real", "synthetic"], max_steps=4, min_val_per_class=5), CPU,
                class_names=["a", "b", "c"])
    assert u["validation"]["early_stopping"] is False
    assert u["validation"]["note"].startswith("the validation split has fewer than 5 images of a class (class 2: 2)")
    assert "fixed budget of 4 steps" in u["validation"]["note"]
    assert {(r["stopped"], r["steps"]) for rs in u["runs"].values() for r in rs} == {("fixed", 4)}
    # one seed: no bounds, and the evaluation says why
    assert u["stats"]["auc_gap_upper"] is None
    assert u["stats"]["note"].startswith("1 seed(s): a one-sided test at confidence 0.95 needs at least 5")


def test_policy_with_too_few_seeds_for_its_level_is_refused(tmp_path):
    from synthgate.gates.policy import load_policy

    p = tmp_path / "gates.yaml"
    p.write_text("utility:\n  min_seeds: 3\n")
    with pytest.raises(ConfigError, match=r"gates.yaml: utility: min_seeds 3 is too few for confidence 0.95: "
                                          r"a one-sided test at this level needs at least 5 seeds"):
        load_policy(p)
    p.write_text("utility:\n  min_seeds: 3\n  confidence: 0.875\n")  # 0.5^3 = 0.125: three seeds can reach it
    assert load_policy(p).utility.min_seeds == 3
    p.write_text("utility:\n  confidence: 0.99\n")
    with pytest.raises(ConfigError, match="needs at least 7 seeds"):
        load_policy(p)
