"""The audit trail of a model version: every promotion, refusal, override and guard action, as
``audit.N.*`` tags on the version (readable in the MLflow UI), chained by hashes so that an edited,
removed or re-ordered entry shows.

Entry N holds ``action``, ``user``, ``time``, ``detail``, ``prev`` (the hash of entry N-1, or 64
zeros for the first) and ``hash``: sha256 of the canonical JSON of the model name, version, N,
``prev`` and the four fields, written last. :func:`verify` recomputes every hash and link.

The gatekeeper **signs** the entries it writes (releases, refusals, overrides, pins, revocations):
``audit.N.sig`` is a DSSE envelope (:mod:`synthgate.trust.attest`) over the entry's hash, so writing
an entry that passes needs its key. Anyone with EDIT on the model can set tags, so the chain alone
catches a quiet edit (a changed detail, user or time, a deleted or swapped entry); the signature
catches an entry written by hand, even one with a valid chain hash. The promotion guard has no key:
its ``guard-reverted`` entries are reported as unsigned, and pass. Entries written before the chain
existed (no ``hash`` tag) are reported as such.

Neither the chain nor the signatures can show that the *newest* entries were deleted (what is left is a valid
chain). The gatekeeper therefore keeps its own record of every entry it signed (number, hash, action) and signs
it on request, with the caller's nonce (:data:`AUDIT_RECORD`); :func:`check_record` compares the trail with it,
so that a deleted refusal, override or revocation entry shows even when it was the last one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

FIELDS = ("action", "user", "time", "detail")
#: Actions written by a party without the key (the promotion guard): unsigned, reported, not a failure.
UNSIGNED_ACTIONS = ("guard-reverted",)
#: Predicate type of a signed audit entry.
AUDIT = "https://synthgate.dev/attestation/audit-entry/v1"
#: Predicate type of the gatekeeper's signed record of the entries it wrote on one version.
AUDIT_RECORD = "https://synthgate.dev/attestation/audit-record/v1"
GENESIS = "0" * 64
_KEY = re.compile(r"audit\.(\d+)\.(\w+)")


def entry_hash(name: str, version: str, n: int, prev: str, fields: dict[str, str]) -> str:
    body = {"model": name, "version": str(version), "n": int(n), "prev": prev, **{k: fields.get(k, "") for k in FIELDS}}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def entries(tags: dict[str, str]) -> dict[int, dict[str, str]]:
    """The version's ``audit.N.*`` tags as {N: {field: value}}."""
    out: dict[int, dict[str, str]] = {}
    for k, v in tags.items():
        m = _KEY.fullmatch(k)
        if m:
            out.setdefault(int(m.group(1)), {})[m.group(2)] = v
    return dict(sorted(out.items()))


def append(client: Any, name: str, version: str, action: str, user: str, time: str, detail: str,
           signer: Any = None) -> tuple[int, str]:
    """Write entry N+1 on the version (its hash, then its signature with ``signer``, last); return (N+1, its hash)."""
    got = entries(client.get_model_version(name, version).tags)
    n = 1 + max(got, default=0)
    prev = got[n - 1].get("hash", GENESIS) if n > 1 else GENESIS
    fields = {"action": action, "user": user, "time": time, "detail": detail}
    for k, v in {**fields, "prev": prev}.items():
        client.set_model_version_tag(name, version, f"audit.{n}.{k}", v)
    digest = entry_hash(name, version, n, prev, fields)
    client.set_model_version_tag(name, version, f"audit.{n}.hash", digest)
    if signer is not None:
        from synthgate.trust.attest import sign, statement

        env = sign(statement(AUDIT, f"{name}/{version}#{n}", digest, {"action": action, "signed_at": time}), signer)
        client.set_model_version_tag(name, version, f"audit.{n}.sig", json.dumps(env, separators=(",", ":")))
    return n, digest


@dataclass
class Checked:
    n: int
    fields: dict[str, str]
    status: str  # "ok", "before the chain", "unsigned (the guard's record)", or what is wrong

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "before the chain", "unsigned (the guard's record)")


def _signature(name: str, version: str, n: int, e: dict[str, str], trust: Any) -> str:
    """The status of entry ``n``'s signature: "ok", or what is wrong with it."""
    from synthgate.trust.attest import AttestationInvalid, open_envelope

    if not e.get("sig"):
        if e.get("action") in UNSIGNED_ACTIONS:
            return "unsigned (the guard's record)"
        return "is not signed by the gatekeeper (written by hand?)"
    if trust is None:
        return "its signature cannot be checked: no trust root (set SYNTHGATE_TRUST_ROOT)"
    try:
        v = open_envelope(e["sig"], trust, AUDIT, f"audit entry {n}")
    except AttestationInvalid as err:
        return err.message
    if v.subject.get("name") != f"{name}/{version}#{n}" or (v.subject.get("digest") or {}).get("sha256") != e["hash"]:
        return "carries the signature of another entry"
    return "ok"


def verify(name: str, version: str, tags: dict[str, str], trust: Any = "auto") -> list[Checked]:
    """Every entry of the version with its status: its hash recomputed, its link to the entry before, its
    signature against ``trust`` (the trust root; "auto" loads the configured one, None checks none)."""
    if trust == "auto":
        from synthgate.trust.keys import KeyError_, load_trust_root

        try:
            trust = load_trust_root()
        except KeyError_:
            trust = None
    got = entries(tags)
    out: list[Checked] = []
    last, prev_hash, chained = 0, GENESIS, False
    for n, e in got.items():
        for missing in range(last + 1, n):
            out.append(Checked(missing, {}, "is missing (removed after it was written?)"))
            prev_hash = "missing"
        last = n
        if "hash" not in e:
            out.append(Checked(n, e, "has no hash (written by hand?)" if chained else "before the chain"))
            prev_hash = "unchained"
            continue
        if entry_hash(name, version, n, e.get("prev", ""), e) != e["hash"]:
            status = "changed after it was written (its hash does not match its fields)"
        elif prev_hash == "unchained" and not chained:
            status = _signature(name, version, n, e, trust)  # the first chained entry after pre-chain ones
        elif e.get("prev") != prev_hash:
            status = (f"does not chain to entry {n - 1} (an entry was replaced or removed)" if n > 1
                      else "is the first entry but links to an earlier one (entries were removed)")
        else:
            status = _signature(name, version, n, e, trust)
        chained = True
        out.append(Checked(n, e, status))
        prev_hash = e["hash"]
    return out


def check_record(checked: list[Checked], record: list[dict[str, Any]]) -> list[Checked]:
    """The trail (:func:`verify`'s result) against the gatekeeper's record of the entries it signed
    (``[{"n", "hash", "action"}]``): an entry it signed that is gone, even the newest, or that is not the
    entry it signed under that number, is named. Returns the entries, the missing ones added, by number."""
    by_n = {c.n: c for c in checked}
    out = list(checked)
    for r in record:
        n, action = int(r["n"]), str(r.get("action", ""))
        c = by_n.get(n)
        if c is None:
            out.append(Checked(n, {"action": action}, f"was signed by the gatekeeper ({action}) and is gone "
                                                       "(removed after it was written)"))
        elif c.ok and c.fields.get("hash") != r.get("hash"):
            c.status = f"is not the entry the gatekeeper signed as number {n} ({action}): replaced"
    return sorted(out, key=lambda c: c.n)
