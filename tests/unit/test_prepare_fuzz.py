"""A fuzz test of `synthgate prepare` (issue #35): random bytes, truncated and corrupted files, valid containers
with damaged members, odd file names, empty files and folders, symbolic link loops, wrong label tables and odd
arrays (tests/unit/fuzz_sources.py builds them from a seed). Each case is prepared or refused with a
:class:`SynthgateError` (which the command prints without a traceback, exit 2); anything else is a crash the
command would print as "unexpected error ... report it".

``SYNTHGATE_FUZZ_N`` cases are run (default 300; issue #35's target: none unexpected in 10,000), from seed
``SYNTHGATE_FUZZ_SEED`` (default 0); ``SYNTHGATE_FUZZ_CASE=<seed>`` runs one case again. Below them, one focused
test per crash the fuzzer found, with the message that replaced it."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import signal
import time
import traceback
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from synthgate.data.config import PrepareConfig, SourceConfig
from synthgate.data.prepare import prepare
from synthgate.errors import SynthgateError
from tests.helpers import pattern, png_bytes
from tests.unit.fuzz_sources import build_case

N = int(os.environ.get("SYNTHGATE_FUZZ_N", "300"))
FIRST = int(os.environ.get("SYNTHGATE_FUZZ_SEED", "0"))
CASE_SECONDS = 60


class _Hung(BaseException):
    """A case that ran past :data:`CASE_SECONDS` (a read that blocks, a loop): a defect too."""


@contextlib.contextmanager
def _deadline(seconds: int):
    def fire(*_):
        raise _Hung(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _prepare_case(seed: int, root: Path) -> tuple[str, str]:
    """Build and prepare case ``seed``: ("prepared" | "refused", the refusal's message); raises what crashed."""
    case = build_case(seed, root)
    try:
        with warnings.catch_warnings(), _deadline(CASE_SECONDS):
            warnings.simplefilter("ignore")
            prepare(SourceConfig(**case.source), PrepareConfig(**case.prepare), root / "prepared")
        return "prepared", ""
    except SynthgateError as e:
        return "refused", e.message
    except (Exception, _Hung) as e:
        e.add_note(f"fuzz case {seed} ({case.kind}: {'; '.join(case.notes)}); source {case.source}; prepare "
                   f"{case.prepare}")
        raise


def test_prepare_refuses_every_fuzzed_source_cleanly(tmp_path, monkeypatch, caplog):
    import monai.apps

    def no_download(*a, **k):
        raise AssertionError(f"a fuzzed source started a download {a}")

    monkeypatch.setattr(monai.apps, "download_url", no_download)
    monkeypatch.setattr(monai.apps, "download_and_extract", no_download)
    monkeypatch.setenv("SYNTHGATE_GROUP_SALT", "fuzz")
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.ERROR)
    only = os.environ.get("SYNTHGATE_FUZZ_CASE")
    seeds = [int(only)] if only else range(FIRST, FIRST + N)
    outcomes: Counter[str] = Counter()
    crashes: dict[str, list[str]] = {}  # "ErrorType at file:line" -> every case it ended
    start = time.perf_counter()
    for seed in seeds:
        root = tmp_path / f"case{seed}"
        try:
            outcome, message = _prepare_case(seed, root)
            outcomes[outcome] += 1
            assert outcome == "prepared" or message.strip(), f"case {seed}: a refusal without a message"
        except (Exception, _Hung) as e:
            where = traceback.extract_tb(e.__traceback__)[-1]
            at = f"{type(e).__name__} at {Path(where.filename).name}:{where.lineno}"
            crashes.setdefault(at, []).append(f"{type(e).__name__}: {e}\n  " + "\n  ".join(getattr(e, "__notes__", [])))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - start
    n_crashed = sum(map(len, crashes.values()))
    print(f"\nfuzzed prepare: {len(seeds)} cases in {elapsed:.1f} s ({dict(outcomes)}, {n_crashed} unexpected)")
    assert not crashes, (f"{n_crashed} of {len(seeds)} cases crashed, in {len(crashes)} places; the first of each:\n"
                         + "\n".join(f"{at} ({len(cases)} cases): {cases[0]}" for at, cases in crashes.items()))
    assert outcomes["prepared"] and outcomes["refused"], outcomes  # the fuzzer reaches both ends


# --------------------------------------------------------------------------------------------------
# one test per crash the fuzzer found: the old exception, and the message that replaced it


def _prepare(tmp_path: Path, path: Path, labels: Path | None = None, **settings) -> object:
    source = {"path": str(path), "download_dir": str(tmp_path / "downloads"),
              **({"labels": str(labels)} if labels else {}), **settings.pop("source", {})}
    return prepare(SourceConfig(**source), PrepareConfig(resolution=8, workers=1, **settings), tmp_path / "out")


def _refused(tmp_path: Path, path: Path, *needles: str, labels: Path | None = None, **settings) -> str:
    from synthgate.errors import DataError

    with pytest.raises(DataError) as e:
        _prepare(tmp_path, path, labels, **settings)
    text = f"{e.value.message} hint: {e.value.hint}"
    for n in needles:
        assert n in text, text
    assert e.value.hint, text
    assert not (tmp_path / "out").exists()
    return text


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _images(n: int = 4) -> np.ndarray:
    return np.stack([np.asarray(pattern(k, (8, 8))) for k in range(n)])


def test_an_npz_whose_array_is_damaged_is_named(tmp_path):
    """Was BadZipFile ('Bad CRC-32 for file ...', 'Bad magic number for file header') or zlib.error: np.load reads
    an array only when it is used."""
    path = _npz(tmp_path / "x.npz", train_images=_images(), train_labels=np.array([[0], [1], [0], [1]]))
    raw = bytearray(path.read_bytes())
    raw[120] ^= 0xFF  # inside train_images.npy, the first member: its CRC no longer matches
    path.write_bytes(bytes(raw))
    _refused(tmp_path, path, f"{path}: cannot read the array 'train_images'", "BadZipFile", "write it again")
    buf = io.BytesIO()
    np.savez_compressed(buf, train_images=_images(), train_labels=np.array([0, 1, 0, 1]))
    raw = bytearray(buf.getvalue())
    raw[60:70] = b"\xff" * 10  # the deflate stream of the first member
    path.write_bytes(bytes(raw))
    _refused(tmp_path, path, f"{path}: cannot read the array 'train_images'")


@pytest.mark.parametrize("images, labels, needle", [
    (np.zeros((), np.uint8), np.array([0]), "train_images has shape () and dtype uint8; expected numbers"),  # TypeError: len()
    (np.array(["a", "b"]), np.array([0, 1]), "train_images has shape (2,) and dtype <U1"),
    (_images(2).astype("datetime64[s]"), np.array([0, 1]), "dtype datetime64[s]"),
    (_images(2), np.zeros((2, 0)), "train_labels has shape (2, 0); expected (N,) or (N, 1)"),  # ValueError: reshape
    (_images(2), np.array(0), "train_labels has shape (); expected (N,) or (N, 1)"),  # TypeError: len()
    (_images(2), np.array(["a", "b"]), "labels of dtype <U1; expected integer class indices"),  # ValueError: astype
    (_images(2), np.array([0.5, 1.0]), "labels that are not whole numbers"),
    (_images(2), np.array([0, 10**9]), "label 1000000000 is not a class index (at most 9999)"),  # hung: a dict of 1e9
])
def test_npz_arrays_of_the_wrong_shape_or_kind_are_refused(tmp_path, images, labels, needle):
    path = _npz(tmp_path / "x.npz", train_images=images, train_labels=labels)
    _refused(tmp_path, path, f"{path}: ", needle)


def test_a_dicom_window_width_below_one_is_named(tmp_path):
    """Was ValueError from pydicom's apply_voi_lut: 'The (0028,1051) Window Width must be greater than or equal to 1'."""
    from tests.helpers import write_dicom

    write_dicom(tmp_path / "dcm" / "a.dcm", np.ones((8, 8)) * 100, WindowCenter="40", WindowWidth="0")
    write_dicom(tmp_path / "dcm" / "b.dcm", np.ones((8, 8)) * 200)
    (tmp_path / "labels.csv").write_text("file,label\na.dcm,x\nb.dcm,y\n")
    _refused(tmp_path, tmp_path / "dcm", str(tmp_path / "dcm" / "a.dcm"),
             "cannot apply the file's modality or VOI LUT", "Window Width must be greater than or equal to 1",
             "WindowWidth >= 1", labels=tmp_path / "labels.csv", source={"type": "dicom"})


def test_a_dicom_element_of_an_unknown_value_representation_is_named(tmp_path):
    """Was NotImplementedError from pydicom ("Unknown Value Representation '0x44 0xcf' in tag (0010,0030)"), raised
    when the element was first used, after the file had been read."""
    from tests.helpers import write_dicom

    bad = write_dicom(tmp_path / "dcm" / "a.dcm", np.ones((8, 8)) * 100)
    raw = bad.read_bytes()
    assert raw.count(b"\x10\x00\x30\x00DA") == 1  # PatientBirthDate, explicit VR little endian
    bad.write_bytes(raw.replace(b"\x10\x00\x30\x00DA", b"\x10\x00\x30\x00D\xcf"))
    write_dicom(tmp_path / "dcm" / "b.dcm", np.ones((8, 8)) * 200)
    (tmp_path / "labels.csv").write_text("file,label\na.dcm,x\nb.dcm,y\n")
    _refused(tmp_path, tmp_path / "dcm", f"{bad}: a damaged DICOM element among the identifying tags "
             "(NotImplementedError: Unknown Value Representation '0x44 0xcf'", "remove it from the label table",
             labels=tmp_path / "labels.csv", source={"type": "dicom"})


def test_a_dicom_file_meta_element_of_an_unknown_value_representation_is_named(tmp_path):
    """Was NotImplementedError from pydicom.dcmread ("Unknown Value Representation '0x55 0x0c' in tag (0002,0010)")."""
    from tests.helpers import write_dicom

    bad = write_dicom(tmp_path / "dcm" / "a.dcm", np.ones((8, 8)) * 100)
    bad.write_bytes(bad.read_bytes().replace(b"\x02\x00\x10\x00UI", b"\x02\x00\x10\x00U\x0c", 1))
    write_dicom(tmp_path / "dcm" / "b.dcm", np.ones((8, 8)) * 200)
    (tmp_path / "labels.csv").write_text("file,label\na.dcm,x\nb.dcm,y\n")
    _refused(tmp_path, tmp_path / "dcm", f"{bad}: not a readable DICOM file (Unknown Value Representation "
             "'0x55 0x0c' in tag (0002,0010))", "remove it from the label table", labels=tmp_path / "labels.csv",
             source={"type": "dicom"})


def test_a_class_folder_named_in_bytes_that_are_not_utf8_becomes_a_printable_class(tmp_path):
    """Was UnicodeEncodeError from pyarrow ('surrogates not allowed') writing the class name to metadata.parquet."""
    from tests.helpers import make_folder

    src = make_folder(tmp_path / "raw", {"a": 3}, mixed=False)
    odd = os.path.join(os.fsencode(src), b"caf\xe9")
    os.mkdir(odd)
    for k in range(3):
        with open(os.path.join(odd, f"{k}.png".encode()), "wb") as f:
            f.write(png_bytes(pattern(50 + k)))
    ds = _prepare(tmp_path, src)
    assert ds.classes == ["a", "caf\\xe9"] and ds.meta["label_name"].tolist().count("caf\\xe9") == 3


def test_a_patient_pattern_over_names_that_are_not_utf8_is_hashed(tmp_path):
    """Was UnicodeEncodeError hashing the group ('surrogates not allowed')."""
    src = tmp_path / "raw"
    for c in ("a", "b"):
        for p in range(10):
            d = os.path.join(os.fsencode(src), c.encode(), b"pat-\xff%s%d" % (c.encode(), p))
            os.makedirs(d)
            with open(os.path.join(d, b"0.png"), "wb") as f:
                f.write(png_bytes(pattern(p + (10 if c == "b" else 0))))
    ds = _prepare(tmp_path, src, source={"group_pattern": "/(pat-[^/]+)/"})
    assert ds.meta["group"].nunique() == 20


def _zip(path: Path, method: int, names=("a/0.png", "b/0.png")) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for k, name in enumerate(names):
            zf.writestr(name, png_bytes(pattern(k, (24, 24))))
    return path


@pytest.mark.parametrize("method, error", [(zipfile.ZIP_LZMA, "LZMAError: Corrupt input data"),
                                           (zipfile.ZIP_DEFLATED, "error: Error -3 while decompressing data")])
def test_an_archive_member_whose_compressed_data_is_damaged_is_named(tmp_path, method, error):
    """Was lzma.LZMAError ('Corrupt input data') or zlib.error ('Error -3 while decompressing data')."""
    path = _zip(tmp_path / "x.zip", method)
    raw = bytearray(path.read_bytes())
    start = 30 + len("a/0.png")  # the first member's data, after its local header
    if method == zipfile.ZIP_DEFLATED:
        raw[start] = 0xFF  # a deflate block of type 3, which does not exist
    else:
        raw[start + 20 : start + 40] = bytes(range(200, 220))
    path.write_bytes(bytes(raw))
    _refused(tmp_path, path, f"{path}: cannot read archive ({error}", "is the archive complete?")


def test_an_archive_entry_flagged_utf8_that_is_not_is_named(tmp_path):
    """Was UnicodeDecodeError from zipfile reading the central directory."""
    path = _zip(tmp_path / "x.zip", zipfile.ZIP_STORED, ("a/\u00e9.png", "b/0.png"))
    path.write_bytes(path.read_bytes().replace("\u00e9".encode(), b"\x81\xff"))
    _refused(tmp_path, path, f"{path}: cannot read archive (UnicodeDecodeError", "is the archive complete?")


def test_a_png_whose_header_claims_a_billion_pixels_is_an_unreadable_image(tmp_path):
    """Was PIL.Image.DecompressionBombError ('Image size (1073741824 pixels) exceeds limit ...')."""
    import struct
    import zlib

    from tests.helpers import make_folder

    src = make_folder(tmp_path / "raw", {"a": 3, "b": 3}, mixed=False)
    data = png_bytes(pattern(7))
    ihdr = data[12:16] + struct.pack(">II", 1, 1 << 30) + data[24:29]
    (src / "a" / "0000.png").write_bytes(data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:])
    _refused(tmp_path, src, "0000.png: image too large to decode", "decompression bomb", "on_error: skip")
    assert _prepare(tmp_path, src, on_error="skip").manifest["skipped"][0]["source"].endswith("0000.png")


@pytest.mark.parametrize("record, needle", [
    (b"", "cannot read the ingest record (JSONDecodeError"),
    (b'{"type": "folder", "path": "src\xb1"}', "cannot read the ingest record (UnicodeDecodeError"),
    (b"null", "not an ingest record"),  # AttributeError: 'NoneType' object has no attribute 'get'
    (b"{}", "not an ingest record"),  # KeyError: 'path'
    (b'{"path": null}', "not an ingest record"),  # TypeError: unsupported operand type(s) for /
    (b'{"path": "src", "labels": 1}', "not an ingest record"),  # TypeError
    (b'{"path": "../../etc"}', "not an ingest record"),
    (b'{"path": "src", "type": "bogus"}', "the ingest record names no valid source (type: Input should be"),
])
def test_a_damaged_ingest_record_is_named(tmp_path, record, needle):
    from tests.helpers import make_folder

    make_folder(tmp_path / "raw" / "src", {"a": 2, "b": 2}, mixed=False)
    (tmp_path / "raw" / "ingest.json").write_bytes(record)
    _refused(tmp_path, tmp_path / "raw", str(tmp_path / "raw" / "ingest.json"), needle, "synthgate ingest")


def test_a_source_of_which_no_image_can_be_read_is_refused_even_when_skipping(tmp_path):
    """Was a dataset of 0 images (prepared, not a crash): skipping every image left nothing."""
    src = tmp_path / "raw"
    for c in ("a", "b"):
        (src / c).mkdir(parents=True)
        (src / c / "0.png").write_bytes(b"not a png")
    _refused(tmp_path, src, "0.png: cannot decode image", "none of the 2 images can be read", on_error="skip")


# --------------------------------------------------------------------------------------------------
# through the command line: a message and exit 2, never "unexpected error"


@pytest.mark.parametrize("seed", [19, 86, 232, 279, 1016, 1136, 6119, 6575])  # cases that crashed before the fixes above
def test_fuzzed_sources_through_the_command(tmp_path, cli, seed):
    case = build_case(seed, tmp_path / "case")
    args = ["prepare", "--source", case.source["path"], "--source-type", case.source["type"], "--resolution", "8",
            "--out", str(tmp_path / "out")]
    if case.source.get("labels"):
        args += ["--labels", case.source["labels"]]
    code, out, err = cli(*args, env={"SYNTHGATE_GROUP_SALT": "fuzz"}, cwd=tmp_path)
    assert "unexpected" not in err and "Traceback" not in err, err
    assert (code == 0 and "prepared" in out) or (code == 2 and "error:" in err and "hint:" in err), (code, out, err)


def test_a_damaged_npz_in_a_real_process(tmp_path):
    from tests.helpers import run_cli

    path = _npz(tmp_path / "x.npz", train_images=_images(), train_labels=np.array([[0], [1], [0], [1]]))
    raw = bytearray(path.read_bytes())
    raw[120] ^= 0xFF
    path.write_bytes(bytes(raw))
    r = run_cli("prepare", "--source", "x.npz", "--out", "out", cwd=tmp_path)
    assert r.code == 2 and "unexpected" not in r.stderr and "Traceback" not in r.stderr, r.output
    assert "cannot read the array 'train_images'" in " ".join(r.stderr.split()), r.stderr
