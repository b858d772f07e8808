"""Signed statements (issue #33): keys, DSSE envelopes, release and revocation checks, each refusal
with a message that names what failed."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from synthgate.trust import attest
from synthgate.trust.keys import (
    KeyError_,
    check_pair,
    generate_key,
    load_signer,
    load_trust_root,
    write_trust_root,
)

W = "a" * 64


@pytest.fixture
def gk(tmp_path):
    key, trust = generate_key(tmp_path / "gk")
    return load_signer(key), load_trust_root(trust)


def _release(signer, model="m", version="3", weights=W, verdict="passed", when=None, **extra):
    p = {"model": model, "version": version, "verdict": verdict, "signed_at": (when or datetime.now(UTC)).isoformat(),
         **extra}
    return attest.sign(attest.statement(attest.RELEASE, attest.release_subject(model, version), weights, p), signer)


def test_a_release_verifies_for_its_model_version_and_weights(gk):
    signer, trust = gk
    v = attest.verify_release(_release(signer), trust, "m", "3", W)
    assert v.predicate["verdict"] == "passed" and v.keyid == signer.public_key.keyid
    assert os.stat(trust.path.parent / "gatekeeper.key").st_mode & 0o777 == 0o600


@pytest.mark.parametrize("model,version,weights,needle", [
    ("m", "4", W, "is for m version 3, not for m version 4"),       # A presented for B
    ("other", "3", W, "is for m version 3, not for other version 3"),  # another model
    ("m", "3", "b" * 64, "the weights were swapped after signing"),
])
def test_a_release_is_refused_for_anything_else(gk, model, version, weights, needle):
    signer, trust = gk
    with pytest.raises(attest.AttestationInvalid, match="") as e:
        attest.verify_release(_release(signer), trust, model, version, weights)
    assert needle in e.value.message


def test_forged_malformed_truncated_and_missing_attestations_are_refused(gk, tmp_path):
    signer, trust = gk
    env = _release(signer)
    text = json.dumps(env)
    for bad, needle in [(None, "no signed attestation"), (text[: len(text) // 2], "malformed or truncated"),
                        ("{}", "malformed or truncated"), ({**env, "payloadType": "text/plain"}, "payload type")]:
        with pytest.raises(attest.AttestationInvalid) as e:
            attest.verify_release(bad, trust, "m", "3")
        assert needle in e.value.message
    # a statement edited after signing (the payload re-encoded with another verdict)
    stmt = json.loads(__import__("base64").b64decode(env["payload"]))
    stmt["predicate"]["verdict"] = "passed"
    stmt["subject"][0]["name"] = "m/4"
    forged = {**env, "payload": attest.b64(json.dumps(stmt).encode())}
    with pytest.raises(attest.AttestationInvalid) as e:
        attest.verify_release(forged, trust, "m", "4")
    assert "does not verify against the gatekeeper's public key" in e.value.message
    # signed by another key (an attacker's own gatekeeper)
    other_key, _ = generate_key(tmp_path / "attacker")
    with pytest.raises(attest.AttestationInvalid) as e:
        attest.verify_release(_release(load_signer(other_key)), trust, "m", "3")
    assert "does not verify" in e.value.message


def test_a_revoked_key_verifies_nothing(gk):
    signer, trust = gk
    env = _release(signer)
    trust.revoked.add(signer.public_key.keyid)
    with pytest.raises(attest.AttestationInvalid) as e:
        attest.verify_release(env, trust, "m", "3")
    assert "which the trust root" in e.value.message and "revokes" in e.value.message
    with pytest.raises(KeyError_, match="is revoked"):
        check_pair(signer, trust)


def test_clock_skew_beyond_the_tolerance_is_refused(gk):
    signer, trust = gk
    later = datetime.now(UTC) + timedelta(seconds=attest.MAX_SKEW_S + 60)
    with pytest.raises(attest.AttestationInvalid) as e:
        attest.verify_release(_release(signer, when=later), trust, "m", "3")
    assert "in the future" in e.value.message and "clock skew" in e.value.message
    attest.verify_release(_release(signer, when=datetime.now(UTC) + timedelta(seconds=60)), trust, "m", "3")


def test_a_statement_of_another_type_is_not_a_release(gk):
    signer, trust = gk
    rev = attest.sign(attest.statement(attest.REVOCATION, "m/3", "0" * 64,
                                       {"signed_at": datetime.now(UTC).isoformat()}), signer)
    with pytest.raises(attest.AttestationInvalid, match="not a 'https://synthgate.dev/attestation/release/v1' one"):
        attest.verify_release(rev, trust, "m", "3")
    with pytest.raises(attest.AttestationInvalid, match="verdict is 'failed'"):
        attest.verify_release(_release(signer, verdict="failed"), trust, "m", "3")
    with pytest.raises(attest.AttestationInvalid, match="override attestation without a reason"):
        attest.verify_release(_release(signer, verdict="override"), trust, "m", "3")


def test_signed_revocations_count_and_unsigned_ones_do_not(gk, tmp_path):
    signer, trust = gk
    p = {"reason": "a copy found", "requested_by": "rev", "signed_at": datetime.now(UTC).isoformat()}
    rev = attest.sign(attest.statement(attest.REVOCATION, "m/3", "0" * 64, p), signer)
    attest.check_revocations([rev], trust, "m/4", "m version 4")  # another version: not revoked
    with pytest.raises(attest.AttestationInvalid, match="was revoked at .* by rev: a copy found"):
        attest.check_revocations([rev], trust, "m/3", "m version 3")
    fake_key, _ = generate_key(tmp_path / "fake")
    fake = attest.sign(attest.statement(attest.REVOCATION, "m/5", "0" * 64, p), load_signer(fake_key))
    attest.check_revocations([fake, "garbage"], trust, "m/5", "m version 5")  # forged ones are ignored


def test_key_and_trust_root_bad_input(tmp_path, gk):
    signer, trust = gk
    with pytest.raises(KeyError_, match="not found"):
        load_signer(tmp_path / "missing.key")
    loose = tmp_path / "loose.key"
    loose.write_bytes((trust.path.parent / "gatekeeper.key").read_bytes())
    loose.chmod(0o644)
    with pytest.raises(KeyError_, match="may be read by other users"):
        load_signer(loose)
    junk = tmp_path / "junk.key"
    junk.write_text("not a key")
    junk.chmod(0o600)
    with pytest.raises(KeyError_, match="cannot be read as a PEM private key"):
        load_signer(junk)
    with pytest.raises(KeyError_, match="exists: a gatekeeper key is never overwritten"):
        generate_key(trust.path.parent)
    bad = tmp_path / "trust.json"
    bad.write_text("{\"format\": \"x\"}")
    with pytest.raises(KeyError_, match="is malformed"):
        load_trust_root(bad)
    other_key, other_trust = generate_key(tmp_path / "other")
    with pytest.raises(KeyError_, match="does not match the trust root"):
        check_pair(load_signer(other_key), trust)
    data = json.loads(other_trust.read_text())
    data["keys"][0]["keyid"] = signer.public_key.keyid  # an entry borrowing the real key's id
    other_trust.write_text(json.dumps(data))
    with pytest.raises(KeyError_, match="does not belong to its public key"):
        load_trust_root(other_trust)
    write_trust_root(trust, tmp_path / "copy.json")
    assert load_trust_root(tmp_path / "copy.json").keyids == trust.keyids


def test_no_trust_root_configured_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.delenv("SYNTHGATE_TRUST_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyError_, match="no trust root") as e:
        load_trust_root()
    assert "SYNTHGATE_TRUST_ROOT" in (e.value.hint or "")


def test_files_root_covers_every_file_whatever_the_order():
    a = [{"path": "a", "size": 1, "sha256": "x"}, {"path": "b", "size": 2, "sha256": "y"}]
    assert attest.files_root(a) == attest.files_root(a[::-1])
    assert attest.files_root(a) != attest.files_root([a[0], {**a[1], "sha256": "z"}])


def test_gatekeeper_cli_init_and_bad_keys(cli, tmp_path):
    """`synthgate gatekeeper init` makes a 0600 key and its trust root once; `serve` refuses a missing key,
    a key another trust root does not hold, and a broken policy, each by name and without a traceback."""
    home = tmp_path / "gk"
    code, out, err = cli("gatekeeper", "init", "--home", str(home))
    assert code == 0 and "trust.json" in out, err
    code, _, err = cli("gatekeeper", "init", "--home", str(home))
    assert code != 0 and "is never overwritten" in err and "Traceback" not in err
    code, _, err = cli("gatekeeper", "serve", "--home", str(tmp_path / "empty"))
    assert code != 0 and "gatekeeper key" in err and "not found" in err
    other = tmp_path / "other"
    cli("gatekeeper", "init", "--home", str(other))
    code, _, err = cli("gatekeeper", "serve", "--home", str(home), "--trust-root", str(other / "trust.json"))
    assert code != 0 and "does not match the trust root" in err
    bad = tmp_path / "gates.yaml"
    bad.write_text("memorization:\n  no_such_rule: 1\n")
    code, _, err = cli("gatekeeper", "serve", "--home", str(home), "--policy", str(bad))
    assert code != 0 and "no_such_rule" in err and "Traceback" not in err


def test_load_remembers_revocations_it_saw_and_honours_them_offline(gk, monkeypatch, tmp_path):
    """A consumer that once fetched a signed revocation refuses the release later, with the gatekeeper
    unreachable and the version's revocation tag deleted (an owner can delete tags)."""
    from types import SimpleNamespace

    import synthgate.registry.gatekeeper_app as app
    from synthgate.registry.registry import release_of
    from synthgate.trust.seen import seen_revocations

    signer, trust = gk
    monkeypatch.setenv("SYNTHGATE_TRUST_ROOT", str(trust.path))
    rev = attest.sign(attest.statement(attest.REVOCATION, "m/3", "0" * 64, {
        "reason": "a copy found", "requested_by": "rev", "signed_at": datetime.now(UTC).isoformat()}), signer)
    from synthgate.registry.registration import REQUIRED, with_marker

    tags = with_marker({k: "x" for k in REQUIRED}, "k" * 64)  # registered whole (registration.py)
    tags |= {"release.attestation": json.dumps(_release(signer)), "release.revocation": json.dumps(rev)}
    client = SimpleNamespace(get_model_version=lambda n, v: SimpleNamespace(tags=dict(tags)))
    monkeypatch.setattr(app, "revocations", lambda url=None, timeout=10: [rev])  # online once
    with pytest.raises(attest.AttestationInvalid, match="was revoked at .* a copy found"):
        release_of(client, "m", "3")
    assert seen_revocations() == [rev]
    del tags["release.revocation"]  # the tag deleted by hand ...
    monkeypatch.setattr(app, "revocations", lambda url=None, timeout=10: None)  # ... and the gatekeeper unreachable
    with pytest.raises(attest.AttestationInvalid, match="was revoked"):
        release_of(client, "m", "3")
    tags["release.attestation"] = json.dumps(_release(signer, version="4"))
    assert release_of(client, "m", "4").predicate["version"] == "4"  # another version is not revoked


def test_a_gatekeeper_with_stores_reads_staged_packages_from_those_only(tmp_path):
    """`serve --store`: a caller cannot point the gatekeeper at its own disk or at another bucket; without the
    option (a local gatekeeper) any store is read, as before."""
    from synthgate.registry.gatekeeper import Gatekeeper, GatekeeperRefused

    home = tmp_path / "gk"
    generate_key(home)
    published = tmp_path / "published"
    (published / "ds").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", published / "link")
    gk = Gatekeeper.open(home, None, "http://127.0.0.1:1", stores=("s3://synthgate-datasets", str(published)))
    for ok in ("s3://synthgate-datasets", "s3://synthgate-datasets/", "s3://synthgate-datasets/v1/x",
               str(published), str(published / "ds")):
        gk.check_store(ok)
    gk.check_store(f"file://{published}/ds")
    for bad in ("s3://synthgate-datasets-evil/x", "s3://other/synthgate-datasets", str(tmp_path / "outside"),
                str(published / ".." / "outside"), str(published / "link"), "/etc", "file:/etc",
                f"file://{published}/../outside"):
        with pytest.raises(GatekeeperRefused, match="is not one this gatekeeper reads from") as e:
            gk.check_store(bad)
        assert e.value.status == 403 and "--store" in (e.value.hint or "")
    # what the URL parser reads differently from a path, and what is no store at all, is refused outright
    for bad, why in (("s3:\t//other-bucket/x", "control characters"), ("s3://synthgate-datasets/../x", "without . or .."),
                     ("gs://bucket/x", "unsupported scheme"), ("", "empty")):
        with pytest.raises(GatekeeperRefused, match=why):
            gk.check_store(bad)
    for entry in ("", "s3://"):  # an allow-list entry that would allow everything is refused at start
        with pytest.raises(GatekeeperRefused, match="empty|no . or ..|without . or ..|S3 store"):
            Gatekeeper.open(home, None, "http://127.0.0.1:1", stores=(entry,))
    Gatekeeper.open(home, None, "http://127.0.0.1:1").check_store("/anywhere")  # no --store: any store


def test_the_gatekeeper_reads_only_plain_staged_files_of_the_listed_size(tmp_path):
    """A staged file that is a symbolic link (to / or /dev/zero) or not a regular file is never read."""
    from synthgate.registry.gatekeeper import GatekeeperRefused
    from synthgate.registry.gatekeeper_checks import _plain_file_under

    root = tmp_path / "store"
    (root / "st" / "images").mkdir(parents=True)
    (root / "st" / "images" / "a.npz").write_bytes(b"x" * 10)
    _plain_file_under(root, "st/images/a.npz", 10)
    os.symlink("/dev/zero", root / "st" / "images" / "zero.npz")
    os.symlink("/", root / "st" / "root")
    for key, size in (("st/images/zero.npz", 10), ("st/root/etc/passwd", 10)):
        with pytest.raises(GatekeeperRefused, match="symbolic link"):
            _plain_file_under(root, key, size)
    with pytest.raises(GatekeeperRefused, match="not a plain file of the size"):
        _plain_file_under(root, "st/images/a.npz", 11)
    with pytest.raises(GatekeeperRefused, match="not a plain file"):
        _plain_file_under(root, "st/images", 0)
