"""The promotion guard: MLflow's registry enforces no approval, so this service does.

MLflow (3.3+, SQL backends) delivers registry webhooks, HMAC-signed. ``synthgate guard serve`` receives
them; when a **protected alias** (default ``approved``) lands on a version without a release attestation
signed by the gatekeeper, or whose records no longer verify (:func:`synthgate.registry.verify.approvable`),
it moves the alias back to the version that held it
before (the last one it saw approved) or removes it, within the time a delivery takes, and records
that: an ``audit.N`` entry on the version (action ``guard-reverted``), the Prometheus counter
``synthgate_guard_reverts_total`` and the alert ``SynthgateGuardReverted``. A tag change on a
version that holds a protected alias (``gate.*``, ``evaluation_hash``, ``override.*``, ``release.*``) is
re-checked the same way.

Deliveries are refused unless their signature verifies (``v1,`` base64 HMAC-SHA256 of
``delivery_id.timestamp.payload`` with the shared secret, compared in constant time), their
timestamp is within :data:`MAX_AGE_S` of the guard's clock and their delivery id was not seen
before (SQLite, so a restart does not forget): a forged, stale or replayed delivery changes
nothing. Because a delivery can be lost (the guard down, a network error), the guard also
**sweeps** every registered model's protected aliases when it starts and every ``sweep_every``
seconds.

The guard logs in to MLflow with ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` of an
account that may move aliases on every model (the admin, or an owner of each); the webhook's
secret is given in a file, never on the command line.
"""

# No ``from __future__ import annotations``: FastAPI reads the route handlers' annotations at run
# time, and ``Request`` is imported inside :func:`app` (fastapi stays out of ``synthgate --help``).
import base64
import hashlib
import hmac
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthgate.errors import SynthgateError

log = logging.getLogger(__name__)

#: A delivery older (or further in the future) than this many seconds is refused.
MAX_AGE_S = 300
#: The webhook events the guard subscribes to.
EVENTS = ("model_version_alias.created", "model_version_tag.set", "model_version_tag.deleted")
#: Tag keys whose change on a version that holds a protected alias triggers a re-check.
WATCHED_TAGS = ("gate.", "evaluation_hash", "override.", "release.")
SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_HEADER = "X-MLflow-Signature", "X-MLflow-Timestamp", "X-MLflow-Delivery-Id"


class DeliveryRefused(SynthgateError):
    """A webhook delivery that is not MLflow's, or not fresh."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


def sign(secret: str, delivery_id: str, timestamp: str, payload: str) -> str:
    """MLflow's webhook signature (``mlflow.webhooks.delivery``): ``v1,`` + base64 HMAC-SHA256."""
    mac = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.{payload}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def read_secret(path: Path) -> str:
    secret = Path(path).read_text().strip()
    if len(secret) < 16:
        raise SynthgateError(f"{path}: the webhook secret needs at least 16 characters",
                             hint="e.g. `openssl rand -hex 32 > guard.secret`")
    return secret


@dataclass
class Metrics:
    """The guard's Prometheus metrics, in their own registry (exported on ``/metrics``)."""

    registry: Any = None
    reverts: Any = None
    deliveries: Any = None
    sweeps: Any = None
    last_sweep: Any = None
    last_revert: Any = None
    webhook_active: Any = None
    coalesced: Any = None

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.reverts = Counter("synthgate_guard_reverts", "Protected aliases the guard moved back off a version "
                               "that failed its gate", ["model", "alias"], registry=self.registry)
        self.deliveries = Counter("synthgate_guard_deliveries", "Webhook deliveries received, by result",
                                  ["result"], registry=self.registry)
        self.sweeps = Counter("synthgate_guard_sweeps", "Sweeps of every protected alias", registry=self.registry)
        self.last_sweep = Gauge("synthgate_guard_last_sweep_timestamp_seconds", "When the last sweep finished",
                                registry=self.registry)
        self.last_revert = Gauge("synthgate_guard_last_revert_timestamp_seconds", "When the guard last moved a "
                                 "protected alias back (0: never since it started)", registry=self.registry)
        self.coalesced = Counter("synthgate_guard_coalesced_checks", "Checks merged into one already waiting for the "
                                 "same model and alias (a flood of events)", registry=self.registry)
        self.webhook_active = Gauge("synthgate_guard_webhook_active", "1 when MLflow's webhook to the guard exists "
                                    "and is active (checked at every sweep)", registry=self.registry)


@dataclass
class Guard:
    """The guard's logic, without the HTTP server (:func:`serve` adds it)."""

    tracking_uri: str
    secret: str
    state: Path
    aliases: tuple[str, ...] = ("approved",)
    #: the hash of the gate policy every holder of a protected alias must have been gated with (the
    #: guard's own copy: a registry tag can be edited by anyone with EDIT); None: the registry's pin
    policy_hash: str | None = None
    #: the name of MLflow's webhook to the guard, checked at every sweep (None: not checked)
    webhook_name: str | None = None
    connect: Callable[[str], Any] | None = None
    clock: Callable[[], float] = time.time
    metrics: Metrics = field(default_factory=Metrics)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: (model, alias) pairs with a check waiting for ``_lock``: a flood of events on one alias is
    #: merged into that one check, which reads the alias's holder once it runs
    _pending: set[tuple[str, str]] = field(default_factory=set)
    _pending_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        Path(self.state).parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS deliveries (id TEXT PRIMARY KEY, received REAL)")
            db.execute("CREATE TABLE IF NOT EXISTS holders (model TEXT, alias TEXT, version TEXT, seen REAL, "
                       "PRIMARY KEY (model, alias))")

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.state, timeout=30)

    def _client(self) -> Any:
        if self.connect is not None:
            return self.connect(self.tracking_uri)
        from synthgate.registry.client import connect

        return connect(self.tracking_uri)

    # --------------------------------------------------------------------- deliveries

    def verify(self, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """The delivery's JSON payload, once its signature, freshness and novelty are checked;
        :class:`DeliveryRefused` otherwise."""
        h = {k.lower(): v for k, v in headers.items()}
        sig, ts, did = (h.get(x.lower(), "") for x in (SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_HEADER))
        if not (sig and ts and did):
            self.metrics.deliveries.labels("unsigned").inc()
            raise DeliveryRefused("unsigned delivery: signature, timestamp or delivery id missing")
        payload = body.decode("utf-8", errors="replace")
        if not hmac.compare_digest(sig.encode("utf-8", "replace"), sign(self.secret, did, ts, payload).encode()):
            self.metrics.deliveries.labels("forged").inc()
            raise DeliveryRefused("the signature does not verify")
        try:
            age = self.clock() - int(ts)
        except ValueError:
            self.metrics.deliveries.labels("forged").inc()
            raise DeliveryRefused("the timestamp is not a number") from None
        if abs(age) > MAX_AGE_S:
            self.metrics.deliveries.labels("stale").inc()
            raise DeliveryRefused(f"stale delivery ({age:.0f} s old; at most {MAX_AGE_S} s)")
        with self._lock, self._db() as db:
            db.execute("DELETE FROM deliveries WHERE received < ?", (self.clock() - 2 * MAX_AGE_S,))
            try:
                db.execute("INSERT INTO deliveries VALUES (?, ?)", (did, self.clock()))
            except sqlite3.IntegrityError:
                self.metrics.deliveries.labels("replayed").inc()
                raise DeliveryRefused(f"delivery {did} was already received (a replay)", 409) from None
        try:
            event = json.loads(payload)
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError:
            self.metrics.deliveries.labels("malformed").inc()
            raise DeliveryRefused("the payload is not a JSON object", 400) from None
        self.metrics.deliveries.labels("accepted").inc()
        event["_delivery_id"] = did
        return event

    def forget(self, delivery_id: str) -> None:
        """Let MLflow's retry of a delivery that could not be handled through (it is not a replay)."""
        with self._lock, self._db() as db:
            db.execute("DELETE FROM deliveries WHERE id = ?", (delivery_id,))

    def handle(self, event: dict[str, Any]) -> list[str]:
        """Act on a verified delivery; return what was done (one line per reverted alias)."""
        kind = f"{event.get('entity')}.{event.get('action')}"
        data = event.get("data") or {}
        name, version = str(data.get("name", "")), str(data.get("version", ""))
        if kind == "model_version_alias.created" and data.get("alias") in self.aliases:
            done = self.check(name, str(data["alias"]), version)
            return [done] if done else []
        if kind in ("model_version_tag.set", "model_version_tag.deleted") and str(data.get("key", "")).startswith(
                WATCHED_TAGS):
            aliases = self._client().get_registered_model(name).aliases or {}
            return [d for a, v in aliases.items() if a in self.aliases and str(v) == version
                    for d in [self.check(name, a, version)] if d]
        return []

    # --------------------------------------------------------------------- the check

    def check(self, name: str, alias: str, version: str | None = None) -> str | None:
        """Keep ``name@alias`` on the version that holds it now if it may hold it; otherwise move it back
        (or remove it) and return what was done. ``version`` is the holder the delivery named; the
        check reads the current holder, so events merged into a waiting check (a flood of tag events
        on one alias) lose nothing: every change made before the check reads the alias is seen by it,
        and one made after finds no check waiting and queues its own."""
        from synthgate.registry.registry import _audit
        from synthgate.registry.verify import approvable

        key = (name, alias)
        with self._pending_lock:
            if key in self._pending:
                self.metrics.coalesced.inc()
                return None
            self._pending.add(key)
        try:
            client = self._client()
        except Exception:
            with self._pending_lock:
                self._pending.discard(key)
            raise
        with self._lock:
            with self._pending_lock:
                self._pending.discard(key)  # from here on, a new event queues a new check
            current = (client.get_registered_model(name).aliases or {}).get(alias)
            if current is None:
                return None  # removed since the delivery was sent
            version = str(current)
            ok, why = approvable(client, name, version, self.policy_hash)
            if ok:
                with self._db() as db:
                    db.execute("INSERT OR REPLACE INTO holders VALUES (?, ?, ?, ?)", (name, alias, version, self.clock()))
                return None
            with self._db() as db:
                row = db.execute("SELECT version FROM holders WHERE model = ? AND alias = ?", (name, alias)).fetchone()
            previous = str(row[0]) if row and str(row[0]) != version else None
            if previous is not None and not approvable(client, name, previous, self.policy_hash)[0]:
                previous = None
            if previous is not None:
                client.set_registered_model_alias(name, alias, previous)
                outcome = f"moved back to version {previous}"
            else:
                client.delete_registered_model_alias(name, alias)
                outcome = "removed (no earlier approved holder)"
            detail = f"alias {alias} {outcome}: version {version} {why}"
            _audit(client, name, version, "guard-reverted", detail[:5000])
        self.metrics.reverts.labels(name, alias).inc()
        self.metrics.last_revert.set(self.clock())
        log.warning("guard: %s@%s: %s", name, alias, detail)
        return f"{name}@{alias}: {detail}"

    def sweep(self) -> list[str]:
        """Check every protected alias of every registered model (a lost delivery is caught here); one
        model that cannot be checked does not stop the others."""
        client = self._client()
        done = []
        token = None
        while True:
            page = client.search_registered_models(max_results=100, page_token=token)
            for rm in page:
                for alias, version in (rm.aliases or {}).items():
                    if alias not in self.aliases:
                        continue
                    self.metrics.reverts.labels(rm.name, alias)  # the series exists from 0 on
                    try:
                        d = self.check(rm.name, alias, str(version))
                    except Exception:
                        log.exception("guard: could not check %s@%s", rm.name, alias)
                        continue
                    if d:
                        done.append(d)
            token = getattr(page, "token", None)
            if not token:
                break
        if self.webhook_name:
            try:
                active = any(w.name == self.webhook_name and w.status.is_active() for w in client.list_webhooks())
            except Exception:
                active = False
            self.metrics.webhook_active.set(1.0 if active else 0.0)
            if not active:
                log.error("guard: MLflow has no active webhook %r: deliveries stopped; only sweeps protect the "
                          "aliases (re-run `synthgate guard register-webhook`)", self.webhook_name)
        self.metrics.sweeps.inc()
        self.metrics.last_sweep.set(self.clock())
        return done


def register_webhook(tracking_uri: str, url: str, secret: str, name: str = "synthgate-guard") -> str:
    """Create (or replace) the MLflow webhook that delivers the guard's events to ``url``; its id."""
    from synthgate.registry.client import connect

    client = connect(tracking_uri)
    for w in client.list_webhooks():
        if w.name == name:
            client.delete_webhook(w.webhook_id)
    return str(client.create_webhook(name=name, url=url, events=list(EVENTS), secret=secret,
                                     description="synthgate promotion guard").webhook_id)


def app(guard: Guard) -> Any:
    """The guard's HTTP API (FastAPI): ``POST /webhook``, ``GET /health``, ``GET /metrics``."""
    from fastapi import Depends, FastAPI, Request, Response
    from fastapi.responses import JSONResponse

    async def _body(request: Request) -> bytes:
        return await request.body()

    api = FastAPI(title="synthgate guard", docs_url=None, redoc_url=None, openapi_url=None)

    # plain (not async) handlers: FastAPI runs them in its thread pool, so a slow check (artifact
    # downloads) never blocks /health or the other deliveries' reception
    @api.post("/webhook")
    def webhook(request: Request, body: bytes = Depends(_body)) -> Response:
        try:
            event = guard.verify(dict(request.headers), body)
        except DeliveryRefused as e:
            log.warning("guard: refused a delivery: %s", e.reason)
            return JSONResponse({"refused": e.reason}, status_code=e.status)
        try:
            done = guard.handle(event)
        except Exception as e:  # MLflow retries (the id is forgotten, so the retry is no replay); so does the sweep
            guard.forget(str(event.get("_delivery_id", "")))
            log.exception("guard: could not check a delivery")
            return JSONResponse({"error": f"{type(e).__name__}: {e}"}, status_code=500)
        return JSONResponse({"reverted": done})

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(guard.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return api


def serve(guard: Guard, host: str = "127.0.0.1", port: int = 8089, sweep_every: float = 300.0,
          ready: threading.Event | None = None, stop: threading.Event | None = None) -> None:
    """Sweep once, then serve the webhook API and sweep every ``sweep_every`` seconds until ``stop``."""
    import uvicorn

    try:
        for done in guard.sweep():
            log.warning("guard (start-up sweep): %s", done)
    except Exception:  # serve anyway: deliveries and the next sweep still protect the aliases
        log.exception("guard: the start-up sweep failed")
    stop = stop or threading.Event()

    def sweeper() -> None:
        while not stop.wait(sweep_every):
            try:
                guard.sweep()
            except Exception:
                log.exception("guard: sweep failed")

    threading.Thread(target=sweeper, daemon=True, name="guard-sweep").start()
    server = uvicorn.Server(uvicorn.Config(app(guard), host=host, port=port, log_level="warning"))

    def stopper() -> None:
        stop.wait()
        server.should_exit = True

    threading.Thread(target=stopper, daemon=True, name="guard-stop").start()
    if ready is not None:
        threading.Thread(target=lambda: (_wait_started(server), ready.set()), daemon=True).start()
    server.run()


def _wait_started(server: Any, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
