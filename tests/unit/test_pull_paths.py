"""A published manifest must not make `synthgate pull` write outside its target: absolute paths,
``..`` parts, backslashes and links out of the target are refused before anything is written."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from synthgate.publish.pull import MARKER, VerificationFailed, pull, safe_destination
from synthgate.stores import FileStore

NAME = "evil-synthetic"
CREATED = "2024-01-01T00:00:00Z"
PAYLOAD = b"written by a malicious manifest\n"


@pytest.fixture(autouse=True)
def signer(monkeypatch, tmp_path_factory):
    """A gatekeeper's key that signs the manifests below (a signed manifest still may not write outside
    the target: the check holds even if the gatekeeper were fooled), trusted through the environment."""
    from synthgate.trust.keys import generate_key, load_signer

    key, trust = generate_key(tmp_path_factory.mktemp("gatekeeper"))
    monkeypatch.setenv("SYNTHGATE_TRUST_ROOT", str(trust))
    monkeypatch.setenv("SYNTHGATE_GATEKEEPER_URL", "http://127.0.0.1:1")  # down: revocations are offline
    return load_signer(key)


def _sign(st: FileStore, files: list[dict], signer) -> None:
    from datetime import UTC, datetime

    from synthgate.trust import attest

    p = {"name": NAME, "version": "v1", "model": "m", "model_version": "1", "serial": 1,
         "signed_at": datetime.now(UTC).isoformat(), "content": {"images_root": hashlib.sha256(b"").hexdigest()}}
    env = attest.sign(attest.statement(attest.DATASET, f"dataset:{NAME}/v1", attest.files_root(files), p), signer)
    st.put_bytes(f"{NAME}/v1/manifest.sig.json", json.dumps(env).encode())


def _publish(store: Path, paths: list[str], signer) -> None:
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
    _sign(st, files, signer)


def _all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "nested-dotdot", "backslash", "windows-drive", "empty"])
def test_unsafe_manifest_paths_are_refused_and_nothing_is_written(tmp_path, kind, signer):
    outside = tmp_path / "outside"
    bad = {"absolute": str(outside / "abs.txt"), "dotdot": "../outside/dotdot.txt",
           "nested-dotdot": "images/../../outside/nested.txt", "backslash": "..\\outside\\bs.txt",
           "windows-drive": "C:evil.txt", "empty": ""}[kind]
    why = {"absolute": "is absolute", "dotdot": "contains '..'", "nested-dotdot": "contains '..'",
           "backslash": "contains a backslash", "windows-drive": "is absolute", "empty": "is empty or not a string"}[kind]
    store = tmp_path / "store"
    _publish(store, ["labels.csv", bad], signer)
    before = _all_files(tmp_path)
    target = tmp_path / "pulled"
    with pytest.raises(VerificationFailed) as e:
        pull(NAME, target, store)
    assert e.value.message == f"manifest lists an unsafe file path {bad!r}: it {why}; refused"
    assert "report it to its publisher" in (e.value.hint or "")
    # nothing written anywhere: no target, no file outside it, no directory created on the way
    assert not target.exists() and not outside.exists()
    assert _all_files(tmp_path) == before


def test_a_link_out_of_the_target_is_refused(tmp_path, signer):
    """An interrupted pull's target (marker in place) with a link that leads outside it."""
    store = tmp_path / "store"
    _publish(store, ["labels.csv", "sub/x.txt"], signer)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "pulled"
    target.mkdir()
    (target / MARKER).write_text(json.dumps({"ref": f"{NAME}:v1", "manifest": CREATED}))
    os.symlink(outside, target / "sub")
    with pytest.raises(VerificationFailed, match=r"unsafe file path 'sub/x.txt': it resolves to .*/outside/x.txt, outside .*/pulled; refused"):
        pull(NAME, target, store)
    assert list(outside.iterdir()) == [] and not (target / "labels.csv").exists()


def test_safe_paths_are_pulled(tmp_path, signer):
    store = tmp_path / "store"
    _publish(store, ["labels.csv", "images/notes.txt", "png/a.zip"], signer)
    r = pull(NAME, tmp_path / "pulled", store)
    assert r.num_files == 3 and r.status == "approved"
    for p in ("labels.csv", "images/notes.txt", "png/a.zip", "manifest.json", "manifest.sig.json"):
        assert (tmp_path / "pulled" / p).is_file()
    assert safe_destination(tmp_path, "a/b.txt") == tmp_path / "a" / "b.txt"
    for p in (".", "a/..", "/etc/passwd", "a\\b", None):
        with pytest.raises(VerificationFailed, match="unsafe file path"):
            safe_destination(tmp_path, p)
