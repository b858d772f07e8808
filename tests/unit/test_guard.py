"""The promotion guard's logic without a server: deliveries are verified (signature, freshness,
novelty, across restarts), and a protected alias on a version that may not hold it is moved back
to the last approved holder, or removed."""

import json

import pytest

from synthgate.registry import guard as g
from synthgate.registry import verify


class _RM:
    def __init__(self, name, aliases):
        self.name, self.aliases = name, aliases


class _Client:
    """The few MlflowClient calls the guard makes, over a dict of aliases."""

    def __init__(self):
        self.aliases = {"m": {}}
        self.tags = {}
        self.webhook = True

    def get_registered_model(self, name):
        return _RM(name, dict(self.aliases[name]))

    def search_registered_models(self, max_results=100, page_token=None):
        """Pages of one model (the guard must follow the page tokens)."""
        names = sorted(self.aliases)
        i = int(page_token or 0)

        class Page(list):
            token = str(i + 1) if i + 1 < len(names) else None

        return Page([_RM(names[i], dict(self.aliases[names[i]]))]) if names else Page()

    def list_webhooks(self):
        class W:
            name = "synthgate-guard"

            class status:  # noqa: N801
                @staticmethod
                def is_active():
                    return True

        return [W()] if self.webhook else []

    def set_registered_model_alias(self, name, alias, version):
        self.aliases[name][alias] = version

    def delete_registered_model_alias(self, name, alias):
        self.aliases[name].pop(alias)

    def get_model_version(self, name, version):
        class MV:
            tags = dict(self.tags.get(version, {}))

        return MV()

    def set_model_version_tag(self, name, version, key, value):
        self.tags.setdefault(version, {})[key] = value


@pytest.fixture
def setup(tmp_path, monkeypatch):
    client = _Client()
    passed = {"1": True, "2": True, "3": False}
    def approvable(c, n, v, policy_hash=None):
        if passed[v] is None:
            raise AttributeError("'list' object has no attribute 'get'")  # what the real one now turns into a no
        return passed[v], "ok" if passed[v] else "failed its gate (x)"

    monkeypatch.setattr(verify, "approvable", approvable)
    now = [1_000_000.0]
    guard = g.Guard("http://mlflow", "s" * 32, tmp_path / "guard.db", connect=lambda uri: client, clock=lambda: now[0])
    return guard, client, passed, now


def _signed(secret, body, did="d1", ts="1000000"):
    return {"X-MLflow-Signature": g.sign(secret, did, ts, body), "X-MLflow-Timestamp": ts, "X-MLflow-Delivery-Id": did}


def test_deliveries_are_verified(setup, tmp_path):
    guard, *_ , now = setup
    body = json.dumps({"entity": "model_version_alias", "action": "created", "data": {"name": "m"}})
    assert guard.verify(_signed(guard.secret, body), body.encode())["data"] == {"name": "m"}
    with pytest.raises(g.DeliveryRefused, match="a replay") as e:
        guard.verify(_signed(guard.secret, body), body.encode())
    assert e.value.status == 409
    # the seen ids survive a restart of the guard
    again = g.Guard("http://mlflow", guard.secret, tmp_path / "guard.db", clock=guard.clock)
    with pytest.raises(g.DeliveryRefused, match="a replay"):
        again.verify(_signed(guard.secret, body), body.encode())
    with pytest.raises(g.DeliveryRefused, match="signature does not verify"):
        guard.verify(_signed("another-secret-0123", body, "d2"), body.encode())
    with pytest.raises(g.DeliveryRefused, match="signature does not verify"):
        guard.verify(_signed(guard.secret, body, "d3"), body.replace('"m"', '"n"').encode())
    with pytest.raises(g.DeliveryRefused, match="unsigned"):
        guard.verify({}, body.encode())
    with pytest.raises(g.DeliveryRefused, match="stale delivery"):
        guard.verify(_signed(guard.secret, body, "d4", str(int(now[0]) - g.MAX_AGE_S - 1)), body.encode())
    counts = {s.labels["result"]: s.value for s in guard.metrics.deliveries.collect()[0].samples
              if s.name.endswith("_total")}
    assert counts == {"accepted": 1, "replayed": 1, "forged": 2, "unsigned": 1, "stale": 1}


def test_a_failed_version_loses_the_alias_to_the_last_approved_holder(setup):
    guard, client, passed, _ = setup
    client.aliases["m"]["approved"] = "1"
    assert guard.sweep() == []  # "1" may hold it: remembered
    client.aliases["m"]["approved"] = "3"
    event = {"entity": "model_version_alias", "action": "created", "data": {"name": "m", "alias": "approved",
                                                                           "version": "3"}}
    (done,) = guard.handle(event)
    assert client.aliases["m"]["approved"] == "1" and "moved back to version 1" in done
    assert client.tags["3"]["audit.1.action"] == "guard-reverted" and "failed its gate" in client.tags["3"]["audit.1.detail"]
    assert guard.metrics.reverts.labels("m", "approved")._value.get() == 1
    # an alias that is not protected, or already moved on, is left alone
    client.aliases["m"]["staging"] = "3"
    assert guard.handle({**event, "data": {"name": "m", "alias": "staging", "version": "3"}}) == []
    assert guard.handle(event) == []
    # no approved holder left (the earlier one failed since): the alias is removed
    passed["1"] = False
    client.aliases["m"]["approved"] = "3"
    (done,) = guard.sweep()
    assert "approved" not in client.aliases["m"] and "removed" in done


def test_a_gate_tag_edit_on_the_approved_version_is_checked(setup):
    guard, client, passed, _ = setup
    client.aliases["m"]["approved"] = "2"
    tag = {"entity": "model_version_tag", "action": "set", "data": {"name": "m", "version": "2", "key": "gate.passed",
                                                                     "value": "true"}}
    assert guard.handle(tag) == []
    passed["2"] = False  # the edit broke its record
    assert guard.handle({**tag, "data": {**tag["data"], "key": "audit.3.action"}}) == []  # not a watched tag
    (done,) = guard.handle(tag)
    assert "approved" not in client.aliases["m"] and "version 2" in done


def test_one_bad_model_does_not_stop_the_sweep_and_every_page_is_swept(setup):
    guard, client, passed, _ = setup
    guard.webhook_name = "synthgate-guard"
    client.aliases = {"0000-x": {"approved": "4"}, "m": {"approved": "3"}}
    passed["4"] = None  # checking it raises
    (done,) = guard.sweep()  # "m" is on the second page, after the model that cannot be checked
    assert done.startswith("m@approved") and "approved" not in client.aliases["m"]
    assert guard.metrics.webhook_active._value.get() == 1.0 and guard.metrics.last_revert._value.get() > 0
    client.webhook = False
    guard.sweep()
    assert guard.metrics.webhook_active._value.get() == 0.0


def test_a_delivery_that_could_not_be_handled_may_be_retried(setup):
    guard, *_ = setup
    body = json.dumps({"entity": "x", "action": "y", "data": {}})
    event = guard.verify(_signed(guard.secret, body, "r1"), body.encode())
    guard.forget(event["_delivery_id"])
    assert guard.verify(_signed(guard.secret, body, "r1"), body.encode())["entity"] == "x"  # not a replay
    with pytest.raises(g.DeliveryRefused, match="not a JSON object"):
        guard.verify(_signed(guard.secret, "[1]", "r2"), b"[1]")
    with pytest.raises(g.DeliveryRefused, match="signature does not verify"):  # non-ASCII: refused, not a crash
        guard.verify({**_signed(guard.secret, body, "r3"), "X-MLflow-Signature": "v1,\u00e9"}, body.encode())


def test_a_short_secret_is_refused(tmp_path):
    (tmp_path / "s").write_text("short\n")
    with pytest.raises(Exception, match="at least 16 characters"):
        g.read_secret(tmp_path / "s")


def test_a_flood_of_events_on_one_alias_is_merged_and_no_change_is_lost(setup, monkeypatch):
    """Issue 17: 40 tag events at once on the approved alias cost a few checks, not 40; a bad version
    set while a check runs is still caught (the waiting check reads the alias's current holder)."""
    import threading
    import time

    guard, client, passed, _ = setup
    client.aliases["m"]["approved"] = "1"
    guard.sweep()
    calls, gate = [], threading.Event()
    slow = verify.approvable

    def approvable(c, n, v, policy_hash=None):
        calls.append(v)
        gate.wait(5)
        return slow(c, n, v, policy_hash)

    monkeypatch.setattr(verify, "approvable", approvable)
    client.aliases["m"]["approved"] = "3"  # a failed version, then a flood of tag events about it
    tag = {"entity": "model_version_tag", "action": "set", "data": {"name": "m", "version": "3", "key": "gate.passed"}}
    threads = [threading.Thread(target=guard.handle, args=(tag,)) for _ in range(40)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    gate.set()
    for t in threads:
        t.join(10)
    assert client.aliases["m"]["approved"] == "1"
    assert len(calls) <= 4 and guard.metrics.coalesced._value.get() >= 36, (len(calls), calls)
    # no lost update: while a check of version 1 runs, the alias moves to 3; that delivery's check
    # waits for the running one and then sees 3
    gate.clear()
    calls.clear()
    first = threading.Thread(target=guard.check, args=("m", "approved", "1"))
    first.start()
    while not calls:
        time.sleep(0.01)
    client.aliases["m"]["approved"] = "3"
    second = threading.Thread(target=guard.handle, args=({"entity": "model_version_alias", "action": "created",
                                                          "data": {"name": "m", "alias": "approved", "version": "3"}},))
    second.start()
    time.sleep(0.2)
    gate.set()
    first.join(10)
    second.join(10)
    assert client.aliases["m"]["approved"] == "1" and "3" in calls
