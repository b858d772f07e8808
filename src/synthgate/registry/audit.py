"""The audit trail of a model version: every promotion, refusal, override and guard action, as
``audit.N.*`` tags on the version (readable in the MLflow UI), chained by hashes so that an edited,
removed or re-ordered entry shows.

Entry N holds ``action``, ``user``, ``time``, ``detail``, ``prev`` (the hash of entry N-1, or 64
zeros for the first) and ``hash``: sha256 of the canonical JSON of the model name, version, N,
``prev`` and the four fields, written last. :func:`verify` recomputes every hash and link.

What this does and does not protect against: anyone with EDIT on the model can set tags, so an
insider who rewrites an entry *and* every later one with correct hashes is not caught by the chain
alone. What it catches is a quiet edit: a changed detail, user or time, a deleted or swapped entry.
Entries written before the chain existed (no ``hash`` tag) are reported as such.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

FIELDS = ("action", "user", "time", "detail")
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


def append(client: Any, name: str, version: str, action: str, user: str, time: str, detail: str) -> int:
    """Write entry N+1 on the version (its hash last); return N+1."""
    got = entries(client.get_model_version(name, version).tags)
    n = 1 + max(got, default=0)
    prev = got[n - 1].get("hash", GENESIS) if n > 1 else GENESIS
    fields = {"action": action, "user": user, "time": time, "detail": detail}
    for k, v in {**fields, "prev": prev}.items():
        client.set_model_version_tag(name, version, f"audit.{n}.{k}", v)
    client.set_model_version_tag(name, version, f"audit.{n}.hash", entry_hash(name, version, n, prev, fields))
    return n


@dataclass
class Checked:
    n: int
    fields: dict[str, str]
    status: str  # "ok", "before the chain", or what is wrong

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "before the chain")


def verify(name: str, version: str, tags: dict[str, str]) -> list[Checked]:
    """Every entry of the version with its status: its hash recomputed, its link to the entry before."""
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
            status = "ok"  # the first chained entry after entries that predate the chain
        elif e.get("prev") != prev_hash:
            status = (f"does not chain to entry {n - 1} (an entry was replaced or removed)" if n > 1
                      else "is the first entry but links to an earlier one (entries were removed)")
        else:
            status = "ok"
        chained = True
        out.append(Checked(n, e, status))
        prev_hash = e["hash"]
    return out
