"""Issue #41: the disk fills up at random points across prepare, sample, publish and pull.

A seeded campaign (``SYNTHGATE_DISKFULL_SEED``, default 41) of ``SYNTHGATE_DISKFULL_N`` points (default 4; the
issue's figure is 20), dealt in turn to the commands: each command is first run once with every write counted
(:mod:`tests.faults.diskfull`), then once per point in a fresh copy of its workspace with the ``k``-th write
(``k`` drawn from all of its writes) failing with ENOSPC, as on a full disk, and every later write too. Each time:
exit 1 with "no space left on the device: PATH; N MiB free of M MiB on the file system of DIR" (a path inside the
workspace; never "unexpected error"); no temporary left and no file at a final name that is incomplete (only the
old output, a complete new one, or nothing; pull's ``.part`` files are resumable downloads, and the same pull
completes afterwards); the previous outputs intact byte for byte. publish needs MLflow and the gatekeeper, so
its points are in a test of their own (marked integration)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synthgate.utils import sha256_file
from tests.faults import test_pull_corrupt as corrupt
from tests.faults.diskfull import Disk
from tests.faults.test_pull_corrupt import FILES, NAME, publish_signed
from tests.helpers import make_folder
from tests.integration.test_publish import _registered, model_dir, samples  # noqa: F401 - module fixtures

N = int(os.environ.get("SYNTHGATE_DISKFULL_N", "4"))
SEED = int(os.environ.get("SYNTHGATE_DISKFULL_SEED", "41"))
COMMANDS = ["prepare", "sample", "publish", "pull"]
TEMPORARY = re.compile(r"(\.tmp$|\.tmp-|\.old-|^synthgate-publish-)")
REPORT: list[str] = []


def points(command: str, total: int) -> list[int]:
    """The write indices (1-based) at which ``command``'s disk fills: its share of the N points, in turn."""
    rng = random.Random(f"{SEED}:{command}")
    share = len([i for i in range(N) if COMMANDS[i % len(COMMANDS)] == command])
    every = list(range(1, total + 1))  # without repeats while there are writes left to draw
    return sorted(rng.sample(every, min(share, total)) + [rng.randint(1, total) for _ in range(share - total)])


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()} \
        if root.exists() else {}


def complete_dataset(path: Path) -> bool:
    """A canonical dataset whose images, labels and splits hash to its manifest's content hash."""
    from synthgate.data.canonical import content_hash, load_dataset

    ds = load_dataset(path, mmap=False)
    meta = ds.metadata
    got = content_hash(np.asarray(ds.images), meta["label"].to_numpy(np.int64), meta["split"].to_numpy(),
                       ds.classes)
    return got == ds.content_hash


def _temporaries(ws: Path) -> list[str]:
    return [p.relative_to(ws).as_posix() for p in ws.rglob("*") if TEMPORARY.search(p.name)]


def campaign(command: str, template: Path, args: Any, cli, monkeypatch, check, env=None) -> None:
    """Count ``command``'s writes in a copy of ``template``, then fail its disk at each of its points (``args``:
    the command line, or a function of the workspace that returns it)."""
    line = args if callable(args) else lambda ws: args
    census = template.parent / f"{command}-census"
    shutil.copytree(template, census, symlinks=True)
    with monkeypatch.context() as m:
        m.setattr(tempfile, "tempdir", str(census / "tmp"))
        disk = Disk(census).install(m)
        code, out, err = cli(*line(census), cwd=census, env=_env(census, env))
    assert code == 0 and disk.fired is None, err
    total = disk.count
    for i, k in enumerate(points(command, total)):
        ws = template.parent / f"{command}-{i}"
        shutil.copytree(template, ws, symlinks=True)
        before = snapshot(ws / "prev")
        with monkeypatch.context() as m:
            m.setattr(tempfile, "tempdir", str(ws / "tmp"))  # the working folders are on the full disk
            disk = Disk(ws, fail_at=k).install(m)
            code, out, err = cli(*line(ws), cwd=ws, env=_env(ws, env))
        flat = err.replace(" ", "")  # rich wraps long paths; the fixture turns the line breaks into spaces
        REPORT.append(f"{command}: write {k} of {total} ({Path(disk.fired or '?').name}): exit {code}, "
                      + ("clean" if code == 1 and "no space left on the device:" in err else err[-300:]))
        assert disk.fired, f"{command}: the write {k} was never reached"
        assert code == 1 and "unexpected" not in err, f"{command} at write {k}: exit {code}: {err}"
        assert "no space left on the device:" in err and "MiB free of" in err, err
        assert str(ws.resolve()).replace(" ", "") in flat, f"{command} at write {k}: no path named: {err}"
        assert snapshot(ws / "prev") == before, f"{command} at write {k}: the previous outputs changed"
        assert _temporaries(ws) == [], f"{command} at write {k}: temporaries left: {_temporaries(ws)}"
        check(ws, k)


def _env(ws: Path, extra: dict[str, str] | None) -> dict[str, str]:
    return {"SYNTHGATE_GROUP_SALT": "faults", "SYNTHGATE_PULL_STATE": str(ws / ".pull-state.json"),
            "TMPDIR": str(ws / "tmp"), **(extra or {})}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if REPORT:
        print(f"\ndisk-full campaign (seed {SEED}, N {N}):\n  " + "\n  ".join(REPORT))


def _dataset_check(out: str, old: dict[str, str]):
    def check(ws: Path, k: int) -> None:
        now = snapshot(ws / out)
        assert now in ({}, old) or complete_dataset(ws / out), f"write {k}: {out} is neither old nor complete"
    return check


def test_prepare_and_sample_on_a_full_disk(tmp_path, cli, monkeypatch, model_dir):  # noqa: F811
    t = tmp_path / "prepare-template"
    make_folder(t / "raw", {"a": 12, "b": 12})
    (t / "tmp").mkdir()
    args = ["prepare", "--source", "raw", "--resolution", "16", "--channels", "1"]
    assert cli(*args, "--max-per-class", "8", "--out", "prev/prepared", cwd=t, env=_env(t, None))[0] == 0
    shutil.copytree(t / "prev" / "prepared", t / "out")  # the output about to be replaced
    campaign("prepare", t, [*args, "--out", "out"], cli, monkeypatch, _dataset_check("out", snapshot(t / "out")))

    s = tmp_path / "sample-template"
    (s / "tmp").mkdir(parents=True)
    shutil.copytree(model_dir, s / "model")
    args = ["sample", "--model", "model", "--per-class-only", "--steps", "2", "--device", "cpu"]
    assert cli(*args, "--per-class", "1", "--out", "prev/samples", cwd=s, env=_env(s, None))[0] == 0
    shutil.copytree(s / "prev" / "samples", s / "out")
    campaign("sample", s, [*args, "--per-class", "3", "--out", "out"], cli, monkeypatch,
             _dataset_check("out", snapshot(s / "out")))


signer = pytest.fixture(corrupt.signer.__wrapped__)  # not autouse here: publish's test uses the session's gatekeeper


def test_pull_on_a_full_disk(tmp_path, cli, monkeypatch, signer):
    from synthgate.stores import FileStore

    t = tmp_path / "pull-template"
    (t / "tmp").mkdir(parents=True)
    store = tmp_path / "store"  # the store is another machine's disk
    publish_signed(FileStore(store), signer)
    assert cli("pull", NAME, "--to", "prev/pulled", "--store", str(store), cwd=t, env=_env(t, None))[0] == 0

    def check(ws: Path, k: int) -> None:
        target = ws / "pulled"
        for p in (p for p in target.rglob("*") if p.is_file()):
            rel = p.relative_to(target).as_posix()
            if rel.endswith(".part") or p.name == ".synthgate-pull.json":
                continue  # a resumable download, by design
            if rel in FILES:
                assert p.read_bytes() == FILES[rel], f"write {k}: {rel} is incomplete"
            else:
                assert (ws / "prev" / "pulled" / rel).is_file() and json.loads(p.read_text()), rel
        code, _, err = cli("pull", NAME, "--to", "pulled", "--store", str(store), cwd=ws, env=_env(ws, None))
        assert code == 0, f"write {k}: the same pull, with space again: {err}"
        assert {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()} == \
            set(snapshot(ws / "prev" / "pulled"))

    campaign("pull", t, ["pull", NAME, "--to", "pulled", "--store", str(store)], cli, monkeypatch, check)


@pytest.mark.integration
@pytest.mark.slow
def test_publish_on_a_full_disk(mlflow_server, model_dir, samples, tmp_path, cli, monkeypatch):  # noqa: F811
    from synthgate.publish.pull import list_datasets

    name, _ = _registered(tmp_path, mlflow_server, model_dir, samples, prefix="diskfull")
    t = tmp_path / "publish-template"
    (t / "tmp").mkdir(parents=True)
    shutil.copytree(samples.root, t / "samples")

    def base(ws: Path) -> list[str]:  # the store's path absolute: the gatekeeper, another process, reads it too
        return ["publish", name, "--samples", "samples", "--store", str(ws / "prev" / "store"), "--tracking-uri",
                mlflow_server]

    code, _, err = cli(*base(t), "--version", "v0", "--record", "prev/published.json", cwd=t, env=_env(t, None))
    assert code == 0, err
    old = snapshot(t / "prev")

    def args(ws: Path) -> list[str]:
        return [*base(ws), "--version", "v1", "--record", "published.json"]

    def check(ws: Path, k: int) -> None:
        listed = {d["version"]: d for d in list_datasets(ws / "prev" / "store")}
        assert set(listed) <= {"v0", "v1"} and "v0" in listed
        if "v1" in listed:  # committed before the disk filled: every listed file whole
            root = ws / "prev" / "store" / listed["v1"]["name"] / "v1"
            assert all(sha256_file(root / f["path"]) == f["sha256"] for f in listed["v1"]["manifest"]["files"])
        assert not (ws / "published.json").exists() or json.loads((ws / "published.json").read_text())
        assert list((ws / "tmp").iterdir()) == [], "the working folder was left"

    def prev_v0_intact(ws: Path, k: int) -> None:
        now = snapshot(ws / "prev")
        assert {p: h for p, h in now.items() if p in old} == old
        check(ws, k)

    campaign("publish", t, args, cli, monkeypatch, prev_v0_intact)
