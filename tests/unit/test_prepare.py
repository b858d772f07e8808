import json

import numpy as np
import pandas as pd
import pytest

from synthgate.config import PrepareConfig, SourceConfig, SplitConfig
from synthgate.data.canonical import METADATA_COLUMNS, load_dataset
from synthgate.data.complexity import delentropy
from synthgate.data.prepare import assign_splits, prepare
from synthgate.errors import DataError
from synthgate.utils import sha256_file
from tests.helpers import make_folder, make_npz


def test_stratified_split_is_seeded_and_proportional():
    labels = np.repeat(np.arange(3), [100, 50, 7])
    a = assign_splits(labels, 3, 0.1, 0.2, seed=1)
    b = assign_splits(labels, 3, 0.1, 0.2, seed=1)
    c = assign_splits(labels, 3, 0.1, 0.2, seed=2)
    assert (a == b).all() and not (a == c).all()
    for k, n in enumerate([100, 50, 7]):
        s = a[labels == k]
        assert (s == "val").sum() == round(n * 0.1) and (s == "test").sum() == round(n * 0.2)
    one = assign_splits(np.array([0]), 1, 0.5, 0.4, seed=0)
    assert one.tolist() == ["train"]


def test_prepare_folder_writes_canonical_dataset(tmp_path):
    src = make_folder(tmp_path / "raw", {"lung": 20, "bone": 10})
    cfg = PrepareConfig(resolution=32, channels=1, split=SplitConfig(val=0.2, test=0.2, seed=3))
    ds = prepare(SourceConfig(type="folder", path=src), cfg, tmp_path / "out")
    assert ds.images.shape == (30, 32, 32, 1) and ds.images.dtype == np.uint8
    assert ds.classes == ["bone", "lung"]
    assert list(ds.meta.columns) == [*METADATA_COLUMNS[1:], "index"] or set(ds.meta.columns) == set(METADATA_COLUMNS)
    assert ds.counts() == {"train": {"bone": 6, "lung": 12}, "val": {"bone": 2, "lung": 4},
                           "test": {"bone": 2, "lung": 4}}
    m = ds.meta
    assert set(m["orig_channels"]) == {1, 3}  # mixed RGB and grayscale inputs
    assert m["orig_width"].nunique() > 1  # mixed sizes
    np.testing.assert_allclose(m["delentropy"], delentropy(np.asarray(ds.images)))
    np.testing.assert_allclose(m["mean"], np.asarray(ds.images).reshape(30, -1).mean(1), rtol=1e-6)
    assert m["sha256"].str.len().eq(64).all()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["prepare"]["resolution"] == 32
    assert manifest["inputs"][0]["files"] == 30
    assert len(manifest["content_hash"]) == 64
    # same input, same config -> same content hash; another seed -> another one
    ds2 = prepare(SourceConfig(type="folder", path=src), cfg, tmp_path / "out2")
    assert ds2.content_hash == ds.content_hash
    cfg3 = cfg.model_copy(update={"split": SplitConfig(val=0.2, test=0.2, seed=4)})
    assert prepare(SourceConfig(type="folder", path=src), cfg3, tmp_path / "out3").content_hash != ds.content_hash


def test_prepare_rgb_output(tmp_path):
    src = make_folder(tmp_path / "raw", {"a": 4, "b": 4})
    ds = prepare(SourceConfig(type="folder", path=src), PrepareConfig(resolution=16, channels=3), tmp_path / "o")
    assert ds.images.shape == (8, 16, 16, 3)


def test_prepare_npz_keeps_source_split_and_records_input_hash(tmp_path, breast_path):
    ds = prepare(SourceConfig(path=breast_path), PrepareConfig(resolution=32), tmp_path / "o")
    assert ds.classes == ["malignant", "normal, benign"]
    c = ds.counts()
    assert (sum(c["train"].values()), sum(c["val"].values()), sum(c["test"].values())) == (546, 78, 156)
    assert ds.manifest["split_method"] == "source"
    assert ds.manifest["inputs"][0]["sha256"] == sha256_file(breast_path)
    assert ds.images.shape[1:] == (32, 32, 1)


def test_max_per_class_subsamples_reproducibly(tmp_path):
    src = make_npz(tmp_path / "x.npz", {"train": 40, "val": 10, "test": 10}, n_classes=2)
    cfg = PrepareConfig(resolution=16, max_per_class=12)
    a = prepare(SourceConfig(path=src), cfg, tmp_path / "a")
    b = prepare(SourceConfig(path=src), cfg, tmp_path / "b")
    assert (a.meta["label"].value_counts() == 12).all()
    assert a.content_hash == b.content_hash


def test_corrupt_image_names_file_and_writes_nothing(tmp_path):
    src = make_folder(tmp_path / "raw", {"a": 3, "b": 3}, mixed=False)
    bad = src / "b" / "0001.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        prepare(SourceConfig(type="folder", path=src), PrepareConfig(resolution=16), out)
    assert str(bad) in e.value.message and "cannot decode image" in e.value.message
    assert "on_error: skip" in e.value.hint
    assert not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())
    # skip mode leaves it out and says so in the manifest
    ds = prepare(SourceConfig(type="folder", path=src), PrepareConfig(resolution=16, on_error="skip"), out)
    assert len(ds.meta) == 5
    assert ds.manifest["skipped"][0]["source"] == str(bad)


def test_failed_prepare_leaves_previous_dataset_intact(tmp_path):
    src = make_folder(tmp_path / "raw", {"a": 3, "b": 3}, mixed=False)
    out = tmp_path / "out"
    first = prepare(SourceConfig(type="folder", path=src), PrepareConfig(resolution=16), out)
    (src / "a" / "0000.png").write_bytes(b"garbage")
    with pytest.raises(DataError):
        prepare(SourceConfig(type="folder", path=src), PrepareConfig(resolution=16), out)
    assert load_dataset(out).content_hash == first.content_hash


def test_nan_pixels_in_float_npz_are_counted(tmp_path):
    imgs = np.random.default_rng(0).random((6, 16, 16)).astype(np.float32)
    imgs[2, :4] = np.nan
    p = tmp_path / "f.npz"
    np.savez(p, train_images=imgs, train_labels=np.array([0, 1, 0, 1, 0, 1]))
    ds = prepare(SourceConfig(path=p), PrepareConfig(resolution=16), tmp_path / "o")
    nan = pd.Series(ds.meta["nan_fraction"].to_numpy())
    assert nan[2] == pytest.approx(0.25) and (nan.drop(2) == 0).all()
