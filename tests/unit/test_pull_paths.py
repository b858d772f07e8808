"""A published manifest must not make `synthgate pull` write outside its target: absolute paths,
``..`` parts, backslashes and links out of the target are refused before anything is written."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from synthgate.publish import pull as pull_mod
from synthgate.publish.pull import MARKER, VerificationFailed, pull, safe_destination
from synthgate.stores import FileStore

NAME = "evil-synthetic"
CREATED = "2024-01-01T00:00:00Z"
PAYLOAD = b"written by a malicious manifest\n"


@pytest.fixture(autouse=True)
def approved(monkeypatch):
    """No MLflow here: every dataset counts as still approved."""
    monkeypatch.setattr(pull_mod, "revocation_status", lambda manifest, uri: (True, "approved (test)"))


def _publish(store: Path, paths: list[str]) -> None:
    """A dataset whose manifest lists ``paths``, each object present in the store where the store
    would look for it (so that only the path check stands between the manifest and the disk)."""
    st = FileStore(store)
    files = []
    for p in paths:
        key = "/".join(x for x in f"{NAME}/v1/{p}".split("/") if x not in ("", ".."))
        if key != f"{NAME}/v1":
            st.put_bytes(key, PAYLOAD)
        files.append({"path": p, "size": len(PAYLOAD), "sha256": hashlib.sha256(PAYLOAD).hexdigest()})
    st.put_bytes(f"{NAME}/v1/manifest.json", json.dumps({"created": CREATED, "model": {}, "files": files}).encode())


def _all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "nested-dotdot", "backslash", "windows-drive", "empty"])
def test_unsafe_manifest_paths_are_refused_and_nothing_is_written(tmp_path, kind):
    outside = tmp_path / "outside"
    bad = {"absolute": str(outside / "abs.txt"), "dotdot": "../outside/dotdot.txt",
           "nested-dotdot": "images/../../outside/nested.txt", "backslash": "..\\outside\\bs.txt",
           "windows-drive": "C:evil.txt", "empty": ""}[kind]
    why = {"absolute": "is absolute", "dotdot": "contains '..'", "nested-dotdot": "contains '..'",
           "backslash": "contains a backslash", "windows-drive": "is absolute", "empty": "is empty or not a string"}[kind]
    store = tmp_path / "store"
    _publish(store, ["labels.csv", bad])
    before = _all_files(tmp_path)
    target = tmp_path / "pulled"
    with pytest.raises(VerificationFailed) as e:
        pull(NAME, target, store)
    assert e.value.message == f"manifest lists an unsafe file path {bad!r}: it {why}; refused"
    assert "report it to its publisher" in (e.value.hint or "")
    # nothing written anywhere: no target, no file outside it, no directory created on the way
    assert not target.exists() and not outside.exists()
    assert _all_files(tmp_path) == before


def test_a_link_out_of_the_target_is_refused(tmp_path):
    """An interrupted pull's target (marker in place) with a link that leads outside it."""
    store = tmp_path / "store"
    _publish(store, ["labels.csv", "sub/x.txt"])
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "pulled"
    target.mkdir()
    (target / MARKER).write_text(json.dumps({"ref": f"{NAME}:v1", "manifest": CREATED}))
    os.symlink(outside, target / "sub")
    with pytest.raises(VerificationFailed, match=r"unsafe file path 'sub/x.txt': it resolves to .*/outside/x.txt, outside .*/pulled; refused"):
        pull(NAME, target, store)
    assert list(outside.iterdir()) == [] and not (target / "labels.csv").exists()


def test_safe_paths_are_pulled(tmp_path):
    store = tmp_path / "store"
    _publish(store, ["labels.csv", "images/shard-00000.npz", "png/a.zip"])
    r = pull(NAME, tmp_path / "pulled", store)
    assert r.num_files == 3 and r.status == "approved"
    for p in ("labels.csv", "images/shard-00000.npz", "png/a.zip", "manifest.json"):
        assert (tmp_path / "pulled" / p).is_file()
    assert safe_destination(tmp_path, "a/b.txt") == tmp_path / "a" / "b.txt"
    for p in (".", "a/..", "/etc/passwd", "a\\b", None):
        with pytest.raises(VerificationFailed, match="unsafe file path"):
            safe_destination(tmp_path, p)
