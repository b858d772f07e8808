"""Issue #41: a pull that resumes a locally corrupted partial download must not blame a store that is fine.

The local partial bytes (``FILE.part``, left by an interrupted pull) are the first suspect when a resumed file
fails its sha256: pull discards them, downloads the file once more from the start and says so; only a fresh,
complete download that fails blames the store, naming the object with the expected and the found sha256.
Folder store and S3 (moto's server)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from synthgate.publish.pull import MARKER, VerificationFailed, pull
from synthgate.stores import Store, open_store
from tests.integration.test_publish import BUCKET, s3, s3_env  # noqa: F401 - module fixtures

NAME = "faults-synthetic"
CREATED = "2026-01-01T00:00:00Z"
FILES = {"images/shard-00000.npz": os.urandom(300_000), "labels.csv": b"file,label\n" + b"x.png,a\n" * 2000}


@pytest.fixture(autouse=True)
def signer(monkeypatch, tmp_path_factory):
    """A gatekeeper's key, trusted through the environment; the gatekeeper itself is down (offline pull)."""
    from synthgate.trust.keys import generate_key, load_signer

    key, trust = generate_key(tmp_path_factory.mktemp("gatekeeper"))
    monkeypatch.setenv("SYNTHGATE_TRUST_ROOT", str(trust))
    monkeypatch.setenv("SYNTHGATE_GATEKEEPER_URL", "http://127.0.0.1:1")
    return load_signer(key)


def publish_signed(st: Store, signer, files: dict[str, bytes] = FILES, name: str = NAME) -> list[dict]:
    """A dataset ``name:v1`` of ``files`` in ``st``, its manifest signed as the gatekeeper signs it."""
    from datetime import UTC, datetime

    from synthgate.trust import attest

    listed = [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for p, b in files.items()]
    for p, b in files.items():
        st.put_bytes(f"{name}/v1/{p}", b)
    st.put_bytes(f"{name}/v1/manifest.json", json.dumps({"created": CREATED, "model": {}, "files": listed}).encode())
    pred = {"name": name, "version": "v1", "model": "m", "model_version": "1", "serial": 1,
            "signed_at": datetime.now(UTC).isoformat(), "content": {"images_root": hashlib.sha256(b"").hexdigest()}}
    env = attest.sign(attest.statement(attest.DATASET, f"dataset:{name}/v1", attest.files_root(listed), pred), signer)
    st.put_bytes(f"{name}/v1/manifest.sig.json", json.dumps(env).encode())
    return listed


def _interrupted(target: Path, path: str, partial: bytes) -> Path:
    """What an interrupted pull of NAME:v1 leaves in ``target``: its marker and ``path``'s ``.part``."""
    target.mkdir(parents=True)
    (target / MARKER).write_text(json.dumps({"ref": f"{NAME}:v1", "manifest": CREATED}))
    part = target / (path + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(partial)
    return part


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.integration)])
def store(request, tmp_path):
    if request.param == "folder":
        return str(tmp_path / "store")
    request.getfixturevalue("s3_env")
    return f"s3://{BUCKET}/corrupt-{os.urandom(4).hex()}"


def _corrupt(data: bytes, at: int = 0) -> bytes:
    return data[:at] + bytes(b ^ 0xFF for b in data[at:at + 64]) + data[at + 64:]


@pytest.mark.parametrize("kept", ["half", "all"])
def test_a_corrupt_local_partial_is_refetched_and_the_store_not_blamed(store, signer, tmp_path, cli, kept):
    publish_signed(open_store(store), signer)
    big = "images/shard-00000.npz"
    good = FILES[big]
    partial = _corrupt(good[: len(good) // 2] if kept == "half" else good, at=1000)  # damaged on this disk
    target = tmp_path / "pulled"
    part = _interrupted(target, big, partial)
    code, out, err = cli("pull", NAME, "--to", str(target), "--store", store)
    assert code == 0, err
    assert f"{big}: the local partial download (.part, left by an interrupted pull) was corrupt; it was " \
           "discarded and the file downloaded again from the start, which verified" in err
    assert "publisher" not in err + out and "tampered" not in err + out
    assert (target / big).read_bytes() == good and not part.exists() and not list(target.rglob("*.part"))
    assert (target / "labels.csv").read_bytes() == FILES["labels.csv"] and (target / "manifest.json").is_file()
    assert "1 resumed" not in out  # it was not resumed: downloaded again whole


def test_a_good_local_partial_is_still_resumed(store, signer, tmp_path):
    publish_signed(open_store(store), signer)
    big = "images/shard-00000.npz"
    _interrupted(tmp_path / "pulled", big, FILES[big][:100_000])
    r = pull(NAME, tmp_path / "pulled", store)
    assert r.resumed == 1 and r.refetched == [] and r.notes == [] and (tmp_path / "pulled" / big).read_bytes() == \
        FILES[big]


@pytest.mark.parametrize("local", ["no partial", "a good partial", "a corrupt partial"])
def test_a_corrupt_object_in_the_store_is_blamed_by_name(store, signer, tmp_path, cli, local):
    st = open_store(store)
    listed = publish_signed(st, signer)
    big = "images/shard-00000.npz"
    st.put_bytes(f"{NAME}/v1/{big}", _corrupt(FILES[big], at=200_000))  # same size, other bytes: in the store
    target = tmp_path / "pulled"
    if local != "no partial":
        half = FILES[big][:100_000]
        _interrupted(target, big, half if local == "a good partial" else _corrupt(half, at=10))
    code, out, err = cli("pull", NAME, "--to", str(target), "--store", store)
    expected = next(f["sha256"] for f in listed if f["path"] == big)
    got = hashlib.sha256(_corrupt(FILES[big], at=200_000)).hexdigest()
    flat = err.replace(" ", "")  # rich wraps long words; the fixture turns the line breaks into spaces
    assert code == 1 and "unexpected" not in err
    assert f"{big}: sha256 {got} differs from the manifest's {expected}".replace(" ", "") in flat
    assert f"complete, fresh download of the store's object {open_store(store).uri}/{NAME}/v1/{big}" \
           .replace(" ", "") in flat
    assert "tamperedorcorruptedinthestore" in flat and "reporttheobject" in flat and "publisher" in err
    assert not (target / big).exists() and not list(target.rglob("*.part")) and not (target / "manifest.json").exists()


def test_a_corrupt_partial_that_cannot_be_removed_says_delete_it_and_run_again(signer, tmp_path, monkeypatch):
    store = tmp_path / "store"
    publish_signed(open_store(store), signer)
    big = "images/shard-00000.npz"
    part = _interrupted(tmp_path / "pulled", big, _corrupt(FILES[big][:100_000]))
    real = Path.unlink

    def stuck(self, *a, **k):
        if self == part:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "unlink", stuck)
    with pytest.raises(VerificationFailed) as e:
        pull(NAME, tmp_path / "pulled", store)
    assert f"the local partial download {part} (100000 bytes kept from an earlier pull) is corrupt and cannot be " \
           "removed (Permission denied); the store was not blamed" in e.value.message
    assert e.value.hint == f"delete {part} and run the same pull again" and "publisher" not in e.value.message
