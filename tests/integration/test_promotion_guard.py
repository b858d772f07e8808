"""The promotion guard against a real MLflow server (basic-auth, registry webhooks on SQLite, as `make
mlflow` runs it): an alias moved by hand onto a version that failed its gate is moved back within
seconds (the delay is measured), a gate tag edited on the approved version takes the alias off it,
forged, stale, unsigned and replayed deliveries change nothing, an alias set while the guard was down
is caught by the start-up sweep, and a recorded override is respected."""

import json
import secrets
import threading
import time
import uuid

import pytest
import requests

from synthgate.registry.client import connect
from synthgate.registry.guard import Guard, register_webhook, serve, sign
from synthgate.registry.registry import promote, register
from synthgate.registry.server import free_port
from tests.integration.test_registry import _gated, model_dir  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NAME = "guarded-generator"


def _wait(predicate, timeout: float = 30.0) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return time.time() - t0
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


def _start(guard: Guard, port: int) -> tuple[threading.Thread, threading.Event]:
    ready, stop = threading.Event(), threading.Event()
    t = threading.Thread(target=serve, args=(guard, "127.0.0.1", port, 3600.0, ready, stop), daemon=True)
    t.start()
    assert ready.wait(60), "the guard did not start"
    return t, stop


def _holder(client) -> str | None:
    return (client.get_registered_model(NAME).aliases or {}).get("approved")


def _delivery(secret: str, data: dict, age: float = 0.0, delivery_id: str | None = None) -> tuple[bytes, dict]:
    body = json.dumps({"entity": "model_version_alias", "action": "created", "timestamp": "now", "data": data})
    did, ts = delivery_id or str(uuid.uuid4()), str(int(time.time() - age))
    return body.encode(), {"Content-Type": "application/json", "X-MLflow-Delivery-Id": did,
                           "X-MLflow-Timestamp": ts, "X-MLflow-Signature": sign(secret, did, ts, body)}


def test_the_guard_holds_the_gate_in_mlflow(mlflow_server, model_dir, tmp_path, cli):  # noqa: F811
    uri = mlflow_server
    client = connect(uri)
    good = register(model_dir, *_gated(tmp_path, "good"), uri=uri, name=NAME)
    bad = register(model_dir, *_gated(tmp_path, "bad", copies=3), uri=uri, name=NAME)
    assert good.gate_passed and not bad.gate_passed
    promote(NAME, good.version, uri=uri)
    secret = secrets.token_hex(16)
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhook"
    guard = Guard(uri, secret, tmp_path / "guard.db")
    thread, stop = _start(guard, port)
    try:
        register_webhook(uri, url, secret)
        time.sleep(1.5)  # the server's webhook cache (MLFLOW_WEBHOOK_CACHE_TTL=1 on the local server)

        # an alias moved by hand (MlflowClient, the MLflow UI) onto the failed version: moved back
        client.set_registered_model_alias(NAME, "approved", bad.version)
        delay = _wait(lambda: _holder(client) == good.version)
        print(f"guard reverted the alias in {delay:.2f} s")
        assert delay < 15
        def reverted_entries() -> list[str]:
            tags = client.get_model_version(NAME, bad.version).tags
            return [k.rsplit(".", 1)[0] for k, v in tags.items() if k.endswith(".action") and v == "guard-reverted"
                    and f"{k.rsplit('.', 1)[0]}.hash" in tags]  # the audit entry follows the revert

        _wait(lambda: len(reverted_entries()) == 1)
        (entry,) = reverted_entries()
        tags = client.get_model_version(NAME, bad.version).tags
        assert f"moved back to version {good.version}" in tags[f"{entry}.detail"]
        assert "release attestation: no signed attestation" in tags[f"{entry}.detail"]
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert f'synthgate_guard_reverts_total{{alias="approved",model="{NAME}"}} 1.0' in metrics

        # deliveries that are not MLflow's, or not fresh, change nothing
        data = {"name": NAME, "alias": "approved", "version": good.version}
        body, headers = _delivery(secret, data)
        forged = {**headers, "X-MLflow-Signature": sign("another-secret-of-16", headers["X-MLflow-Delivery-Id"],
                                                          headers["X-MLflow-Timestamp"], body.decode())}
        r = requests.post(url, data=body, headers=forged, timeout=10)
        assert r.status_code == 401 and "signature does not verify" in r.json()["refused"]
        r = requests.post(url, data=body.replace(b'"approved"', b'"approvee"'), headers=headers, timeout=10)
        assert r.status_code == 401  # a payload changed after signing
        r = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 401 and "unsigned" in r.json()["refused"]
        stale_body, stale = _delivery(secret, data, age=3600)
        r = requests.post(url, data=stale_body, headers=stale, timeout=10)
        assert r.status_code == 401 and "stale delivery" in r.json()["refused"]
        assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 200
        r = requests.post(url, data=body, headers=headers, timeout=10)
        assert r.status_code == 409 and "a replay" in r.json()["refused"]
        assert _holder(client) == good.version

        # a gate tag edited on the approved version (a reviewer has EDIT): the alias comes off it
        client.set_model_version_tag(NAME, good.version, "gate.passed", "false")
        _wait(lambda: _holder(client) is None)
        client.set_model_version_tag(NAME, good.version, "gate.passed", "true")
        promote(NAME, good.version, uri=uri)
        _wait(lambda: guard.metrics.sweeps._value.get() >= 1 and _holder(client) == good.version)
    finally:
        stop.set()
        thread.join(15)

    # set while the guard was down: the start-up sweep of the next guard catches it
    client.set_registered_model_alias(NAME, "approved", bad.version)
    time.sleep(1.0)
    assert _holder(client) == bad.version
    guard2 = Guard(uri, secret, tmp_path / "guard.db")
    thread, stop = _start(guard2, port)
    try:
        assert _holder(client) == good.version  # the sweep ran before the guard reported ready
        assert guard2.metrics.reverts.labels(NAME, "approved")._value.get() == 1

        # a failed version promoted with a recorded override stays
        promote(NAME, bad.version, uri=uri, force=True, reason="data access committee, decision 7")
        time.sleep(3.0)
        assert _holder(client) == bad.version
    finally:
        stop.set()
        thread.join(15)

    for w in client.list_webhooks():  # the session's server serves other tests: no deliveries to a stopped guard
        if w.name == "synthgate-guard":
            client.delete_webhook(w.webhook_id)

    # every promotion, refusal, override and guard action is a hash-chained entry; an edit shows
    code, out, err = cli("audit", NAME, "--tracking-uri", uri)
    assert code == 0, err
    for action in ("signed-passed", "guard-reverted", "signed-override"):
        assert action in out
    tags = client.get_model_version(NAME, bad.version).tags
    n = next(k.split(".")[1] for k, v in tags.items() if k.endswith(".action") and v == "guard-reverted")
    client.set_model_version_tag(NAME, bad.version, f"audit.{n}.detail", "nothing happened here")
    code, _, err = cli("audit", NAME, "--tracking-uri", uri)
    assert code != 0 and f"version {bad.version} entry {n} changed after it was written" in err, err
