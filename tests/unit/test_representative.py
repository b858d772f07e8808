"""Is the held-out set (the memorization gate's null) representative? The leave-group-out reference against
held-out sets the test makes: other acquisitions like training's (representative), atypical ones (farther),
re-crops of training acquisitions (closer), and a skewed class mix."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from synthgate.config import PrepareConfig, SourceConfig, ValidateConfig
from synthgate.data.config import LeakageConfig
from synthgate.data.leakage import diagnose_leakage
from synthgate.data.prepare import prepare
from synthgate.data.representative import TOLERANCE, leave_group_out, representativeness
from synthgate.data.validate import validate
from tests.helpers import pattern
from tests.unit.test_leakage import _array, _crops, _split_folder


def _family(seed: int, base: np.ndarray, weight: float) -> Image.Image:
    """A smooth field mixed with a shared ``base``: acquisitions of one family resemble each other."""
    own = np.asarray(pattern(seed, (36, 36)), np.float64)
    return Image.fromarray(np.clip(weight * base + (1 - weight) * own, 0, 255).astype(np.uint8))


def _diagnose(train: list[Image.Image], held: list[Image.Image], groups: np.ndarray | None,
              held_labels: np.ndarray | None = None):
    images = _array(train + held)
    splits = np.array(["train"] * len(train) + ["test"] * len(held))
    labels = np.zeros(len(images), np.int64)
    labels[: len(train) // 2] = 1
    if held_labels is not None:
        labels[len(train):] = held_labels
    all_groups = None if groups is None else np.concatenate([groups, [f"h{i}" for i in range(len(held))]])
    return diagnose_leakage(images, splits, labels, ["a", "b"], np.array([f"f{i}" for i in range(len(images))]),
                            LeakageConfig(), all_groups)


def test_other_acquisitions_like_training_s_are_representative():
    train = [im for s in range(40) for im in _crops(s, 2)]
    groups = np.repeat([f"g{s}" for s in range(40)], 2)
    held = [_crops(100 + s, 1)[0] for s in range(40)]
    rep = _diagnose(train, held, groups, np.array([0, 1] * 20)).representative
    assert rep is not None and rep.grouped and len(rep.reference) == 80 and len(rep.held_out) == 40
    p, se = rep.p_farther
    assert abs(p - 0.5) < TOLERANCE and 0 < se < 0.15
    assert rep.verdict.startswith("representative: held-out images are as far from training")
    d = rep.to_dict()
    assert d["class_tvd"] == 0.0 and d["class_mix"]["a"] == {"train_share": 0.5, "held_out_share": 0.5}
    assert d["reference_similarity"]["median"] > 0 and d["n_reference"] == 80


def test_a_null_of_atypical_images_is_called_farther():
    """Training acquisitions of one family (alike); held-out acquisitions unlike any of them: a null that light
    would flag an honest generator's typical images."""
    base = np.asarray(pattern(999, (36, 36)), np.float64)
    train = [_family(s, base, 0.7) for s in range(60)]
    held = [pattern(500 + s, (36, 36)) for s in range(40)]
    rep = _diagnose(train, held, np.array([f"g{s}" for s in range(60)]), np.array([0, 1] * 20)).representative
    p, se = rep.p_farther
    assert p - 1.96 * se > 0.5 + TOLERANCE
    assert rep.verdict.startswith("held-out images are farther from training") and "atypical" in rep.verdict


def test_held_out_re_crops_of_training_acquisitions_are_called_closer_and_a_source_without_groups_is_named():
    train = [im for s in range(40) for im in _crops(s, 2)]
    groups = np.repeat([f"g{s}" for s in range(40)], 2)
    leaked = [_crops(s, 3)[2] for s in range(30)]
    rep = _diagnose(train, leaked, groups, np.array([0, 1] * 15)).representative
    assert rep.verdict.startswith("held-out images are closer to training") and "leakage verdict" in rep.verdict
    # without groups the reference is leave-one-image-out: a training image's sibling crop is "another group"
    ungrouped = _diagnose(train, leaked, None, np.array([0, 1] * 15)).representative
    assert not ungrouped.grouped and ungrouped.reference.mean() > rep.reference.mean()


def test_a_skewed_class_mix_is_reported():
    train = [im for s in range(40) for im in _crops(s, 2)]
    held = [_crops(100 + s, 1)[0] for s in range(30)]
    rep = _diagnose(train, held, np.repeat([f"g{s}" for s in range(40)], 2), np.zeros(30, np.int64)).representative
    assert rep.class_tvd == 0.5 and "class mix differs from training's (total variation 0.50)" in rep.verdict


def test_the_reference_never_searches_an_image_s_own_group_and_is_seeded():
    """Two copies per group: leave-group-out never finds the copy; leave-one-image-out always does."""
    imgs = np.stack([np.asarray(pattern(s, (32, 32))) for s in range(30)])
    small = np.concatenate([imgs, imgs])
    groups = np.concatenate([np.arange(30), np.arange(30)]).astype(str)
    lgo = leave_group_out(small, groups, size=60, folds=5, shortlist=8, seed=3)
    loo = leave_group_out(small, np.arange(60).astype(str), size=60, folds=5, shortlist=8, seed=3)
    assert lgo.max() < 0.99 and np.quantile(loo, 0.5) > 0.999
    np.testing.assert_array_equal(lgo, leave_group_out(small, groups, size=60, folds=5, shortlist=8, seed=3))
    assert len(leave_group_out(small, groups, size=10, folds=5, shortlist=8)) <= 10
    off = representativeness(small[:2], np.array([0.5]), np.array([0]), np.array([0, 0]), None, ["a"])
    assert off.p_farther == (0.5, 0.5)  # too few to compare: no claim either way


def test_validate_carries_the_split_s_diagnosis_into_the_validated_manifest(tmp_path):
    ds = prepare(SourceConfig(type="folder", path=_split_folder(tmp_path / "raw", leak=3)),
                 PrepareConfig(resolution=32, split={"val": 0.0, "test": 0.1}), tmp_path / "prepared")
    r = validate(ds.root, ValidateConfig(min_images_per_class=5, near_duplicate_threshold=0.999, aligned_duplicates=False),
                 tmp_path / "val", tmp_path / "rep")
    split = json.loads((tmp_path / "val" / "manifest.json").read_text())["validation"]["split"]
    assert split["leakage"] == r.leakage.verdict and split["flagged"] == r.leakage.flagged
    assert split["representative"] == r.leakage.representative.verdict
    report = json.loads((tmp_path / "rep" / "validation.json").read_text())
    assert report["leakage"]["representative"]["n_held_out"] == r.leakage.held_out


def test_the_evaluation_report_shows_the_split_s_diagnosis():
    from synthgate.evaluation.memorization.report import _split_paragraph

    leak = {"leakage": "the split leaks: about 31 held-out image(s) likely share a patient", "leaks": True,
            "representative": "representative: held-out images are as far from training as training images are "
                              "from other groups (P(farther) = 0.49 +- 0.04)"}
    html = _split_paragraph({"method": "stratified, grouped by patient", "groups": "groups inferred from the pixels",
                             "diagnosis": leak})
    assert "groups: groups inferred from the pixels" in html
    assert "<span class=bad>Leakage: the split leaks: about 31" in html and "<span class=ok>Null: representative" in html
    clean = _split_paragraph({"method": "stratified", "groups": None,
                              "diagnosis": {**leak, "leaks": False, "representative": "held-out images are farther"}})
    assert "no patient groups" in clean and "<span class=ok>Leakage" in clean and "<span class=bad>Null: held-out" in clean


def test_a_leaking_split_s_advice_follows_how_its_groups_were_made():
    train = [im for s in range(40) for im in _crops(s, 2)]
    leaked = [_crops(s, 3)[2] for s in range(30)]
    rep = _diagnose(train, leaked, None)
    assert rep.leaks and "run `synthgate prepare --infer-groups`" in rep.verdict
    rep.groups_note = {"source": "groups inferred from the pixels", "source_split": "kept"}
    assert "source's own split was kept: prepare again with --regroup" in rep.verdict
    rep.groups_note = {"source": "groups inferred from the pixels", "source_split": "regrouped"}
    assert "the inferred groups did not close the leak" in rep.verdict and "--infer-pattern" in rep.verdict
    rep.groups_note = {"source": "column 'patient' of labels.csv"}
    assert "named patient groups do not cover the near copies" in rep.verdict
