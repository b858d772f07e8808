"""The CPU image (docker/Dockerfile) as its users run it: the CLI, a non-root user, the pinned stack,
real stages on mounted data, and Kubeflow lightweight components run as containers of this image
through ``kfp.local.DockerRunner`` (the docker SDK talking to podman's Docker-compatible socket).

``make test-containers`` runs them; ``make test`` skips them (see conftest.py).
"""

# no `from __future__ import annotations`: kfp reads the component annotations as types
import json
import os
from pathlib import Path

import pytest
from kfp import dsl

from tests.containers.conftest import IMAGE, VERSION, run_in
from tests.containers.conftest import open_for_image as _open
from tests.helpers import REPO, make_folder

pytestmark = [pytest.mark.containers, pytest.mark.timeout(3600)]


def test_cli_help(engine, image):
    r = run_in(engine, image, "synthgate", "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout and "prepare" in r.stdout and "validate" in r.stdout
    # CMD is `synthgate --help`: a bare run shows the help too
    r = run_in(engine, image)
    assert r.returncode == 0 and "Usage" in r.stdout, r.stderr


def test_runs_as_non_root_in_work(engine, image):
    r = run_in(engine, image, "sh", "-c", "id -u; id -un; pwd; echo $HOME; command -v python3")
    assert r.returncode == 0, r.stderr
    uid, user, cwd, home, python3 = r.stdout.split()
    assert (uid, user, cwd, home) == ("1000", "synthgate", "/work", "/home/synthgate")
    assert python3 == "/opt/venv/bin/python3"  # what KFP's `python3 -m kfp.dsl.executor_main` runs


def test_pinned_stack_cpu_torch(engine, image):
    code = ("import importlib.util, json, synthgate, torch, diffusers, mlflow, kfp, monai; "
            "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
            "'cuda_available': torch.cuda.is_available(), 'kfp': kfp.__version__, 'synthgate': synthgate.__version__, "
            "'torchvision': importlib.util.find_spec('torchvision') is not None}))")
    r = run_in(engine, image, "python3", "-c", code)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    pins = dict(line.split("==") for line in (Path(__file__).parents[2] / "requirements" / "constraints.txt")
                .read_text().splitlines() if "==" in line and not line.startswith("#"))
    assert info["torch"].split("+")[0] == pins["torch"] and info["torch"].endswith("+cpu")
    assert info["cuda"] is None and info["cuda_available"] is False
    assert info["kfp"] == pins["kfp"]
    assert info["synthgate"] == VERSION
    assert info["torchvision"] is False  # a CUDA torchvision next to CPU torch breaks diffusers/torchmetrics


def test_metadata_and_no_pip_cache_left(engine, image):
    import subprocess

    fmt = "{{json .Config.Labels}}|{{.Config.User}}|{{.Config.WorkingDir}}|{{json .Config.Cmd}}|{{json .Config.Entrypoint}}"
    r = subprocess.run([engine, "image", "inspect", "--format", fmt, image], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    labels, user, workdir, cmd, entrypoint = r.stdout.strip().split("|")
    labels = json.loads(labels)
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.title"] == "synthgate"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert user == "1000:1000" and workdir == "/work"
    assert json.loads(cmd) == ["synthgate", "--help"]
    assert json.loads(entrypoint) in (None, [])  # KFP and `run IMAGE synthgate ...` give the whole command
    r = run_in(engine, image, "sh", "-c", "find / -xdev -path '*/.cache/pip' -print; find /opt /root /home /tmp /work -name '*.whl'; "
                                          "echo PYTHONDONTWRITEBYTECODE=$PYTHONDONTWRITEBYTECODE",
               user="0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines() == ["PYTHONDONTWRITEBYTECODE=1"], r.stdout


def test_prepare_and_validate_on_mounted_data(engine, image, tmp_path):
    """Real stages in the container, offline (--network none), on a host folder; outputs checked on the host."""
    work = _open(tmp_path / "work")
    make_folder(work / "raw", {"a": 30, "b": 30}, mixed=True)
    vol = {work: "/data"}
    r = run_in(engine, image, "synthgate", "prepare", "--source", "raw", "--resolution", "16", "--out",
               "data/prepared", volumes=vol, workdir="/data")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_in(engine, image, "synthgate", "validate", "--dataset", "data/prepared", "--out", "data/validated",
               "--report", "reports/validation", "--min-images-per-class", "5", volumes=vol, workdir="/data")
    assert r.returncode == 0, r.stdout + r.stderr

    from synthgate.data.canonical import load_dataset

    prepared = load_dataset(work / "data" / "prepared")
    assert prepared.manifest["num_images"] == 60 and prepared.images.shape[1:3] == (16, 16)
    assert sorted(prepared.classes) == ["a", "b"]
    validated = load_dataset(work / "data" / "validated")
    assert len(validated.images) > 0
    report = json.loads((work / "reports" / "validation" / "validation.json").read_text())
    assert report["passed"] is True
    # written by the image's user, not root
    assert (work / "data" / "prepared" / "manifest.json").stat().st_uid == 1000


# ---------------------------------------------------------------------------------------------------
# Kubeflow: lightweight components of this image, run as containers by kfp.local.DockerRunner.
# The default install_kfp_package=True is kept on purpose: KFP prepends
# `python3 -m pip install kfp==<sdk version> --no-deps`, which must be a no-op (kfp is in /opt/venv,
# the same pin), even with --network none and a non-root user.


@dsl.component(base_image=IMAGE)
def prepare_step(raw_dir: str, resolution: int, dataset: dsl.Output[dsl.Dataset]) -> int:
    from pathlib import Path

    from synthgate import stages
    from synthgate.config import load_params

    params = load_params(None, {"data.source.path": raw_dir, "prepare.resolution": resolution})
    ds = stages.prepare(params, out=Path(dataset.path))
    dataset.metadata["num_images"] = int(ds.manifest["num_images"])
    return int(ds.manifest["num_images"])


@dsl.component(base_image=IMAGE)
def validate_step(dataset: dsl.Input[dsl.Dataset], min_images_per_class: int,
                  validated: dsl.Output[dsl.Dataset], report: dsl.Output[dsl.Artifact]) -> str:
    import json
    import os
    import sys
    from pathlib import Path

    from synthgate import stages
    from synthgate.config import load_params

    params = load_params(None, {"validate.min_images_per_class": min_images_per_class})
    result = stages.validate(params, dataset=Path(dataset.path), out=Path(validated.path), report_dir=Path(report.path))
    return json.dumps({"passed": result.passed, "num_images": len(result.dataset.images), "uid": os.getuid(),
                       "python": sys.executable})


@dsl.pipeline(name="synthgate-container-smoke")
def container_smoke(raw_dir: str, resolution: int = 16) -> str:
    prep = prepare_step(raw_dir=raw_dir, resolution=resolution)
    val = validate_step(dataset=prep.outputs["dataset"], min_images_per_class=5)
    return val.outputs["Output"]


def _kfp_local_docker(root: Path, docker_host: str, monkeypatch: pytest.MonkeyPatch):
    """kfp.local with DockerRunner on ``docker_host``; ``root`` (the pipeline root) is bind-mounted
    at the same path into every task container, so it must be writable by the image's user."""
    import kfp.local

    monkeypatch.setenv("DOCKER_HOST", docker_host)
    kfp.local.init(runner=kfp.local.DockerRunner(network_mode="none"), pipeline_root=str(_open(root)),
                   raise_on_error=True)


def test_kfp_docker_runner_two_components(image, docker_host, tmp_path, monkeypatch):
    root = tmp_path / "pipeline_root"
    raw = make_folder(_open(root) / "raw", {"a": 30, "b": 30}, mixed=False)  # inside the mounted root
    _kfp_local_docker(root, docker_host, monkeypatch)

    run = container_smoke(raw_dir=str(raw))
    out = json.loads(run.output)
    assert out == {"passed": True, "num_images": out["num_images"], "uid": 1000, "python": "/opt/venv/bin/python3"}
    assert out["num_images"] > 0

    # the artifacts are on the host, under the pipeline root, written by the containers
    manifests = sorted(root.rglob("manifest.json"))
    assert len(manifests) == 2, manifests  # prepared + validated datasets
    reports = list(root.rglob("validation.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["passed"] is True
    assert all(m.stat().st_uid == 1000 for m in manifests)
    assert os.environ["DOCKER_HOST"] == docker_host


# ---------------------------------------------------------------------------------------------------
# The project's own pipeline (pipelines/synthesis.py, components/): every step a container of this
# image. Run in a subprocess so that SYNTHGATE_IMAGE / SYNTHGATE_CUDA_IMAGE apply when the components
# are imported (they pick their base image then): the train and sample steps name the CUDA image,
# which is not built here, so they run in the CPU image (the code is the same; device "cpu").

_SYNTHESIS_RUN = r"""
import json, sys
import kfp.local
from pipelines import defaults, synthesis

root, raw, uri = sys.argv[1:4]
p = json.loads(defaults.params_json())
p["data"]["source"] = {"type": "folder", "path": raw}
p["prepare"].update(resolution=16, workers=1, max_per_class=None)
p["validate"].update(min_images_per_class=5)
p["train"].update(steps=20, batch_size=8, checkpoint_every=10, log_every=10, mlflow=False, device="cpu",
                  bf16=False, compile=False)
p["sample"].update(per_class=20, steps=5, batch_size=64, device="cpu", match_real=False)
ev = p.setdefault("evaluate", {})
ev.update(device="cpu")
ev["encoder"] = {**ev.get("encoder", {}), "epochs": 1, "batch_size": 32}
ev["memorization"] = {**ev.get("memorization", {}), "planted": 20, "chunk": 64}
ev["utility"] = {**ev.get("utility", {}), "epochs": 1, "batch_size": 32, "seeds": [0]}
# host network: the register step reaches the MLflow server of the test on 127.0.0.1
kfp.local.init(runner=kfp.local.DockerRunner(network_mode="host"), pipeline_root=root, raise_on_error=True)
pipeline = synthesis.build(gpu=False, params_json=json.dumps(p))
pipeline(tracking_uri=uri, model_name="container-test")
print("PIPELINE-DONE")
"""


def run_synthesis_in_containers(image: str, docker_host: str, mlflow_server: str, tmp_path: Path) -> str:
    """Run the CPU synthesis pipeline with every step a container of ``image``; check that every
    step succeeded and one model version was registered; return the log (colours removed)."""
    import subprocess
    import sys

    from mlflow import MlflowClient

    root = _open(tmp_path / "pipeline_root")
    raw = make_folder(root / "raw", {"a": 40, "b": 40}, mixed=False)
    env = {**os.environ, "DOCKER_HOST": docker_host, "SYNTHGATE_IMAGE": image, "SYNTHGATE_CUDA_IMAGE": image,
           "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", _SYNTHESIS_RUN, str(root), str(raw), mlflow_server], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=1800)
    log = _plain(r.stdout + r.stderr)
    assert r.returncode == 0 and "PIPELINE-DONE" in r.stdout, log[-8000:]
    for step in ("prepare", "validate", "train", "sample", "evaluate", "gate", "register"):
        assert f"Task '{step}' finished with status SUCCESS" in log, step
    assert "Found image" in log  # the local image, never pulled
    assert "passed" in json.loads(next(root.rglob("gate.json")).read_text())
    assert len(MlflowClient(mlflow_server).search_model_versions("name='container-test'")) == 1
    return log


@pytest.mark.skipif(not (REPO / "pipelines" / "synthesis.py").exists() or not (REPO / "components").is_dir(),
                    reason="pipelines/synthesis.py or components/ not in this checkout")
def test_synthesis_pipeline_in_containers(image, docker_host, mlflow_server, tmp_path):
    run_synthesis_in_containers(image, docker_host, mlflow_server, tmp_path)


def _plain(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
