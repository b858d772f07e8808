"""Real-world layouts: split folders above class folders, label tables for any image folder, and
patient groups (label table, DICOM PatientID, a path pattern) with a split grouped by patient."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest

from synthgate.config import PrepareConfig, SourceConfig, SplitConfig, ValidateConfig
from synthgate.data.canonical import load_dataset
from synthgate.data.folders import read_folder
from synthgate.data.prepare import grouped_splits, prepare
from synthgate.data.sources import read_source
from synthgate.data.validate import group_check, validate
from synthgate.errors import DataError, ValidationFailed
from tests.helpers import make_folder, pattern, png_bytes, run_cli, write_dicom

CFG = PrepareConfig(resolution=32, workers=1)


@pytest.fixture(autouse=True)
def _config_home(tmp_path, monkeypatch):
    """The local secret that hashes patient ids goes to a temporary config folder, not the user's."""
    monkeypatch.delenv("SYNTHGATE_GROUP_SALT", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _split_tree(root, splits=("Training", "Testing"), classes=("glioma", "meningioma", "none"), n=6, seed=0):
    for k, s in enumerate(splits):
        make_folder(root / s, {c: n for c in classes}, mixed=False, seed=seed + k)
    return root


def test_split_folders_are_the_sources_split_and_val_is_carved_from_training(tmp_path):
    src = _split_tree(tmp_path / "brain", n=10)
    data = read_folder(src)
    assert data.classes == ["glioma", "meningioma", "none"] and data.has_split
    assert {it.split for it in data.items} == {"train", "test"} and data.split_source == "split folders (train, test)"
    ds = prepare(SourceConfig(type="folder", path=src), CFG, tmp_path / "prepared")
    counts = ds.counts()
    # the source's Testing folder is the test split, whole; val comes out of Training (10% per class)
    assert counts["test"] == {"glioma": 10, "meningioma": 10, "none": 10}
    assert counts["val"] == {"glioma": 1, "meningioma": 1, "none": 1}
    assert counts["train"] == {"glioma": 9, "meningioma": 9, "none": 9}
    assert ds.manifest["split_method"].startswith("source (split folders (train, test)); val carved from its "
                                                  "training split")
    tested = ds.meta.loc[ds.meta["split"] == "test", "source"]
    assert tested.str.contains("/Testing/").all()


def test_split_folder_names_in_any_case_and_in_archives(tmp_path):
    root = _split_tree(tmp_path / "d" / "wrapper", splits=("TRAIN", "Valid", "test"), classes=("a", "b"), n=3)
    zp = tmp_path / "d.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for f in sorted(root.rglob("*.png")):
            zf.write(f, f.relative_to(tmp_path / "d"))
    for source in (tmp_path / "d", zp):
        data = read_folder(source)
        assert data.classes == ["a", "b"]
        assert sorted({it.split for it in data.items}) == ["test", "train", "val"]
        assert all(("/TRAIN/" in it.source) == (it.split == "train") for it in data.items)


@pytest.mark.parametrize("layout,message", [
    ({"train": ("a", "b"), "test": ("a",)},
     r"the split folders hold different classes \(test: a; train: a, b\)"),
    ({"train": ("a", "b"), "testing": ("a", "b"), "test": ("a", "b")},
     r"two folders for the test split: 'test' and 'testing'"),
    ({"val": ("a", "b"), "test": ("a", "b")}, r"split folders test, val but none for training"),
])
def test_inconsistent_split_layouts_are_refused_with_what_was_found(tmp_path, layout, message):
    for split, classes in layout.items():
        make_folder(tmp_path / "src" / split, {c: 2 for c in classes}, mixed=False)
    with pytest.raises(DataError, match=message):
        read_folder(tmp_path / "src")


def test_a_class_named_like_a_split_and_a_split_folder_without_classes_are_refused(tmp_path):
    make_folder(tmp_path / "mixed", {"tumour": 2, "Test": 2, "normal": 2}, mixed=False)
    with pytest.raises(DataError, match=r"folder\(s\) named like a split \(Test\) beside class folder\(s\) "
                                        r"\(normal, tumour\)") as e:
        read_folder(tmp_path / "mixed")
    assert "rename a class" in e.value.hint
    flat = tmp_path / "flat"
    (flat / "train").mkdir(parents=True)
    (flat / "train" / "0.png").write_bytes(png_bytes(pattern(1)))
    make_folder(flat / "test", {"a": 2}, mixed=False)
    with pytest.raises(DataError, match=r"train: images directly in the split folder; expected one folder per class"):
        read_folder(flat)


def _flat(root, n=8, ext="png"):
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"img_{i:03d}.{ext}"
        (root / name).write_bytes(png_bytes(pattern(i), "PNG"))
        rows.append({"file": name, "label": "lesion" if i % 2 else "normal", "patient": f"P{i // 2}"})
    return rows


def test_label_table_for_a_flat_folder_with_split_and_patient_columns(tmp_path):
    rows = _flat(tmp_path / "flat", 12)
    for r in rows:
        r["split"] = "Training" if int(r["patient"][1:]) < 4 else "test"
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    data = read_source(SourceConfig(type="folder", path=tmp_path / "flat", labels=tmp_path / "labels.csv"))
    assert data.classes == ["lesion", "normal"] and data.has_split
    assert data.group_source == "label table column 'patient'"
    assert [it.group for it in data.items[:4]] == ["P0", "P0", "P1", "P1"]
    assert {it.split for it in data.items} == {"train", "test"}
    assert data.inputs[-1]["path"].endswith("labels.csv")


def test_a_label_table_without_split_column_over_split_folders_says_it_draws_a_new_split(tmp_path, caplog):
    for split in ("Training", "Testing"):
        _flat(tmp_path / "tree" / split, 4)
    rows = [{"file": f"{s}/img_{i:03d}.png", "label": "a" if i % 2 else "b"}
            for s in ("Training", "Testing") for i in range(4)]
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    with caplog.at_level("WARNING"):
        data = read_source(SourceConfig(type="folder", path=tmp_path / "tree", labels=tmp_path / "labels.csv"))
    assert not data.has_split and len(data.items) == 8
    assert "no 'split' column, so the split folder(s) Testing, Training are not used" in caplog.text


def test_label_table_bad_rows_are_refused_by_name(tmp_path):
    rows = _flat(tmp_path / "flat", 6)
    table = tmp_path / "labels.csv"
    cfg = SourceConfig(type="folder", path=tmp_path / "flat", labels=table)
    pd.DataFrame(rows[:-1]).to_csv(table, index=False)  # img_005 not in the table
    with pytest.raises(DataError, match=r"1 image file\(s\) in .* are not in the label table, e.g. img_005.png"):
        read_source(cfg)
    pd.DataFrame([*rows, {"file": "gone.png", "label": "normal", "patient": "P9"}]).to_csv(table, index=False)
    with pytest.raises(DataError, match=r"1 listed file\(s\) not found in .*, e.g. gone.png") as e:
        read_source(cfg)
    assert "found e.g. img_000.png" in e.value.hint
    pd.DataFrame([{**r, "split": "holdout"} for r in rows]).to_csv(table, index=False)
    with pytest.raises(DataError, match=r"row 2: split 'holdout' is not one of train, val, test"):
        read_source(cfg)
    pd.DataFrame([{**r, "group": "g"} for r in rows]).to_csv(table, index=False)
    with pytest.raises(DataError, match=r"both a 'group' and a 'patient' column"):
        read_source(cfg)
    pd.DataFrame([{**r, "patient": "" if i == 3 else r["patient"]} for i, r in enumerate(rows)]).to_csv(table, index=False)
    with pytest.raises(DataError, match=r"row 5 has an empty patient"):
        read_source(cfg)


def test_group_pattern_over_the_path(tmp_path):
    for p in range(6):
        make_folder(tmp_path / "src" / "a" / f"patient{p:02d}", {"x": 2}, mixed=False, seed=p)
    # the class folder holds patient folders: a label table gives classes; here the pattern only names groups
    rows = [{"file": str(f.relative_to(tmp_path / "src")), "label": "lesion" if int(f.parent.parent.name[-2:]) % 2
             else "normal"} for f in sorted((tmp_path / "src").rglob("*.png"))]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    cfg = SourceConfig(type="folder", path=tmp_path / "src", labels=tmp_path / "t.csv",
                       group_pattern=r"(patient[0-9]+)/")
    data = read_source(cfg)
    assert len({it.group for it in data.items}) == 6 and data.items[0].group == "patient00"
    assert data.group_source == "group_pattern '(patient[0-9]+)/'"
    with pytest.raises(DataError, match=r"does not match 12 of 12 file\(s\), e.g. a/patient00/x/0000.png"):
        read_source(cfg.model_copy(update={"group_pattern": r"(subject[0-9]+)"}))
    with pytest.raises(DataError, match=r"puts all 12 images in one group, so no split"):
        read_source(cfg.model_copy(update={"group_pattern": r"^a"}))
    with pytest.raises(Exception, match=r"is not a regular expression"):
        SourceConfig(group_pattern="(patient")
    with pytest.raises(Exception, match=r"has 2 capture groups; give one"):
        SourceConfig(group_pattern="(a)(b)")


def test_grouped_split_keeps_each_patient_in_one_split_stratified_and_seeded():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(200), rng.integers(1, 8, 200))  # 200 patients, 1-7 images each
    labels = (rng.random(len(groups)) < 0.3).astype(int)
    labels[groups % 5 == 0] = 1  # some patients all one class
    splits = grouped_splits(labels, 2, 0.1, 0.2, 3, groups)
    assert group_check(groups.astype(str), splits, np.ones(len(groups), bool)).passed
    for k in (0, 1):
        share = {s: np.mean(splits[labels == k] == s) for s in ("val", "test")}
        assert abs(share["val"] - 0.1) < 0.03 and abs(share["test"] - 0.2) < 0.03, share
    assert (grouped_splits(labels, 2, 0.1, 0.2, 3, groups) == splits).all()
    assert not (grouped_splits(labels, 2, 0.1, 0.2, 4, groups) == splits).all()


def test_prepare_hashes_groups_and_splits_by_patient(tmp_path, monkeypatch):
    rows = _flat(tmp_path / "flat", 40)
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    src = SourceConfig(type="folder", path=tmp_path / "flat", labels=tmp_path / "labels.csv")
    cfg = CFG.model_copy(update={"split": SplitConfig(val=0.2, test=0.2, seed=1)})
    ds = prepare(src, cfg, tmp_path / "p1")
    meta = ds.meta
    assert "group" in meta and meta["group"].nunique() == 20
    assert not meta["group"].str.startswith("P").any() and meta["group"].str.len().eq(16).all()  # never the raw id
    assert meta.groupby("group")["split"].nunique().max() == 1
    assert ds.manifest["groups"]["source"] == "label table column 'patient'" and ds.manifest["groups"]["count"] == 20
    assert "grouped by patient" in ds.manifest["split_method"]
    assert (prepare(src, cfg, tmp_path / "p2").meta["group"] == meta["group"]).all()  # stable: DVC reproduces it
    secret = tmp_path / "config" / "synthgate" / "group_salt"
    assert secret.stat().st_mode & 0o777 == 0o600 and str(secret) in ds.manifest["groups"]["hashed"]
    # the hashes cannot be recomputed from what the dataset holds: a keyed hash under a secret kept outside it
    import hashlib
    import hmac

    assert hmac.new(secret.read_text().strip().encode(), b"P0", hashlib.sha256).hexdigest()[:16] in set(meta["group"])
    assert secret.read_text().strip() not in (ds.root / "manifest.json").read_text()
    monkeypatch.setenv("SYNTHGATE_GROUP_SALT", "a secret")
    salted = prepare(src, cfg, tmp_path / "p3")
    assert not (salted.meta["group"] == meta["group"]).any() and "SYNTHGATE_GROUP_SALT" in salted.manifest["groups"]["hashed"]
    # the split itself follows the raw ids, not their hashes: another secret, the same split
    assert (salted.meta["split"] == meta["split"]).all()
    # validation reports the groups per split and passes a patient-disjoint split
    r = validate(ds.root, ValidateConfig(min_images_per_class=1), tmp_path / "val", tmp_path / "rep")
    check = next(c for c in r.checks if c.name == "patient groups within one split")
    assert check.passed and check.details["groups"] == 20 and sum(check.details["groups_per_split"].values()) == 20


def test_a_given_split_that_puts_a_patient_in_two_splits_fails_validation_naming_it(tmp_path):
    rows = _flat(tmp_path / "flat", 16)
    for i, r in enumerate(rows):
        r["split"] = ("train", "val", "test", "train")[i % 4]  # P0's two images: train and val
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    ds = prepare(SourceConfig(type="folder", path=tmp_path / "flat", labels=tmp_path / "labels.csv"), CFG,
                 tmp_path / "prepared")
    with pytest.raises(ValidationFailed, match=r"patient groups within one split: 8 of 8 patient group\(s\) have "
                                               r"images in more than one split, e.g. group [0-9a-f]{16} in") as e:
        validate(ds.root, ValidateConfig(min_images_per_class=1), tmp_path / "val", tmp_path / "rep")
    assert "Groups per split: train" in e.value.message


def test_too_few_patients_for_a_held_out_split_are_refused(tmp_path):
    rows = _flat(tmp_path / "flat", 8)
    for r in rows:
        r["patient"] = "P0"
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DataError, match=r"1 patient group\(s\) \(label table column 'patient'\): a split grouped by "
                                        r"patient leaves the val and test split\(s\) empty"):
        prepare(SourceConfig(type="folder", path=tmp_path / "flat", labels=tmp_path / "labels.csv"), CFG,
                tmp_path / "prepared")


def test_a_class_without_held_out_patients_and_a_table_without_training_rows_are_refused(tmp_path):
    rows = _flat(tmp_path / "flat", 24)
    for r in rows:
        if r["label"] == "lesion":
            r["patient"] = "PX"  # every lesion image from one patient: it can only be in one split
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    src = SourceConfig(type="folder", path=tmp_path / "flat", labels=tmp_path / "labels.csv")
    with pytest.raises(DataError, match=r"class 'lesion' has no (val|test) image: its 12 image\(s\) belong to 1 "
                                        r"patient\(s\), all in other splits"):
        prepare(src, CFG, tmp_path / "p")
    rows = _flat(tmp_path / "flat2", 8)
    pd.DataFrame([{**r, "split": ("val", "test")[i % 2]} for i, r in enumerate(rows)]).to_csv(tmp_path / "l2.csv",
                                                                                               index=False)
    with pytest.raises(DataError, match=r"the source's split \(label table column 'split'\) has no training images"):
        prepare(SourceConfig(type="folder", path=tmp_path / "flat2", labels=tmp_path / "l2.csv"), CFG, tmp_path / "p2")


def test_dicom_without_patient_ids_for_some_files_is_refused(tmp_path):
    rows = []
    for p in range(4):
        rel = f"p{p}/x.dcm"
        write_dicom(tmp_path / "dcm" / rel, np.asarray(pattern(p, (40, 40))).astype(np.uint16) * 16,
                    phi=False, **({"PatientID": f"MRN-{p}"} if p else {}))
        rows.append((rel, "a"))
    pd.DataFrame(rows, columns=["file", "label"]).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DataError, match=r"1 of 4 DICOM file\(s\) have no PatientID \(e.g. p0/x.dcm\), the others do") as e:
        read_source(SourceConfig(type="dicom", path=tmp_path / "dcm", labels=tmp_path / "labels.csv"))
    assert "patient" in e.value.hint


def test_dicom_patient_id_is_the_group_and_only_its_hash_is_kept(tmp_path):
    rows = []
    for p in range(10):
        for j, label in enumerate(("ct_normal", "ct_lesion")):
            rel = f"p{p}/{label}.dcm"
            write_dicom(tmp_path / "dcm" / rel, np.asarray(pattern(10 * p + j, (40, 40))).astype(np.uint16) * 16,
                        PatientID=f"MRN-{p:04d}")
            rows.append((rel, label))
    pd.DataFrame(rows, columns=["file", "label"]).to_csv(tmp_path / "labels.csv", index=False)
    ds = prepare(SourceConfig(type="dicom", path=tmp_path / "dcm", labels=tmp_path / "labels.csv"),
                 CFG.model_copy(update={"split": SplitConfig(val=0.2, test=0.2)}), tmp_path / "prepared")
    assert ds.manifest["groups"]["source"] == "DICOM PatientID" and ds.meta["group"].nunique() == 10
    assert ds.meta.groupby("group")["split"].nunique().max() == 1
    assert not ds.meta["group"].str.contains("MRN").any()
    r = validate(ds.root, ValidateConfig(min_images_per_class=1, deidentify=True), tmp_path / "val", tmp_path / "rep")
    assert r.passed and "MRN" not in load_dataset(tmp_path / "val").meta.to_string()


def test_cli_prepare_with_a_label_table_and_a_group_pattern(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = []
    for i in range(30):
        name = f"pat{i // 3:02d}_img{i}.png"  # 10 patients, 3 images each
        (flat / name).write_bytes(png_bytes(pattern(i), "PNG"))
        rows.append({"file": name, "label": "lesion" if (i // 3) % 2 else "normal"})
    pd.DataFrame(rows).to_csv(tmp_path / "l.csv", index=False)
    args = ["prepare", "--source", str(flat), "--labels", str(tmp_path / "l.csv"), "--resolution", "32",
            "--out", str(tmp_path / "out")]
    r = run_cli(*args, "--group-pattern", r"(pat)(\d+)", cwd=tmp_path)
    assert r.code == 2 and "has 2 capture groups; give one" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(*args, "--group-pattern", r"(pat\d+)_", cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert "grouped by patient" in r.stdout and "patients 10 groups (group_pattern" in r.stdout
    meta = load_dataset(tmp_path / "out").meta
    assert meta.groupby("group")["split"].nunique().max() == 1 and meta["group"].nunique() == 10
