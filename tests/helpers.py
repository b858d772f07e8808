"""Builders for small, real test inputs: image folders, archives, npz files, DICOM files."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SYNTHGATE_SHARED_DATA", REPO.parent / "shared" / "data"))
MEDNIST = SHARED_DATA / "mednist" / "MedNIST.tar.gz"
PNEUMONIA = SHARED_DATA / "medmnist" / "pneumoniamnist.npz"
BREAST = SHARED_DATA / "medmnist" / "breastmnist.npz"


def pattern(seed: int, size: tuple[int, int] = (40, 40), mode: str = "L") -> Image.Image:
    """A distinct, non-constant image (smooth random field) for the given seed."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    small = rng.random((max(h // 4, 2), max(w // 4, 2)))
    img = Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    if mode != "L":
        img = img.convert(mode)
    return img


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def make_folder(root: Path, per_class: dict[str, int], mixed: bool = True, seed: int = 0) -> Path:
    """``root/<class>/<i>.png`` with mixed sizes and modes when ``mixed``."""
    k = seed * 10_000
    for c, n in per_class.items():
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            k += 1
            size = (40 + (i % 3) * 12, 40 + (i % 2) * 20) if mixed else (32, 32)
            mode = ("L", "RGB", "RGBA")[i % 3] if mixed else "L"
            fmt, ext = (("PNG", "png"), ("JPEG", "jpg"))[i % 2] if mixed else ("PNG", "png")
            img = pattern(k, size, mode if fmt == "PNG" else ("RGB" if mode != "L" else "L"))
            (d / f"{i:04d}.{ext}").write_bytes(png_bytes(img, fmt))
    return root


def make_npz(path: Path, n: dict[str, int], n_classes: int = 2, size: int = 28, seed: int = 0, **extra) -> Path:
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    k = 0
    for split, count in n.items():
        imgs = []
        for _ in range(count):
            k += 1
            imgs.append(np.asarray(pattern(seed * 1000 + k, (size, size))))
        arrays[f"{split}_images"] = np.stack(imgs).astype(np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, n_classes, size=(count, 1)).astype(np.uint8)
        m = min(n_classes, count)
        arrays[f"{split}_labels"][:m, 0] = np.arange(m)
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


def write_dicom(path: Path, pixels: np.ndarray | None, phi: bool = True, **tags: str) -> Path:
    """A real DICOM file (CT image storage) written with pydicom; PHI tags set when ``phi``."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    if phi:
        ds.PatientName = "DOE^JANE"
        ds.PatientID = "MRN-0042"
        ds.PatientBirthDate = "19700101"
        ds.InstitutionName = "General Hospital"
    for k, v in tags.items():
        setattr(ds, k, v)
    if pixels is not None:
        arr = np.asarray(pixels, dtype=np.uint16)
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleSlope = 1
        ds.RescaleIntercept = -1024
        ds.PixelData = arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """A real NIfTI-1 file written with nibabel (``.nii`` or ``.nii.gz`` by the name)."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(volume), np.diag([1.0, 1.0, 2.0, 1.0]) if affine is None else affine),
             str(path))
    return path


def nifti_volume(seed: int, lesion: bool, shape: tuple[int, int, int] = (24, 24, 12),
                 body: tuple[int, int] = (3, 9)) -> np.ndarray:
    """A small MR-like volume: background 0, a textured "body" in slices ``body[0]..body[1]-1`` (axis
    2), a bright square "lesion" when ``lesion``; intensities in scanner-like units (~100-300)."""
    rng = np.random.default_rng(seed)
    vol = np.zeros(shape, np.float32)
    x, y, _ = shape
    for z in range(*body):
        vol[3 : x - 3, 3 : y - 3, z] = 100 + 20 * rng.standard_normal((x - 6, y - 6))
        if lesion:
            vol[x // 3 : x // 3 + 6, y // 3 : y // 3 + 6, z] += 150
    return vol


def write_nifti_set(root: Path, patients: int = 20, volumes: int = 2, patient_column: bool = True) -> Path:
    """``patients`` patients (alternating labels normal/lesion) with ``volumes`` volumes each under
    ``root/sub-XX/scanY.nii.gz``, and ``root/labels.csv`` (file,label[,patient])."""
    rows = []
    for p in range(patients):
        label = "lesion" if p % 2 else "normal"
        for v in range(volumes):
            rel = f"sub-{p:02d}/scan{v}.nii.gz"
            write_nifti(root / rel, nifti_volume(100 * p + v, label == "lesion"))
            rows.append(f"{rel},{label}" + (f",P{p:02d}" if patient_column else ""))
    labels = root / "labels.csv"
    labels.write_text("file,label" + (",patient" if patient_column else "") + "\n" + "\n".join(rows) + "\n")
    return labels


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: int = 600) -> CliResult:
    """Run ``python -m synthgate ...`` in a subprocess, as a user would."""
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None removes a variable
    proc = subprocess.run(
        [sys.executable, "-m", "synthgate", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def fake_memorization(m: int = 600, copies: int = 0, planted_rate: float = 1.0, n_null: int = 500) -> dict:
    """A memorization section in the evaluation's format (:mod:`synthgate.evaluation.memorization.evidence`)
    for gate, registry and publish tests: ``copies`` synthetic images with p-values of exact copies,
    the rest like honest images; planted copies found at ``planted_rate``."""
    import numpy as np

    p = np.linspace(0.002, 1.0, m)
    p[:copies] = 1e-15
    ex = {"threshold": 2.0, "order_statistic": 5, "n_null": n_null, "n_synthetic": m, "exceedances": 6,
          "expected": 6.0, "p": 0.5}
    detectors = {d: {"what": d, "null": {"n": n_null, "needed": 60, "sufficient": True}, "synthetic": {"n": m},
                     "held_out": {"n": n_null}, "exceedance": dict(ex)}
                 for d in ("pixel", "smooth", "margin", "aligned", "tiles", "descriptor")}
    hits = int(round(planted_rate * 100))
    planted = {k: {"what": k, "n": 100, "ruled": k != "blend", "detected": hits, "rate": hits / 100,
                   "ci95": [0.0, 1.0], "per_detector": {}, "source_found": 1.0,
                   "p_values": [1e-15] * hits + [0.5] * (100 - hits)}
               for k in ("exact", "flip", "rot90", "shift_1px", "shift_2px", "shift_4px", "crop_resize",
                         "brightness_contrast", "noise", "blend")}
    return {"coverage": {"train_compared": 1000, "train_size": 1000, "full": True, "synthetic_compared": m,
                         "synthetic_size": m, "held_out": n_null},
            "detectors": detectors, "null_sufficient": True, "held_out_needed": 60,
            "per_image": {"p_combined": p.tolist(), "n": m},
            "flags": {"alpha": 0.005, "correction": "bh", "count": copies, "indices": list(range(copies))},
            "most_significant": [], "planted": planted,
            "membership": {"members": n_null, "non_members": n_null, "descriptor": {"auc": 0.51, "se": 0.02, "p": 0.3},
                           "pixel": {"auc": 0.49, "se": 0.02, "p": 0.7}},
            "pixel_shift": {"shift": -0.01, "se": 0.005, "n_boot": 2000}, "per_class": {}}


def gatekeeper_process(tracking_uri: str) -> tuple[str, subprocess.Popen]:
    """A second gatekeeper on the session's key and state, started with this process's environment (the
    S3 settings of a test): (URL, process); the caller terminates it."""
    import os
    import shutil
    import sys
    import time
    import urllib.request

    from synthgate.registry.server import free_port

    home = Path(os.environ["SYNTHGATE_TRUST_ROOT"]).parent
    port = free_port()
    exe = shutil.which("synthgate", path=str(Path(sys.executable).parent)) or "synthgate"
    proc = subprocess.Popen([exe, "gatekeeper", "serve", "--home", str(home), "--port", str(port), "--tracking-uri",
                             tracking_uri], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return url, proc
        except Exception:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"the test's gatekeeper did not start on {url}")
