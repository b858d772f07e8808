"""A local MLflow tracking server (SQLite store, local artifact root) on 127.0.0.1, as `make mlflow`
runs it, for the demo and the tests. In the cluster the server is a deployment with PostgreSQL and
MinIO (issue #7).

Authentication is on by default (MLflow's ``basic-auth`` app: users and per-registered-model
permissions in an auth database beside the tracking store). The local admin's password is generated
once into ``ROOT/credentials.env`` (mode 0600, ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``
lines that a shell can ``source``); MLflow's clients read those two variables, and
:func:`use_credentials` sets them for the calling process."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from synthgate.errors import SynthgateError

#: The local server's admin credentials, beside its stores.
CREDENTIALS = "credentials.env"
ADMIN = "admin"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    path: Path

    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": self.username, "MLFLOW_TRACKING_PASSWORD": self.password}


def local_credentials(root: Path, create: bool = True) -> Credentials:
    """The admin credentials of the local server under ``root``: read from ``root/credentials.env``,
    or (``create``) generated there once, readable by the owner only. A file others may read is
    refused: it holds the registry's admin password."""
    path = Path(root).resolve() / CREDENTIALS
    if not path.exists():
        if not create:
            raise SynthgateError(f"no MLflow credentials at {path}",
                                 hint="start the local server once (`make mlflow` or `synthgate demo`) to create them")
        _write_private(path, "# synthgate's local MLflow server: the admin account (keep this file private)\n"
                             f"MLFLOW_TRACKING_USERNAME={ADMIN}\nMLFLOW_TRACKING_PASSWORD={secrets.token_urlsafe(24)}\n")
    _check_private(path)
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    try:
        return Credentials(values["MLFLOW_TRACKING_USERNAME"].strip(), values["MLFLOW_TRACKING_PASSWORD"].strip(), path)
    except KeyError as e:
        raise SynthgateError(f"{path} has no {e.args[0]} line", hint=f"delete {path} and the auth database "
                             f"{path.parent / 'basic_auth.db'} to start over") from None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _check_private(path: Path) -> None:
    if path.stat().st_mode & 0o077:
        raise SynthgateError(f"{path} may be read by other users (mode {path.stat().st_mode & 0o777:o})",
                             hint=f"chmod 600 {path}")


def _server_secret(root: Path) -> str:
    """The Flask secret key of the local server (CSRF tokens of the auth app), generated once, 0600."""
    path = root / "server_secret"
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32) + "\n")
    _check_private(path)
    return path.read_text().strip()


def _webhook_key(root: Path) -> str:
    """The Fernet key MLflow encrypts webhook secrets with, generated once, 0600."""
    path = root / "webhook_key"
    if not path.exists():
        from cryptography.fernet import Fernet

        _write_private(path, Fernet.generate_key().decode() + "\n")
    _check_private(path)
    return path.read_text().strip()


def use_credentials(root: Path) -> Credentials:
    """Point this process's MLflow clients (and the processes it starts) at the local admin account."""
    creds = local_credentials(root, create=False)
    os.environ.update(creds.env())
    return creds


def _auth_config(root: Path) -> Path:
    """The basic-auth app's configuration for the local server: users in ``root/basic_auth.db``;
    a user without a grant on a model may read it (MLflow's default); credential checks cached 60 s
    (a PBKDF2 hash per request otherwise)."""
    ini = root / "basic_auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = sqlite:///{root / 'basic_auth.db'}\nadmin_username = {ADMIN}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                   "auth_cache_ttl_seconds = 60\n")
    return ini


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


def start_server(root: Path, port: int | None = None, detach: bool = False, timeout: float = 90,
                 auth: bool = True) -> tuple[str, int]:
    """Start ``mlflow server`` with its store under ``root``; return (tracking URI, pid).

    ``auth`` (default) runs MLflow's basic-auth app with the admin of :func:`local_credentials`;
    ``detach`` starts it in its own session so it outlives the calling process (the demo leaves
    it running for the UI; ``stop_server`` ends it).
    """
    root = Path(root).resolve()
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    # registry webhooks to the local promotion guard (`synthgate guard serve`, http on 127.0.0.1); their
    # secrets encrypted with a key kept beside the stores, so they survive a restart
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
           "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true", "MLFLOW_WEBHOOK_CACHE_TTL": "1",
           "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": _webhook_key(root)}
    args = [exe, "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination",
            str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    creds = None
    if auth:
        creds = local_credentials(root)
        env.update({"MLFLOW_AUTH_CONFIG_PATH": str(_auth_config(root)), "MLFLOW_AUTH_ADMIN_PASSWORD": creds.password,
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": _server_secret(root)})
        args += ["--app-name", "basic-auth"]
    log = os.fdopen(os.open(root / "server.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    # umask 077: the stores the server creates (the auth database with its password hashes) are the owner's only
    proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=detach, env=env,
                            preexec_fn=lambda: os.umask(0o077))  # noqa: PLW1509 - no threads touch it before exec
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SynthgateError(f"mlflow server exited with code {proc.returncode}", hint=f"see {root / 'server.log'}")
        if _healthy(uri):
            if creds is not None:
                _check_admin(uri, creds, proc)
            (root / "server.pid").write_text(f"{proc.pid} {uri}\n")
            return uri, proc.pid
        time.sleep(0.5)
    proc.terminate()
    raise SynthgateError(f"mlflow server did not answer on {uri} within {timeout:.0f} s",
                         hint=f"see {root / 'server.log'}")


def _check_admin(uri: str, creds: Credentials, proc: subprocess.Popen[bytes]) -> None:
    """The credentials file must open the auth database (one left from another file does not)."""
    import requests

    r = requests.get(uri + "/api/2.0/mlflow/users/current", auth=(creds.username, creds.password), timeout=10)
    if r.status_code == 401:
        proc.terminate()
        raise SynthgateError(f"the MLflow auth database does not accept the admin password in {creds.path}",
                             hint=f"the database was created with another password: restore that file, or delete "
                                  f"{creds.path.parent / 'basic_auth.db'} (its users and permissions) to start over")


def running_server(root: Path) -> str | None:
    """The URI of a server started earlier under ``root`` that still answers, else None."""
    pid_file = Path(root) / "server.pid"
    if not pid_file.exists():
        return None
    uri = pid_file.read_text().split()[1]
    return uri if _healthy(uri) else None


def stop_server(root: Path) -> bool:
    stop_gatekeeper(root)
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


# ------------------------------------------------------------------------------------ the local gatekeeper
def _gatekeeper_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=2) as r:  # noqa: S310 (loopback)
            return bool(r.status == 200)
    except Exception:
        return False


def start_gatekeeper(root: Path, uri: str, policy: Path | None, detach: bool = True, timeout: float = 60) -> str:
    """The local gatekeeper beside the local server: its key made once under ``root/gatekeeper`` (0600),
    started as ``synthgate gatekeeper serve`` with the admin's login; -> its URL (also in
    ``root/gatekeeper/url``). One already answering there is reused."""
    from synthgate.trust.keys import KEY_FILE, generate_key

    home = Path(root).resolve() / "gatekeeper"
    url_file = home / "url"
    if url_file.is_file() and _gatekeeper_healthy(url_file.read_text().strip()):
        return url_file.read_text().strip()
    if not (home / KEY_FILE).exists():
        generate_key(home)
    port = free_port()
    exe = shutil.which("synthgate", path=str(Path(sys.executable).parent)) or "synthgate"
    creds = local_credentials(Path(root).resolve(), create=False)
    env = {**os.environ, **creds.env(), "MLFLOW_TRACKING_URI": uri}
    log = os.fdopen(os.open(home / "gatekeeper.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    args = [exe, "gatekeeper", "serve", "--home", str(home), "--port", str(port), "--tracking-uri", uri]
    proc = subprocess.Popen(args + (["--policy", str(Path(policy).resolve())] if policy is not None else []),
                            stdout=log, stderr=log,
                            start_new_session=detach, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SynthgateError(f"the gatekeeper exited with code {proc.returncode}",
                                 hint=f"see {home / 'gatekeeper.log'}")
        if _gatekeeper_healthy(url):
            (home / "gatekeeper.pid").write_text(f"{proc.pid}\n")
            url_file.write_text(url + "\n")
            return url
        time.sleep(0.3)
    proc.terminate()
    raise SynthgateError(f"the gatekeeper did not answer on {url} within {timeout:.0f} s",
                         hint=f"see {home / 'gatekeeper.log'}")


def stop_gatekeeper(root: Path) -> bool:
    pid_file = Path(root) / "gatekeeper" / "gatekeeper.pid"
    if not pid_file.exists():
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(int(pid_file.read_text().split()[0]), signal.SIGTERM)
    pid_file.unlink()
    (Path(root) / "gatekeeper" / "url").unlink(missing_ok=True)
    return True
