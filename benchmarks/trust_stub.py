"""A stand-in gatekeeper for the benchmarks: a real Ed25519 key and real signatures, without MLflow.

``local_gatekeeper(tmp)`` makes a key under ``tmp``, points ``SYNTHGATE_TRUST_ROOT`` at its trust root,
and replaces the gatekeeper's HTTP call with one that reads the staged package from the store as the
gatekeeper does (every file's sha256, every shard's images) and signs the dataset statement. What the
real gatekeeper checks beyond that (the release attestation, the attested images) needs a registry and
is what the integration and security tests exercise.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any


class _Everything:
    def __contains__(self, item: object) -> bool:
        return True


def local_gatekeeper(tmp: Path) -> Any:
    import synthgate.registry.gatekeeper_app as app
    from synthgate.registry.gatekeeper_checks import _shard_images, images_root
    from synthgate.stores import open_store
    from synthgate.trust import attest
    from synthgate.trust.keys import generate_key, load_signer

    key, trust = generate_key(Path(tmp) / "gatekeeper")
    signer = load_signer(key)
    os.environ["SYNTHGATE_TRUST_ROOT"] = str(trust)
    os.environ["SYNTHGATE_GATEKEEPER_URL"] = "http://127.0.0.1:9"  # revocations: offline (nothing answers)
    serial = {"n": 0}

    def call(path: str, body: dict[str, Any], url: str | None = None, timeout: float = 600) -> dict[str, Any]:
        assert path == "/v1/datasets", path
        st, manifest = open_store(body["store"]), body["manifest"]
        blobs = {}
        for f in manifest["files"]:
            data = st.get_bytes(f"{body['staging']}/{f['path']}")
            assert hashlib.sha256(data).hexdigest() == f["sha256"]
            blobs[f["path"]] = data
        hashes, labels = _shard_images(blobs, _Everything())  # type: ignore[arg-type]
        serial["n"] += 1
        p = {"name": manifest["name"], "version": manifest["version"], "model": manifest["model"]["name"],
             "model_version": manifest["model"]["version"], "verdict": "passed", "serial": serial["n"],
             "content": {"num_images": len(hashes), "images_root": images_root(hashes, labels)},
             "signed_at": datetime.now(UTC).isoformat(), "requested_by": "benchmark"}
        return attest.sign(attest.statement(attest.DATASET, f"dataset:{manifest['name']}/{manifest['version']}",
                                            attest.files_root(manifest["files"]), p), signer)

    app.call = call
    return SimpleNamespace(signer=signer, trust=trust)


def stub_release() -> Any:
    """A verified release as ``publish`` sees it (the registry is stubbed in the benchmarks)."""
    return SimpleNamespace(predicate={"verdict": "passed", "samples": {"flagged": []}}, envelope_sha256="bench")
