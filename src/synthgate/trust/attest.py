"""Signed statements: in-toto Statement v1 payloads in DSSE envelopes (securesystemslib), signed by
the gatekeeper's key and verified against the trust root (:mod:`.keys`).

Predicate types (``predicateType``):

==============  ==============================================================================
release         a model version passed its gate under the pinned policy (or an owner overrode it):
                subject ``NAME/VERSION`` with the weights' sha256; the evaluation, gate record,
                policy, samples and dataset hashes; the verdict; who asked; when
dataset         a published dataset: subject ``dataset:NAME/VERSION`` with the sha256 of its file
                list (:func:`files_root`); the model version and its release attestation's digest,
                the image-level content hash, the per-name serial (rollback)
revocation      a model version or a dataset version withdrawn, with the reason and who asked
policy          a model's pinned policy (hash and text), set by an owner
==============  ==============================================================================

Every check names what failed: a malformed or truncated envelope, a wrong payload or predicate
type, a signature by no trusted key or by a revoked key, a statement signed in the future (clock
skew beyond :data:`MAX_SKEW_S`), a subject that is another model, version or digest.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from synthgate.errors import SynthgateError
from synthgate.trust.keys import TrustRoot

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
_BASE = "https://synthgate.dev/attestation"
RELEASE, DATASET, REVOCATION, POLICY = (f"{_BASE}/{k}/v1" for k in ("release", "dataset", "revocation", "policy"))
#: A statement dated further than this in the future (by the verifier's clock) is refused.
MAX_SKEW_S = 300.0


class AttestationInvalid(SynthgateError):
    """A signed statement is missing, malformed, not signed by a trusted key, or not about this thing."""

    exit_code = 1


@dataclass
class Verified:
    """A statement whose signature verified: its subject, predicate and the key that signed it."""

    statement: dict[str, Any]
    keyid: str
    envelope_sha256: str

    @property
    def predicate(self) -> dict[str, Any]:
        return self.statement["predicate"]

    @property
    def subject(self) -> dict[str, Any]:
        return self.statement["subject"][0]


def statement(predicate_type: str, subject_name: str, digest: str, predicate: dict[str, Any]) -> dict[str, Any]:
    return {"_type": STATEMENT_TYPE, "subject": [{"name": subject_name, "digest": {"sha256": digest}}],
            "predicateType": predicate_type, "predicate": predicate}


def sign(stmt: dict[str, Any], signer: Any) -> dict[str, Any]:
    """The DSSE envelope (as a dict) of ``stmt`` signed by ``signer``."""
    from securesystemslib.dsse import Envelope

    payload = json.dumps(stmt, sort_keys=True, separators=(",", ":")).encode()
    env = Envelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
    env.sign(signer)
    return env.to_dict()


def envelope_digest(envelope: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse_time(value: Any) -> datetime:
    t = datetime.fromisoformat(str(value))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def open_envelope(envelope: Any, trust: TrustRoot, predicate_type: str, what: str,
                  now: datetime | None = None) -> Verified:
    """Verify ``envelope`` (a dict, or its JSON text or bytes) against ``trust`` and return its statement;
    :class:`AttestationInvalid` naming ``what`` and the failure otherwise."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError

    hint = "do not use it; ask the gatekeeper's operators (the release may have been forged or damaged)"
    if envelope is None or envelope == "":
        raise AttestationInvalid(f"{what}: no signed attestation", hint="a release exists only once the gatekeeper "
                                 "signed it (`synthgate promote` asks it)")
    try:
        if isinstance(envelope, bytes | str):
            envelope = json.loads(envelope)
        envelope = copy.deepcopy(dict(envelope))
        env = Envelope.from_dict(copy.deepcopy(envelope))  # from_dict pops keys from the dicts it is given
    except Exception as e:
        raise AttestationInvalid(f"{what}: the attestation is malformed or truncated ({type(e).__name__})",
                                 hint=hint) from None
    if env.payload_type != PAYLOAD_TYPE:
        raise AttestationInvalid(f"{what}: payload type {env.payload_type!r}, expected {PAYLOAD_TYPE!r}", hint=hint)
    if not env.signatures:
        raise AttestationInvalid(f"{what}: the attestation carries no signature", hint=hint)
    revoked = [k for k in env.signatures if k in trust.revoked]
    if revoked and not any(k in trust.keyids and k not in trust.revoked for k in env.signatures):
        raise AttestationInvalid(f"{what}: signed with key {revoked[0][:16]}, which the trust root {trust.path} "
                                 "revokes", hint=hint)
    try:
        accepted = env.verify(trust.active(), 1)
    except VerificationError:
        raise AttestationInvalid(
            f"{what}: its signature does not verify against the gatekeeper's public key(s) in {trust.path} "
            f"(signed by {', '.join(k[:16] for k in env.signatures)}; trusted {', '.join(k[:16] for k in trust.keyids)})",
            hint=hint) from None
    try:
        stmt = json.loads(env.payload)
        ok = (stmt.get("_type") == STATEMENT_TYPE and isinstance(stmt.get("subject"), list) and stmt["subject"]
              and isinstance(stmt.get("predicate"), dict))
    except Exception:
        ok = False
    if not ok:
        raise AttestationInvalid(f"{what}: the signed payload is not an in-toto statement", hint=hint)
    if stmt.get("predicateType") != predicate_type:
        raise AttestationInvalid(f"{what}: the attestation is a {stmt.get('predicateType')!r} statement, not a "
                                 f"{predicate_type!r} one", hint=hint)
    try:
        signed_at = parse_time(stmt["predicate"]["signed_at"])
    except Exception:
        raise AttestationInvalid(f"{what}: the attestation has no valid signing time", hint=hint) from None
    now = now or datetime.now(UTC)
    if (signed_at - now).total_seconds() > MAX_SKEW_S:
        raise AttestationInvalid(f"{what}: signed at {signed_at.isoformat()}, in the future by this machine's clock "
                                 f"({now.isoformat()}; more than {MAX_SKEW_S:.0f} s of clock skew)",
                                 hint="check the clocks of this machine and the gatekeeper (NTP)")
    return Verified(stmt, next(iter(accepted)), envelope_digest(dict(envelope)))


def files_root(files: list[dict[str, Any]]) -> str:
    """sha256 over a dataset's file list (path, size, sha256 of each, sorted by path): what a dataset
    attestation signs, so that the signature covers every byte through the files' hashes."""
    lines = [f"{f['path']}\t{int(f['size'])}\t{f['sha256']}" for f in sorted(files, key=lambda f: f["path"])]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ----------------------------------------------------------------------------------------- releases
def release_subject(model: str, version: str) -> str:
    return f"{model}/{version}"


def verify_release(envelope: Any, trust: TrustRoot, model: str, version: str, weights_sha256: str | None = None,
                   now: datetime | None = None) -> Verified:
    """The release attestation of ``model`` version ``version``, verified: signed by a trusted key, for
    exactly this model and version and (when given) these weights."""
    what = f"{model} version {version}"
    v = open_envelope(envelope, trust, RELEASE, f"{what}: release attestation", now)
    p, s = v.predicate, v.subject
    if s.get("name") != release_subject(model, version) or p.get("model") != model or str(p.get("version")) != str(version):
        raise AttestationInvalid(
            f"{what}: the release attestation is for {p.get('model')} version {p.get('version')}, not for {model} "
            f"version {version} (an attestation of another version presented for this one)",
            hint="each version needs its own release from the gatekeeper")
    signed_weights = (s.get("digest") or {}).get("sha256")
    if weights_sha256 is not None and signed_weights != weights_sha256:
        raise AttestationInvalid(
            f"{what}: the weights hash to {weights_sha256[:16]}..., but the release attestation signed weights "
            f"{str(signed_weights)[:16]}... (the weights were swapped after signing)",
            hint="load only the weights the gatekeeper signed")
    if p.get("verdict") not in ("passed", "override"):
        raise AttestationInvalid(f"{what}: the attestation's verdict is {p.get('verdict')!r}: not a release")
    if p.get("verdict") == "override" and not str((p.get("override") or {}).get("reason") or "").strip():
        raise AttestationInvalid(f"{what}: an override attestation without a reason")
    return v


def check_revocations(revocations: list[Any], trust: TrustRoot, subject: str, what: str) -> None:
    """Refuse ``subject`` (``NAME/VERSION`` or ``dataset:NAME/VERSION``) when a trusted revocation names it.
    Revocations that do not verify are ignored (anyone could write one; only signed ones count)."""
    for r in revocations:
        try:
            v = open_envelope(r, trust, REVOCATION, "revocation")
        except AttestationInvalid:
            continue
        if v.subject.get("name") == subject:
            p = v.predicate
            raise AttestationInvalid(f"{what} was revoked at {p.get('signed_at')} by {p.get('requested_by')}: "
                                     f"{p.get('reason')}", hint="use a release that is not revoked")
