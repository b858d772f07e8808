"""The identity of an evaluation record: the gate, the registry and publishing check it without
loading the evaluation code (torch, pandas)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def evaluation_hash(data: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of an evaluation without its own hash and timings."""
    body = {k: v for k, v in data.items() if k not in ("evaluation_hash", "timings", "created")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
