"""The gatekeeper's signing key and the consumers' trust root.

The gatekeeper alone holds an Ed25519 private key (PKCS#8 PEM, mode 0600; in the cluster a
Secret). Every consumer verifies with the **trust root**, a small JSON file that reaches them out of
band (a config file, a ConfigMap; never the registry, whose records the people the gate restrains
can write)::

    {"format": "synthgate.trust-root/v1",
     "keys": [{"keyid": "...", "keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": "<hex>"}}],
     "revoked_keys": ["<keyid>", ...]}

Keys are securesystemslib ``SSlibKey`` dictionaries (the format TUF and in-toto use); a key id is
securesystemslib's (sha256 of the canonical key). A revoked key verifies nothing, whatever it signed
and whenever.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthgate.errors import SynthgateError

TRUST_FORMAT = "synthgate.trust-root/v1"
KEY_FILE, TRUST_FILE = "gatekeeper.key", "trust.json"
#: Where a consumer finds the trust root when no path is given: this variable, then the local server's.
TRUST_ENV = "SYNTHGATE_TRUST_ROOT"
LOCAL_TRUST = Path("mlruns") / "gatekeeper" / TRUST_FILE


class KeyError_(SynthgateError):  # noqa: N801 (KeyError is a builtin)
    """A signing key or trust root is missing, unreadable or does not match."""


@dataclass
class TrustRoot:
    """The public keys a consumer accepts signatures from, and the revoked ones."""

    keys: list[Any]  # securesystemslib SSlibKey
    revoked: set[str] = field(default_factory=set)
    path: Path | None = None

    @property
    def keyids(self) -> list[str]:
        return [k.keyid for k in self.keys]

    def active(self) -> list[Any]:
        return [k for k in self.keys if k.keyid not in self.revoked]

    def to_json(self) -> dict[str, Any]:
        return {"format": TRUST_FORMAT, "keys": [{"keyid": k.keyid, **k.to_dict()} for k in self.keys],
                "revoked_keys": sorted(self.revoked)}


def _public_key(private: Any) -> Any:
    from securesystemslib.signer import SSlibKey

    return SSlibKey.from_crypto(private.public_key())


def generate_key(directory: Path) -> tuple[Path, Path]:
    """A new Ed25519 key in ``directory`` (``gatekeeper.key``, 0600) and its trust root
    (``trust.json``). Refuses to overwrite a key: a new key invalidates every signature."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory = Path(directory)
    key_path, trust_path = directory / KEY_FILE, directory / TRUST_FILE
    if key_path.exists():
        raise KeyError_(f"{key_path} exists: a gatekeeper key is never overwritten (every release signed with it "
                        "would stop verifying)", hint="rotate keys by adding the new public key to the trust root "
                                                      "and revoking the old one")
    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    write_trust_root(TrustRoot([_public_key(private)]), trust_path)
    return key_path, trust_path


def write_trust_root(root: TrustRoot, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(root.to_json(), indent=2) + "\n")
    tmp.replace(path)


def load_signer(path: Path) -> Any:
    """The gatekeeper's signer (securesystemslib ``CryptoSigner``) from its PEM key file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from securesystemslib.signer import CryptoSigner

    path = Path(path)
    hint = "create one with `synthgate gatekeeper init` (locally) or mount the gatekeeper Secret (k8s/)"
    if not path.is_file():
        raise KeyError_(f"gatekeeper key {path} not found", hint=hint)
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise KeyError_(f"gatekeeper key {path} may be read by other users (mode {path.stat().st_mode & 0o777:o})",
                        hint=f"chmod 600 {path}")
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise KeyError_(f"gatekeeper key {path} cannot be read as a PEM private key ({type(e).__name__})",
                        hint=hint) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyError_(f"gatekeeper key {path} is a {type(private).__name__}, not an Ed25519 key", hint=hint)
    return CryptoSigner(private, _public_key(private))


def trust_root_path(explicit: Path | str | None = None) -> Path:
    """The trust root to verify with: ``explicit``, else ``$SYNTHGATE_TRUST_ROOT``, else the local
    server's ``mlruns/gatekeeper/trust.json`` when it exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get(TRUST_ENV):
        return Path(os.environ[TRUST_ENV])
    if LOCAL_TRUST.is_file():
        return LOCAL_TRUST
    raise KeyError_("no trust root: synthgate verifies every release against the gatekeeper's public key, and none "
                    "is configured", hint=f"set {TRUST_ENV} to the gatekeeper's trust.json (from your operator, or "
                                          "the ConfigMap synthgate-trust-root in the cluster), or pass --trust-root")


def load_trust_root(path: Path | str | None = None) -> TrustRoot:
    """The trust root from ``path`` (see :func:`trust_root_path`); ``$SYNTHGATE_TRUST_ROOT`` may also hold the
    JSON itself (a Kubernetes ConfigMap key given to a pipeline step as an environment variable)."""
    from securesystemslib.signer import SSlibKey

    inline = os.environ.get(TRUST_ENV, "") if path is None else ""
    p = Path(f"${TRUST_ENV}") if inline.lstrip().startswith("{") else trust_root_path(path)
    if not inline.lstrip().startswith("{") and not p.is_file():
        raise KeyError_(f"trust root {p} not found", hint=f"set {TRUST_ENV} or --trust-root to the gatekeeper's "
                                                          "trust.json")
    try:
        data = json.loads(inline if inline.lstrip().startswith("{") else p.read_text())
        if not isinstance(data, dict) or data.get("format") != TRUST_FORMAT:
            raise ValueError(f"format is {data.get('format') if isinstance(data, dict) else type(data).__name__!r}")
        keys = [SSlibKey.from_dict(k["keyid"], {x: v for x, v in k.items() if x != "keyid"}) for k in data["keys"]]
        revoked = {str(k) for k in data.get("revoked_keys") or []}
    except Exception as e:
        raise KeyError_(f"trust root {p} is malformed ({type(e).__name__}: {str(e)[:120]})",
                        hint=f"expected a {TRUST_FORMAT} file as `synthgate gatekeeper init` writes it") from None
    from securesystemslib.signer._key import compute_default_keyid

    for k in keys:  # a key id must be the key's own: an entry cannot borrow another key's id
        if compute_default_keyid(k.keytype, k.scheme, k.keyval) != k.keyid:
            raise KeyError_(f"trust root {p}: key id {k.keyid[:16]} does not belong to its public key")
    if not keys:
        raise KeyError_(f"trust root {p} holds no public key")
    return TrustRoot(keys, revoked, p)


def check_pair(signer: Any, root: TrustRoot) -> None:
    """Refuse a gatekeeper whose private key's public half is not an active key of ``root``."""
    kid = signer.public_key.keyid
    if kid in root.revoked:
        raise KeyError_(f"the gatekeeper's key {kid[:16]} is revoked in {root.path}",
                        hint="start the gatekeeper with its current key")
    if kid not in root.keyids:
        raise KeyError_(f"the gatekeeper's public key {kid[:16]} does not match the trust root {root.path} "
                        f"(keys {', '.join(k[:16] for k in root.keyids)})",
                        hint="give the gatekeeper the key whose public half consumers trust, or update the trust root")
