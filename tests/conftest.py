from __future__ import annotations

import os

import pytest

from tests.helpers import BREAST, MEDNIST, PNEUMONIA

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _need(path):
    if not path.exists():
        pytest.skip(f"{path} not found (set SYNTHGATE_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture
def mednist_path():
    return _need(MEDNIST)


@pytest.fixture
def pneumonia_path():
    return _need(PNEUMONIA)


@pytest.fixture
def breast_path():
    return _need(BREAST)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    # SYNTHGATE_GPU_DRY_RUN=1 runs the GPU tests on the CPU, to check the tests themselves
    # (tests/gpu/test_cuda.py); their CUDA-only assertions are skipped then.
    dry_run = os.environ.get("SYNTHGATE_GPU_DRY_RUN") == "1"
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_cuda and not dry_run:
            item.add_marker(skip_gpu)
    # `make test` runs two workers, one file each at a time (pytest-xdist, --dist loadfile --no-loadscope-reorder,
    # which keeps this order instead of xdist's files-with-most-tests-first): the longest files start first, so that neither worker is left with one of them at the end (measured: the demo's end-to-end
    # test and the DVC round trip took 2-5 minutes each). A stable sort: the order within a file is kept.
    items.sort(key=lambda it: LONGEST_FIRST.index(it.path.name) if it.path.name in LONGEST_FIRST else len(LONGEST_FIRST))


#: Test files in order of their measured duration on 2 cores, the longest first (``--durations``).
LONGEST_FIRST = ["test_demo.py", "test_dvc.py", "test_kfp_local.py", "test_attacks.py", "test_evaluate.py",
                 "test_registry.py", "test_publish.py"]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow server (SQLite store, local artifacts, basic-auth as `make mlflow` runs it) on a
    free port of 127.0.0.1; the session's MLflow clients (and the processes the tests start) log in
    as its admin."""
    from synthgate.registry.server import start_gatekeeper, start_server, stop_server, use_credentials

    root = tmp_path_factory.mktemp("mlflow")
    uri, _ = start_server(root)
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "SYNTHGATE_GATEKEEPER_URL", "SYNTHGATE_TRUST_ROOT")
    saved = {k: os.environ.get(k) for k in keys}
    use_credentials(root)
    # the gatekeeper beside it (a process of its own, logged in as the admin), trusted by the session
    os.environ["SYNTHGATE_GATEKEEPER_URL"] = start_gatekeeper(root, uri, None)
    os.environ["SYNTHGATE_TRUST_ROOT"] = str(root / "gatekeeper" / "trust.json")
    yield uri
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    stop_server(root)


@pytest.fixture(autouse=True)
def _pull_state(tmp_path, monkeypatch):
    """Each test's own record of what this machine has pulled (newest serials, revocations seen)."""
    monkeypatch.setenv("SYNTHGATE_PULL_STATE", str(tmp_path / ".pull-state.json"))


@pytest.fixture
def cli(capsys, monkeypatch):
    """``synthgate ...`` in-process (``synthgate.cli.main``: the messages users see, without a
    subprocess's start-up): (exit code, stdout, stderr with whitespace collapsed); ``env`` values
    of None remove a variable."""
    from synthgate.cli import main

    def run(*args: str, env: dict[str, str | None] | None = None, cwd=None) -> tuple[int, str, str]:
        with monkeypatch.context() as m:
            m.setenv("COLUMNS", "200")
            if cwd is not None:
                m.chdir(cwd)
            for k, v in (env or {}).items():
                if v is None:
                    m.delenv(k, raising=False)
                else:
                    m.setenv(k, v)
            code = 0
            try:
                main(list(args))
            except SystemExit as e:
                code = int(e.code or 0)
        out = capsys.readouterr()
        return code, out.out, " ".join(out.err.split())

    return run
