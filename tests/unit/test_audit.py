"""The audit trail's hash chain: entries written by synthgate verify; an edited, removed or
replaced entry, or one written by hand, shows, naming the entry."""

from synthgate.registry import audit


class _Client:
    def __init__(self):
        self.tags = {}

    def get_model_version(self, name, version):
        client = self

        class MV:
            tags = dict(client.tags)

        return MV()

    def set_model_version_tag(self, name, version, key, value):
        self.tags[key] = value


def _trail():
    c = _Client()
    for i, action in enumerate(("refused", "override", "guard-reverted"), start=1):
        assert audit.append(c, "m", "3", action, "rita (mlflow)", f"2026-12-01T10:0{i}:00Z", f"detail {i}") == i
    return c


def _status(tags):
    return [(c.n, c.status) for c in audit.verify("m", "3", tags)]


def test_a_written_trail_verifies():
    tags = _trail().tags
    assert _status(tags) == [(1, "ok"), (2, "ok"), (3, "ok")]
    assert tags["audit.1.prev"] == audit.GENESIS and tags["audit.2.prev"] == tags["audit.1.hash"]
    assert _status(tags) != [(c.n, c.status) for c in audit.verify("m", "4", tags)]  # bound to the version


def test_an_edit_a_removal_and_a_replacement_show():
    tags = _trail().tags
    edited = {**tags, "audit.2.detail": "approved by the committee"}
    assert _status(edited)[1] == (2, "changed after it was written (its hash does not match its fields)")
    removed = {k: v for k, v in tags.items() if not k.startswith("audit.2.")}
    assert (2, "is missing (removed after it was written?)") in _status(removed)
    assert _status(removed)[-1][1].startswith("does not chain to entry 2")
    # entry 2 replaced by a self-consistent one: its own hash verifies, entry 3 no longer chains to it
    fields = {"action": "promoted", "user": "rita (mlflow)", "time": "x", "detail": "gate passed"}
    forged = {**tags, **{f"audit.2.{k}": v for k, v in fields.items()}}
    forged["audit.2.hash"] = audit.entry_hash("m", "3", 2, tags["audit.2.prev"], fields)
    assert _status(forged)[1] == (2, "ok") and _status(forged)[2][1].startswith("does not chain to entry 2")
    by_hand = {**tags, "audit.4.action": "promoted", "audit.4.user": "x", "audit.4.time": "t", "audit.4.detail": "d"}
    assert _status(by_hand)[-1] == (4, "has no hash (written by hand?)")
    assert not audit.verify("m", "3", by_hand)[-1].ok


def test_entries_before_the_chain_are_named_as_such():
    old = {"audit.1.action": "promoted", "audit.1.user": "u", "audit.1.time": "t", "audit.1.detail": "d"}
    c = _Client()
    c.tags = dict(old)
    audit.append(c, "m", "3", "refused", "u", "t2", "d2")
    assert _status(c.tags) == [(1, "before the chain"), (2, "ok")] and all(x.ok for x in audit.verify("m", "3", c.tags))


def test_an_override_counts_only_with_a_chained_audit_entry(monkeypatch):
    from synthgate.registry import registry

    base = {"override.reason": "committee 7", "gate.sha256": "g" * 64, "override.gate_sha256": "g" * 64}
    forged = {**base, "audit.x.action": "override"}  # named like an audit entry, outside the chain
    assert not registry.has_recorded_override(forged, "m", "3")
    unchained = {**base, "audit.1.action": "override", "audit.1.user": "u", "audit.1.time": "t", "audit.1.detail": "d",
                 "audit.2.action": "refused", "audit.2.user": "u", "audit.2.time": "t", "audit.2.detail": "d",
                 "audit.2.prev": audit.GENESIS}
    unchained["audit.2.hash"] = audit.entry_hash("m", "3", 2, audit.GENESIS, {k: "d" if k == "detail" else "u"
                                                                              for k in audit.FIELDS})
    assert not registry.has_recorded_override(unchained, "m", "3")  # the override entry predates the chain
    c = _Client()
    c.tags = dict(base)
    audit.append(c, "m", "3", "override", "rita (mlflow)", "t", "alias approved despite gate failure: committee 7")
    assert registry.has_recorded_override(c.tags, "m", "3")
    assert not registry.has_recorded_override({**c.tags, "override.gate_sha256": "h" * 64}, "m", "3")  # another record
    assert not registry.has_recorded_override({**c.tags, "audit.1.detail": "edited"}, "m", "3")


def test_approvable_fails_closed(monkeypatch):
    from synthgate.registry import verify as registry

    def broken(client, name, version):
        raise AttributeError("'list' object has no attribute 'get'")

    monkeypatch.setattr(registry, "verify_version", broken)
    ok, why = registry.approvable(object(), "m", "3")
    assert not ok and why.startswith("cannot be verified (AttributeError")
    monkeypatch.setattr(registry, "verify_version", lambda c, n, v: ({"passed": True, "policy_hash": "a" * 64}, {}))
    assert registry.approvable(object(), "m", "3") == (True, "gate passed")
    ok, why = registry.approvable(object(), "m", "3", policy_hash="b" * 64)
    assert not ok and "not the required bbbbbbbbbbbbbbbb" in why
