"""Seeded builders of fuzzed `prepare` sources (tests/unit/test_prepare_fuzz.py, issue #35).

:func:`build_case` turns a seed into a source on disk (random bytes, truncated or corrupted valid files,
valid containers with corrupted members, odd file names, empty files and folders, symbolic links, wrong
label tables, odd arrays) and the settings to prepare it with. Every choice comes from the seed, so a
case is rebuilt exactly from its number: ``SYNTHGATE_FUZZ_CASE=<seed>``.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import random
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tests.helpers import pattern, png_bytes

SUFFIXES = (".npz", ".png", ".jpg", ".tif", ".bmp", ".gif", ".dcm", ".nii", ".nii.gz", ".zip", ".tar.gz", ".tgz",
            ".tar", ".csv", "", ".txt")
ODD_STEMS: tuple[str, ...] = (
    "plain", "with space", " lead space", "-dash", "--help", "ünïcödé", "名前", "emoji-\U0001f600", "new\nline",
    "tab\tname", "a" * 200, "UPPER", ".hidden", "__MACOSX", "train", "Test", "valid", "x.y.z", "'quote\"", "back\\slash",
    "semi;colon", "per%cent", "*star?", "~tilde", "#hash", "\u200bzero-width", "rtl\u202eevil",
    # not UTF-8: kept by Python as surrogate escapes, written to disk as the raw bytes
    os.fsdecode(b"bytes-\xff\xfe"), os.fsdecode(b"latin1-\xe9t\xe9"), os.fsdecode(b"\x80"), os.fsdecode(b"half-\xc3"),
)


@dataclass
class Case:
    """A fuzzed source: where it is and the settings to prepare it with."""

    seed: int
    kind: str
    source: dict[str, Any]
    prepare: dict[str, Any]
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# valid building blocks (cached: the fuzzer mutates copies)


@functools.lru_cache(maxsize=64)
def image_bytes(seed: int, fmt: str, mode: str, w: int, h: int) -> bytes:
    img = pattern(seed, (w, h))
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img).astype(np.uint16) * 257)
    elif mode == "F":
        img = Image.fromarray(np.asarray(img).astype(np.float32) / 7.0)
    elif mode != "L":
        img = img.convert(mode)
    return png_bytes(img, fmt)


IMAGE_VARIANTS = (("PNG", "L"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "LA"), ("PNG", "1"),
                  ("PNG", "I;16"), ("JPEG", "L"), ("JPEG", "RGB"), ("JPEG", "CMYK"), ("BMP", "RGB"), ("GIF", "P"),
                  ("TIFF", "F"), ("TIFF", "I;16"), ("TIFF", "RGB"), ("WEBP", "RGB"), ("PPM", "RGB"))
FORMAT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "WEBP": ".webp",
                 "PPM": ".ppm"}


def valid_image(rng: random.Random) -> tuple[bytes, str]:
    fmt, mode = rng.choice(IMAGE_VARIANTS)
    w, h = rng.choice((1, 2, 7, 16, 33)), rng.choice((1, 3, 16, 40))
    return image_bytes(rng.randrange(8), fmt, mode, w, h), FORMAT_SUFFIX[fmt]


@functools.lru_cache(maxsize=8)
def dicom_bytes(seed: int, pixels: bool = True) -> bytes:
    import tempfile

    from tests.helpers import write_dicom

    with tempfile.TemporaryDirectory() as d:
        arr = np.asarray(pattern(seed, (12, 10))).astype(np.uint16) * 8 if pixels else None
        p = write_dicom(Path(d) / "x.dcm", arr, PatientID=f"P{seed % 3}")
        return p.read_bytes()


def odd_dicom(rng: random.Random, seed: int) -> bytes:
    """A DICOM file whose tags disagree with its pixels or hold odd values (written by pydicom, then read back)."""
    import tempfile

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(seed % 4)))
    what = rng.randrange(12)
    if what == 0:
        ds.Rows = rng.choice((0, 1, 13, 65535))
    elif what == 1:
        ds.BitsAllocated = rng.choice((1, 8, 32, 12))
    elif what == 2:
        ds.PhotometricInterpretation = rng.choice(("MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "BOGUS", ""))
    elif what == 3:
        ds.NumberOfFrames = rng.choice(("2", "0", "-1"))
    elif what == 4:
        ds.RescaleSlope = rng.choice(("0", "-1", "1e308", "NaN"))
    elif what == 5:
        ds.WindowCenter, ds.WindowWidth = rng.choice((("40", "0"), ("40", "-5"), ("1e300", "1"), ("40", "400")))
    elif what == 6:
        ds.SamplesPerPixel = rng.choice((0, 3, 4))
    elif what == 7:
        ds.PixelData = ds.PixelData[: rng.randrange(len(ds.PixelData))]
    elif what == 8:
        ds.PixelRepresentation = 1
        ds.PatientID = ""
    elif what == 9:
        ds.file_meta.TransferSyntaxUID = rng.choice(("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.5", "1.2.3.4"))
    elif what == 10:
        ds.PatientIdentityRemoved = rng.choice(("YES", "NO"))
        ds.SpecificCharacterSet = rng.choice(("ISO_IR 192", "ISO_IR 100", "GB18030", "BOGUS", ""))
        ds.PatientName = rng.choice((b"\xff\xfe\xc3", "\u00e9\u00e8".encode("latin-1"), b"DOE^\x00J"))
        ds.InstitutionName = rng.choice((b"\xe9cole", b"\x80\x81"))
    else:
        ds.Columns = 0
    with tempfile.TemporaryDirectory() as d:
        try:
            ds.save_as(Path(d) / "x.dcm", enforce_file_format=False)
        except Exception:  # pydicom refuses to write some of these: write the valid one instead
            return dicom_bytes(seed % 4)
        return (Path(d) / "x.dcm").read_bytes()


def nifti_bytes(vol: np.ndarray, gz: bool, affine: np.ndarray | None = None) -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.0, 1.0]) if affine is None else affine)
    raw = img.to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def odd_volume(rng: random.Random) -> np.ndarray:
    nr = np.random.default_rng(rng.randrange(1 << 30))
    shape = rng.choice(((6, 6, 4), (6, 6, 4), (5, 7), (4, 4, 3, 2), (4, 4, 3, 1), (1, 1, 1), (6, 6, 1),
                        (3, 3, 2, 1, 2), (1, 8, 8)))
    dtype = rng.choice((np.float32, np.float32, np.int16, np.uint8, np.float64, np.int8, np.uint16, np.complex64))
    v = (nr.random(shape) * 300).astype(dtype)
    what = rng.randrange(6)
    if what == 0:
        v[...] = 7
    elif what == 1 and np.issubdtype(dtype, np.floating):
        v.flat[: max(1, v.size // 2)] = np.nan
    elif what == 2 and np.issubdtype(dtype, np.floating):
        v[...] = np.inf
    elif what == 3 and np.issubdtype(dtype, np.floating):
        v.flat[0] = -np.inf
    return v


def npz_bytes(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def odd_npz_arrays(rng: random.Random) -> dict[str, np.ndarray]:
    nr = np.random.default_rng(rng.randrange(1 << 30))
    out: dict[str, np.ndarray] = {}
    for split in rng.sample(("train", "val", "test"), rng.randrange(1, 4)):
        n = rng.choice((0, 1, 2, 5))
        shape = rng.choice(((n, 8, 8), (n, 8, 8), (n, 8, 8, 1), (n, 8, 8, 3), (n, 8, 8, 4), (n, 8, 8, 2), (n, 0, 8),
                            (n,), (n, 4, 4, 3, 2), ()))
        dtype = rng.choice(("u1", "u1", "u2", "f4", "f8", "i8", "?", "c8", "U3", "M8[s]", "f2"))
        try:
            images = (nr.random(shape) * 300).astype(dtype)
        except (TypeError, ValueError):
            images = nr.random(shape).astype("U3")
        if dtype in ("f4", "f8") and images.size and rng.random() < 0.3:
            images.flat[0] = rng.choice((np.nan, np.inf, -np.inf))
        lab_shape = rng.choice(((n,), (n, 1), (n, 1), (n, 2), (n, 0), (), (max(n - 1, 0), 1), (n, 1, 1)))
        values = rng.choice(((0, 1), (0, 1, 2), (-1, 0), (0, 10**9), (0, 2**62), (5, 9)))
        labels = nr.choice(values, size=lab_shape) if lab_shape != () else np.array(values[0])
        lab_dtype = rng.choice(("u1", "i8", "i8", "f4", "U2", "?"))
        labels = labels.astype(lab_dtype)
        if lab_dtype == "f4" and labels.size and rng.random() < 0.3:
            labels.flat[0] = np.nan
        if rng.random() > 0.08:
            out[f"{split}_images"] = images
        if rng.random() > 0.08:
            out[f"{split}_labels"] = labels
    if rng.random() < 0.1:
        out["extra"] = np.zeros(3)
    return out


def valid_npz_arrays(rng: random.Random) -> dict[str, np.ndarray]:
    nr = np.random.default_rng(rng.randrange(1 << 30))
    out = {}
    for split in ("train", "val", "test")[: rng.randrange(1, 4)]:
        n = rng.randrange(2, 6)
        out[f"{split}_images"] = (nr.random((n, 8, 8)) * 255).astype(np.uint8)
        out[f"{split}_labels"] = np.arange(n).reshape(n, 1) % 2
    return out


# --------------------------------------------------------------------------------------------------
# mutations


def mutate(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """A damaged copy of ``data``: truncated, bytes flipped, a block zeroed or repeated, random bytes, or empty."""
    what = rng.choice(("truncate", "truncate", "flip", "flip", "zero", "repeat", "random", "empty", "prefix"))
    what = "size" if rng.random() < 0.15 else what
    if what == "size" and data.startswith(b"\x89PNG") and len(data) > 33:  # the PNG header claims another size
        import struct
        import zlib

        w, h = rng.choice(((0, 5), (1, 1 << 30), (30000, 30000), (12000, 12000), (1 << 31, 1 << 31), (5, 0)))
        ihdr = data[12:16] + struct.pack(">II", w, h) + data[24:29]
        return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:], what
    if what == "truncate" and data:
        return data[: rng.randrange(len(data))], what
    if what == "flip" and data:
        b = bytearray(data)
        for _ in range(rng.choice((1, 2, 4, 16))):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b), what
    if what == "zero" and data:
        b = bytearray(data)
        i = rng.randrange(len(b))
        b[i : i + rng.randrange(1, 64)] = bytes(min(len(b) - i, 64))[: len(b[i : i + 64])]
        return bytes(b), what
    if what == "repeat" and data:
        i = rng.randrange(len(data))
        return data[:i] + data[i : i + 32] * 3 + data[i:], what
    if what == "prefix":
        return random_bytes(rng, 16) + data, what
    if what == "empty":
        return b"", what
    return random_bytes(rng), "random"


def random_bytes(rng: random.Random, n: int | None = None) -> bytes:
    n = rng.choice((0, 1, 7, 64, 512, 4096)) if n is None else n
    magic = rng.choice((b"", b"", b"\x89PNG\r\n\x1a\n", b"PK\x03\x04", b"\x1f\x8b\x08", b"\x93NUMPY", b"DICM",
                        b"\\\x01\x00\x00", b"GIF89a", b"II*\x00", b"BM", b"\xff\xd8\xff"))
    return magic + rng.randbytes(n)


def odd_name(rng: random.Random, suffix: str) -> str:
    stem = rng.choice(ODD_STEMS) if rng.random() < 0.6 else f"f{rng.randrange(1000)}"
    return stem + (suffix.upper() if rng.random() < 0.15 else suffix)


# --------------------------------------------------------------------------------------------------
# trees of files: {path inside the source: bytes}


def image_payload(rng: random.Random) -> tuple[bytes, str]:
    """Mostly a valid image; else a damaged one, random bytes or nothing; and its suffix."""
    data, suffix = valid_image(rng)
    r = rng.random()
    if r < 0.75:
        return data, suffix
    if r < 0.92:
        return mutate(rng, data)[0], suffix
    return (random_bytes(rng) if r < 0.97 else b""), rng.choice((suffix, ".png", ".jpg"))


def class_name(rng: random.Random, k: int) -> str:
    return rng.choice(ODD_STEMS) if rng.random() < 0.3 else ("normal", "lesion", "other")[k % 3]


def image_tree(rng: random.Random) -> tuple[dict[str, bytes], list[str]]:
    """Class folders (sometimes under split folders or a wrapper folder) of mostly valid images with odd names
    and damage; -> (files, empty folders)."""
    files: dict[str, bytes] = {}
    empty: list[str] = []
    classes = list(dict.fromkeys(class_name(rng, k) for k in range(rng.choice((1, 2, 2, 3)))))
    splits = [""]
    if rng.random() < 0.25:
        splits = rng.sample(("train/", "Training/", "val/", "valid/", "test/", "TEST/", "other/"), rng.randrange(1, 4))
    wrapper = rng.choice(("", "", "", "wrapper/", "a/b/"))
    for sp in splits:
        for c in classes if rng.random() > 0.1 else classes[:1]:
            for _ in range(rng.choice((0, 1, 2, 3, 4, 4))):
                data, suffix = image_payload(rng)
                files[f"{wrapper}{sp}{c}/{odd_name(rng, suffix)}"] = data
    for _ in range(rng.choice((0, 0, 0, 1, 2))):  # junk: images at the top, other files, empty folders
        what = rng.randrange(3)
        if what == 0:
            files[f"{wrapper}{odd_name(rng, '.png')}"] = image_payload(rng)[0]
        elif what == 1:
            files[f"{wrapper}{rng.choice(classes)}/{odd_name(rng, rng.choice(('.txt', '', '.csv', '.DS_Store')))}"] = (
                random_bytes(rng))
        else:
            empty.append(f"{wrapper}{odd_name(rng, '')}")
    return files, empty


def materialize(root: Path, files: dict[str, bytes], empty: list[str] = ()) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        p = root / rel
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        except (IsADirectoryError, NotADirectoryError, FileExistsError):  # a name used as file and folder
            continue
    for rel in empty:
        try:
            (root / rel).mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            continue


def add_links(rng: random.Random, root: Path) -> list[str]:
    """Symbolic links: a loop, one to itself, a dangling one, one to a folder or file of the source, a FIFO."""
    notes = []
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        what = rng.randrange(6)
        name = odd_name(rng, rng.choice((".png", "", ".dcm", ".nii")))
        where = rng.choice([p for p in [root, *root.rglob("*")] if p.is_dir() and not p.is_symlink()] or [root])
        link = where / name
        if link.exists() or link.is_symlink():
            continue
        try:
            if what == 0:
                link.symlink_to(".", target_is_directory=True)
            elif what == 1:
                link.symlink_to(link.name)
            elif what == 2:
                link.symlink_to("does-not-exist")
            elif what == 3:
                link.symlink_to(root)
            elif what == 4:
                target = next((p for p in root.rglob("*") if p.is_file()), None)
                if target is None:
                    continue
                link.symlink_to(target)
            else:
                os.mkfifo(link)
        except OSError:
            continue
        notes.append(f"link {what} at {link.relative_to(root)!r}")
    return notes


def label_table(rng: random.Random, files: list[str], classes: tuple[str, ...] = ("normal", "lesion")) -> bytes:
    """A label table for ``files``: mostly right, else a missing or misnamed column, unknown or missing or
    repeated rows, empty labels, bad split values, odd quoting, another encoding or random bytes."""
    import csv

    r = rng.random()
    if r < 0.04:
        return b""
    if r < 0.08:
        return random_bytes(rng)
    header = rng.choice((["file", "label"], ["file", "label"], ["file", "label", "split"], ["file", "label", "patient"],
                         ["file", "label", "group"], ["file", "label", "split", "patient"], ["name", "label"],
                         ["file"], [" file ", " label "], ["\ufefffile", "label"], ["file", "label", "group", "patient"],
                         ["file", "label", "label"]))
    rows = []
    for i, f in enumerate(files):
        row = {"file": f, "label": classes[i % len(classes)], "split": ("train", "train", "val", "test")[i % 4],
               "patient": f"P{i // 2}", "group": f"G{i % 3}", "name": f}
        if rng.random() < 0.05:
            row[rng.choice(("label", "split", "patient", "group"))] = rng.choice(("", " ", "bogus", "TRAINING", "nan",
                                                                               "NA", "\u00e9"))
        if rng.random() < 0.05:
            row["file"] = rng.choice(("missing.png", "", "../up.png", "/abs.png", f + " ", f.upper(), "a\x00b"))
        rows.append([row.get(h.strip().lstrip("\ufeff"), "") for h in header])
    if rows and rng.random() < 0.1:
        rows.append(rng.choice(rows))
    if rows and rng.random() < 0.1:
        rows.pop(rng.randrange(len(rows)))
    buf = io.StringIO()
    if rng.random() < 0.8:
        w = csv.writer(buf, lineterminator=rng.choice(("\n", "\r\n")))
        w.writerow(header)
        w.writerows(rows)
    else:  # naive joining: names with commas, quotes or newlines break the row
        buf.write(",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    text = buf.getvalue()
    if rng.random() < 0.05:
        return text.encode("utf-16", "replace")
    if rng.random() < 0.05:
        return text.encode("latin-1", "replace")
    return text.encode("utf-8", "surrogateescape")


def prepare_settings(rng: random.Random) -> dict[str, Any]:
    return {"resolution": rng.choice((8, 16)), "channels": rng.choice((1, 3)),
            "resize": rng.choice(("crop", "pad", "stretch")), "on_error": rng.choice(("fail", "skip")), "workers": 1,
            "max_per_class": rng.choice((None, None, None, 1, 2)),
            "split": {"val": rng.choice((0.0, 0.1, 0.3)), "test": rng.choice((0.0, 0.1, 0.3)), "seed": rng.randrange(3)},
            "infer_groups": {"enabled": rng.random() < 0.05, "source_split": rng.choice(("keep", "regroup"))}}


def source_settings(rng: random.Random, path: Path, labels: Path | None, root: Path, kind: str = "auto"
                    ) -> dict[str, Any]:
    if rng.random() < 0.15:
        kind = rng.choice(("auto", "folder", "medmnist", "dicom", "nifti"))
    out: dict[str, Any] = {"type": kind, "path": str(path), "download_dir": str(root / "downloads")}
    if labels is not None:
        out["labels"] = str(labels)
    if rng.random() < 0.1:
        out["group_pattern"] = rng.choice(("([^/]+)/", "(.)", "^(.)", "(x)?", "([0-9]+)", "zzz"))
    if rng.random() < 0.3:
        out["volume"] = {"axis": rng.randrange(3), "select": rng.choice(("all", "central", "nonempty")),
                         "every": rng.choice((1, 2, 5))}
    return out


# --------------------------------------------------------------------------------------------------
# the kinds of case


def any_valid_file(rng: random.Random, suffix: str) -> bytes:
    """A valid file of the kind ``suffix`` names (or of another kind, as often)."""
    kind = suffix if rng.random() < 0.5 else rng.choice(SUFFIXES)
    if kind == ".npz":
        return npz_bytes(valid_npz_arrays(rng), rng.random() < 0.5)
    if kind == ".dcm":
        return dicom_bytes(rng.randrange(4))
    if kind in (".nii", ".nii.gz"):
        from tests.helpers import nifti_volume

        return nifti_bytes(nifti_volume(rng.randrange(4), rng.random() < 0.5, (8, 8, 4), (1, 3)), kind == ".nii.gz")
    if kind in (".zip", ".tar.gz", ".tgz", ".tar"):
        return pack(rng, image_tree(rng)[0], kind)
    if kind == ".csv":
        return label_table(rng, ["a/x.png", "b/y.png"])
    return valid_image(rng)[0]


def pack(rng: random.Random, files: dict[str, bytes], suffix: str) -> bytes:
    """``files`` as a .zip or .tar(.gz) archive, sometimes with damaged members, odd entries or links."""
    buf = io.BytesIO()
    extra = rng.choice(([], [], [], ["../escape.png"], ["/abs.png"], ["dir/"], ["C:evil.png"], ["./a/./x.png"]))
    if suffix == ".zip":
        method = rng.choice((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                             zipfile.ZIP_LZMA))
        with zipfile.ZipFile(buf, "w", method) as zf:
            for name, data in files.items():
                zf.writestr(name.encode("utf-8", "surrogateescape").decode("cp437"), data)
            for name in extra:
                zf.writestr(name, b"" if name.endswith("/") else image_bytes(0, "PNG", "L", 8, 8))
        raw = bytearray(buf.getvalue())
        if rng.random() < 0.1 and len(raw) > 8:  # the "encrypted" flag bit on the first member
            raw[6] |= 1
        return bytes(raw)
    mode = {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz"}[suffix]
    if suffix == ".tar" and rng.random() < 0.3:
        mode = rng.choice(("w:bz2", "w:xz"))
    with tarfile.open(fileobj=buf, mode=mode, format=rng.choice((tarfile.PAX_FORMAT, tarfile.GNU_FORMAT))) as tf:
        for name, data in list(files.items()) + [(e, image_bytes(0, "PNG", "L", 8, 8)) for e in extra]:
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
                continue
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if rng.random() < 0.1:
            info = tarfile.TarInfo("normal/link.png")
            info.type = rng.choice((tarfile.SYMTYPE, tarfile.LNKTYPE))
            info.linkname = "../../etc/passwd"
            tf.addfile(info)
        if rng.random() < 0.05:
            info = tarfile.TarInfo("normal/dev.png")
            info.type = rng.choice((tarfile.CHRTYPE, tarfile.FIFOTYPE))
            tf.addfile(info)
    return buf.getvalue()


def case_single_file(rng: random.Random, root: Path) -> tuple[dict[str, Any], list[str]]:
    suffix = rng.choice(SUFFIXES)
    data = any_valid_file(rng, suffix)
    r = rng.random()
    how = "valid"
    if r < 0.6:
        data, how = mutate(rng, data)
    elif r < 0.7:
        data, how = random_bytes(rng), "random"
    f = root / odd_name(rng, suffix)
    f.write_bytes(data)
    labels = None
    if rng.random() < 0.2:
        labels = root / odd_name(rng, ".csv")
        labels.write_bytes(label_table(rng, ["x.png", "y.png"]))
    return source_settings(rng, f, labels, root), [f"{how} {suffix} as {f.name!r}"]


def case_folder(rng: random.Random, root: Path) -> tuple[dict[str, Any], list[str]]:
    files, empty = image_tree(rng)
    src = root / odd_name(rng, "")
    materialize(src, files, empty)
    notes = add_links(rng, src) if rng.random() < 0.2 else []
    return source_settings(rng, src, None, root, "auto"), [f"{len(files)} files, {len(empty)} empty", *notes]


def case_archive(rng: random.Random, root: Path) -> tuple[dict[str, Any], list[str]]:
    files, _ = image_tree(rng)
    suffix = rng.choice((".zip", ".tar.gz", ".tgz", ".tar"))
    data, how = pack(rng, files, suffix), "valid"
    if rng.random() < 0.35:
        data, how = mutate(rng, data)
    f = root / (("MedNIST" if rng.random() < 0.05 else "") + odd_name(rng, suffix))
    f.write_bytes(data)
    return source_settings(rng, f, None, root), [f"{how} {suffix} of {len(files)} files"]


def case_labelled(rng: random.Random, root: Path) -> tuple[dict[str, Any], list[str]]:
    files = {}
    for _ in range(rng.choice((1, 2, 4, 6))):
        data, suffix = image_payload(rng)
        files[f"{rng.choice(('', 'sub/', 'train/', odd_name(rng, '/')))}{odd_name(rng, suffix)}"] = data
    labels = root / "labels.csv"
    labels.write_bytes(label_table(rng, list(files)))
    if rng.random() < 0.3:
        f = root / odd_name(rng, rng.choice((".zip", ".tar.gz")))
        f.write_bytes(pack(rng, files, ".zip" if f.name.lower().endswith(".zip") else ".tar.gz"))
        return source_settings(rng, f, labels, root, "folder"), ["labelled archive"]
    src = root / "src"
    materialize(src, files)
    return source_settings(rng, src, labels, root, "folder"), ["labelled folder"]


def case_npz(rng: random.Random, root: Path) -> tuple[dict[str, Any], list[str]]:
    arrays = odd_npz_arrays(rng) if rng.random() < 0.7 else valid_npz_arrays(rng)
    data, how = npz_bytes(arrays, rng.random() < 0.5), "odd arrays"
    if rng.random() < 0.3:
        data, how = mutate(rng, data)
    name = rng.choice(("x.npz", "pneumoniamnist.npz", "chestmnist_64.npz", "bloodmnist.npz", odd_name(rng, ".npz")))
    f = root / name
    f.write_bytes(data)
    shapes = {k: (v.shape, v.dtype.str) for k, v in arrays.items()}
    return source_settings(rng, f, None, root, "auto"), [f"{how} {name!r} {shapes}"]


def case_dicom(rng: random.Random, root: Path) -> tuple[dict[str, Any], list[str]]:
    src = root / "dcm"
    names = []
    for i in range(rng.choice((1, 2, 3, 5))):
        r = rng.random()
        data = (dicom_bytes(i % 4) if r < 0.4 else odd_dicom(rng, i) if r < 0.7 else
                dicom_bytes(i, pixels=False) if r < 0.75 else mutate(rng, dicom_bytes(i % 4))[0])
        name = f"{rng.choice(('', 'p1/', 'p2/'))}{odd_name(rng, '.dcm') if rng.random() < 0.3 else f'{i}.dcm'}"
        materialize(src, {name: data})
        names.append(name)
    labels = root / "labels.csv"
    labels.write_bytes(label_table(rng, names))
    return source_settings(rng, src, labels, root, "dicom"), [f"{len(names)} DICOM files"]


def case_nifti(rng: random.Random, root: Path) -> tuple[dict[str, Any], list[str]]:
    from tests.helpers import nifti_volume

    src = root / "nii"
    names = []
    for i in range(rng.choice((1, 2, 3, 4))):
        gz = rng.random() < 0.5
        r = rng.random()
        vol = nifti_volume(i, i % 2 == 1, (8, 8, 5), (1, 4)) if r < 0.5 else odd_volume(rng)
        data = nifti_bytes(vol, gz)
        if rng.random() < 0.25:
            data = mutate(rng, data)[0]
        name = f"{rng.choice(('', 'sub-01/', 'sub-02/'))}{odd_name(rng, '.nii.gz' if gz else '.nii')}"
        materialize(src, {name: data})
        names.append(name)
    labels = root / "labels.csv"
    labels.write_bytes(label_table(rng, names))
    return source_settings(rng, src, labels, root, "nifti"), [f"{len(names)} NIfTI files"]


def case_ingested(rng: random.Random, root: Path) -> tuple[dict[str, Any], list[str]]:
    """An ingest folder (``data/raw`` with ``ingest.json``): a fuzzed source inside, its record right or damaged."""
    import json

    ingested = root / "raw"
    ingested.mkdir()
    inner_settings, notes = rng.choice((case_folder, case_archive, case_npz, case_labelled))(rng, ingested)
    inner = Path(inner_settings["path"])
    rec: Any = {"type": rng.choice(("auto", "folder", "medmnist", "dicom", "nifti", "bogus", 5)), "path": inner.name,
                "flag": rng.choice((None, None, "bloodmnist", "nosuchmnist", 3)),
                "labels": Path(inner_settings["labels"]).name if inner_settings.get("labels") else None}
    what = rng.randrange(8)
    if what == 0:
        rec["path"] = rng.choice(("", ".", "..", "/etc", "../x", "missing.zip", 7, None, ["a"]))
        rec["flag"] = None  # a MedMNIST flag and a missing file would download it
    elif what == 1:
        rec = rng.choice(([], "text", 3, None, {}))
    elif what == 2:
        rec["labels"] = rng.choice(("../labels.csv", "/etc/passwd", 1, "missing.csv"))
    text = json.dumps(rec).encode()
    if what == 3:
        text = mutate(rng, text)[0]
    (ingested / "ingest.json").write_bytes(text)
    return source_settings(rng, ingested, None, root, "auto"), ["ingested: " + text[:120].decode("latin-1"), *notes]


KINDS = {"single_file": (case_single_file, 3), "folder": (case_folder, 3), "archive": (case_archive, 2),
         "labelled": (case_labelled, 2), "npz": (case_npz, 3), "dicom": (case_dicom, 2), "nifti": (case_nifti, 2),
         "ingested": (case_ingested, 1)}


def build_case(seed: int, root: Path) -> Case:
    """The fuzzed source of ``seed`` under ``root`` (a new, empty folder) and its settings."""
    rng = random.Random(seed)
    kind = rng.choices(list(KINDS), weights=[w for _, w in KINDS.values()])[0]
    root.mkdir(parents=True, exist_ok=True)
    source, notes = KINDS[kind][0](rng, root)
    return Case(seed, kind, source, prepare_settings(rng), notes)
