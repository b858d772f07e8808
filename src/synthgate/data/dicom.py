"""DICOM files with a label table: pixels through pydicom's modality and VOI LUTs, and the identifying tags present (PHI, for validation's de-identification check)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synthgate.data.folders import listed_file, read_label_table
from synthgate.data.sources import RawItem, SourceData, log
from synthgate.errors import DataError
from synthgate.utils import sha256_file, sha256_tree

#: DICOM attributes that identify a patient directly (after DICOM PS3.15 Annex E, the Basic
#: Application Level Confidentiality Profile): present and non-empty -> PHI, always.
DIRECT_IDENTIFIERS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OtherPatientIDs",
    "OtherPatientNames",
    "OtherPatientIDsSequence",
    "PatientMotherBirthName",
    "MilitaryRank",
    "MedicalRecordLocator",
    "PatientComments",
    "IssuerOfPatientID",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "PerformingPhysicianName",
    "OperatorsName",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "AccessionNumber",
)
#: Attributes that link an image back to a patient through hospital systems (UIDs, dates,
#: devices). PHI unless the file declares PatientIdentityRemoved = YES (a de-identification tool
#: has already replaced them).
INDIRECT_IDENTIFIERS: tuple[str, ...] = (
    "StudyID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "StudyTime",
    "SeriesTime",
    "AcquisitionDateTime",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "DeviceSerialNumber",
    "StationName",
)
PHI_TAGS = DIRECT_IDENTIFIERS + INDIRECT_IDENTIFIERS



def _dicom_pixels(ds: Any, name: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(
            f"{name}: DICOM file has no pixel data (a report or presentation state?)",
            hint="remove it from the label table",
        )
    try:
        arr = ds.pixel_array
    except Exception as e:
        raise DataError(
            f"{name}: cannot decode DICOM pixel data ({e})",
            hint="the transfer syntax may need a decoder plugin (pylibjpeg, gdcm), or the file is corrupt",
        ) from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(
            f"{name}: multi-frame DICOM ({frames} frames) is not supported",
            hint="export 2D slices (one frame per file) first",
        )
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric.startswith("MONOCHROME"):
        try:
            arr = apply_modality_lut(arr, ds)
            if "WindowCenter" in ds or "VOILUTSequence" in ds:
                arr = apply_voi_lut(arr, ds)
        except (ValueError, TypeError, IndexError) as e:  # pydicom on a window width < 1, a malformed LUT
            raise DataError(f"{name}: cannot apply the file's modality or VOI LUT (rescale, window) to its pixels "
                            f"({type(e).__name__}: {e})",
                            hint="correct the rescale and window tags (e.g. WindowWidth >= 1), or remove the file "
                                 "from the label table") from None
        arr = np.asarray(arr, dtype=np.float64)
        if photometric == "MONOCHROME1":
            arr = arr.max() - arr
    return np.asarray(arr)



def _identifying_tags(ds: Any, f: Path) -> tuple[dict[str, str], str]:
    """The identifying tags present and non-empty (tag -> value) and the PatientID; refuses a damaged element among
    them, naming the file (pydicom parses an element when it is first used, here)."""
    from pydicom.errors import BytesLengthException

    found: dict[str, str] = {}
    try:
        identity_removed = str(ds.get("PatientIdentityRemoved", "")).strip().upper() == "YES"
        for kw in DIRECT_IDENTIFIERS if identity_removed else PHI_TAGS:
            if kw in ds:
                value = ds.get(kw)
                text = "" if value is None else str(value).strip()
                if text and text not in ("[]", "Sequence of 0 items"):
                    found[kw] = text
        return found, str(ds.get("PatientID", "") or "").strip()
    except (ValueError, NotImplementedError, BytesLengthException) as e:  # NotImplementedError: an unknown VR
        raise DataError(f"{f}: a damaged DICOM element among the identifying tags ({type(e).__name__}: {e})",
                        hint="repair or re-export the file, or remove it from the label table") from None


def read_dicom(path: Path, labels: Path) -> SourceData:
    """DICOM files under ``path`` with a label table (CSV, columns ``file`` and ``label``, optional
    ``split`` and ``group``/``patient``; :func:`read_label_table`).

    Pixel values go through the modality and VOI LUTs (pydicom); MONOCHROME1 is inverted.
    The identifying tags (:data:`DIRECT_IDENTIFIERS`, and :data:`INDIRECT_IDENTIFIERS` unless the
    file declares PatientIdentityRemoved = YES) that are present and non-empty are recorded per
    item for the validation stage, which refuses them unless de-identification is requested.
    Without a group column, each image's group is its ``PatientID`` (read here, before any
    de-identification; prepare keeps only a salted hash) when every file has one.
    """
    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError

    if not path.is_dir():
        raise DataError(f"{path}: a DICOM source must be a folder", hint="point data.source.path at it")
    table, group_col, has_split = read_label_table(labels)
    items: list[RawItem] = []
    tags: list[dict[str, str]] = []
    files: list[Path] = []
    patient_ids: list[str] = []
    for row in table.itertuples(index=False):
        rel, f = listed_file(labels, path, row.file)
        try:
            ds = pydicom.dcmread(f)
        except (InvalidDicomError, OSError, EOFError, ValueError, NotImplementedError, BytesLengthException) as e:
            raise DataError(f"{f}: not a readable DICOM file ({e})", hint="remove it from the label table") from None
        arr = _dicom_pixels(ds, str(f))
        found, patient_id = _identifying_tags(ds, f)
        tags.append(found)
        patient_ids.append(patient_id)
        items.append(RawItem(str(f), str(row.label).strip(), arr, split=row.split if has_split else None,
                             group=getattr(row, group_col) if group_col else None, path=str(rel),
                             file_sha256=sha256_file(f)))
        files.append(f)
    group_source = f"label table column {group_col!r}" if group_col else None
    if group_col is None and all(patient_ids):
        for it, pid in zip(items, patient_ids, strict=True):
            it.group = pid
        group_source = "DICOM PatientID"
    elif group_col is None and any(patient_ids):
        missing = [it.path for it, pid in zip(items, patient_ids, strict=True) if not pid]
        raise DataError(
            f"{labels}: {len(missing)} of {len(items)} DICOM file(s) have no PatientID (e.g. {missing[0]}), the others "
            "do: the split cannot keep patients apart",
            hint="add a 'patient' (or 'group') column to the label table naming each image's patient")
    elif group_col is None:
        log.warning("%s: no DICOM file has a PatientID and the label table has no patient column: the split is "
                    "drawn per image, so one patient's images can land in training and in a held-out split",
                    path)
    classes = sorted({it.label for it in items})
    inputs = [
        {"path": str(path), "sha256": sha256_tree(path, files), "files": len(files)},
        {"path": str(labels), "sha256": sha256_file(labels), "bytes": labels.stat().st_size},
    ]
    listed = {f.resolve() for f in files}
    ignored = [str(p.relative_to(path)) for p in path.rglob("*.dcm") if p.resolve() not in listed]
    return SourceData("dicom", items, classes, inputs, has_split=has_split, ignored=ignored, dicom_tags=tags,
                      description=str(path), group_source=group_source,
                      split_source="label table column 'split'" if has_split else None)
