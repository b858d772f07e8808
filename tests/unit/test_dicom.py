import numpy as np
import pandas as pd
import pytest

from synthgate.config import PrepareConfig, SourceConfig, ValidateConfig
from synthgate.data.canonical import load_dataset
from synthgate.data.dicom import read_dicom
from synthgate.data.prepare import prepare
from synthgate.data.validate import validate
from synthgate.errors import DataError, ValidationFailed
from tests.helpers import pattern, write_dicom


@pytest.fixture(autouse=True)
def _config_home(tmp_path, monkeypatch):
    """The local secret that hashes patient ids goes to a temporary config folder."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _dicom_set(root, n_per_class=12, phi=True):
    rows = []
    for k, label in enumerate(["ct_normal", "ct_lesion"]):
        for i in range(n_per_class):
            arr = np.asarray(pattern(100 * k + i, (48, 40))).astype(np.uint16) * 16
            rel = f"patient{i:02d}/{label}_{i}.dcm"
            write_dicom(root / rel, arr, phi=phi, **({"PatientID": f"MRN-{i:04d}"} if phi else {}))
            rows.append((rel, label))
    labels = root / "labels.csv"
    pd.DataFrame(rows, columns=["file", "label"]).to_csv(labels, index=False)
    return labels


def test_dicom_pixels_go_through_modality_lut_and_phi_is_recorded(tmp_path):
    labels = _dicom_set(tmp_path / "dcm", 3)
    data = read_dicom(tmp_path / "dcm", labels)
    assert data.classes == ["ct_lesion", "ct_normal"]
    assert len(data.items) == 6
    raw = np.asarray(pattern(0, (48, 40))).astype(np.float64) * 16 - 1024  # RescaleIntercept applied
    np.testing.assert_allclose(data.items[0].payload, raw)
    assert data.dicom_tags[0] == {"PatientName": "DOE^JANE", "PatientID": "MRN-0000",
                                  "PatientBirthDate": "19700101", "InstitutionName": "General Hospital",
                                  **{k: v for k, v in data.dicom_tags[0].items() if k.endswith("UID")}}


def test_phi_refused_unless_deidentified(tmp_path):
    labels = _dicom_set(tmp_path / "dcm")
    ds = prepare(SourceConfig(type="dicom", path=tmp_path / "dcm", labels=labels), PrepareConfig(resolution=32),
                 tmp_path / "prepared")
    assert ds.dicom_tags is not None and set(ds.dicom_tags["tag"]) >= {"PatientName", "PatientID"}
    cfg = ValidateConfig(min_images_per_class=5, drop_duplicates=True)
    with pytest.raises(ValidationFailed) as e:
        validate(ds.root, cfg, tmp_path / "val", tmp_path / "rep")
    msg = e.value.message
    assert "24 of 24 DICOM image(s) carry identifying tags" in msg
    assert "PatientName (24)" in msg and "PatientBirthDate (24)" in msg and "--deidentify" in msg
    assert "DOE^JANE" not in msg  # never print the PHI itself
    assert not (tmp_path / "val").exists()

    r = validate(ds.root, cfg.model_copy(update={"deidentify": True}), tmp_path / "val", tmp_path / "rep")
    out = load_dataset(tmp_path / "val")
    assert r.passed and out.dicom_tags is None
    assert not (tmp_path / "val" / "dicom_tags.parquet").exists()
    assert out.manifest["deidentified"] is True
    assert out.meta["source"].str.startswith("dicom-").all()
    assert not out.meta["source"].str.contains("patient").any()


def test_deidentified_dicom_passes_but_uids_alone_are_identifying(tmp_path):
    labels = _dicom_set(tmp_path / "anon", phi=False)
    ds = prepare(SourceConfig(type="dicom", path=tmp_path / "anon", labels=labels), PrepareConfig(resolution=32),
                 tmp_path / "p1")
    assert set(ds.dicom_tags["tag"]) == {"SOPInstanceUID"}  # UIDs link back to the hospital's PACS
    with pytest.raises(ValidationFailed, match=r"SOPInstanceUID \(24\)"):
        validate(ds.root, ValidateConfig(min_images_per_class=5), tmp_path / "v", tmp_path / "r")

    rows = []
    for i in range(12):
        for k, label in enumerate(["a", "b"]):
            rel = f"{label}{i}.dcm"
            write_dicom(tmp_path / "done" / rel, np.asarray(pattern(50 * k + i, (32, 32))), phi=False,
                        PatientIdentityRemoved="YES", DeidentificationMethod="tool X")
            rows.append((rel, label))
    pd.DataFrame(rows, columns=["file", "label"]).to_csv(tmp_path / "done.csv", index=False)
    ds = prepare(SourceConfig(type="dicom", path=tmp_path / "done", labels=tmp_path / "done.csv"),
                 PrepareConfig(resolution=32), tmp_path / "p2")
    assert len(ds.dicom_tags) == 0
    r = validate(ds.root, ValidateConfig(min_images_per_class=5), tmp_path / "v", tmp_path / "r")
    assert any(c.name == "no DICOM PHI" and c.passed for c in r.checks)


def test_dicom_without_pixel_data(tmp_path):
    root = tmp_path / "dcm"
    write_dicom(root / "a.dcm", np.ones((8, 8)))
    write_dicom(root / "report.dcm", None)
    labels = root / "labels.csv"
    labels.write_text("file,label\na.dcm,x\nreport.dcm,y\n")
    with pytest.raises(DataError, match="report.dcm: DICOM file has no pixel data") as e:
        read_dicom(root, labels)
    assert "remove it from the label table" in e.value.hint


def test_label_table_errors(tmp_path):
    root = tmp_path / "dcm"
    write_dicom(root / "a.dcm", np.ones((8, 8)))
    bad_cols = root / "l1.csv"
    bad_cols.write_text("path,class\na.dcm,x\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['file', 'label'\]"):
        read_dicom(root, bad_cols)
    missing = root / "l2.csv"
    missing.write_text("file,label\nnope.dcm,x\n")
    with pytest.raises(DataError, match="listed file 'nope.dcm' not found"):
        read_dicom(root, missing)
