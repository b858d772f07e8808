"""The gatekeeper's HTTP API (FastAPI) and the client every command uses to reach it.

``POST /v1/releases``, ``/v1/datasets``, ``/v1/revocations``, ``/v1/pins`` sign (the caller logs in
with their MLflow credentials, HTTP basic); ``POST /v1/audit-records`` signs the gatekeeper's record of the audit
entries it wrote on a version, with the caller's nonce; ``GET /v1/revocations`` lists the signed revocations;
``GET /health``; ``GET /metrics`` (Prometheus: signed and refused by kind, the last override and pin). The client fails closed: a gatekeeper that is down or refuses means nothing is
promoted, published or pinned, with the reason.
"""

# No ``from __future__ import annotations``: FastAPI reads the handlers' annotations at run time.
import os
import threading
import time
from pathlib import Path
from typing import Any

from synthgate.errors import SynthgateError
from synthgate.registry.gatekeeper import Gatekeeper, GatekeeperRefused
from synthgate.registry.outage import RegistryUnavailable, outage

URL_ENV = "SYNTHGATE_GATEKEEPER_URL"
LOCAL_URL = Path("mlruns") / "gatekeeper" / "url"


class GatekeeperUnavailable(SynthgateError):
    exit_code = 1


def app(gk: Gatekeeper) -> Any:
    import base64

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    api = FastAPI(title="synthgate gatekeeper", docs_url=None, redoc_url=None, openapi_url=None)

    def run(request: Request, fn: Any) -> Any:
        """The caller's MLflow login (HTTP basic), checked against MLflow, then ``fn(caller)``; plain
        handlers, so FastAPI runs them in its thread pool."""
        header = request.headers.get("authorization", "")
        user = password = None
        if header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except Exception:
                user = password = None
        kind = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        try:
            caller = gk.authenticate(user, password)
            return JSONResponse(fn(caller))
        except GatekeeperRefused as e:
            gk.metrics.refused.labels(kind).inc()
            return JSONResponse({"refused": e.message, "hint": e.hint}, status_code=e.status)
        except SynthgateError as e:
            gk.metrics.refused.labels(kind).inc()
            status = 503 if isinstance(e, RegistryUnavailable) else 409
            return JSONResponse({"refused": e.message, "hint": e.hint}, status_code=status)
        except Exception as e:  # MLflow stopped answering mid-request: nothing was signed, and it says so
            down = outage(e, gk.tracking_uri, doing="the gatekeeper checked the request", after="nothing was signed")
            if down is None:
                raise
            gk.metrics.refused.labels(kind).inc()
            return JSONResponse({"refused": down.message, "hint": down.hint}, status_code=503)

    @api.post("/v1/releases")
    def releases(request: Request, body: dict) -> Any:  # type: ignore[type-arg]
        return run(request, lambda c: {"attestation": gk.release(
            c, str(body.get("model")), str(body.get("version")), str(body.get("alias") or "approved"),
            body.get("override_reason"))})

    @api.post("/v1/datasets")
    def datasets(request: Request, body: dict) -> Any:  # type: ignore[type-arg]
        return run(request, lambda c: {"attestation": gk.sign_dataset(c, str(body.get("store")),
                                                                      str(body.get("staging")), body.get("manifest") or {})})

    @api.post("/v1/revocations")
    def revoke(request: Request, body: dict) -> Any:  # type: ignore[type-arg]
        return run(request, lambda c: {"attestation": gk.revoke(c, str(body.get("subject")), body.get("model") or None,
                                                                str(body.get("reason") or ""))})

    @api.post("/v1/pins")
    def pins(request: Request, body: dict) -> Any:  # type: ignore[type-arg]
        return run(request, lambda c: {"attestation": gk.pin_policy(c, str(body.get("model")),
                                                                    str(body.get("policy") or ""))})

    @api.post("/v1/audit-records")
    def audit_records(request: Request, body: dict) -> Any:  # type: ignore[type-arg]
        return run(request, lambda c: {"attestation": gk.audit_record(c, str(body.get("model")),
                                                                      str(body.get("version")),
                                                                      str(body.get("nonce") or ""))})

    @api.get("/v1/revocations")
    def revocations() -> Any:
        return JSONResponse({"revocations": gk.revocations()})

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "key": gk.signer.public_key.keyid}

    @api.get("/metrics")
    def metrics() -> Any:
        from fastapi import Response
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(gk.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return api


def serve(gk: Gatekeeper, host: str = "127.0.0.1", port: int = 8090, ready: threading.Event | None = None,
          stop: threading.Event | None = None) -> None:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app(gk), host=host, port=port, log_level="warning"))
    stop = stop or threading.Event()

    def stopper() -> None:
        stop.wait()
        server.should_exit = True

    threading.Thread(target=stopper, daemon=True).start()
    if ready is not None:
        def wait() -> None:
            while not server.started:
                time.sleep(0.05)
            ready.set()
        threading.Thread(target=wait, daemon=True).start()
    server.run()


# ------------------------------------------------------------------------------------------ client
def gatekeeper_url(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV]
    if LOCAL_URL.is_file():
        return LOCAL_URL.read_text().strip()
    raise GatekeeperUnavailable("no gatekeeper is configured: releases, publications and policy pins are signed by "
                                "the gatekeeper, so nothing is done without it",
                                hint=f"set {URL_ENV} (the cluster's is http://synthgate-gatekeeper:8090), or start "
                                     "one locally with `synthgate gatekeeper serve`")


def call(path: str, body: dict[str, Any], url: str | None = None, timeout: float = 600) -> dict[str, Any]:
    """POST ``body`` to the gatekeeper as the MLflow user of this environment; -> the signed attestation.
    Fails closed: unreachable, refused or malformed answers raise with the reason."""
    import requests

    base = gatekeeper_url(url)
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    try:
        r = requests.post(base.rstrip("/") + path, json=body, timeout=timeout,
                          auth=(user, password) if user and password else None)
    except requests.RequestException as e:
        raise GatekeeperUnavailable(f"the gatekeeper at {base} is unreachable ({type(e).__name__}); nothing was "
                                    "signed, so nothing was changed (fail closed)",
                                    hint="retry when it is up; its operators: `synthgate gatekeeper serve`") from None
    try:
        data = r.json()
    except ValueError:
        data = {}
    if r.status_code != 200:
        raise GatekeeperRefused(f"the gatekeeper refused: {data.get('refused') or r.text[:300]}",
                                hint=data.get("hint"), status=r.status_code)
    if not isinstance(data.get("attestation"), dict):
        raise GatekeeperUnavailable(f"the gatekeeper at {base} answered without an attestation; nothing was signed")
    return dict(data["attestation"])


def revocations(url: str | None = None, timeout: float = 10) -> list[Any] | None:
    """The gatekeeper's signed revocations, or None when it cannot be reached (offline)."""
    import requests

    try:
        r = requests.get(gatekeeper_url(url).rstrip("/") + "/v1/revocations", timeout=timeout)
        return list(r.json().get("revocations") or []) if r.status_code == 200 else None
    except Exception:
        return None
