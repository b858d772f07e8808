"""Connecting to the MLflow tracking server, with retries and an error that names the URI."""

from __future__ import annotations

import os
import time
from typing import Any

from synthgate.registry.outage import RegistryUnavailable, bound_mlflow, mlflow_timeout, raise_if_outage

__all__ = ["DEFAULT_URI", "RegistryUnavailable", "connect", "equals_filter", "tracking_uri", "unless_missing",
           "versions_of"]

DEFAULT_URI = "http://127.0.0.1:5000"


def tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def connect(uri: str | None = None, attempts: int | None = None, backoff: float = 0.5) -> Any:
    """An ``MlflowClient`` for ``uri`` once the server answers its health check.

    Bounds every later request of this process to MLflow by ``SYNTHGATE_MLFLOW_TIMEOUT``
    (:func:`synthgate.registry.outage.bound_mlflow`), and waits for the health check as long: retried
    with exponential backoff (0.5, 1, 2, 4, 4 ... s) until it answers, ``attempts`` ran out or the time
    is up, then :class:`RegistryUnavailable` naming the tracking URI and the time waited.
    """
    import requests
    from mlflow.tracking import MlflowClient

    from synthgate.registry.outage import TIMEOUT_ENV

    bound_mlflow()
    uri = tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        t0 = time.monotonic()
        deadline = t0 + mlflow_timeout()
        last: Exception | None = None
        i = 0
        while True:
            i += 1
            try:
                r = requests.get(uri.rstrip("/") + "/health", timeout=max(0.5, min(5.0, deadline - time.monotonic())))
                if r.ok:
                    break
                last = RuntimeError(f"HTTP {r.status_code}")
            except requests.RequestException as e:
                last = e
            pause = min(backoff * 2 ** (i - 1), 4.0)
            if (attempts is not None and i >= attempts) or time.monotonic() + pause >= deadline:
                from synthgate.registry.outage import cause_of

                waited = time.monotonic() - t0
                cause = cause_of(last) if last is not None else "no answer"
                raise RegistryUnavailable(
                    f"MLflow tracking server at {uri} is not reachable after {i} attempts in {waited:.1f} s "
                    f"({type(last).__name__}: {cause}; {TIMEOUT_ENV}={mlflow_timeout():g} s)",
                    hint="start it with `make mlflow` (the mlflow Deployment in the cluster), or set "
                         f"MLFLOW_TRACKING_URI to the running server; raise {TIMEOUT_ENV} to wait longer",
                    elapsed=waited, cause=cause, uri=uri)
            time.sleep(pause)
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
    raise_if_outage(e, where)
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
