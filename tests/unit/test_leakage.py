"""The leakage diagnosis (validate) and the inferred acquisition groups (prepare), with their bad inputs.

Images of one "acquisition" are re-crops of one smooth random field (the test makes them, so the truth is
known); images of different acquisitions are different fields."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synthgate.config import PrepareConfig, SourceConfig, ValidateConfig
from synthgate.data.config import LEAK_MARGIN, LEAK_SIMILARITY, InferGroupsConfig, LeakageConfig
from synthgate.data.groups_inferred import infer_groups, regroup_split
from synthgate.data.leakage import at_resolution, diagnose_leakage, flags
from synthgate.data.prepare import prepare
from synthgate.data.validate import group_check, validate
from synthgate.errors import DataError
from tests.helpers import pattern, png_bytes, run_cli

OFFSETS = ((0, 0), (2, 2), (0, 2), (2, 0))  # 36x36 windows of a 40x40 field: re-crops of one acquisition


def _crops(seed: int, n: int) -> list[Image.Image]:
    field = pattern(seed, (40, 40))
    return [field.crop((x, y, x + 36, y + 36)) for y, x in OFFSETS[:n]]


def _array(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(im.resize((32, 32), Image.Resampling.BILINEAR)) for im in images])[..., None]


def _write(root, name: str, images: list[Image.Image]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        (root / f"{name}_{i}.png").write_bytes(png_bytes(im))


@pytest.fixture(autouse=True)
def _config_home(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNTHGATE_GROUP_SALT", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_the_rule_and_the_reference_resolution():
    t = LeakageConfig()
    assert (t.similarity, t.margin, t.resolution) == (LEAK_SIMILARITY, LEAK_MARGIN, 32)
    assert flags(np.array([0.99, 0.90, 0.90]), np.array([0.0, 0.5, 0.1]), t).tolist() == [True, True, False]
    img = np.zeros((1, 64, 64, 1), np.uint8)
    img[0, :32, :32] = 200  # block means: the top-left quarter stays 200, the rest 0
    small = at_resolution(img, 32)
    assert small.shape == (1, 32, 32) and small[0, :16, :16].min() == 200 and small[0, 16:, 16:].max() == 0
    assert at_resolution(np.zeros((2, 48, 48, 1), np.uint8), 32).shape == (2, 32, 32)


def test_diagnosis_flags_held_out_re_crops_of_training_images_and_not_other_acquisitions():
    train = [im for s in range(40) for im in _crops(s, 2)]  # 40 acquisitions, 2 images each
    leaked = [_crops(s, 3)[2] for s in range(10)]  # a third re-crop of 10 training acquisitions
    unseen = [_crops(100 + s, 1)[0] for s in range(30)]  # 30 acquisitions never seen in training
    images = _array(train + leaked + unseen)
    splits = np.array(["train"] * 80 + ["test"] * 10 + ["val"] * 30)
    labels = np.zeros(len(images), np.int64)
    labels[80:85] = 1
    labels[:40] = 1
    rep = diagnose_leakage(images, splits, labels, ["a", "b"], np.array([f"f{i}" for i in range(len(images))]),
                           LeakageConfig())
    assert rep.held_out == 40
    assert rep.pairs.loc[rep.pairs["split"] == "test", "flagged"].all()
    assert rep.pairs.loc[rep.pairs["split"] == "val", "flagged"].sum() <= 1  # other acquisitions: not closer
    assert rep.counts["test"] == {"a": {"held_out": 5, "flagged": 5}, "b": {"held_out": 5, "flagged": 5}}
    # each leaked image is matched to a training image of its own acquisition
    hit = rep.pairs[rep.pairs["split"] == "test"]
    assert ((hit["train_index"].to_numpy() // 2) == np.arange(10)).all()
    assert rep.leaks and rep.verdict.startswith("the split leaks: about ")
    assert "share a patient with training" in rep.verdict and "cannot certify" in rep.verdict
    assert "--infer-groups" in rep.verdict


def _split_folder(root, leak: int):
    """Training/ and Testing/ class folders; ``leak`` test images per class re-crop a training acquisition."""
    for c, base in (("a", 0), ("b", 500)):
        for s in range(12):
            _write(root / "Training" / c, f"acq{base + s}", _crops(base + s, 2))
        for s in range(6):
            src = base + s if s < leak else base + 100 + s
            _write(root / "Testing" / c, f"acq{src}", [_crops(src, 3)[2]])
    return root


def test_validate_reports_the_leak_with_the_closest_pairs_side_by_side_and_still_passes(tmp_path):
    ds = prepare(SourceConfig(type="folder", path=_split_folder(tmp_path / "raw", leak=3)),
                 PrepareConfig(resolution=32, split={"val": 0.0, "test": 0.1}), tmp_path / "prepared")
    r = validate(ds.root, ValidateConfig(min_images_per_class=5, near_duplicate_threshold=0.999, aligned_duplicates=False),
                 tmp_path / "val", tmp_path / "rep")
    assert r.passed and r.leakage is not None
    assert r.leakage.counts["test"]["a"]["flagged"] >= 3 and r.leakage.counts["test"]["b"]["flagged"] >= 3
    report = json.loads((tmp_path / "rep" / "validation.json").read_text())
    assert report["leakage"]["flagged"] == r.leakage.flagged
    assert report["leakage"]["per_split_and_class"]["test"]["a"]["held_out"] == 6
    csv = pd.read_csv(tmp_path / "rep" / "leakage.csv")
    assert len(csv) == r.leakage.held_out and {"source", "train_source", "similarity", "margin"} <= set(csv.columns)
    png = np.asarray(Image.open(tmp_path / "rep" / "leakage_pairs.png"))
    shown = min(r.leakage.flagged, 16)
    assert png.shape == (shown * 34 + 2, 2 * 34 + 2)  # one pair per row: held-out left, training right
    off = validate(ds.root, ValidateConfig(min_images_per_class=5, aligned_duplicates=False,
                                           leakage=LeakageConfig(enabled=False)), tmp_path / "v2", tmp_path / "r2")
    assert off.leakage is None


def test_the_lean_nearest_search_gives_the_copy_search_s_own_scores():
    """aligned_nearest computes only the pixel and aligned scores (and warps only the rotations/flips its
    candidates chose, with faster sampling grids); its similarity, margin and nearest image must be the gate's
    search's at the settings the leakage rule was calibrated with (``LEAKAGE_SEARCH``), to float rounding, or the
    calibration would no longer hold."""
    import torch

    from synthgate.data.dedup import LEAKAGE_SEARCH, aligned_nearest
    from synthgate.evaluation.memorization.search import TrainIndex, make_spec, search
    from synthgate.evaluation.memorization.stats import fisher_z

    rng = np.random.default_rng(3)
    ref = _array([im for s in range(30) for im in _crops(s, 2)])
    noisy = np.clip(ref[::3].astype(np.int16) + rng.integers(-12, 13, ref[::3].shape), 0, 255).astype(np.uint8)
    queries = np.concatenate([_array([im for s in range(30, 40) for im in _crops(s, 1)]),  # other acquisitions
                              _array([c for s in range(0, 30, 3) for c in _crops(s, 4)[2:]]),  # re-crops
                              np.rot90(ref[1::5], 1, axes=(1, 2)), noisy])  # rotated, noisy copies
    near = aligned_nearest(queries, ref, shortlist=8)
    res = search(queries, TrainIndex.build(ref, torch.device("cpu")), make_spec(32, shortlist=8, **LEAKAGE_SEARCH))
    similarity = np.clip(np.maximum(res.pixel, res.aligned), 0.0, 1.0)
    margin = np.nan_to_num(fisher_z(res.aligned) - fisher_z(res.aligned_second), nan=0.0, posinf=0.0, neginf=0.0)
    np.testing.assert_allclose(near.similarity, similarity, atol=1e-5)
    np.testing.assert_allclose(near.second, res.aligned_second, atol=1e-5)
    np.testing.assert_allclose(near.margin, margin, atol=1e-3)
    assert (near.index == np.where(res.pixel >= res.aligned, res.pixel_index, res.aligned_index)).all()


def test_re_crops_of_one_acquisition_land_in_one_group_and_different_ones_do_not():
    images = _array([im for s in range(25) for im in _crops(s, 4)])
    labels = np.zeros(len(images), np.int64)
    g = infer_groups(images, labels, ["a"], [""] * len(images), InferGroupsConfig(enabled=True, rounds=3))
    ids = g.ids.reshape(25, 4)
    assert all(len(set(row.tolist())) == 1 for row in ids)  # each acquisition's 4 re-crops: one group
    assert len(set(ids[:, 0].tolist())) == 25  # no two acquisitions merged
    d = g.distribution()
    assert d["groups"] == 25 and d["histogram"] == {"4-7": 25} and d["largest"] == [4] * 5 and g.links >= 75


def test_classes_grouped_side_by_side_give_the_groups_of_one_at_a_time():
    """infer_groups runs the classes in parallel threads (one torch thread each); each class has its own seeded
    folds, so the groups are the same whatever the number of threads, and torch's setting is restored."""
    import torch

    images = _array([im for s in range(12) for im in _crops(s, 3)])
    labels = np.repeat([0, 1, 2], 12)
    cfg = InferGroupsConfig(enabled=True, rounds=2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = infer_groups(images, labels, ["a", "b", "c"], [""] * len(images), cfg, seed=5)
        torch.set_num_threads(3)
        three = infer_groups(images, labels, ["a", "b", "c"], [""] * len(images), cfg, seed=5)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert (one.ids == three.ids).all() and one.links == three.links
    assert all(len(set(row.tolist())) == 1 for row in one.ids.reshape(12, 3))  # each acquisition: one group


def test_a_chain_is_capped_at_max_group_size():
    images = _array([im for s in range(6) for im in _crops(s, 4)])
    cfg = InferGroupsConfig(enabled=True, rounds=3, max_group_size=2)
    g = infer_groups(images, np.zeros(len(images), np.int64), ["a"], [""] * len(images), cfg)
    assert g.sizes().max() == 2 and g.capped > 0


def test_a_pattern_links_named_acquisitions_and_one_that_matches_nothing_is_refused():
    images = _array([_crops(s, 1)[0] for s in range(8)])
    paths = [f"scan{s // 2}_slice{s}.png" for s in range(8)]
    cfg = InferGroupsConfig(enabled=True, pattern=r"(scan[0-9]+)_")
    g = infer_groups(images, np.zeros(8, np.int64), ["a"], paths, cfg)
    assert g.pattern_links == 4 and sorted(g.sizes().tolist()) == [2, 2, 2, 2]
    with pytest.raises(DataError, match=r"pattern '\(patient\[0-9\]\+\)/' matches none of the 8 file path\(s\), "
                                        r"e\.g\. scan0_slice0\.png"):
        infer_groups(images, np.zeros(8, np.int64), ["a"], paths,
                     InferGroupsConfig(enabled=True, pattern="(patient[0-9]+)/"))


def test_groups_that_collapse_into_one_are_refused_with_the_group_sizes():
    base = np.asarray(_crops(7, 1)[0].resize((32, 32)), np.float64)
    rng = np.random.default_rng(0)
    images = np.clip(base[None] + rng.normal(0, 1.0, (12, 32, 32)), 0, 255).astype(np.uint8)[..., None]
    with pytest.raises(DataError, match=r"inferred groups collapsed: class 'a' \(12 images\) forms 1 group\(s\) whose "
                                        r"largest holds 12 \(100% > prepare\.infer_groups\.max_group_share 0\.5\); "
                                        r"group sizes: 12"):
        infer_groups(images, np.zeros(12, np.int64), ["a"], [""] * 12, InferGroupsConfig(enabled=True))


def test_prepare_splits_by_inferred_groups_when_the_source_names_no_patients(tmp_path):
    for c, base in (("a", 0), ("b", 500)):
        for s in range(15):
            _write(tmp_path / "raw" / c, f"acq{base + s}", _crops(base + s, 3))
    cfg = PrepareConfig(resolution=32, split={"val": 0.2, "test": 0.2, "seed": 1},
                        infer_groups=InferGroupsConfig(enabled=True, rounds=3))
    ds = prepare(SourceConfig(type="folder", path=tmp_path / "raw"), cfg, tmp_path / "prepared")
    meta = ds.meta
    acq = meta["source"].str.extract(r"acq([0-9]+)_")[0]
    assert (meta.groupby(acq)["group"].nunique() == 1).all()  # an acquisition is one group ...
    assert (meta.groupby(acq)["split"].nunique() == 1).all()  # ... in one split
    assert group_check(meta["group"].to_numpy(), meta["split"].to_numpy(), np.ones(len(meta), bool)).passed
    g = ds.manifest["groups"]
    assert g["groups"] == 30 and g["hashed"] is None and g["histogram"] == {"2-3": 30}
    assert ds.manifest["split_method"].startswith("stratified, grouped by patient")
    r = validate(ds.root, ValidateConfig(min_images_per_class=5), tmp_path / "val", tmp_path / "rep")
    assert r.leakage is not None and r.leakage.flagged == 0 and not r.leakage.leaks


def test_a_source_split_is_kept_by_default_and_regrouped_on_request_listing_the_moved_images(tmp_path):
    raw = _split_folder(tmp_path / "raw", leak=2)
    infer = InferGroupsConfig(enabled=True, rounds=3)
    kept = prepare(SourceConfig(type="folder", path=raw),
                   PrepareConfig(resolution=32, split={"val": 0.0, "test": 0.1}, infer_groups=infer), tmp_path / "kept")
    assert (kept.meta["source"].str.contains("/Testing/") == (kept.meta["split"] == "test")).all()
    assert "group" not in kept.meta and kept.meta["inferred_group"].nunique() == 32
    assert kept.manifest["groups"]["source_split"] == "kept" and kept.manifest["groups"]["groups_in_two_splits"] == 4
    cfg = PrepareConfig(resolution=32, split={"val": 0.0, "test": 0.1},
                        infer_groups=infer.model_copy(update={"source_split": "regroup"}))
    ds = prepare(SourceConfig(type="folder", path=raw), cfg, tmp_path / "regrouped")
    g = ds.manifest["groups"]
    assert g["source_split"] == "regrouped" and g["moved"] == 4
    moved = {m["source"].rsplit("/", 1)[-1]: (m["from"], m["to"]) for m in g["moved_images"]}
    assert moved == {"acq0_0.png": ("test", "train"), "acq1_0.png": ("test", "train"),
                     "acq500_0.png": ("test", "train"), "acq501_0.png": ("test", "train")}
    assert (ds.meta["source_split"] != ds.meta["split"]).sum() == 4
    assert "regrouped by inferred groups: 4 image(s) moved" in ds.manifest["split_method"]
    r = validate(ds.root, ValidateConfig(min_images_per_class=5), tmp_path / "val", tmp_path / "rep")
    assert r.leakage is not None and r.leakage.flagged == 0


def test_a_regrouped_split_that_leaves_a_class_without_held_out_images_is_refused_naming_it():
    splits = np.array(["train", "train", "test", "train", "test", "test"])
    labels = np.array([0, 0, 0, 1, 1, 1])
    groups = np.array(["g1", "g1", "g1", "g2", "g3", "g4"])  # class a's only test image shares g1 with training
    with pytest.raises(DataError, match=r"the regrouped split leaves class 'a' without test images: all 1 of its "
                                        r"test image\(s\) share an inferred group with training images"):
        regroup_split(splits, labels, ["a", "b"], groups)
    new, moved = regroup_split(splits, labels, ["a", "b"], np.array(["g1", "g1", "g5", "g2", "g2", "g4"]))
    assert new.tolist() == ["train", "train", "test", "train", "train", "test"] and moved.tolist() == [4]


def test_cli_prepare_infers_groups_and_validate_prints_the_verdict(tmp_path):
    raw = _split_folder(tmp_path / "raw", leak=3)
    r = run_cli("prepare", "--source", str(raw), "--out", str(tmp_path / "p"), "--resolution", "32",
                "--infer-groups", "--keep-source-split", cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert "inferred" in r.stdout and "largest" in r.stdout
    r = run_cli("validate", "--dataset", str(tmp_path / "p"), "--out", str(tmp_path / "v"), "--report",
                str(tmp_path / "rep"), "--min-images-per-class", "5", "--drop-duplicates", cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert "leakage" in r.stdout
    bad = run_cli("prepare", "--source", str(raw), "--out", str(tmp_path / "p2"), "--resolution", "32",
                  "--infer-groups", "--infer-pattern", "(patient[0-9]+)/", cwd=tmp_path)
    assert bad.code != 0
    assert "matches none of the" in bad.stdout + bad.stderr and "p2" not in [p.name for p in tmp_path.iterdir()]
