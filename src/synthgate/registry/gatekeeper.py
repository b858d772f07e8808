"""The gatekeeper: the one party that holds the signing key, and signs a release only after it has
recomputed the verdict itself.

It trusts no record that the people it restrains can write. For a release of ``MODEL`` version ``V``:

1. **who asks** is MLflow's authentication (the caller's own login, checked against the server's
   ``users/current``), and their permission on the model is read as the admin: EDIT to release a
   version that passed, MANAGE (the owner role) or admin to override a failure;
2. the **policy** is the gatekeeper's own: the model's pin (set only through the gatekeeper, by an
   owner, and signed) or the gatekeeper's default policy file; the registry's tags are not read;
3. the **records** are the version's registered gate record and evaluation, which must hash to the
   version's tags and to the copies bundled in the model (:func:`.verify.verify_version`), and the
   **verdict** is recomputed from the evaluation's numbers under that policy (which rules and which
   planted kinds are ruled is the policy's to say, never the evaluation's);
4. the **weights** are downloaded from the registry and hashed; the evaluation must be of exactly
   these weights (its recorded sha256) and of this model's training dataset;
5. it signs a release attestation (:mod:`synthgate.trust.attest`) binding model, version, weights,
   evaluation, gate record, policy, samples (content hash and every image's hash), dataset, verdict,
   time and caller; stores it on the version (tag ``release.attestation``) and moves the alias for
   the MLflow UI. A consumer trusts the signature, not the alias.

Datasets: the gatekeeper reads a staged package from the store itself, checks every file against
the manifest, decodes every image (shards and PNGs) and signs the file list only if every image is
one it attested and none was flagged as a copy. A dataset name belongs to the first model that
released under it. Every signed statement is kept in its SQLite state; a change survives a restart
or happens not at all (one transaction per request).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthgate.errors import SynthgateError
from synthgate.trust import attest
from synthgate.trust.keys import TrustRoot, check_pair, load_signer, load_trust_root
from synthgate.utils import utc_now

RELEASE_TAG, REVOCATION_TAG, PIN_TAG = "release.attestation", "release.revocation", "gate.pinned_policy"
RANK = {"NO_PERMISSIONS": 0, "READ": 1, "USE": 2, "EDIT": 3, "MANAGE": 4}


class GatekeeperRefused(SynthgateError):
    """The gatekeeper will not sign: who asked, or what they asked for, does not qualify."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, status: int = 403) -> None:
        super().__init__(message, hint)
        self.status = status


@dataclass(frozen=True)
class Caller:
    user: str
    admin: bool


@dataclass
class Metrics:
    """The gatekeeper's Prometheus metrics, in their own registry (``/metrics``): what it signed and refused,
    by kind, and when it last signed an override or a policy pin (the alerts ``SynthgateReleaseOverridden``
    and ``SynthgatePolicyPinChanged`` fire on those)."""

    registry: Any = None
    signed: Any = None
    refused: Any = None
    last_override: Any = None
    last_pin: Any = None

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.signed = Counter("synthgate_gatekeeper_signed", "Statements the gatekeeper signed, by kind (release, "
                              "override, dataset, pin, revocation)", ["kind"], registry=self.registry)
        self.refused = Counter("synthgate_gatekeeper_refused", "Requests the gatekeeper refused, by kind",
                               ["kind"], registry=self.registry)
        self.last_override = Gauge("synthgate_gatekeeper_last_override_timestamp_seconds", "When the gatekeeper last "
                                   "signed an override of a failed gate (0: never since it started)",
                                   registry=self.registry)
        self.last_pin = Gauge("synthgate_gatekeeper_last_pin_timestamp_seconds", "When an owner last pinned a "
                              "model's policy through the gatekeeper (0: never since it started)",
                              registry=self.registry)


@dataclass
class Gatekeeper:
    home: Path
    signer: Any
    trust: TrustRoot
    policy_file: Path | None  # None: the built-in defaults
    tracking_uri: str
    stores: tuple[str, ...] = ()  # the only stores it reads staged packages from; empty: any (a local gatekeeper)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    metrics: Metrics = field(default_factory=Metrics)

    @classmethod
    def open(cls, home: Path, policy_file: Path | None, tracking_uri: str, key: Path | None = None,
             trust: Path | None = None, stores: tuple[str, ...] = ()) -> Gatekeeper:
        from synthgate.gates.policy import load_policy
        from synthgate.registry.gatekeeper_checks import store_key

        home = Path(home)
        signer = load_signer(key or home / "gatekeeper.key")
        root = load_trust_root(trust or home / "trust.json")
        check_pair(signer, root)
        load_policy(Path(policy_file) if policy_file else None)  # refuse a broken policy at start
        gk = cls(home, signer, root, Path(policy_file) if policy_file else None, tracking_uri,
                 tuple(store_key(x) for x in stores))
        with gk._db() as db:
            db.executescript("""
              CREATE TABLE IF NOT EXISTS pins (model TEXT PRIMARY KEY, policy_hash TEXT, policy TEXT, envelope TEXT);
              CREATE TABLE IF NOT EXISTS releases (model TEXT, version TEXT, envelope TEXT, signed_at TEXT,
                                                   PRIMARY KEY (model, version));
              CREATE TABLE IF NOT EXISTS datasets (name TEXT PRIMARY KEY, model TEXT, serial INTEGER);
              CREATE TABLE IF NOT EXISTS revocations (subject TEXT PRIMARY KEY, envelope TEXT);
              CREATE TABLE IF NOT EXISTS audit (model TEXT, version TEXT, n INTEGER, hash TEXT, action TEXT,
                                                PRIMARY KEY (model, version, n));
              CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT, user TEXT,
                                              action TEXT, subject TEXT, detail TEXT, envelope_sha256 TEXT);""")
        return gk

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.home / "gatekeeper.db", timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    # ------------------------------------------------------------------------------ identity
    def authenticate(self, user: str | None, password: str | None) -> Caller:
        """The caller as MLflow knows them: their own credentials against ``users/current``."""
        import requests

        if not user or not password:
            raise GatekeeperRefused("no credentials: the gatekeeper acts only for an MLflow user",
                                    hint="set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD", status=401)
        try:
            r = requests.get(self.tracking_uri.rstrip("/") + "/api/2.0/mlflow/users/current", auth=(user, password),
                             timeout=15)
        except requests.RequestException as e:
            raise GatekeeperRefused(f"MLflow at {self.tracking_uri} is unreachable ({type(e).__name__}); "
                                    "nothing signed", status=503) from None
        if r.status_code == 401:
            raise GatekeeperRefused(f"MLflow does not accept the credentials of {user!r}", status=401)
        if r.status_code != 200:
            raise GatekeeperRefused(f"MLflow answered {r.status_code} to the identity check of {user!r}; "
                                    "nothing signed (is its basic-auth app on?)", status=503)
        u = (r.json() or {}).get("user") or {}
        if u.get("username") != user:
            raise GatekeeperRefused(f"MLflow names the caller {u.get('username')!r}, not {user!r}", status=401)
        return Caller(user, bool(u.get("is_admin")))

    def permission(self, caller: Caller, model: str) -> str:
        from synthgate.registry.access import RESOURCE, _request

        if caller.admin:
            return "MANAGE"
        got = _request(self.tracking_uri, "GET", "/api/3.0/mlflow/users/permissions/get",
                       params={"username": caller.user, "resource_type": RESOURCE, "resource_id": model})
        return str(got.get("permission", "NO_PERMISSIONS"))

    def require(self, caller: Caller, model: str, need: str, what: str) -> None:
        have = self.permission(caller, model)
        if RANK.get(have, 0) < RANK[need]:
            role = "owner" if need == "MANAGE" else "reviewer"
            raise GatekeeperRefused(f"{caller.user} has {have} on {model}; {what} needs {need} (the {role} role)",
                                    hint=f"an admin grants it: `synthgate access grant {model} --user {caller.user} "
                                         f"--role {role}`")

    # ------------------------------------------------------------------------------ policy
    def policy_for(self, model: str) -> tuple[Any, str]:
        """(policy, its text) pinned for ``model`` through the gatekeeper, else the default policy."""
        from synthgate.gates.policy import load_policy

        with self._db() as db:
            row = db.execute("SELECT policy FROM pins WHERE model = ?", (model,)).fetchone()
        if row:
            return policy_from_text(row[0]), row[0]
        return load_policy(self.policy_file), self.policy_file.read_text() if self.policy_file else ""

    def policy_note(self, model: str, policy: Any) -> str:
        """The policy a decision on ``model`` was made under (``policy``, the very object it decided with), for the
        audit trail: its hash and, when it is the model's pin, who pinned it when. Never raises: an entry that
        cannot name the pinner still names the policy."""
        digest = policy.policy_hash()
        try:
            with self._db() as db:
                row = db.execute("SELECT policy_hash, envelope FROM pins WHERE model = ?", (model,)).fetchone()
            if row and row[0] == digest:
                body = attest.open_envelope(row[1], self.trust, attest.POLICY, f"the pin of {model}").predicate
                return f"policy {digest[:16]} pinned by {body.get('requested_by')} at {body.get('signed_at')}"
        except Exception as e:  # noqa: BLE001 (the note is informative; the decision stands)
            return f"policy {digest[:16]} (its pin statement could not be read: {type(e).__name__})"
        return f"policy {digest[:16]} (the gatekeeper's default; no pin)"

    def pin_policy(self, caller: Caller, model: str, policy_text: str) -> dict[str, Any]:
        """Pin ``policy_text`` (a gates.yaml) for ``model``: owners only; signed, logged, and written into the audit
        trail of every version of the model (a reviewer reading one version's trail sees the policy change)."""
        self.require(caller, model, "MANAGE", "pinning a policy")
        try:
            self._client().get_registered_model(model)
        except Exception:
            raise GatekeeperRefused(f"no registered model {model!r}", hint="list them with `synthgate models`",
                                    status=404) from None
        digest = policy_from_text(policy_text).policy_hash()
        env = self._sign(attest.POLICY, f"{model}", digest, {"model": model, "policy_hash": digest,
                                                             "policy": policy_text}, caller)
        with self._lock, self._db() as db:
            db.execute("INSERT OR REPLACE INTO pins VALUES (?, ?, ?, ?)", (model, digest, policy_text, json.dumps(env)))
            self._log(db, caller, "pin-policy", model, f"policy {digest[:16]}", env)
        self._tag_model(model, PIN_TAG, json.dumps(env))
        from synthgate.registry.client import versions_of

        client = self._client()
        for mv in versions_of(client, model):
            self._append(client, model, str(mv.version), "policy-pinned", caller,
                         f"policy {digest[:16]} pinned for every version; pin attestation "
                         f"{attest.envelope_digest(env)[:16]}")
        self.metrics.signed.labels("pin").inc()
        self.metrics.last_pin.set_to_current_time()
        return env

    # ------------------------------------------------------------------------------ signing
    def _sign(self, ptype: str, subject: str, digest: str, predicate: dict[str, Any], caller: Caller) -> dict[str, Any]:
        body = {**predicate, "signed_at": utc_now(), "requested_by": caller.user,
                "gatekeeper_key": self.signer.public_key.keyid}
        return attest.sign(attest.statement(ptype, subject, digest, body), self.signer)

    def _log(self, db: sqlite3.Connection, caller: Caller, action: str, subject: str, detail: str,
             env: dict[str, Any] | None) -> None:
        db.execute("INSERT INTO log (time, user, action, subject, detail, envelope_sha256) VALUES (?, ?, ?, ?, ?, ?)",
                   (utc_now(), caller.user, action, subject, detail, attest.envelope_digest(env) if env else None))

    def _append(self, client: Any, model: str, version: str, action: str, caller: Caller, detail: str) -> None:
        """A signed entry on the version's audit trail, kept in this gatekeeper's own record too (one writer at a
        time: two of its entries never take the same number)."""
        from synthgate.registry.audit import append

        with self._lock:
            n, digest = append(client, model, version, action, f"{caller.user} (gatekeeper)", utc_now(), detail,
                               self.signer)
            with self._db() as db:
                db.execute("INSERT OR REPLACE INTO audit VALUES (?, ?, ?, ?, ?)", (model, str(version), n, digest, action))

    def audit_record(self, caller: Caller, model: str, version: str, nonce: str) -> dict[str, Any]:
        """The entries this gatekeeper signed on ``model`` ``version`` (number, hash, action), signed with the
        caller's ``nonce`` (a replayed older record does not verify); any user who may read the model."""
        from synthgate.registry.audit import AUDIT_RECORD

        self.require(caller, model, "READ", "reading the audit record")
        if not nonce or len(nonce) > 128:
            raise GatekeeperRefused("an audit record request needs a nonce (at most 128 characters)", status=400)
        with self._db() as db:
            rows = db.execute("SELECT n, hash, action FROM audit WHERE model = ? AND version = ? ORDER BY n",
                              (model, str(version))).fetchall()
        entries = [{"n": int(n), "hash": h, "action": a} for n, h, a in rows]
        return self._sign(AUDIT_RECORD, attest.release_subject(model, str(version)),
                          entries[-1]["hash"] if entries else "0" * 64, {"entries": entries, "nonce": nonce}, caller)

    def _client(self) -> Any:
        from synthgate.registry.client import connect

        return connect(self.tracking_uri)

    def _tag_model(self, model: str, key: str, value: str) -> None:
        self._client().set_registered_model_tag(model, key, value)

    def release(self, caller: Caller, model: str, version: str, alias: str = "approved",
                override_reason: str | None = None) -> dict[str, Any]:
        """Sign ``model`` version ``version``'s release (see the module docstring) and move ``alias``."""
        from synthgate.registry.gatekeeper_checks import evidence

        version = str(version)
        override = bool(override_reason and override_reason.strip())
        self.require(caller, model, "MANAGE" if override else "EDIT", "an override" if override else "a release")
        policy, _ = self.policy_for(model)
        note = self.policy_note(model, policy)  # the policy this decision is made under, read once, before it
        client = self._client()
        try:
            ev = evidence(client, self.tracking_uri, model, version, policy)
        except GatekeeperRefused as e:
            with contextlib.suppress(Exception):  # the refusal stands even if auditing fails (no such version)
                self._append(client, model, version, "refused", caller, f"{e.message}; {note}")
            raise
        if not ev.decision.passed and not override:
            failing = [f"{r.rule} ({r.reason})" for r in ev.decision.rules if not r.passed]
            with self._lock, self._db() as db:
                self._log(db, caller, "refused", f"{model}/{version}", "; ".join(failing), None)
            self._append(client, model, version, "refused", caller, "gate failed: " + "; ".join(failing) + f"; {note}")
            raise GatekeeperRefused(
                f"{model} version {version} failed its gate under the pinned policy {policy.policy_hash()[:16]}; "
                "not released. Failing rules:\n  " + "\n  ".join(failing),
                hint="improve the generator; an owner may override with a reason (`synthgate promote --force --reason`)",
                status=409)
        predicate = {**ev.predicate(), "verdict": "passed" if ev.decision.passed else "override",
                     "override": {"reason": override_reason.strip(), "user": caller.user} if override and
                     not ev.decision.passed else None, "alias": alias}
        env = self._sign(attest.RELEASE, attest.release_subject(model, version), ev.weights_sha256, predicate, caller)
        with self._lock, self._db() as db:
            db.execute("INSERT OR REPLACE INTO releases VALUES (?, ?, ?, ?)",
                       (model, version, json.dumps(env), predicate.get("signed_at", utc_now())))
            self._log(db, caller, predicate["verdict"], f"{model}/{version}",
                      override_reason or "gate passed", env)
        client.set_model_version_tag(model, version, RELEASE_TAG, json.dumps(env))
        if predicate["verdict"] == "override":  # shown in the MLflow UI and `synthgate models`; nothing reads them
            for k, v in {"reason": override_reason or "", "user": caller.user, "time": utc_now()}.items():
                client.set_model_version_tag(model, version, f"override.{k}", v)
            from synthgate.registry.registry import with_override

            client.update_model_version(model, version, description=with_override(
                client.get_model_version(model, version).description or "", caller.user, utc_now(), override_reason or ""))
        self._append(client, model, version, "signed-" + predicate["verdict"], caller,
                     (f"override: {override_reason}; " if predicate["verdict"] == "override" else "")
                     + f"alias {alias}; attestation {attest.envelope_digest(env)[:16]}; {note}")
        client.set_registered_model_alias(model, alias, version)
        self.metrics.signed.labels("release" if predicate["verdict"] == "passed" else "override").inc()
        if predicate["verdict"] == "override":
            self.metrics.last_override.set_to_current_time()
        return env

    def release_envelope(self, model: str, version: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("SELECT envelope FROM releases WHERE model = ? AND version = ?",
                             (model, str(version))).fetchone()
        return json.loads(row[0]) if row else None

    def owner_of(self, subject: str) -> str:
        """The registered model a revocation subject belongs to: ``MODEL/VERSION`` -> MODEL;
        ``dataset:NAME/VERSION`` -> the model NAME is bound to (refused when no signed dataset has it)."""
        if subject.startswith("dataset:"):
            name = subject.removeprefix("dataset:").rpartition("/")[0]
            with self._db() as db:
                row = db.execute("SELECT model FROM datasets WHERE name = ?", (name,)).fetchone()
            if not row:
                raise GatekeeperRefused(f"no dataset {name!r} was signed by this gatekeeper: nothing to revoke", status=404)
            return str(row[0])
        model, _, version = subject.rpartition("/")
        if not model or not version:
            raise GatekeeperRefused(f"revocation subject {subject!r} is neither MODEL/VERSION nor dataset:NAME/VERSION",
                                    status=400)
        return model

    def revoke(self, caller: Caller, subject: str, model: str | None, reason: str) -> dict[str, Any]:
        """A signed revocation of ``subject`` (``MODEL/VERSION`` or ``dataset:NAME/VERSION``); reviewers
        and owners of the model it belongs to may revoke (it withdraws, it never grants). The model is
        derived from the subject, never taken from the request."""
        if not reason.strip():
            raise GatekeeperRefused("a revocation needs a reason", status=400)
        owner = self.owner_of(subject)
        if model and model != owner:
            raise GatekeeperRefused(f"{subject} belongs to model {owner!r}, not {model!r}", status=403)
        model = owner
        self.require(caller, model, "EDIT", "a revocation")
        env = self._sign(attest.REVOCATION, subject, "0" * 64, {"model": model, "reason": reason.strip()}, caller)
        with self._lock, self._db() as db:
            db.execute("INSERT OR REPLACE INTO revocations VALUES (?, ?)", (subject, json.dumps(env)))
            self._log(db, caller, "revoke", subject, reason, env)
        if not subject.startswith("dataset:"):
            m, _, v = subject.rpartition("/")
            client = self._client()
            client.set_model_version_tag(m, v, REVOCATION_TAG, json.dumps(env))
            self._append(client, m, v, "revoked", caller, reason.strip())
            aliases = client.get_registered_model(m).aliases or {}
            for a, held in aliases.items():
                if str(held) == v:
                    client.delete_registered_model_alias(m, a)
        self.metrics.signed.labels("revocation").inc()
        return env

    def revocations(self) -> list[dict[str, Any]]:
        with self._db() as db:
            return [json.loads(r[0]) for r in db.execute("SELECT envelope FROM revocations")]

    def check_store(self, store: str) -> None:
        """A gatekeeper started with ``--store`` reads staged packages from those stores (or folders under them)
        only: a caller cannot point it at its own disk or at another bucket its credentials reach."""
        from synthgate.registry.gatekeeper_checks import store_key

        key = store_key(store)
        if self.stores and not any(key == s or key.startswith(s + "/") for s in self.stores):
            raise GatekeeperRefused(f"store {store!r} is not one this gatekeeper reads from ({', '.join(self.stores)})",
                                    hint="publish to the store the gatekeeper serves (its --store, "
                                         "SYNTHGATE_GATEKEEPER_STORES)")

    def sign_dataset(self, caller: Caller, store: str, staging: str, manifest: dict[str, Any]) -> dict[str, Any]:
        """Sign a staged dataset package (see the module docstring)."""
        from synthgate.registry.gatekeeper_checks import check_package, complete

        model = str((manifest.get("model") or {}).get("name") or "")
        mversion = str((manifest.get("model") or {}).get("version") or "")
        name, version = str(manifest.get("name") or ""), str(manifest.get("version") or "")
        self.require(caller, model, "EDIT", "publishing")
        env = self.release_envelope(model, mversion)
        if env is None:
            raise GatekeeperRefused(f"{model} version {mversion} has no release signed by this gatekeeper; "
                                    "nothing it did not release is published", status=409)
        rel = attest.verify_release(env, self.trust, model, mversion)
        attest.check_revocations(self.revocations(), self.trust, attest.release_subject(model, mversion),
                                 f"{model} version {mversion}")
        complete(self._client().get_model_version(model, mversion))  # whatever was signed before
        with self._db() as db:
            row = db.execute("SELECT model, serial FROM datasets WHERE name = ?", (name,)).fetchone()
        if row and row[0] != model:
            raise GatekeeperRefused(f"dataset name {name!r} belongs to model {row[0]!r} (its first signed release); "
                                    f"{model!r} may not publish under it", hint="publish under another --name")
        self.check_store(store)
        content = check_package(store, staging, manifest, rel.predicate, self.tracking_uri)
        with self._lock, self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT model, serial FROM datasets WHERE name = ?", (name,)).fetchone()
            if row and row[0] != model:
                db.execute("ROLLBACK")
                raise GatekeeperRefused(f"dataset name {name!r} belongs to model {row[0]!r}")
            serial = (row[1] if row else 0) + 1
            predicate = {"name": name, "version": version, "model": model, "model_version": mversion,
                         "release_attestation_sha256": rel.envelope_sha256, "verdict": rel.predicate["verdict"],
                         "override": rel.predicate.get("override"), "content": content, "serial": serial}
            out = self._sign(attest.DATASET, f"dataset:{name}/{version}", attest.files_root(manifest["files"]),
                             predicate, caller)
            db.execute("INSERT OR REPLACE INTO datasets VALUES (?, ?, ?)", (name, model, serial))
            self._log(db, caller, "sign-dataset", f"dataset:{name}/{version}", f"serial {serial}", out)
            db.execute("COMMIT")
        self.metrics.signed.labels("dataset").inc()
        return out


def policy_from_text(text: str) -> Any:
    """A gates.yaml given as text ('' : the built-in defaults), parsed and checked like a file."""
    from synthgate.gates.policy import load_policy

    if not text.strip():
        return load_policy(None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gates.yaml"
        path.write_text(text)
        return load_policy(path)
