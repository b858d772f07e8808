"""DVC end to end: `dvc repro` on a fresh clone, and push/pull against a real S3 server (moto's
ThreadedMotoServer on 127.0.0.1), as a team would share a dataset version through MinIO."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "synthgate-dvc"


def _run(cmd, cwd, env, check=True):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    return [f for f in out if (REPO / f).is_file()]


def _copy_project(root: Path) -> Path:
    """The project's tracked (and not ignored) files under ``root``, as a clone would have them."""
    for f in _project_files():
        dst = root / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dst)
    return root


@pytest.fixture
def env(tmp_path):
    bindir = str(Path(sys.executable).parent)
    e = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
         "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
         "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
         "GIT_COMMITTER_EMAIL": "t@example.org", "HOME": str(tmp_path)}
    e.pop("SYNTHGATE_SOURCE_PATH", None)
    return e


@pytest.fixture
def project(tmp_path, env, breast_path):
    """A git clone-like copy of this project whose params point at BreastMNIST (small and fast)."""
    root = _copy_project(tmp_path / "project")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["source"] = {**params["data"]["source"], "type": "medmnist", "path": str(breast_path)}
    params["prepare"]["resolution"] = 32
    params["train"].update(steps=10, checkpoint_every=10, mlflow=False)
    params["sample"].update(per_class=20, steps=5)
    ev = params["evaluate"]
    ev["encoder"].update(epochs=1, max_train_per_class=100)
    ev["utility"].update(epochs=1, max_train_per_class=50, seeds=[0, 1])  # the DVC wiring, not the statistics
    ev["memorization"].update(planted=10)
    ev["memorization"]["descriptor"].update(steps=50)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q", "-b", "main"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "project"], root, env)
    return root


@pytest.fixture
def s3():
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    import boto3

    boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


def _manifest(root: Path, stage: str) -> dict:
    return json.loads((root / "data" / stage / "manifest.json").read_text())


def test_repro_on_fresh_clone_then_push_and_pull_through_s3(project, env, s3, tmp_path, mlflow_server):
    env = {**env, "MLFLOW_TRACKING_URI": mlflow_server}
    # 1. dvc repro runs ingest -> prepare -> validate from scratch
    r = _run(["dvc", "repro"], project, env)
    for stage in ("ingest", "prepare", "validate", "train", "sample", "evaluate", "gate", "register", "publish"):
        assert f"Running stage '{stage}'" in r.stdout
    validated = _manifest(project, "validated")
    assert validated["stage"] == "validate" and validated["num_images"] > 700
    registered = json.loads((project / "reports" / "registry" / "registered.json").read_text())
    assert registered["name"] == "breastmnist-generator" and registered["tracking_uri"] == mlflow_server
    published = json.loads((project / "reports" / "publish" / "published.json").read_text())  # not approved yet
    assert published["published"] is False and "has no version @approved" in published["reason"]
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    raw_dep = lock["stages"]["ingest"]["deps"][0]
    assert raw_dep["path"].endswith("breastmnist.npz") and raw_dep["md5"]  # the raw data is tracked
    assert _run(["dvc", "status"], project, env).stdout.strip().endswith("up to date.")

    # 2. push every stage's outputs (raw data included) to S3
    _run(["dvc", "remote", "add", "-d", "storage", f"s3://{BUCKET}/dvcstore"], project, env)
    _run(["dvc", "remote", "modify", "storage", "endpointurl", s3], project, env)
    _run(["git", "add", "-A"], project, env)
    _run(["git", "commit", "-qm", "lock and remote"], project, env)
    push = _run(["dvc", "push"], project, env)
    assert "pushed" in push.stdout
    import boto3

    client = boto3.client("s3", endpoint_url=s3, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert len(keys) >= 8 and all(k.startswith("dvcstore/") for k in keys)

    # 3. a fresh clone pulls exactly the same dataset version back
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(project), str(clone)], tmp_path, env)
    assert not (clone / "data").exists()
    _run(["dvc", "pull"], clone, env)
    assert _manifest(clone, "validated")["content_hash"] == validated["content_hash"]
    evaluation = json.loads((clone / "reports" / "evaluation" / "evaluation.json").read_text())
    assert evaluation["synthetic"]["content_hash"] == _manifest(project, "samples")["content_hash"]
    assert (clone / "data" / "raw" / "breastmnist.npz").exists()
    assert "up to date" in _run(["dvc", "status"], clone, env).stdout

    # 4. a fresh clone without the remote reproduces the dataset from the raw data (the stages up to validate:
    # the versioned dataset is what must come out bit for bit; the later stages ran in step 1)
    clone2 = tmp_path / "clone2"
    _run(["git", "clone", "-q", str(project), str(clone2)], tmp_path, env)
    r2 = _run(["dvc", "repro", "validate"], clone2, env)
    assert "Running stage 'validate'" in r2.stdout and "Running stage 'train'" not in r2.stdout
    assert _manifest(clone2, "prepared")["content_hash"] == _manifest(project, "prepared")["content_hash"]


def _layout(kind: str, raw: Path) -> tuple[Path, Path | None]:
    """A raw source of one layout under ``raw``: (source path, label table or None)."""
    from tests.helpers import make_folder, write_nifti_set

    if kind == "nifti":
        return raw, write_nifti_set(raw, patients=20, volumes=2)
    if kind == "split folders":
        make_folder(raw / "Training", {"normal": 20, "lesion": 20}, mixed=False, seed=1)
        make_folder(raw / "Testing", {"normal": 6, "lesion": 6}, mixed=False, seed=2)
        return raw, None
    make_folder(raw / "flat", {"normal": 24, "lesion": 24}, mixed=False, seed=3)  # label table over a flat folder
    rows = []
    for c in ("normal", "lesion"):
        for f in sorted((raw / "flat" / c).iterdir()):
            f.rename(raw / "flat" / f"{c}_{f.name}")
            rows.append(f"{c}_{f.name},{c},P{len(rows) // 2:02d}")
        (raw / "flat" / c).rmdir()
    table = raw / "labels.csv"
    table.write_text("file,label,patient\n" + "\n".join(rows) + "\n")
    return raw / "flat", table


@pytest.mark.parametrize("kind", ["split folders", "label table", "nifti"])
def test_repro_prepares_each_layout(tmp_path, env, kind):
    """Split folders, a label table over a flat folder (with patients) and NIfTI volumes (with
    patients) through `dvc repro validate` (ingest, prepare, validate): the source's split is kept,
    or the seeded split keeps each patient in one split, and the lock tracks the raw data."""
    source, labels = _layout(kind, tmp_path / "raw")
    root = _copy_project(tmp_path / "project")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["source"].update(type="auto", path=str(source), labels=str(labels) if labels else None)
    params["data"]["source"]["volume"].update(select="central", central_fraction=0.5)
    params["prepare"]["resolution"] = 16
    params["validate"]["min_images_per_class"] = 5
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q", "-b", "main"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "project"], root, env)

    r = _run(["dvc", "repro", "validate"], root, env)
    for stage in ("ingest", "prepare", "validate"):
        assert f"Running stage '{stage}'" in r.stdout
    prepared = _manifest(root, "prepared")
    import pandas as pd

    meta = pd.read_parquet(root / "data" / "validated" / "metadata.parquet")
    assert set(meta["split"]) == {"train", "val", "test"}
    if kind == "split folders":
        assert prepared["source_kind"] == "folder" and prepared["classes"] == ["lesion", "normal"]
        assert "split folders (train, test)" in prepared["split_method"]
        assert (meta["split"] == "test").sum() == 12  # the Testing folder, whole
    else:
        assert prepared["groups"]["source"] == "label table column 'patient'"
        assert meta.groupby("group")["split"].nunique().max() == 1
    if kind == "nifti":
        assert prepared["source_kind"] == "nifti" and prepared["num_images"] == 40 * 6
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["stages"]["ingest"]["deps"][0]["path"] == str(source) and lock["stages"]["ingest"]["deps"][0]["md5"]
    assert lock["stages"]["prepare"]["params"]["params.yaml"]["data.source.volume"]["select"] == "central"
    assert "up to date" in _run(["dvc", "status", "validate"], root, env).stdout
