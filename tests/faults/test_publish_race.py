"""Issue #41, item 2: two publishers of the same name and version at once, on a folder and on S3 (moto's
server). Exactly one version is listed, and it pulls and verifies; a writer with identical content succeeds
idempotently, one with other content is refused by name; a failed commit leaves nothing listed; packages are
deterministic (same samples, same bytes); no writer's temporary name is another's; every publish removes its
local working folder.

Two levels: the commit itself raced ``SYNTHGATE_RACES`` times (default 20, 100 for the issue's figure) per
store with writers released together at the commit by a barrier and paused at random between the copies; and
whole publishes (gatekeeper, MLflow, pull) raced ``SYNTHGATE_PUBLISH_RACES`` times (default 2) per store and
kind of content."""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from synthgate.config import PublishConfig
from synthgate.publish import commit as commit_mod
from synthgate.publish.commit import (
    MANIFEST,
    SIGNATURE,
    PublishRefused,
    commit,
    files_root,
    sweep_working_folders,
)
from synthgate.publish.package import build_package, publish
from synthgate.publish.pull import list_datasets, pull
from synthgate.stores import FileStore, open_store
from synthgate.utils import sha256_file
from tests.integration.test_publish import (  # noqa: F401 - module fixtures
    BUCKET,
    _registered,
    model_dir,
    s3,
    s3_env,
    samples,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RACES = int(os.environ.get("SYNTHGATE_RACES", "20"))
PUBLISH_RACES = int(os.environ.get("SYNTHGATE_PUBLISH_RACES", "2"))
FIGURES: list[str] = []


# ------------------------------------------------------------------------------------------------ helpers
def _files(d: Path) -> list[dict[str, Any]]:
    return [{"path": p.relative_to(d).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(d.rglob("*")) if p.is_file()]


def _package(tmp: Path, tag: str, n: int = 6) -> tuple[Path, list[dict[str, Any]]]:
    """A package of ``n`` files whose bytes depend on ``tag`` only."""
    d = tmp / f"pkg-{tag}"
    (d / "png").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (d / "png" / f"c{i}.zip").write_bytes((f"{tag}:{i}:" * 4000).encode())
    (d / "DATACARD.md").write_text(f"card {tag}\n")
    return d, _files(d)


def _envelope(files: list[dict[str, Any]], who: str) -> dict[str, Any]:
    """An envelope shaped like the gatekeeper's (the commit reads only the file-list root it signs)."""
    stmt = {"subject": [{"name": "dataset:x", "digest": {"sha256": files_root(files)}}], "predicate": {"who": who}}
    return {"payload": base64.b64encode(json.dumps(stmt).encode()).decode(), "payloadType": "t", "signatures": []}


def _writer(st: Any, name: str, version: str, tag: str, d: Path, files: list[dict[str, Any]], barrier: threading.Barrier,
            out: dict[str, Any]) -> None:
    staging = f".staging/{name}/{version}/{tag}-{os.urandom(4).hex()}"
    try:
        for f in files:
            st.put_file(d / f["path"], f"{staging}/{f['path']}", f["sha256"])
        manifest = {"name": name, "version": version, "created": f"{time.time()}-{tag}", "files": files}
        barrier.wait(timeout=60)
        other = commit(st, f"{name}/{version}", staging, files, manifest, _envelope(files, tag))
        out[tag] = "committed" if other is None else "identical"
    except PublishRefused as e:
        out[tag] = e
    finally:
        st.delete_prefix(staging)


def _check_visible(st: Any, name: str, version: str) -> dict[str, Any]:
    """What a puller checks, short of the signature's key: one listed version, every listed file present with
    its size and sha256, and the signature in place signing exactly that file list."""
    listed = [d for d in list_datasets(st) if d["name"] == name]
    assert [d["version"] for d in listed] == [version]
    manifest = listed[0]["manifest"]
    for f in manifest["files"]:
        data = st.get_bytes(f"{name}/{version}/{f['path']}")
        assert len(data) == f["size"] and __import__("hashlib").sha256(data).hexdigest() == f["sha256"], f["path"]
    assert commit_mod.claimed_root(st, f"{name}/{version}") == files_root(manifest["files"])
    return manifest


def _jittered_copies(monkeypatch, cls) -> None:
    """Every copy into place paused at random (0-3 ms): the writers interleave mid-copy."""
    real = cls.copy

    def copy(self, src, dst):
        time.sleep(random.random() * 0.003)
        return real(self, src, dst)

    monkeypatch.setattr(cls, "copy", copy)


def _commit_races(store_of: Any, tmp: Path, label: str) -> None:
    random.seed(41)
    pa, fa = _package(tmp, "a")
    pb, fb = _package(tmp, "b")
    tally = {"same: one committed, one identical": 0, "other: one committed, one refused": 0}
    t0 = time.perf_counter()
    for i in range(RACES):
        for kind, (b_dir, b_files) in (("same", (pa, fa)), ("other", (pb, fb))):
            name, version = f"race-{kind}-{i}", "v1"
            st = store_of(f"{kind}-{i}")  # a store of its own per race: the listing reads this race only
            out: dict[str, Any] = {}
            barrier = threading.Barrier(2)
            threads = [threading.Thread(target=_writer, args=(st, name, version, tag, d, files, barrier, out))
                       for tag, d, files in (("a", pa, fa), ("b", b_dir, b_files))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            outcomes = sorted(v if isinstance(v, str) else "refused" for v in out.values())
            manifest = _check_visible(st, name, version)
            if kind == "same":
                assert outcomes == ["committed", "identical"], out
                assert manifest["files"] == fa
            else:
                assert outcomes == ["committed", "refused"], out
                loser = next(v for v in out.values() if isinstance(v, PublishRefused))
                assert f"{name}:{version} is " in loser.message and "other content" in loser.message
                winner = next(k for k, v in out.items() if v == "committed")
                assert manifest["files"] == (fa if winner == "a" else fb)
            tally[f"{kind}: one committed, one {'identical' if kind == 'same' else 'refused'}"] += 1
            assert not st.list_keys(f".staging/{name}")
    FIGURES.append(f"{label}: {RACES} races of each kind in {time.perf_counter() - t0:.1f} s: {tally}")
    print(FIGURES[-1])


# ------------------------------------------------------------------------------------------------ the commit
def test_commit_races_on_a_folder(tmp_path, monkeypatch):
    _jittered_copies(monkeypatch, FileStore)
    _commit_races(lambda race: FileStore(tmp_path / "store" / race), tmp_path, "folder")
    assert not list((tmp_path / "store").rglob("*.tmp"))  # no writer left a temporary behind


def test_commit_races_on_s3(s3_env, tmp_path, monkeypatch):  # noqa: F811
    from synthgate.stores import S3Store

    _jittered_copies(monkeypatch, S3Store)
    client = open_store(f"s3://{BUCKET}").client  # one client for every race's store (a client takes 0.3 s)
    _commit_races(lambda race: S3Store(BUCKET, f"races-{tmp_path.name}/{race}", client=client), tmp_path, "s3 (moto)")


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_conditional_create_and_private_temporary_names(where, s3_env, tmp_path):  # noqa: F811
    st = FileStore(tmp_path / "store") if where == "folder" else open_store(f"s3://{BUCKET}/create-{os.getpid()}")
    assert st.create_bytes("a/manifest.json", b"first") is True
    assert st.create_bytes("a/manifest.json", b"second") is False
    assert st.get_bytes("a/manifest.json") == b"first"
    # many writers of one key at once: each through its own temporary name, none fails, one file results
    errors: list[BaseException] = []

    def put(i: int) -> None:
        try:
            st.put_bytes("b/png/CXR.zip", str(i).encode() * 1000)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(st.get_bytes("b/png/CXR.zip")) in (1000, 2000)
    assert st.list_keys("b") == ["b/png/CXR.zip"]
    if where == "folder":
        assert not list((tmp_path / "store").rglob("*.tmp"))


def test_a_failed_commit_leaves_nothing_listed_and_the_same_content_completes_it(tmp_path, monkeypatch):
    """The claimant dies half way through its copies: nothing listed; other content is refused by name (the
    claim stands); the same content completes the version."""
    st = FileStore(tmp_path / "store")
    pa, fa = _package(tmp_path, "a")
    pb, fb = _package(tmp_path, "b")
    for d, files, tag in ((pa, fa, "a"), (pb, fb, "b")):
        for f in files:
            st.put_file(d / f["path"], f".staging/x/v1/{tag}/{f['path']}")
    real = FileStore.copy
    calls = {"n": 0}

    def dying(self, src, dst):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, src, dst)

    monkeypatch.setattr(FileStore, "copy", dying)
    with pytest.raises(KeyboardInterrupt):
        commit(st, "x/v1", ".staging/x/v1/a", fa, {"name": "x", "version": "v1", "files": fa}, _envelope(fa, "a"))
    monkeypatch.setattr(FileStore, "copy", real)
    assert list_datasets(st) == [] and not (tmp_path / "store" / "x" / "v1" / MANIFEST).exists()
    with pytest.raises(PublishRefused, match="x:v1 is claimed by another publish with other content"):
        commit(st, "x/v1", ".staging/x/v1/b", fb, {"name": "x", "version": "v1", "files": fb}, _envelope(fb, "b"))
    assert st.get_bytes("x/v1/png/c0.zip") == (pa / "png" / "c0.zip").read_bytes()  # the loser wrote nothing
    assert commit(st, "x/v1", ".staging/x/v1/a", fa, {"name": "x", "version": "v1", "files": fa},
                  _envelope(fa, "a2")) is None
    _check_visible(st, "x", "v1")
    assert (tmp_path / "store" / "x" / "v1" / SIGNATURE).exists()


# ------------------------------------------------------------------------------------------------ packages
def test_the_same_samples_give_the_same_bytes(samples, tmp_path):  # noqa: F811
    one = build_package(samples.root, tmp_path / "one", shard_size=50)
    time.sleep(2.1)  # zip timestamps have a 2 s resolution
    two = build_package(samples.root, tmp_path / "two", shard_size=50)
    assert one == two and _files(tmp_path / "one") == _files(tmp_path / "two")


def test_killed_publishes_working_folders_are_swept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"synthgate-publish-{dead.pid}-abc"
    (stale / "package").mkdir(parents=True)
    mine = tmp_path / f"synthgate-publish-{os.getpid()}-def"
    mine.mkdir()
    assert sweep_working_folders(tmp_path) == [stale]
    assert not stale.exists() and mine.exists()


# ------------------------------------------------------------------------------------------------ whole publishes
def _publish_race(uri, name: str, store: str, sample_set, version: str, configs, monkeypatch) -> dict[str, Any]:
    """Two whole publishes of ``name:version`` at once, released together at the commit."""
    barrier = threading.Barrier(2)
    real = commit_mod.commit

    def at_once(*a, **k):
        try:
            barrier.wait(timeout=120)
        except threading.BrokenBarrierError:
            pass
        return real(*a, **k)

    monkeypatch.setattr(commit_mod, "commit", at_once)
    out: dict[str, Any] = {}

    def run(tag: str, cfg: PublishConfig) -> None:
        try:
            out[tag] = publish(name, store, samples=sample_set.root, version=version, tracking_uri=uri, config=cfg)
        except Exception as e:  # noqa: BLE001
            out[tag] = e

    threads = [threading.Thread(target=run, args=(tag, cfg)) for tag, cfg in zip("ab", configs, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    monkeypatch.setattr(commit_mod, "commit", real)
    return out


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_whole_publishes_race(where, mlflow_server, s3_env, model_dir, samples, tmp_path, monkeypatch):  # noqa: F811
    import tempfile

    name, _ = _registered(tmp_path, mlflow_server, model_dir, samples, prefix=f"race{where}")
    store = str(tmp_path / "store") if where == "folder" else f"s3://{BUCKET}/whole-{tmp_path.name}"
    dataset = f"{name.removesuffix('-generator')}-synthetic"
    before = set(Path(tempfile.gettempdir()).glob("synthgate-publish-*"))
    same, other = [PublishConfig(shard_size=50)] * 2, [PublishConfig(shard_size=50), PublishConfig(shard_size=60)]
    t0 = time.perf_counter()
    for i in range(PUBLISH_RACES):
        for kind, configs in (("same", same), ("other", other)):
            version = f"{kind}{i}"
            out = _publish_race(mlflow_server, name, store, samples, version, configs, monkeypatch)
            if kind == "same":
                assert sorted(r.already_published for r in out.values()) == [False, True], out
            else:
                refused = [r for r in out.values() if isinstance(r, PublishRefused)]
                assert len(refused) == 1 and f"{dataset}:{version} is " in refused[0].message \
                    and "with other content" in refused[0].message, out  # "already published" or "claimed by"
            assert [d["version"] for d in list_datasets(store) if d["version"] == version] == [version]
            p = pull(f"{dataset}:{version}", tmp_path / f"pulled-{version}", store, tracking_uri=mlflow_server,
                     allow_rollback=True)
            assert p.status == "approved" and p.num_files > 5
    FIGURES.append(f"whole publishes, {where}: {PUBLISH_RACES} races of each kind in {time.perf_counter() - t0:.1f} s")
    print(FIGURES[-1])
    # a later publish: identical content is idempotent, other content refused by name
    again = publish(name, store, samples=samples.root, version="same0", tracking_uri=mlflow_server,
                    config=PublishConfig(shard_size=50))
    assert again.already_published and "already published with the same content" in again.notes[-1]
    with pytest.raises(PublishRefused, match=f"{dataset}:same0 is already published with other content"):
        publish(name, store, samples=samples.root, version="same0", tracking_uri=mlflow_server,
                config=PublishConfig(shard_size=70))
    assert set(Path(tempfile.gettempdir()).glob("synthgate-publish-*")) <= before  # every working folder removed
