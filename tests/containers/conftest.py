"""Fixtures for the container tests: the container engine, the CPU image (built with the same
recipe as ``make images``) and a Docker-compatible API socket served by podman for
``kfp.local.DockerRunner``.

Tests marked ``containers`` build an image (about 7 minutes from nothing: apt, debootstrap, pip) and
run containers, so ``make test`` skips them: they run with ``SYNTHGATE_CONTAINER_TESTS=1`` (what
``make test-containers`` sets) or when ``-m containers`` is given.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from tests.helpers import REPO

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
#: The image under test: ``make images`` builds this tag; SYNTHGATE_IMAGE tests another one (not rebuilt).
IMAGE = os.environ.get("SYNTHGATE_IMAGE") or f"ghcr.io/synthgate/synthgate:{VERSION}-cpu"
BUILD_TIMEOUT = int(os.environ.get("SYNTHGATE_IMAGE_BUILD_TIMEOUT", "2400"))
#: The CUDA image (docker/Dockerfile.cuda): tested only with SYNTHGATE_CUDA_IMAGE_TESTS=1 (make
#: test-containers-cuda) or a given SYNTHGATE_CUDA_IMAGE, since building it downloads ~5 GB of wheels.
CUDA_IMAGE = os.environ.get("SYNTHGATE_CUDA_IMAGE") or f"ghcr.io/synthgate/synthgate:{VERSION}-cuda"


def _enabled(config: pytest.Config) -> bool:
    if os.environ.get("SYNTHGATE_CONTAINER_TESTS") == "1":
        return True
    markexpr = config.getoption("markexpr", "") or ""
    return "containers" in markexpr and "not containers" not in markexpr


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _enabled(config):
        return
    skip = pytest.mark.skip(reason="container tests: make test-containers (or SYNTHGATE_CONTAINER_TESTS=1, -m containers)")
    for item in items:
        if item.get_closest_marker("containers"):  # not item.keywords: it holds the folder name too
            item.add_marker(skip)


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def engine() -> str:
    """``docker`` when a Docker engine answers, else ``podman`` (installed by docker/podman-setup.sh)."""
    if shutil.which("docker") and _works(["docker", "info"]):
        return "docker"
    if not shutil.which("podman"):
        r = subprocess.run([str(REPO / "docker" / "podman-setup.sh")], capture_output=True, text=True, timeout=900)
        if r.returncode != 0 or not shutil.which("podman"):
            pytest.skip(f"no container engine: docker does not answer and podman cannot be installed: {r.stderr[-500:]}")
    if not _works(["podman", "info"]):
        pytest.skip("podman is installed but `podman info` fails (run docker/podman-setup.sh as root)")
    return "podman"


def _given_or_built(engine: str, env_var: str, tag: str, flavour: str) -> str:
    """``tag`` as it is when ``env_var`` names it (it must exist), else (re)built by docker/build.sh."""
    if os.environ.get(env_var):
        if not _works([engine, "image", "inspect", tag]):
            pytest.fail(f"{env_var}={tag} is not in the local {engine} store")
        return tag
    start = time.monotonic()
    r = subprocess.run([str(REPO / "docker" / "build.sh"), flavour], cwd=REPO, env={**os.environ, "ENGINE": engine},
                       capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert r.returncode == 0, f"{flavour} image build failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    print(f"\nimage {tag} ready in {time.monotonic() - start:.0f} s")
    return tag


@pytest.fixture(scope="session")
def image(engine: str) -> str:
    """The CPU image, (re)built from this checkout with docker/build.sh (what ``make images`` runs):
    seconds when nothing changed, about 30 s when only src/ did. SYNTHGATE_IMAGE=... tests that image
    as it is."""
    return _given_or_built(engine, "SYNTHGATE_IMAGE", IMAGE, "cpu")


@pytest.fixture(scope="session")
def cuda_image(engine: str) -> str:
    """The CUDA image, built with docker/build.sh cuda (on the registry's pytorch/pytorch base, or
    where none can be pulled on a PyTorch CUDA base made from PyPI's wheels: docker/Dockerfile.torch-cuda).
    Only with SYNTHGATE_CUDA_IMAGE_TESTS=1 or a given SYNTHGATE_CUDA_IMAGE."""
    if not os.environ.get("SYNTHGATE_CUDA_IMAGE") and os.environ.get("SYNTHGATE_CUDA_IMAGE_TESTS") != "1":
        pytest.skip("CUDA image tests: make test-containers-cuda (SYNTHGATE_CUDA_IMAGE_TESTS=1; the build "
                    "downloads ~5 GB of CUDA wheels)")
    return _given_or_built(engine, "SYNTHGATE_CUDA_IMAGE", CUDA_IMAGE, "cuda")


def open_for_image(path: Path) -> Path:
    """Let the image's user (uid 1000) write into a host folder mounted into the container."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def run_in(engine: str, image: str, *cmd: str, volumes: dict[Path, str] | None = None, workdir: str | None = None,
           user: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``ENGINE run --rm`` a command in the image; returns the completed process (output as text)."""
    args = [engine, "run", "--rm", "--network", "none", "-e", "COLUMNS=200", "-e", "NO_COLOR=1"]
    for host, ctr in (volumes or {}).items():
        args += ["-v", f"{host}:{ctr}"]
    if workdir:
        args += ["-w", workdir]
    if user:
        args += ["--user", user]
    return subprocess.run([*args, image, *cmd], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def docker_host(engine: str, tmp_path_factory: pytest.TempPathFactory):
    """A Docker API endpoint for the docker SDK (kfp.local.DockerRunner): podman's compatible
    service on a socket of its own, or the Docker engine's own DOCKER_HOST."""
    if engine == "docker":
        yield os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return
    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    url = f"unix://{sock}"
    log = open(sock.parent / "service.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", url], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"podman system service did not start: {(sock.parent / 'service.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
