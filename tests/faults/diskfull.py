"""A disk that fills up at a chosen write: every file opened for writing under a root (``open``, ``io.open``,
``os.fdopen``, ``pathlib``; so numpy, json, zipfile, csv, PIL and shutil's copies) counts its ``write`` calls; the
``k``-th call writes half its bytes and raises ENOSPC, as write(2) does on a full disk (no file name), and every
later write under the root fails too (a full disk stays full).

pandas' ``to_parquet`` writes through pyarrow's native file (no Python ``write``): it counts as one write, and
fails as pyarrow does on a full disk (``OSError(28, "Error writing bytes to file. Detail: [errno 28] ...")``, no
file name, half a file left). Other native writers (safetensors) are not seen; the four commands do not use them.
``fileno()`` of a wrapped file is refused so that PIL and shutil write through ``write`` instead of passing the
descriptor to C."""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path
from typing import Any

_WRITE_MODES = set("wax+")


class Disk:
    def __init__(self, root: Path, fail_at: int | None = None) -> None:
        self.root = os.path.realpath(root) + os.sep
        self.fail_at = fail_at
        self.count = 0
        self.fired: str | None = None  # the file whose write hit the full disk
        self._real_open = io.open

    def hit(self, path: str) -> bool:
        """Count a write to ``path``: True when the disk is (now) full."""
        if self.fired is not None:
            return True
        self.count += 1
        if self.fail_at is not None and self.count >= self.fail_at:
            self.fired = path
            return True
        return False

    def _path_of(self, file: Any) -> str | None:
        if isinstance(file, int):
            try:
                return os.readlink(f"/proc/self/fd/{file}")
            except OSError:
                return None
        if isinstance(file, str | bytes | os.PathLike):
            return os.path.realpath(os.fsdecode(file))
        return None

    def open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = self._real_open(file, mode, *args, **kwargs)
        path = self._path_of(file)
        if _WRITE_MODES & set(mode) and path is not None and path.startswith(self.root):
            return _Full(f, self, path)
        return f

    def install(self, monkeypatch: Any) -> Disk:
        import pandas as pd

        monkeypatch.setattr(io, "open", self.open)
        monkeypatch.setattr(builtins, "open", self.open)
        real_to_parquet = pd.DataFrame.to_parquet

        def to_parquet(frame: Any, path: Any = None, *args: Any, **kwargs: Any) -> Any:
            where = self._path_of(path)
            if where is not None and where.startswith(self.root) and self.hit(where):
                with self._real_open(where, "wb") as f:  # what fitted
                    f.write(b"PAR1" + b"\0" * 100)
                raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
            return real_to_parquet(frame, path, *args, **kwargs)

        monkeypatch.setattr(pd.DataFrame, "to_parquet", to_parquet)
        return self


class _Full:
    """A file whose writes go through :meth:`Disk.hit`."""

    def __init__(self, f: Any, disk: Disk, path: str) -> None:
        self._f, self._disk, self._path = f, disk, path

    def write(self, data: Any) -> int:
        if self._disk.hit(self._path):
            if self._disk.fired == self._path and not getattr(self, "_cut", False):
                self._cut = True
                view = memoryview(data).cast("B") if not isinstance(data, str) else data
                self._f.write(view[: len(view) // 2])  # what fitted
                self._f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._f.write(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fileno (writes are counted through write())")

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:  # the buffered rest of a file cut short
            pass

    def __enter__(self) -> _Full:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Any:
        return iter(self._f)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)
