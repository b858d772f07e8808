"""What this machine has seen of signed releases: per dataset name the newest serial, its version and
its model (rollback and take-over checks), and every signed revocation fetched from the gatekeeper, so
that a consumer that cannot reach the gatekeeper still refuses what it once saw revoked.

One JSON file per user: ``$SYNTHGATE_PULL_STATE`` or ``~/.cache/synthgate/pull-state.json``. Dataset
names never start with ``_`` (:data:`synthgate.publish.package.NAME_RE`), so the revocations live under
``_revocations``. Revocations are kept as fetched; only those that verify against the trust root count
(:func:`synthgate.trust.attest.check_revocations`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from synthgate.errors import DataError
from synthgate.utils import write_json_atomic

STATE_ENV = "SYNTHGATE_PULL_STATE"
REVOCATIONS = "_revocations"


def state_path() -> Path:
    return Path(os.environ.get(STATE_ENV) or Path.home() / ".cache" / "synthgate" / "pull-state.json")


def read_state() -> dict[str, Any]:
    p = state_path()
    try:
        data = json.loads(p.read_text()) if p.is_file() else {}
    except ValueError:
        raise DataError(f"{p} is not valid JSON: the record of what this machine has seen is damaged",
                        hint="inspect it; delete it only if you accept forgetting the newest versions and the "
                             "revocations seen") from None
    return data if isinstance(data, dict) else {}


def write_state(state: dict[str, Any]) -> None:
    write_json_atomic(state_path(), state)


def seen_revocations(state: dict[str, Any] | None = None) -> list[Any]:
    return list((read_state() if state is None else state).get(REVOCATIONS) or [])


def remember_revocations(revocations: list[Any] | None, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Add ``revocations`` to what this machine has seen (written when ``state`` is not given)."""
    own = state is None
    state = read_state() if state is None else state
    if revocations:
        known = {json.dumps(r, sort_keys=True) for r in state.get(REVOCATIONS) or []}
        merged = known | {json.dumps(r, sort_keys=True) for r in revocations}
        if merged != known:
            state[REVOCATIONS] = [json.loads(r) for r in sorted(merged)]
            if own:
                write_state(state)
    return state
