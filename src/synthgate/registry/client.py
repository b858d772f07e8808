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


#: MLflow error codes that mean "no such model, version or alias" (a missing alias is a bad parameter).
MISSING = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


def unless_missing(e: BaseException, client: Any = None) -> None:
    """Return when ``e`` (from a registry lookup) says the model, version or alias does not exist;
    otherwise raise :class:`RegistryUnavailable` with MLflow's error code: an outage or a refused
    request is not "no such version"."""
    from synthgate.registry.access import translate

    translate(e)
    code = getattr(e, "error_code", None)
    if code in MISSING:
        return
    where = getattr(client, "_registry_uri", None) or tracking_uri()
    raise RegistryUnavailable(f"the MLflow registry at {where} failed ({code or type(e).__name__}: "
                              f"{' '.join(str(e).split())[:300]})",
                              hint="check that the server is up and that you may read this model; then retry") from None


def equals_filter(field: str, value: str) -> str:
    """An MLflow search filter ``field = value`` that no value can break out of: the value is quoted with
    the quote it does not contain (MLflow's filter grammar has no escape); a value holding both quotes is
    refused (``model names with both quote kinds``), never spliced in."""
    from synthgate.errors import DataError

    for q in ('"', "'"):
        if q not in value:
            return f"{field} = {q}{value}{q}"
    raise DataError(f"{field} {value!r} holds both kinds of quote and cannot be searched for safely",
                    hint="rename the registered model")


def versions_of(client: Any, name: str) -> list[Any]:
    """Every version of registered model ``name`` (all pages), searched with a safe filter."""
    out: list[Any] = []
    token = None
    while True:
        page = client.search_model_versions(equals_filter("name", name), max_results=1000, page_token=token)
        out += [mv for mv in page if mv.name == name]  # the filter is exact; this keeps it so whatever the server does
        token = getattr(page, "token", None)
        if not token:
            return out
