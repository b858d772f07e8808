"""The ingest stage: bring the raw source into the project (``data/raw``) so DVC tracks it.

``data/raw`` is a DVC output: its content hash lands in ``dvc.lock``, it is cached, and
``dvc push`` sends it to the remote (S3/MinIO), so a dataset version can be pulled back exactly.
The folder holds a copy of the source (hard-linked where the filesystem allows) and
``ingest.json``, which the prepare stage reads to know what the copy is. Nothing in it depends on
when it was written (no timestamp): ingesting the same source again leaves ``data/raw``'s hash, and
so every later DVC stage, as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from synthgate.data.config import SourceConfig
from synthgate.data.sources import detect_type
from synthgate.errors import DataError
from synthgate.utils import atomic_directory, read_json, sha256_file, utc_now, write_json_atomic

log = logging.getLogger(__name__)

INGEST_FILE = "ingest.json"


def _place(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy)
    else:
        _link_or_copy(src, dst)


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _resolve_missing(cfg: SourceConfig) -> Path:
    """Where the source path does not exist, fetch it through the field's own loaders."""
    from synthgate.data.medmnist import download_medmnist, medmnist_info

    kind = cfg.type
    path = Path(cfg.path)
    if kind == "mednist" or (kind == "auto" and path.name.lower().startswith("mednist")):
        from synthgate.data.sources import read_mednist  # downloads and extracts via MONAI

        read_mednist(cfg)
        return Path(cfg.download_dir) / "MedNIST"
    if kind == "medmnist" or path.suffix == ".npz":
        flag, _ = medmnist_info(cfg.flag, path)
        if flag:
            return download_medmnist(flag, Path(cfg.download_dir))
    raise DataError(f"{path}: no such file or directory", hint="check --source (or data.source.path in params.yaml)")


def ingest(cfg: SourceConfig, out: Path) -> dict[str, Any]:
    """Copy (or hard-link) ``cfg.path`` (and a DICOM label table) into ``out`` with ``ingest.json``."""
    src = Path(cfg.path)
    if not src.exists():
        src = _resolve_missing(cfg)
    kind = cfg.type if cfg.type != "auto" else detect_type(src)
    record: dict[str, Any] = {
        "type": kind,
        "path": src.name,
        "flag": cfg.flag,
        "labels": None,
        "original_path": str(cfg.path),
    }
    if src.is_file():
        record["sha256"] = sha256_file(src)
    with atomic_directory(Path(out)) as tmp:
        _place(src, tmp / src.name)
        if cfg.labels is not None:
            labels = Path(cfg.labels)
            if not labels.exists():
                raise DataError(f"{labels}: label table not found", hint="set data.source.labels")
            shutil.copy2(labels, tmp / "labels.csv")
            record["labels"] = "labels.csv"
        write_json_atomic(tmp / INGEST_FILE, record)
    log.info("ingested %s at %s", src, utc_now())  # the time goes to the log, not into the DVC-tracked output
    return record


def resolve_ingested(cfg: SourceConfig) -> SourceConfig:
    """If ``cfg.path`` is an ingest folder, point the config at the source inside it; refuses an ingest record
    that cannot be read, or whose names leave the folder or type is not a source type, naming it."""
    from pydantic import ValidationError

    path = Path(cfg.path)
    marker = path / INGEST_FILE
    if not (path.is_dir() and marker.exists()):
        return cfg
    redo = "run `synthgate ingest` again (it rewrites the folder), or point data.source.path at the source itself"
    try:
        rec = read_json(marker)
    except (ValueError, OSError) as e:  # not JSON, not UTF-8 (JSONDecodeError, UnicodeDecodeError), unreadable
        raise DataError(f"{marker}: cannot read the ingest record ({type(e).__name__}: {e})", hint=redo) from None
    if not (isinstance(rec, dict) and _inside(rec.get("path")) and (not rec.get("labels") or _inside(rec["labels"]))):
        raise DataError(f"{marker}: not an ingest record: expected a JSON object whose 'path' (and 'labels') name "
                        f"a file inside {path}", hint=redo)
    update = {"type": rec.get("type", "auto"), "path": path / rec["path"],
              "labels": (path / rec["labels"]) if rec.get("labels") else cfg.labels, "flag": rec.get("flag") or cfg.flag}
    try:
        return SourceConfig.model_validate({**cfg.model_dump(), **update})
    except ValidationError as e:
        bad = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise DataError(f"{marker}: the ingest record names no valid source ({bad})", hint=redo) from None


def _inside(name: object) -> bool:
    """A relative name of something inside a folder (not the folder itself, nothing above it)."""
    from pathlib import PurePosixPath

    p = PurePosixPath(name) if isinstance(name, str) else None
    return p is not None and not p.is_absolute() and ".." not in p.parts and p.parts not in ((), (".",))
