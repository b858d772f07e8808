import io
import tarfile
import zipfile

import numpy as np
import pytest

from synthgate.config import SourceConfig
from synthgate.data.folders import read_folder
from synthgate.data.medmnist import read_medmnist
from synthgate.data.sources import detect_type, read_source
from synthgate.errors import ConfigError, DataError
from tests.helpers import make_folder, make_npz, pattern, png_bytes


def _tar(path, entries, mode="w:gz"):
    with tarfile.open(path, mode) as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_folder_with_wrapper_directory_and_ignored_files(tmp_path):
    make_folder(tmp_path / "wrap" / "ds", {"b": 3, "a": 2})
    (tmp_path / "wrap" / "ds" / "a" / "notes.txt").write_text("x")
    (tmp_path / "wrap" / "ds" / ".hidden").mkdir()
    data = read_folder(tmp_path / "wrap")
    assert data.classes == ["a", "b"]
    assert len(data.items) == 5
    assert [it.label for it in data.items] == ["a", "a", "b", "b", "b"]
    assert data.ignored == ["ds/a/notes.txt"]
    assert len(data.inputs[0]["sha256"]) == 64


def test_single_class_folder_is_not_descended_into(tmp_path):
    make_folder(tmp_path / "root" / "only", {"Hand": 3})
    data = read_folder(tmp_path / "root")
    assert data.classes == ["Hand"]


def test_tar_gz_and_zip_archives(tmp_path):
    entries = [(f"MedNIST/{c}/{i}.png", png_bytes(pattern(i + 10 * k))) for k, c in enumerate("xy") for i in range(3)]
    tgz = _tar(tmp_path / "d.tar.gz", entries)
    zp = tmp_path / "d.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
        zf.writestr("MedNIST/README.txt", "ignored")
    for path in (tgz, zp):
        data = read_folder(path)
        assert data.classes == ["x", "y"] and len(data.items) == 6
        assert data.items[0].source.endswith("!MedNIST/x/0.png")


@pytest.mark.parametrize("bad", ["../evil/0.png", "/abs/x/0.png", "ok/../../evil.png"])
def test_archive_entry_escaping_target_is_refused(tmp_path, bad):
    target = tmp_path / "out"
    tgz = _tar(tmp_path / "bad.tar.gz", [("d/x/0.png", png_bytes(pattern(1))), (bad, png_bytes(pattern(2)))])
    with pytest.raises(DataError, match="refusing archive entry") as e:
        read_source(SourceConfig(type="folder", path=tgz))
    assert bad in e.value.message
    assert not target.exists() and not (tmp_path / "evil").exists()
    zp = tmp_path / "bad.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("d/x/0.png", png_bytes(pattern(1)))
        zf.writestr(bad, png_bytes(pattern(2)))
    with pytest.raises(DataError, match="refusing archive entry"):
        read_folder(zp)


def test_archive_links_are_refused(tmp_path):
    path = tmp_path / "link.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("d/x/evil.png")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(DataError, match="links are not allowed"):
        read_folder(path)


def test_empty_class_folder_is_named(tmp_path):
    make_folder(tmp_path / "ds", {"a": 2, "b": 2})
    (tmp_path / "ds" / "empty_class").mkdir()
    with pytest.raises(DataError, match="class folder 'empty_class' contains no images") as e:
        read_folder(tmp_path / "ds")
    assert "remove the empty folder" in e.value.hint


def test_images_directly_in_root_are_refused(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "0.png").write_bytes(png_bytes(pattern(0)))
    (tmp_path / "ds" / "a").mkdir()
    (tmp_path / "ds" / "a" / "1.png").write_bytes(png_bytes(pattern(1)))
    with pytest.raises(DataError, match="expected one sub-folder per class"):
        read_folder(tmp_path / "ds")


def test_medmnist_npz_keeps_split_and_names_classes(tmp_path, pneumonia_path):
    data = read_medmnist(pneumonia_path)
    assert data.classes == ["normal", "pneumonia"]
    assert data.has_split
    splits = [it.split for it in data.items]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (4708, 524, 624)


def test_npz_missing_or_misnamed_keys(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, x_train=np.zeros((2, 4, 4)), y_train=np.zeros(2))
    with pytest.raises(DataError, match="no MedMNIST keys found; expected train_images/train_labels") as e:
        read_medmnist(p)
    assert "x_train" in e.value.message
    p2 = tmp_path / "y.npz"
    np.savez(p2, train_images=np.zeros((2, 4, 4), np.uint8), train_label=np.zeros(2))
    with pytest.raises(DataError, match="has 'train_images' but no 'train_labels'"):
        read_medmnist(p2)


def test_npz_images_and_labels_of_different_lengths(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, train_images=np.zeros((5, 8, 8), np.uint8), train_labels=np.zeros((4, 1), np.uint8))
    with pytest.raises(DataError, match="train_images has 5 images but train_labels has 4 labels"):
        read_medmnist(p)


def test_npz_multilabel_refused(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.zeros((3, 14), np.uint8))
    with pytest.raises(DataError, match="multi-label tasks are not supported"):
        read_medmnist(p)


def test_npz_without_known_flag_uses_label_ids(tmp_path):
    p = make_npz(tmp_path / "custom.npz", {"train": 6, "val": 2, "test": 2}, n_classes=3)
    data = read_medmnist(p)
    assert data.classes == ["0", "1", "2"]


def test_unknown_source_type(tmp_path):
    f = tmp_path / "scan.xyz"
    f.write_text("?")
    with pytest.raises(ConfigError, match="unknown source type"):
        detect_type(f)
    with pytest.raises(ConfigError, match="unknown source type"):
        read_source(SourceConfig(path=f))


def test_auto_detects_every_kind_of_source(tmp_path):
    from tests.helpers import write_dicom

    assert detect_type(tmp_path / "MedNIST.tar.gz") == "mednist"
    (tmp_path / "MedNIST").mkdir()
    assert detect_type(tmp_path / "MedNIST") == "mednist"
    assert detect_type(make_npz(tmp_path / "pneumoniamnist.npz", {"train": 2})) == "medmnist"
    assert detect_type(make_folder(tmp_path / "pngs", {"a": 1}, mixed=False)) == "folder"
    assert detect_type(tmp_path / "images.zip") == "folder"
    write_dicom(tmp_path / "scans" / "x" / "1.dcm", np.ones((8, 8)))
    assert detect_type(tmp_path / "scans") == "dicom"


def test_auto_with_a_missing_mednist_path_downloads_it_as_type_mednist_does(tmp_path, monkeypatch):
    import synthgate.data.sources as sources

    calls = []
    monkeypatch.setattr(sources, "read_mednist", lambda cfg: calls.append(cfg) or "read")
    for kind in ("auto", "mednist"):
        cfg = SourceConfig(type=kind, path=tmp_path / "not-here" / "MedNIST.tar.gz")
        assert read_source(cfg) == "read" and calls[-1] == cfg
    with pytest.raises(DataError, match="no such file or directory"):
        read_source(SourceConfig(type="auto", path=tmp_path / "not-here" / "images.tar.gz"))
