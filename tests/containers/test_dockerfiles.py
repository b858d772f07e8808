"""Static checks of the image recipes (no container engine needed, so they run in ``make test``):
the base image is a build argument, both images install from requirements/constraints.txt, run as a
non-root user, and the CUDA image never replaces the base image's torch."""

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

DOCKER = REPO / "docker"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")))
    out = []
    for line in text.splitlines():
        if line.strip():
            op, _, args = line.strip().partition(" ")
            out.append((op.upper(), " ".join(args.split())))
    return out


def _index(ins: list[tuple[str, str]], op: str, contains: str = "") -> int:
    return next(i for i, (o, a) in enumerate(ins) if o == op and contains in a)


@pytest.fixture(params=["Dockerfile", "Dockerfile.cuda"])
def dockerfile(request) -> tuple[str, list[tuple[str, str]]]:
    return request.param, instructions(DOCKER / request.param)


def test_base_image_is_a_build_argument(dockerfile):
    name, ins = dockerfile
    assert ins[0][0] == "ARG" and ins[0][1].startswith("BASE_IMAGE=")
    assert ins[1] == ("FROM", "${BASE_IMAGE}")
    base = ins[0][1].split("=", 1)[1]
    if name == "Dockerfile":
        assert base == "python:3.11-slim-bookworm"
    else:
        assert re.fullmatch(r"pytorch/pytorch:2\.\d+\.\d+-cuda12\.\d+-cudnn9-runtime", base), base


def test_non_root_user_workdir_and_no_entrypoint(dockerfile):
    _, ins = dockerfile
    users = [a for o, a in ins if o == "USER"]
    assert users and users[-1] == "1000:1000"
    assert any(o == "RUN" and "useradd --uid 1000" in a and "synthgate" in a for o, a in ins)
    assert [a for o, a in ins if o == "WORKDIR"][-1] == "/work"
    assert not any(o == "ENTRYPOINT" for o, _ in ins)  # KFP sets the whole command
    env = " ".join(a for o, a in ins if o == "ENV")
    for var in ("PYTHONDONTWRITEBYTECODE=1", "PIP_NO_CACHE_DIR=1", "PATH=/opt/venv/bin:$PATH"):
        assert var in env


def test_same_constraints_and_cache_friendly_layer_order(dockerfile):
    _, ins = dockerfile
    constraints = _index(ins, "COPY", "requirements/constraints.txt")
    pyproject = _index(ins, "COPY", "pyproject.toml")
    src = _index(ins, "COPY", "src ")
    deps = _index(ins, "RUN", "-r ")
    package = _index(ins, "RUN", "--no-deps /tmp/build")
    assert constraints < deps and pyproject < deps < src < package
    runs = " ".join(a for o, a in ins if o == "RUN")
    assert "--no-deps" in runs and re.search(r"--no-deps -c \S*constraints\S* medmnist", runs)
    assert "[dev]" not in runs  # no dev extras in the images


def test_labels(dockerfile):
    _, ins = dockerfile
    labels = " ".join(a for o, a in ins if o == "LABEL")
    for key in ("title", "description", "version", "revision", "created", "source", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels
    # metadata that changes every build comes after every RUN, so the cached layers stay valid
    assert _index(ins, "ARG", "CREATED") > max(i for i, (o, _) in enumerate(ins) if o == "RUN")


def test_cpu_image_installs_pinned_cpu_torch_first():
    ins = instructions(DOCKER / "Dockerfile")
    torch_run = _index(ins, "RUN", "constraints.txt torch")
    assert torch_run < _index(ins, "RUN", "-r ")
    assert "torch.version.cuda" in ins[torch_run][1]  # the build fails on a CUDA torch


def test_cuda_image_keeps_the_base_torch():
    ins = instructions(DOCKER / "Dockerfile.cuda")
    runs = [a for o, a in ins if o == "RUN"]
    # the torch pin is filtered out of the constraints and replaced by the base's own version
    assert any("grep -v" in r and "torch" in r and "constraints.txt > constraints-cuda.txt" in r for r in runs)
    # ... read from the installed distributions (torch.__version__ may carry a +cuXYZ label pip cannot match)
    assert any("constraints-cuda.txt" in r and "m.distributions()" in r and '("torch", "torchvision")' in r
               for r in runs)
    for r in runs:
        for cmd in re.split(r";|&&", r):
            if "pip install" in cmd:
                words = cmd.split()
                assert "torch" not in words and not any(w.startswith("torch==") for w in words), cmd
                if "/tmp/build" in cmd and "-r" not in words:
                    assert "--no-deps" in words, cmd  # pyproject pins torch==2.13.0: never resolve it
                assert "constraints" in cmd or "--upgrade pip" in cmd or "--no-deps" in words, cmd
    assert any('test "$before" = "$after"' in r for r in runs)  # the build fails if torch changed
    assert any("--system-site-packages /opt/venv" in r for r in runs)


def test_local_torch_cuda_base_matches_the_pin():
    """docker/Dockerfile.torch-cuda: the PyTorch CUDA base made from PyPI's wheels where no registry
    can be pulled; the torch it installs is the project's pin, and the build fails on a CPU torch."""
    ins = instructions(DOCKER / "Dockerfile.torch-cuda")
    assert ins[0] == ("ARG", "BASE_IMAGE=localhost/synthgate-base:bookworm") and ins[1] == ("FROM", "${BASE_IMAGE}")
    args = dict(a.split("=", 1) for o, a in ins if o == "ARG" and "=" in a)
    pin = next(ln.split("==")[1] for ln in (REPO / "requirements" / "constraints.txt").read_text().splitlines()
               if ln.startswith("torch=="))
    assert args["TORCH_VERSION"] == pin
    run = next(a for o, a in ins if o == "RUN" and "pip install" in a)
    assert '"torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"' in run
    assert "assert torch.version.cuda" in run and "python3.11-venv" in run
    build = (DOCKER / "build.sh").read_text()
    # no find-links there: a local 2.13.0+cpu wheel would win over PyPI's CUDA 2.13.0
    torch_cuda = build[build.index("torch-cuda)"):]
    assert "PIP_OPTS=$INDEX_OPTS" in torch_cuda[: torch_cuda.index(";;")]
    assert "localhost/synthgate-torch-cuda:$torch_pin" in build


def test_dockerignore_keeps_the_context_small():
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*"
    for keep in ("!requirements/constraints.txt", "!pyproject.toml", "!README.md", "!src"):
        assert keep in lines


@pytest.mark.parametrize("script", ["build.sh", "make-base.sh", "podman-setup.sh"])
def test_scripts_parse(script):
    path = DOCKER / script
    assert path.stat().st_mode & 0o111, f"{path} is not executable"
    assert subprocess.run(["sh", "-n", str(path)], capture_output=True).returncode == 0


def test_make_targets():
    makefile = (REPO / "Makefile").read_text()
    phony = next(ln for ln in makefile.splitlines() if ln.startswith(".PHONY:"))
    for target in ("images", "images-cuda", "test-containers", "test-containers-cuda"):
        assert target in phony.split() and re.search(rf"^{target}:", makefile, re.M)
    assert "-m containers tests/containers" in makefile
