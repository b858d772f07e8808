"""Small shared helpers: hashing, atomic writes, JSON."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_tree(root: Path, files: list[Path]) -> str:
    """Hash of a set of files: their relative paths and contents, in sorted order."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(os.fsencode(f.relative_to(root).as_posix()))  # bytes as on disk: names need not be UTF-8
        h.update(b"\0")
        h.update(sha256_file(f).encode())
        h.update(b"\n")
    return h.hexdigest()


def printable(name: str) -> str:
    """A file name as text that can be stored anywhere: bytes that are not UTF-8 (kept by Python as surrogate
    escapes) written as ``\\xff``; a valid name unchanged."""
    return os.fsencode(name).decode("utf-8", "backslashreplace") if isinstance(name, str) else str(name)


def auc_placements(a: Any, b: Any) -> tuple[float, float]:
    """P(a score of ``a`` > one of ``b``; ties count half) and its standard error from the placement values
    (DeLong): the AUC both the membership rule and the null's representativeness report."""
    import numpy as np

    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sx, sy = np.sort(x), np.sort(y)
    v10 = (np.searchsorted(sy, x, "left") + np.searchsorted(sy, x, "right")) / (2.0 * len(y))
    v01 = 1.0 - (np.searchsorted(sx, y, "left") + np.searchsorted(sx, y, "right")) / (2.0 * len(x))
    var = v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(y)
    return float(v10.mean()), float(np.sqrt(max(var, 0.0)))


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def name_path(e: BaseException, path: str | os.PathLike[str]) -> None:
    """Give an ``OSError`` that names no file the path being written: the kernel's ENOSPC from write(2) and
    numpy's short write ("... requested and ... written") carry none, and a full disk's message must say where."""
    import errno

    if not isinstance(e, OSError) or e.filename is not None:
        return
    short = e.errno is None and bool(e.args) and " requested and " in str(e.args[0])
    if short or e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        e.filename = os.path.abspath(os.fspath(path))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """A reader sees the old file or all of ``data``, never part of it (a full disk fails before the rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        name_path(e, path)
        raise


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``target`` in one rename.

    On any error the temporary directory is removed and ``target`` is left as it was, so a
    reader never sees a half-written directory.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        name_path(e, target)
        raise
    old = None
    if target.exists() or target.is_symlink():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a block, then restore them (or remove those that were unset)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
