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


_KEY: dict = {}


def _gatekeeper():
    """The gatekeeper's signer and trust root (one key for the module)."""
    import tempfile
    from pathlib import Path

    from synthgate.trust.keys import generate_key, load_signer, load_trust_root

    if not _KEY:
        key, trust = generate_key(Path(tempfile.mkdtemp()) / "gk")
        _KEY.update(signer=load_signer(key), trust=load_trust_root(trust))
    return _KEY["signer"], _KEY["trust"]


def _trail():
    c = _Client()
    signer, _ = _gatekeeper()
    for i, action in enumerate(("refused", "signed-override", "guard-reverted"), start=1):
        by = None if action == "guard-reverted" else signer  # the guard holds no key
        assert audit.append(c, "m", "3", action, "rita (gatekeeper)", f"2026-12-01T10:0{i}:00Z", f"detail {i}",
                            by)[0] == i
    return c


def _status(tags):
    return [(c.n, c.status) for c in audit.verify("m", "3", tags, _gatekeeper()[1])]


def test_a_written_trail_verifies():
    tags = _trail().tags
    assert _status(tags) == [(1, "ok"), (2, "ok"), (3, "unsigned (the guard's record)")]
    assert tags["audit.1.prev"] == audit.GENESIS and tags["audit.2.prev"] == tags["audit.1.hash"]
    assert _status(tags) != [(c.n, c.status) for c in audit.verify("m", "4", tags, _gatekeeper()[1])]  # bound


def test_an_entry_written_by_hand_with_a_valid_chain_hash_is_not_signed():
    """Issue #33, attack 6: a pipeline account writes an override entry whose chain hash verifies."""
    tags = _trail().tags
    fields = {"action": "signed-override", "user": "admin (gatekeeper)", "time": "t", "detail": "by hand"}
    forged = {**tags, **{f"audit.4.{k}": v for k, v in fields.items()}, "audit.4.prev": tags["audit.3.hash"]}
    forged["audit.4.hash"] = audit.entry_hash("m", "3", 4, tags["audit.3.hash"], fields)
    assert _status(forged)[-1] == (4, "is not signed by the gatekeeper (written by hand?)")
    assert not audit.verify("m", "3", forged, _gatekeeper()[1])[-1].ok
    forged["audit.4.sig"] = tags["audit.2.sig"]  # another entry's signature
    assert _status(forged)[-1] == (4, "carries the signature of another entry")
    no_trust = audit.verify("m", "3", tags, None)
    assert "no trust root" in no_trust[0].status and not no_trust[0].ok


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
    assert _status(forged)[1] == (2, "carries the signature of another entry")
    assert _status(forged)[2][1].startswith("does not chain to entry 2")
    by_hand = {**tags, "audit.4.action": "promoted", "audit.4.user": "x", "audit.4.time": "t", "audit.4.detail": "d"}
    assert _status(by_hand)[-1] == (4, "has no hash (written by hand?)")
    assert not audit.verify("m", "3", by_hand, _gatekeeper()[1])[-1].ok


def test_entries_before_the_chain_are_named_as_such():
    old = {"audit.1.action": "promoted", "audit.1.user": "u", "audit.1.time": "t", "audit.1.detail": "d"}
    c = _Client()
    c.tags = dict(old)
    audit.append(c, "m", "3", "refused", "u", "2026-12-01T10:00:00Z", "d2", _gatekeeper()[0])
    assert _status(c.tags) == [(1, "before the chain"), (2, "ok")]
    assert all(x.ok for x in audit.verify("m", "3", c.tags, _gatekeeper()[1]))


def test_approvable_fails_closed(monkeypatch):
    """May a version hold a protected alias: only with a verified release attestation and records that
    verify; any error means no."""
    from types import SimpleNamespace

    from synthgate.errors import SynthgateError
    from synthgate.registry import registry as reg
    from synthgate.registry import verify

    release = SimpleNamespace(predicate={"verdict": "passed", "policy_hash": "a" * 64})
    monkeypatch.setattr(reg, "release_of", lambda c, n, v: release)
    monkeypatch.setattr(verify, "verify_version", lambda c, n, v, registry_pin=True: ({}, {}))
    assert verify.approvable(object(), "m", "3") == (True, "signed release (gate passed)")
    ok, why = verify.approvable(object(), "m", "3", policy_hash="b" * 64)
    assert not ok and "not the required bbbbbbbbbbbbbbbb" in why

    def broken(client, name, version, registry_pin=True):
        raise AttributeError("'list' object has no attribute 'get'")

    monkeypatch.setattr(verify, "verify_version", broken)
    ok, why = verify.approvable(object(), "m", "3")
    assert not ok and why.startswith("cannot be verified (AttributeError")

    def unsigned(c, n, v):
        raise SynthgateError("m version 3: release attestation: no signed attestation")

    monkeypatch.setattr(reg, "release_of", unsigned)
    assert verify.approvable(object(), "m", "3") == (False, "m version 3: release attestation: no signed attestation")


def test_the_gatekeepers_record_shows_a_removed_newest_entry_or_a_replaced_one():
    """The chain cannot show that its newest entry was deleted: the gatekeeper's record of the entries it
    signed can (the guard's unsigned entry 3 is not in it)."""
    tags = _trail().tags
    record = [{"n": n, "hash": tags[f"audit.{n}.hash"], "action": tags[f"audit.{n}.action"]} for n in (1, 2)]
    assert all(c.ok for c in audit.check_record(audit.verify("m", "3", tags, _gatekeeper()[1]), record))
    cut = {k: v for k, v in tags.items() if not k.startswith(("audit.2.", "audit.3."))}
    assert all(c.ok for c in audit.verify("m", "3", cut, _gatekeeper()[1]))  # the chain alone: nothing shows
    got = audit.check_record(audit.verify("m", "3", cut, _gatekeeper()[1]), record)
    assert [(c.n, c.status) for c in got if not c.ok] == [
        (2, "was signed by the gatekeeper (signed-override) and is gone (removed after it was written)")]
    # the trail's entry 2 chains and is signed, but the gatekeeper signed another entry as number 2 (two writers
    # took the same number, or a genuinely signed entry of another trail was copied in)
    record[1]["hash"] = "f" * 64
    got = audit.check_record(audit.verify("m", "3", tags, _gatekeeper()[1]), record)
    assert [c.status for c in got if not c.ok] == [
        "is not the entry the gatekeeper signed as number 2 (signed-override): replaced"]
