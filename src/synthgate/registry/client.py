"""Connecting to the MLflow tracking server, with retries and an error that names the URI."""

from __future__ import annotations

import os
import time
from typing import Any

from synthgate.errors import SynthgateError

DEFAULT_URI = "http://127.0.0.1:5000"


class RegistryUnavailable(SynthgateError):
    """The MLflow server cannot be reached."""


def tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def connect(uri: str | None = None, attempts: int = 5, backoff: float = 0.5) -> Any:
    """An ``MlflowClient`` for ``uri`` once the server answers its health check.

    Retries with exponential backoff (0.5, 1, 2, 4 s by default), then raises
    :class:`RegistryUnavailable` naming the tracking URI.
    """
    import requests
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        last: Exception | None = None
        for i in range(attempts):
            try:
                r = requests.get(uri.rstrip("/") + "/health", timeout=5)
                if r.ok:
                    break
                last = RuntimeError(f"HTTP {r.status_code}")
            except requests.RequestException as e:
                last = e
            if i < attempts - 1:
                time.sleep(backoff * 2**i)
        else:
            raise RegistryUnavailable(
                f"MLflow tracking server at {uri} is not reachable after {attempts} attempts ({type(last).__name__})",
                hint="start it with `make mlflow`, or set MLFLOW_TRACKING_URI to the running server",
            )
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
