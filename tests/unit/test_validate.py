import json

import numpy as np
import pytest

from synthgate.config import PrepareConfig, SourceConfig, ValidateConfig
from synthgate.data.canonical import load_dataset, write_dataset
from synthgate.data.dedup import find_duplicates
from synthgate.data.prepare import prepare
from synthgate.data.validate import validate
from synthgate.errors import ValidationFailed
from tests.helpers import make_folder


@pytest.fixture
def prepared(tmp_path):
    src = make_folder(tmp_path / "raw", {"a": 20, "b": 20}, mixed=False)
    return prepare(SourceConfig(type="folder", path=src), PrepareConfig(resolution=32), tmp_path / "prepared")


def _rewrite(ds, images=None, meta=None, root=None):
    """A modified copy of a dataset, written through the canonical writer."""
    return write_dataset(root or ds.root.parent / "modified", np.asarray(images if images is not None else ds.images),
                         meta if meta is not None else ds.meta.copy(), ds.classes, stage="test", config={}, inputs=[])


def test_clean_dataset_passes_and_writes_validated_copy_and_data_docs(prepared, tmp_path):
    r = validate(prepared.root, ValidateConfig(min_images_per_class=5), tmp_path / "val", tmp_path / "rep")
    assert r.passed and not r.failures
    assert r.dataset.content_hash == prepared.content_hash  # nothing dropped: same content
    assert r.dataset.manifest["inputs"][0]["content_hash"] == prepared.content_hash
    html = (tmp_path / "rep" / "data_docs" / "index.html").read_text()
    assert "synthgate_images" in html
    report = json.loads((tmp_path / "rep" / "validation.json").read_text())
    assert report["passed"] is True
    assert report["class_balance"]["counts"]["a"]["train"] == 16


def test_class_below_minimum_fails_with_message(prepared, tmp_path):
    with pytest.raises(ValidationFailed) as e:
        validate(prepared.root, ValidateConfig(min_images_per_class=17), tmp_path / "val", tmp_path / "rep")
    msg = e.value.message
    assert "minimum images per class: train: 2 failing row(s), e.g. a, b" in msg
    assert "data_docs/index.html" in e.value.hint
    assert not (tmp_path / "val").exists()
    assert (tmp_path / "rep" / "data_docs" / "index.html").exists()


def test_empty_images_fail_unless_dropped(prepared, tmp_path):
    imgs = np.array(prepared.images)
    imgs[3] = 0
    meta = prepared.meta.copy()
    from synthgate.data.canonical import pixel_hashes

    meta["sha256"] = pixel_hashes(imgs)
    ds = _rewrite(prepared, imgs, meta)
    with pytest.raises(ValidationFailed, match=r"no empty images: pixel_std: 1 failing row\(s\)"):
        validate(ds.root, ValidateConfig(min_images_per_class=5), tmp_path / "val", tmp_path / "rep")
    r = validate(ds.root, ValidateConfig(min_images_per_class=5, drop_empty=True), tmp_path / "val", tmp_path / "rep")
    assert r.dropped == {"empty": 1} and len(r.dataset.meta) == 39


def test_blank_images_in_two_splits_are_dropped_not_called_duplicates(prepared, tmp_path):
    """Blank images are identical: in two splits they were also an exact cross-split duplicate, so validation
    failed even with drop_empty (found by the validation page's tests, issue #35)."""
    from synthgate.data.canonical import pixel_hashes

    imgs = np.array(prepared.images)
    meta = prepared.meta.copy()
    train, held = np.flatnonzero(meta["split"] == "train")[0], np.flatnonzero(meta["split"] != "train")[0]
    imgs[[train, held]] = 0
    meta["sha256"] = pixel_hashes(imgs)
    ds = _rewrite(prepared, imgs, meta)
    r = validate(ds.root, ValidateConfig(min_images_per_class=5, drop_empty=True), tmp_path / "val", tmp_path / "rep")
    assert r.passed and r.dropped == {"empty": 2} and len(r.dataset.meta) == 38
    dup = next(c for c in r.checks if c.name == "no duplicates across splits")
    assert dup.passed and dup.details["pairs_with_dropped_images"] == 1 and dup.details["exact_pairs"] == 0
    # without drop_empty both checks fail, the duplicate pair named
    with pytest.raises(ValidationFailed, match="no duplicates across splits: 1 exact"):
        validate(ds.root, ValidateConfig(min_images_per_class=5), tmp_path / "val2", tmp_path / "rep2")


def test_tampered_pixels_are_detected(prepared, tmp_path):
    imgs = np.array(prepared.images)
    imgs[5, 0, 0, 0] ^= 0xFF
    ds = _rewrite(prepared, imgs, prepared.meta.copy())
    with pytest.raises(ValidationFailed, match="pixels match recorded sha256"):
        validate(ds.root, ValidateConfig(min_images_per_class=5), tmp_path / "val", tmp_path / "rep")


def test_labels_outside_class_list(prepared, tmp_path):
    meta = prepared.meta.copy()
    meta.loc[2, "label"] = 7
    ds = _rewrite(prepared, None, meta)
    with pytest.raises(ValidationFailed, match="labels within the class list"):
        validate(ds.root, ValidateConfig(min_images_per_class=5), tmp_path / "val", tmp_path / "rep")


def test_cross_split_exact_and_near_duplicates_detected_and_dropped(prepared, tmp_path):
    imgs = np.array(prepared.images)
    meta = prepared.meta.copy()
    train = np.flatnonzero(meta["split"] == "train")
    test = np.flatnonzero(meta["split"] == "test")
    val = np.flatnonzero(meta["split"] == "val")
    imgs[test[0]] = imgs[train[0]]  # exact copy
    noisy = imgs[train[1]].astype(np.int16) + np.random.default_rng(0).integers(-2, 3, imgs[0].shape)
    imgs[val[0]] = np.clip(noisy, 0, 255).astype(np.uint8)  # near copy
    from synthgate.data.canonical import pixel_hashes

    meta["sha256"] = pixel_hashes(imgs)
    ds = _rewrite(prepared, imgs, meta)
    rep = find_duplicates(ds.images, meta["split"].to_numpy(), meta["sha256"].to_numpy(), 0.99)
    kinds = dict(zip(rep.pairs["kind"], zip(rep.pairs["index_a"], rep.pairs["index_b"], strict=False), strict=False))
    assert kinds["exact"] == (train[0], test[0])
    assert kinds["near"] == (train[1], val[0])
    assert sorted(rep.to_drop().tolist()) == sorted([test[0], val[0]])
    with pytest.raises(ValidationFailed) as e:
        validate(ds.root, ValidateConfig(min_images_per_class=5), tmp_path / "val", tmp_path / "rep")
    assert "1 exact and 1 near-duplicate pair(s)" in e.value.message
    assert "--drop-duplicates" in e.value.message
    csv = (tmp_path / "rep" / "duplicates.csv").read_text()
    assert "exact" in csv and "near" in csv
    r = validate(ds.root, ValidateConfig(min_images_per_class=5, drop_duplicates=True), tmp_path / "val",
                 tmp_path / "rep")
    assert r.dropped == {"duplicates": 2}
    left = load_dataset(tmp_path / "val")
    assert len(left.meta) == 38 and (left.meta["split"] == "train").sum() == (meta["split"] == "train").sum()


def test_class_imbalance_limit(tmp_path):
    src = make_folder(tmp_path / "raw", {"a": 40, "b": 12}, mixed=False)
    ds = prepare(SourceConfig(type="folder", path=src), PrepareConfig(resolution=16), tmp_path / "p")
    with pytest.raises(ValidationFailed, match="class balance"):
        validate(ds.root, ValidateConfig(min_images_per_class=5, max_class_imbalance=2.0), tmp_path / "v",
                 tmp_path / "r")
    r = validate(ds.root, ValidateConfig(min_images_per_class=5), tmp_path / "v", tmp_path / "r")
    assert r.class_balance["largest_to_smallest_train_ratio"] == pytest.approx(32 / 10)


def test_a_held_out_image_that_is_a_moved_training_image_is_an_aligned_duplicate(prepared, tmp_path):
    """The gate's held-out null must hold no copies of training images: a test image that is a training
    image mirrored and shifted by 2 px is found by the copy search and dropped with the others."""
    imgs = np.array(prepared.images)
    meta = prepared.meta.copy()
    tr = np.flatnonzero(meta["split"].to_numpy() == "train")
    held = np.flatnonzero(meta["split"].to_numpy() != "train")
    moved = imgs[tr[0]][:, ::-1]
    imgs[held[0]] = np.concatenate([moved[:, :1].repeat(2, axis=1), moved[:, :-2]], axis=1)
    from synthgate.data.canonical import pixel_hashes

    meta["sha256"] = pixel_hashes(imgs)
    ds = _rewrite(prepared, imgs, meta)
    r = find_duplicates(ds.images, meta["split"].to_numpy(), meta["sha256"].to_numpy(), 0.99)
    row = r.pairs[r.pairs["kind"] == "aligned"]
    assert (int(row["index_a"].iloc[0]), int(row["index_b"].iloc[0])) == (int(tr[0]), int(held[0]))
    identity = find_duplicates(ds.images, meta["split"].to_numpy(), meta["sha256"].to_numpy(), 0.99, aligned=False)
    assert int(held[0]) not in set(identity.pairs["index_b"])  # Pearson at the identity transform misses it
    v = validate(ds.root, ValidateConfig(min_images_per_class=5, drop_duplicates=True), tmp_path / "val",
                 tmp_path / "rep")
    assert v.dropped["duplicates"] >= 1 and len(v.dataset.meta) == len(meta) - v.dropped["duplicates"]
