"""NIfTI volumes: slicing along a canonical axis, slice selection, windowing, the volume (or patient)
as the slices' group, provenance back to the volume file, and every bad input the issue names."""

import json

import numpy as np
import pytest

from synthgate.config import PrepareConfig, SourceConfig, VolumeConfig, load_params
from synthgate.data.canonical import load_dataset
from synthgate.data.nifti import read_nifti, select_slices, window
from synthgate.data.prepare import prepare
from synthgate.data.sources import detect_type, read_source
from synthgate.errors import ConfigError, DataError
from synthgate.utils import sha256_file
from tests.helpers import nifti_volume, run_cli, write_nifti, write_nifti_set


@pytest.fixture(autouse=True)
def _config_home(tmp_path, monkeypatch):
    """The local secret that hashes patient ids goes to a temporary config folder."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_volumes_become_windowed_slices_that_name_their_volume(tmp_path):
    labels = write_nifti_set(tmp_path / "vols", patients=2, volumes=2)
    data = read_nifti(tmp_path / "vols", labels, VolumeConfig())
    assert data.kind == "nifti" and data.classes == ["lesion", "normal"]
    # the "body" fills slices 3..8 of 12: the empty slices are not kept (select nonempty)
    assert len(data.items) == 4 * 6
    first = data.items[0]
    assert first.source.endswith("sub-00/scan0.nii.gz#axis=2,slice=3") and first.label == "normal"
    assert first.file_sha256 == sha256_file(tmp_path / "vols" / "sub-00" / "scan0.nii.gz")
    assert first.group == "P00" and first.path == "sub-00/scan0.nii.gz"
    assert data.group_source == "label table column 'patient'"
    assert first.payload.shape == (24, 24) and first.payload.dtype == np.float16
    assert 0.0 <= float(first.payload.min()) and float(first.payload.max()) <= 1.0
    assert [it.source.rsplit("=", 1)[1] for it in data.items[:6]] == ["3", "4", "5", "6", "7", "8"]
    assert data.description == str(tmp_path / "vols")  # the model's default name derives from it
    assert data.detail.startswith("4 volume(s), 24 slice(s) along axis 2 (RAS+)")


def test_slice_selection_modes():
    w = window(nifti_volume(0, True), VolumeConfig())
    assert select_slices(w, VolumeConfig(select="all")) == list(range(12))
    assert select_slices(w, VolumeConfig(select="central", central_fraction=0.5)) == [3, 4, 5, 6, 7, 8]
    assert select_slices(w, VolumeConfig(select="nonempty", every=2)) == [3, 5, 7]
    # along axis 0 the body fills rows 3..20 of 24
    assert select_slices(w, VolumeConfig(axis=0)) == list(range(3, 21))
    # a stricter foreground share drops the slices where the body is only partly present: none here
    assert select_slices(w, VolumeConfig(min_foreground=0.9)) == []


def test_fixed_and_percentile_windows():
    vol = np.full((4, 4, 2), 100.0, np.float32)
    vol[0, 0, 0] = -1000.0  # air
    vol[1, 1, 1] = 3000.0  # bone / metal
    fixed = window(vol, VolumeConfig(window="fixed", low=0, high=200))
    assert fixed[2, 2, 0] == pytest.approx(0.5) and fixed[0, 0, 0] == 0.0 and fixed[1, 1, 1] == 1.0
    ramp = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    ramp[0, 0, 0], ramp[-1, -1, -1] = -1e6, 1e6  # outliers: a min-max scaling would flatten the rest
    pct = window(ramp, VolumeConfig(low=1, high=99))
    assert pct[0, 0, 0] == 0.0 and pct[-1, -1, -1] == 1.0
    assert pct[5, 0, 0] == pytest.approx(0.5, abs=0.01)  # the volume's median maps to the middle
    assert window(np.full((3, 3, 3), 7.0), VolumeConfig()).max() == 0.0  # a constant volume


def test_slices_follow_the_anatomy_not_the_affine(tmp_path):
    vol = nifti_volume(3, True)
    vol[3:10, 3:6, 5] += 300  # an asymmetric mark
    write_nifti(tmp_path / "a" / "ras.nii.gz", vol)
    # the same anatomy stored left-right reversed (x axis flipped in the affine)
    flip = np.diag([-1.0, 1.0, 2.0, 1.0])
    flip[0, 3] = 23.0
    write_nifti(tmp_path / "a" / "las.nii.gz", vol[::-1], affine=flip)
    (tmp_path / "labels.csv").write_text("file,label\nras.nii.gz,x\nlas.nii.gz,x\n")
    data = read_nifti(tmp_path / "a", tmp_path / "labels.csv", VolumeConfig(select="all"))
    ras = {it.source.rsplit("=", 1)[1]: it.payload for it in data.items if "ras" in it.path}
    las = {it.source.rsplit("=", 1)[1]: it.payload for it in data.items if "las" in it.path}
    np.testing.assert_array_equal(ras["5"], las["5"])


def test_prepare_keeps_each_patient_and_volume_in_one_split(tmp_path):
    labels = write_nifti_set(tmp_path / "vols", patients=20, volumes=2)
    ds = prepare(SourceConfig(path=tmp_path / "vols", labels=labels), PrepareConfig(resolution=16), tmp_path / "p")
    meta = ds.meta
    assert len(meta) == 40 * 6
    assert meta.groupby("group")["split"].nunique().max() == 1
    volume = meta["source"].str.split("#").str[0]
    assert meta.assign(volume=volume).groupby("volume")["split"].nunique().max() == 1
    assert meta["group"].nunique() == 20  # the patient, hashed, not the volume
    assert not meta["group"].str.contains("P0").any()
    assert set(meta["split"]) == {"train", "val", "test"}
    assert ds.manifest["config"]["source"]["volume"]["axis"] == 2
    assert ds.manifest["source_detail"].startswith("40 volume(s), 240 slice(s) along axis 2")
    assert meta["source_sha256"].nunique() == 40  # one per volume file


def test_without_a_patient_column_the_volume_is_the_group(tmp_path, caplog):
    labels = write_nifti_set(tmp_path / "vols", patients=10, volumes=2, patient_column=False)
    with caplog.at_level("WARNING"):
        data = read_source(SourceConfig(path=tmp_path / "vols", labels=labels))
    assert data.group_source == "NIfTI volume (file)"
    # two volumes per patient folder: the user is told they may straddle splits, and how to group them
    assert "names no patient, so each volume is its own group, but 10 folder(s) hold several volumes" in caplog.text
    assert "data.source.group_pattern" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        grouped = read_source(SourceConfig(path=tmp_path / "vols", labels=labels, group_pattern="^([^/]+)/"))
    assert "names no patient" not in caplog.text
    assert {it.group for it in grouped.items} == {f"sub-{p:02d}" for p in range(10)}
    assert {it.group for it in data.items} == {f"sub-{p:02d}/scan{v}.nii.gz" for p in range(10) for v in range(2)}
    ds = prepare(SourceConfig(path=tmp_path / "vols", labels=labels), PrepareConfig(resolution=16), tmp_path / "p")
    volume = ds.meta["source"].str.split("#").str[0]
    assert ds.meta.assign(volume=volume).groupby("volume")["split"].nunique().max() == 1


def test_a_folder_of_volumes_is_detected_and_needs_a_label_table(tmp_path):
    write_nifti(tmp_path / "vols" / "a.nii", nifti_volume(0, False))
    assert detect_type(tmp_path / "vols") == "nifti"
    with pytest.raises(ConfigError, match="a NIfTI source needs a label table"):
        read_source(SourceConfig(path=tmp_path / "vols"))


def _one(tmp_path, volume, name="v.nii.gz", **cfg):
    write_nifti(tmp_path / "vols" / name, volume)
    (tmp_path / "labels.csv").write_text(f"file,label\n{name},a\n")
    return read_nifti(tmp_path / "vols", tmp_path / "labels.csv", VolumeConfig(**cfg))


def test_a_2d_file_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"v.nii.gz: a 2D image \(shape \(24, 24\)\), expected a 3D volume"):
        _one(tmp_path, nifti_volume(0, False)[..., 5])


def test_a_4d_file_is_refused_and_a_trailing_singleton_is_not(tmp_path):
    vol = nifti_volume(0, False)
    with pytest.raises(DataError, match=r"a 4D volume \(shape \(24, 24, 12, 2\)\), expected a 3D volume") as e:
        _one(tmp_path, np.stack([vol, vol], -1))
    assert "split it into 3D volumes" in e.value.hint
    assert len(_one(tmp_path, vol[..., None], name="w.nii.gz").items) == 6


def test_an_unreadable_volume_is_refused_by_name(tmp_path):
    (tmp_path / "vols").mkdir()
    (tmp_path / "vols" / "broken.nii.gz").write_bytes(b"not a volume")
    (tmp_path / "labels.csv").write_text("file,label\nbroken.nii.gz,a\n")
    with pytest.raises(DataError, match=r"broken.nii.gz: not a readable NIfTI volume \(ImageFileError"):
        read_nifti(tmp_path / "vols", tmp_path / "labels.csv", VolumeConfig())


def test_listed_files_must_exist_and_be_volumes(tmp_path):
    write_nifti(tmp_path / "vols" / "a.nii.gz", nifti_volume(0, False))
    (tmp_path / "vols" / "b.png").write_bytes(b"x")
    (tmp_path / "l1.csv").write_text("file,label\na.nii.gz,a\ngone.nii.gz,b\n")
    with pytest.raises(DataError, match="listed file 'gone.nii.gz' not found"):
        read_nifti(tmp_path / "vols", tmp_path / "l1.csv", VolumeConfig())
    (tmp_path / "l2.csv").write_text("file,label\na.nii.gz,a\nb.png,b\n")
    with pytest.raises(DataError, match=r"'b.png' is not a NIfTI volume \(.nii or .nii.gz\)"):
        read_nifti(tmp_path / "vols", tmp_path / "l2.csv", VolumeConfig())


def test_a_volume_without_a_selected_slice_is_refused(tmp_path):
    with pytest.raises(DataError, match="no slice passes the selection") as e:
        _one(tmp_path, np.zeros((8, 8, 4), np.float32))
    assert "min_foreground" in e.value.hint


@pytest.mark.parametrize("volume, message", [
    ({"window": "fixed"}, "window: fixed needs low and high"),
    ({"low": 10, "high": 5}, "percentile window needs 0 <= low < high <= 100"),
    ({"window": "fixed", "low": 400, "high": -1000}, "window low must be below high"),
    ({"axis": 3}, "data.source.volume.axis"),
])
def test_bad_volume_settings(tmp_path, volume, message):
    p = tmp_path / "params.yaml"
    p.write_text(json.dumps({"data": {"source": {"volume": volume}}}))
    with pytest.raises(ConfigError) as e:
        load_params(p)
    assert message in e.value.message


def test_prepare_through_the_command_line(tmp_path):
    write_nifti_set(tmp_path / "vols", patients=20, volumes=1)
    r = run_cli("prepare", "--source", "vols", "--labels", "vols/labels.csv", "--resolution", "16", "--out", "p",
                cwd=tmp_path, env={"XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert r.code == 0, r.output
    flat = " ".join(r.stdout.split())
    assert "prepared 120 images" in flat and "grouped by patient" in flat
    assert "20 groups (label table column 'patient')" in flat
    ds = load_dataset(tmp_path / "p")
    assert ds.meta.groupby("group")["split"].nunique().max() == 1
