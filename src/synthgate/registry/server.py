"""A local MLflow tracking server (SQLite store, local artifact root) on 127.0.0.1, as `make mlflow`
runs it, for the demo and the tests. In the cluster the server is a deployment with PostgreSQL and
MinIO (issue #7)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from synthgate.errors import SynthgateError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(uri: str) -> bool:
    import requests

    try:
        return requests.get(uri + "/health", timeout=2).ok
    except requests.RequestException:
        return False


def start_server(root: Path, port: int | None = None, detach: bool = False, timeout: float = 90) -> tuple[str, int]:
    """Start ``mlflow server`` with its store under ``root``; return (tracking URI, pid).

    ``detach`` starts it in its own session so it outlives the calling process (the demo leaves
    it running for the UI; ``stop_server`` ends it).
    """
    root = Path(root).resolve()
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    log = open(root / "server.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [exe, "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination",
         str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=log, start_new_session=detach,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SynthgateError(f"mlflow server exited with code {proc.returncode}", hint=f"see {root / 'server.log'}")
        if _healthy(uri):
            (root / "server.pid").write_text(f"{proc.pid} {uri}\n")
            return uri, proc.pid
        time.sleep(0.5)
    proc.terminate()
    raise SynthgateError(f"mlflow server did not answer on {uri} within {timeout:.0f} s",
                         hint=f"see {root / 'server.log'}")


def running_server(root: Path) -> str | None:
    """The URI of a server started earlier under ``root`` that still answers, else None."""
    pid_file = Path(root) / "server.pid"
    if not pid_file.exists():
        return None
    uri = pid_file.read_text().split()[1]
    return uri if _healthy(uri) else None


def stop_server(root: Path) -> bool:
    pid_file = Path(root) / "server.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    pid_file.unlink()
    return True
