"""Issue #41: a full disk is a message (what, where, how much is free, what to do), never "unexpected error",
and a file a user reads is never left half-written."""

from __future__ import annotations

import errno
import io

import pytest

from synthgate import stages
from synthgate.utils import write_bytes_atomic, write_json_atomic


def test_a_short_write_is_named_a_full_disk_with_the_free_space(tmp_path, cli, monkeypatch):
    """numpy's np.save on a full disk raises OSError("... requested and ... written") without an errno."""
    def full(*a, **k):
        raise OSError("3194880 requested and 2002816 written")

    monkeypatch.setattr(stages, "prepare", full)
    code, out, err = cli("prepare", "--source", "x", "--out", "ds", cwd=tmp_path)
    assert code == 1 and "unexpected" not in err
    assert "no space left on the device (a write was cut short: 3194880 requested and 2002816 written)" in err
    assert "MiB free of" in err and "on the file system of" in err and "free space there or write to another" in err


def test_enospc_names_the_file_and_its_file_system(tmp_path, cli, monkeypatch):
    target = tmp_path / "out" / "images.npy"

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(stages, "prepare", full)
    code, out, err = cli("prepare", "--source", "x", "--out", "ds", cwd=tmp_path)
    flat = err.replace(" ", "")  # rich wraps long paths; the fixture turns the line breaks into spaces
    assert code == 1 and "no space left on the device:" in err and f"{target}".replace(" ", "") in flat
    assert f"onthefilesystemof{tmp_path}".replace(" ", "") in flat  # the nearest folder that exists


@pytest.mark.parametrize("write", [write_bytes_atomic, lambda p, d: write_json_atomic(p, {"x": d.decode()})])
def test_an_atomic_write_that_hits_a_full_disk_leaves_the_old_file(tmp_path, monkeypatch, write):
    """pull writes manifest.json, manifest.sig.json and pull.json this way: a full disk left a truncated
    manifest.json before (#41)."""
    import synthgate.utils as utils

    path = tmp_path / "manifest.json"
    path.write_text('{"old": true}')
    real = utils.os.fdopen

    class Full(io.RawIOBase):
        def __init__(self, fd, mode):
            self.f = real(fd, mode)

        def write(self, b):
            self.f.write(b[: len(b) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(utils.os, "fdopen", lambda fd, mode="r", *a, **k: Full(fd, mode))
    with pytest.raises(OSError, match="No space left"):
        write(path, b"new and longer content")
    monkeypatch.undo()
    assert path.read_text() == '{"old": true}' and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
