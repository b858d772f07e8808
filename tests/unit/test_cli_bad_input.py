"""Every bad input named in the foundation issue, through the real command line: a clear message
naming the file and what to do, no traceback, a non-zero exit and nothing half-written."""

import io
import json
import tarfile

import numpy as np
import pytest

from tests.helpers import make_folder, pattern, png_bytes, run_cli, write_dicom


def _assert_clean_failure(r, *needles, out=None):
    assert r.code != 0, r.output
    assert "Traceback" not in r.output, r.output
    assert "error:" in r.stderr
    flat = " ".join(r.stderr.split())
    for n in needles:
        assert n in flat, flat
    if out is not None:
        assert not out.exists()
        assert not any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir())


def test_corrupt_image(tmp_path):
    src = make_folder(tmp_path / "raw", {"a": 2, "b": 2}, mixed=False)
    (src / "a" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    r = run_cli("prepare", "--source", str(src), "--resolution", "16", "--out", "out", cwd=tmp_path)
    _assert_clean_failure(r, "0001.png", "cannot decode image", "remove or replace the file", out=tmp_path / "out")


def test_npz_with_misnamed_keys(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 8, 8), np.uint8), labels=np.zeros(3))
    r = run_cli("prepare", "--source", "bad.npz", "--out", "out", cwd=tmp_path)
    _assert_clean_failure(r, "bad.npz", "expected train_images/train_labels", "<split>_images", out=tmp_path / "out")


def test_npz_images_and_labels_lengths_differ(tmp_path):
    np.savez(tmp_path / "x.npz", train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.zeros((3, 1)))
    r = run_cli("prepare", "--source", "x.npz", "--out", "out", cwd=tmp_path)
    _assert_clean_failure(r, "x.npz", "train_images has 4 images but train_labels has 3 labels",
                          out=tmp_path / "out")


def test_empty_class_folder(tmp_path):
    src = make_folder(tmp_path / "raw", {"a": 2, "b": 2}, mixed=False)
    (src / "c").mkdir()
    r = run_cli("prepare", "--source", str(src), "--out", "out", cwd=tmp_path)
    _assert_clean_failure(r, "class folder 'c' contains no images", "remove the empty folder", out=tmp_path / "out")


def test_class_below_minimum(tmp_path):
    make_folder(tmp_path / "raw", {"big": 30, "small": 4}, mixed=False)
    assert run_cli("prepare", "--source", "raw", "--resolution", "16", cwd=tmp_path).code == 0
    r = run_cli("validate", "--min-images-per-class", "10", cwd=tmp_path)
    _assert_clean_failure(r, "minimum images per class", "e.g. small", "data_docs/index.html",
                          out=tmp_path / "data" / "validated")
    assert "FAIL" in r.stdout  # the summary table


@pytest.mark.parametrize("entry", ["../../escape.png", "/tmp/abs-synthgate-test.png"])
def test_archive_entry_outside_target(tmp_path, entry):
    arc = tmp_path / "evil.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        for name in ("ds/a/0.png", "ds/b/0.png", entry):
            data = png_bytes(pattern(len(name)))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    r = run_cli("prepare", "--source", str(arc), "--out", "out", cwd=tmp_path)
    _assert_clean_failure(r, "refusing archive entry", entry, out=tmp_path / "out")
    assert not (tmp_path.parent / "escape.png").exists()


def test_dicom_without_pixel_data(tmp_path):
    write_dicom(tmp_path / "dcm" / "img.dcm", np.ones((16, 16)))
    write_dicom(tmp_path / "dcm" / "sr.dcm", None)
    (tmp_path / "labels.csv").write_text("file,label\nimg.dcm,a\nsr.dcm,b\n")
    r = run_cli("prepare", "--source", "dcm", "--source-type", "dicom", "--labels", "labels.csv", "--out", "out",
                cwd=tmp_path)
    _assert_clean_failure(r, "sr.dcm: DICOM file has no pixel data", "remove it from the label table",
                          out=tmp_path / "out")


@pytest.mark.parametrize("res", ["0", "60"])
def test_bad_resolution(tmp_path, res):
    make_folder(tmp_path / "raw", {"a": 2}, mixed=False)
    r = run_cli("prepare", "--source", "raw", "--resolution", res, "--out", "out", cwd=tmp_path)
    _assert_clean_failure(r, "prepare.resolution", f"positive multiple of 8 (got {res})", out=tmp_path / "out")


def test_unknown_source_type(tmp_path):
    (tmp_path / "scan.nii").write_bytes(b"\0" * 10)
    r = run_cli("prepare", "--source", "scan.nii", "--out", "out", cwd=tmp_path)
    _assert_clean_failure(r, "scan.nii: unknown source type", "data.source.type", out=tmp_path / "out")
    r = run_cli("prepare", "--source", "scan.nii", "--source-type", "nrrd", "--out", "out", cwd=tmp_path)
    _assert_clean_failure(r, "data.source.type", "'mednist', 'medmnist', 'folder', 'dicom' or 'nifti'",
                          out=tmp_path / "out")


@pytest.mark.parametrize("case, needles", [
    ("2d", ["v.nii.gz: a 2D image (shape (24, 24)), expected a 3D volume", "image folder source"]),
    ("4d", ["v.nii.gz: a 4D volume (shape (24, 24, 12, 3)), expected a 3D volume", "split it into 3D volumes"]),
    ("broken", ["v.nii.gz: not a readable NIfTI volume", "re-export the volume"]),
    ("no table", ["a NIfTI source needs a label table", "--labels"]),
])
def test_bad_nifti_volumes(tmp_path, case, needles):
    from tests.helpers import nifti_volume, write_nifti

    vol = nifti_volume(0, True)
    if case == "broken":
        (tmp_path / "vols").mkdir()
        (tmp_path / "vols" / "v.nii.gz").write_bytes(b"\x1f\x8b truncated")
    else:
        write_nifti(tmp_path / "vols" / "v.nii.gz", {"2d": vol[..., 4], "4d": np.stack([vol] * 3, -1)}.get(case, vol))
    (tmp_path / "labels.csv").write_text("file,label\nv.nii.gz,a\n")
    table = [] if case == "no table" else ["--labels", "labels.csv"]
    r = run_cli("prepare", "--source", "vols", *table, "--out", "out", cwd=tmp_path)
    _assert_clean_failure(r, *needles, out=tmp_path / "out")


def test_help_on_every_command():
    for cmd in ([], ["ingest"], ["prepare"], ["validate"], ["info"], ["demo"], ["version"]):
        r = run_cli(*cmd, "--help")
        assert r.code == 0 and "Usage" in r.stdout, (cmd, r.output)


def test_short_help_and_version_on_every_command_group(cli):
    """Issue #35 (the CLI): -h as well as --help, on the root and on nested groups; --version / -V."""
    from synthgate import __version__

    for cmd in ([], ["gate"], ["gatekeeper", "serve"], ["access", "grant"], ["pipeline", "compile"]):
        code, out, err = cli(*cmd, "-h")
        assert code == 0 and "Usage" in out, (cmd, out, err)
    for flag in ("--version", "-V"):
        code, out, _ = cli(flag)
        assert code == 0 and out.strip() == __version__


def _tiny_dataset(tmp_path):
    make_folder(tmp_path / "raw", {"a": 12, "b": 12}, mixed=False)
    assert run_cli("prepare", "--source", "raw", "--resolution", "16", "--out", "ds", cwd=tmp_path).code == 0


def test_train_unknown_model_type(tmp_path):
    _tiny_dataset(tmp_path)
    r = run_cli("train", "--dataset", "ds", "--type", "vae", "--out", "run", cwd=tmp_path)
    _assert_clean_failure(r, "generator.type", "'diffusion', 'gan', 'latent' or 'stylegan2'", out=tmp_path / "run")


def test_train_cuda_without_gpu(tmp_path):
    _tiny_dataset(tmp_path)
    r = run_cli("train", "--dataset", "ds", "--size", "tiny", "--device", "cuda", "--out", "run", cwd=tmp_path)
    _assert_clean_failure(r, "train.device: cuda requested but torch sees no CUDA GPU")


def test_sample_from_a_folder_that_is_no_model(tmp_path):
    (tmp_path / "nomodel").mkdir()
    r = run_cli("sample", "--model", "nomodel", "--out", "s", cwd=tmp_path)
    _assert_clean_failure(r, "nomodel", out=tmp_path / "s")


def test_a_file_name_that_is_not_utf8_is_read_and_hashed(tmp_path, cli):
    """Issue #35: a non-UTF-8 file name crashed the source hash (UnicodeEncodeError)."""
    import os

    src = make_folder(tmp_path / "raw", {"a": 10, "b": 10}, mixed=False)
    odd = os.path.join(os.fsencode(src / "a"), b"scan-\xff\xfe.png")
    with open(odd, "wb") as f:
        f.write(png_bytes(pattern(99)))
    code, out, err = cli("prepare", "--source", str(src), "--resolution", "16", "--out", str(tmp_path / "out"),
                         cwd=tmp_path)
    assert code == 0 and "unexpected error" not in err, err
    import json

    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["num_images"] == 21


def test_a_folder_that_cannot_be_written_is_named(tmp_path, cli, monkeypatch):
    """Issue #35: a read-only output folder ended in 'unexpected error: PermissionError'. (Tests run as root here,
    which ignores permission bits: the refusal is the operating system's, raised where prepare writes.)"""
    import errno

    import synthgate.data.prepare as prep

    src = make_folder(tmp_path / "raw", {"a": 10, "b": 10}, mixed=False)

    def refuse(root, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(root))

    monkeypatch.setattr(prep, "write_dataset", refuse)
    code, _, err = cli("prepare", "--source", str(src), "--resolution", "16", "--out", str(tmp_path / "ro" / "out"),
                       cwd=tmp_path)
    assert code == 1 and "error: permission denied:" in err and str(tmp_path / "ro" / "out") in err
    assert "choose a folder you may write to" in err and "unexpected" not in err

    def full(root, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(root))

    monkeypatch.setattr(prep, "write_dataset", full)
    code, _, err = cli("prepare", "--source", str(src), "--resolution", "16", "--out", str(tmp_path / "out"),
                       cwd=tmp_path)
    assert code == 1 and "no space left on the device" in err and "unexpected" not in err


def test_a_resolution_too_large_to_hold_is_refused_before_any_work(tmp_path, cli):
    """Issue #35: --resolution 65536 ended in MemoryError (240 GiB)."""
    src = make_folder(tmp_path / "raw", {"a": 2, "b": 2}, mixed=False)
    code, _, err = cli("prepare", "--source", str(src), "--resolution", "65536", "--out", str(tmp_path / "out"),
                       cwd=tmp_path)
    assert code != 0 and "resolution 65536 is above 1024" in err and "4096 MiB per grey image" in err
    assert "unexpected" not in err and not (tmp_path / "out").exists()


def test_a_damaged_evaluation_is_named_by_gate(tmp_path, cli):
    """Issue #35: a corrupt evaluation.json ended in JSONDecodeError."""
    ev = tmp_path / "evaluation.json"
    ev.write_text('{"format": "synthgate.evaluation/v1", "evaluation_hash": "ab')  # truncated
    code, _, err = cli("gate", "--evaluation", str(ev), "--out", str(tmp_path / "gate"))
    assert code != 0 and "not valid JSON" in err and "damaged or truncated" in err and "unexpected" not in err
    ev.write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = cli("gate", "--evaluation", str(ev), "--out", str(tmp_path / "gate"))
    assert code != 0 and "not valid JSON" in err
    ev.write_text("[1, 2]")
    code, _, err = cli("gate", "--evaluation", str(ev), "--out", str(tmp_path / "gate"))
    assert code != 0 and "not a synthgate evaluation" in err


def test_a_dataset_of_one_class_is_refused_at_prepare_and_at_validate(tmp_path, cli):
    """Issue #35: a one-class dataset passed prepare and validate; only train refused it, after the work."""
    make_folder(tmp_path / "raw", {"lesion": 12}, mixed=False)
    code, out, err = cli("prepare", "--source", "raw", "--resolution", "16", "--out", "ds", cwd=tmp_path)
    assert code != 0 and "the dataset has one class only (lesion)" in err and "at least 2 classes" in err, err
    assert "hint: give the source two or more classes" in err and "unexpected" not in err
    assert not (tmp_path / "ds").exists()
    # a one-class dataset prepared elsewhere (an older synthgate, a DVC import) is refused by validate too
    make_folder(tmp_path / "two", {"a": 12, "b": 12}, mixed=False)
    assert cli("prepare", "--source", "two", "--resolution", "16", "--out", "ds2", cwd=tmp_path)[0] == 0
    manifest = json.loads((tmp_path / "ds2" / "manifest.json").read_text())
    manifest["classes"] = ["a"]
    (tmp_path / "ds2" / "manifest.json").write_text(json.dumps(manifest))
    code, out, err = cli("validate", "--dataset", "ds2", "--out", "v", cwd=tmp_path)
    assert code != 0 and "the dataset has one class only (a)" in err, err


def test_validate_out_writes_its_report_beside_its_output(tmp_path, cli):
    """Issue #35: `validate --out X` wrote its report over reports/validation (another dataset's report)."""
    make_folder(tmp_path / "raw", {"a": 12, "b": 12}, mixed=False)
    assert cli("prepare", "--source", "raw", "--resolution", "16", "--out", "ds", cwd=tmp_path)[0] == 0
    code, out, err = cli("validate", "--dataset", "ds", "--out", "elsewhere/v", "--min-images-per-class", "2",
                         "--no-leakage", cwd=tmp_path)
    assert code == 0, err
    assert (tmp_path / "elsewhere" / "v-validation" / "validation.json").is_file()
    assert "elsewhere/v-validation/validation.json" in out.replace("\n", "")
    assert not (tmp_path / "reports" / "validation").exists()
    # --report still decides when given
    code, out, err = cli("validate", "--dataset", "ds", "--out", "v2", "--report", "r2", "--min-images-per-class", "2",
                         "--no-leakage", cwd=tmp_path)
    assert code == 0 and (tmp_path / "r2" / "validation.json").is_file() and not (tmp_path / "v2-validation").exists()
