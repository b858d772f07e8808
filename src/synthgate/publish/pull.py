"""List and pull published synthetic datasets: verified, resumable, refused when revoked.

``pull("NAME[:VERSION]", to)`` reads the dataset's ``manifest.json`` (a dataset exists only when
its manifest does), asks MLflow whether the generator version still holds the alias it was
published under and still carries the same gate record (otherwise the dataset is *revoked* and
not pulled unless ``allow_revoked``), then downloads every file in parallel as ``FILE.part``,
resuming a ``.part`` left by an interrupted pull with a ranged read, checks size and sha256
against the manifest, and renames it into place. A file that fails its check is deleted and named
in the error. The manifest is written into the target last, so a target with ``manifest.json`` is
a complete, verified copy. Every path the manifest lists must stay inside the target: an absolute
path, a ``..`` part, a backslash, or a path that resolves outside the target (through a link) is
refused before anything is written.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from synthgate.errors import DataError, SynthgateError
from synthgate.progress import NullReporter, Reporter
from synthgate.publish.package import MANIFEST, STAGING, check_name
from synthgate.stores import Store, open_store
from synthgate.utils import sha256_file, utc_now, write_json_atomic

MARKER = ".synthgate-pull.json"


class DatasetRevoked(SynthgateError):
    exit_code = 1


class VerificationFailed(SynthgateError):
    exit_code = 1


@dataclass
class PullResult:
    name: str
    version: str
    path: Path
    num_files: int
    bytes: int
    seconds: float
    status: str  # "approved", "revoked (allowed)", "unchecked"
    skipped: int = 0
    resumed: int = 0
    notes: list[str] = field(default_factory=list)


def parse_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.partition(":")
    check_name(name)
    if version:
        check_name(version, "dataset version")
    return name, version or None


def list_datasets(store: str | Path | Store) -> list[dict[str, Any]]:
    """Every dataset visible to readers: ``NAME/VERSION/manifest.json`` (staging is never listed)."""
    st = open_store(store) if isinstance(store, str | Path) else store
    st.check()
    out = []
    for key in st.list_keys(""):
        parts = key.split("/")
        if len(parts) != 3 or parts[2] != MANIFEST or parts[0] == STAGING:
            continue
        try:
            m = json.loads(st.get_bytes(key))
        except (KeyError, ValueError):
            continue
        out.append({"name": parts[0], "version": parts[1], "created": m.get("created", ""),
                    "num_images": m.get("dataset", {}).get("num_images"),
                    "model": f"{m.get('model', {}).get('name')}:{m.get('model', {}).get('version')}",
                    "alias": m.get("model", {}).get("alias"), "gate_passed": m.get("gate", {}).get("passed"),
                    "manifest": m})
    return sorted(out, key=lambda d: (d["name"], d["created"], d["version"]))


def revocation_status(manifest: dict[str, Any], tracking_uri: str | None) -> tuple[bool, str]:
    """(still approved, why): the model version must still hold the alias it was published under and
    carry the same gate record."""
    from synthgate.registry.client import connect

    model = manifest.get("model", {})
    name, version, alias = model.get("name"), str(model.get("version")), model.get("alias") or "approved"
    client = connect(tracking_uri)
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except Exception as e:
        from synthgate.registry.client import unless_missing

        unless_missing(e, client)
        return False, f"{name} has no version @{alias} any more"
    if str(mv.version) != version:
        return False, f"{name}@{alias} is now version {mv.version}, not version {version}"
    if model.get("gate_sha256") and mv.tags.get("gate.sha256") != model["gate_sha256"]:
        return False, f"{name} version {version}: its gate record changed since publishing"
    return True, f"{name} version {version} still holds @{alias}"


def safe_destination(target: Path, path: Any) -> Path:
    """``target / path`` for a manifest entry, refused (:class:`VerificationFailed`) unless ``path`` is
    a relative POSIX path without ``..`` parts or backslashes that stays inside ``target`` once links
    are resolved: a manifest must not write anywhere but the pull's target."""
    if not isinstance(path, str) or not path.strip():
        why = "is empty or not a string"
    elif "\\" in path:
        why = "contains a backslash"
    elif "\0" in path:
        why = "contains a NUL character"
    elif PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute() or PureWindowsPath(path).drive:
        why = "is absolute"
    elif ".." in PurePosixPath(path).parts:
        why = "contains '..'"
    else:
        dst = target / path
        root, resolved = target.resolve(), dst.resolve()
        if resolved != root and resolved.is_relative_to(root):
            return dst
        why = f"resolves to {resolved}, outside {root}"
    raise VerificationFailed(f"manifest lists an unsafe file path {path!r}: it {why}; refused",
                             hint="do not use this dataset; report it to its publisher")


def _fetch(st: Store, key: str, f: dict[str, Any], target: Path) -> tuple[int, str]:
    """Download one file (resuming a .part), verify it; returns (bytes read, 'skipped'|'resumed'|'new')."""
    dst = safe_destination(target, f["path"])
    if dst.exists() and dst.stat().st_size == f["size"] and sha256_file(dst) == f["sha256"]:
        return 0, "skipped"
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    if offset > f["size"]:
        part.unlink()
        offset = 0
    how = "resumed" if offset else "new"
    remote = st.size(key)
    if remote is None:
        raise VerificationFailed(f"{f['path']}: listed in the manifest but missing from the store ({st.uri}/{key})",
                                 hint="the published dataset is damaged; ask its publisher to republish")
    if remote != f["size"]:
        raise VerificationFailed(f"{f['path']}: the store holds {remote} bytes, the manifest says {f['size']} "
                                 "(truncated or replaced object)", hint="the published dataset is damaged")
    got = 0
    while offset + got < f["size"]:  # a short read (a dropped connection) resumes where it stopped
        n = st.get_file(key, part, offset + got)
        if n <= 0:
            break
        got += n
    if part.stat().st_size != f["size"]:
        raise VerificationFailed(f"{f['path']}: download stopped at {part.stat().st_size} of {f['size']} bytes",
                                 hint="run the same pull again: it resumes")
    digest = sha256_file(part)
    if digest != f["sha256"]:
        part.unlink()
        raise VerificationFailed(f"{f['path']}: sha256 {digest[:16]}... differs from the manifest's "
                                 f"{f['sha256'][:16]}... (tampered or corrupted object); file removed",
                                 hint="do not use this dataset; report it to its publisher")
    part.rename(dst)
    return got, how


def pull(
    ref: str,
    to: Path,
    store: str | Path,
    tracking_uri: str | None = None,
    allow_revoked: bool = False,
    workers: int = 16,
    reporter: Reporter | None = None,
) -> PullResult:
    """Download and verify ``NAME[:VERSION]`` (default: the latest) from ``store`` into ``to``."""
    from synthgate.monitoring.metrics import TRANSFER_BYTES, TRANSFER_FAILURES, TRANSFER_FILES

    reporter = reporter or NullReporter()
    t0 = time.perf_counter()
    name, version = parse_ref(ref)
    st = open_store(store)
    available = [d for d in list_datasets(st) if d["name"] == name]
    if not available:
        raise DataError(f"no dataset {name!r} in {st.uri}", hint="list them with `synthgate datasets`")
    if version is None:
        chosen = available[-1]
    else:
        match = [d for d in available if d["version"] == version]
        if not match:
            raise DataError(f"dataset {name} has no version {version!r} in {st.uri} "
                            f"(available: {', '.join(d['version'] for d in available)})")
        chosen = match[0]
    version = chosen["version"]
    manifest = chosen["manifest"]
    raw_manifest = st.get_bytes(f"{name}/{version}/{MANIFEST}")

    ok, why = revocation_status(manifest, tracking_uri)
    if not ok and not allow_revoked:
        TRANSFER_FAILURES.labels("pull", "revoked").inc()
        raise DatasetRevoked(f"{name}:{version} is revoked: {why}; not pulled",
                             hint="--allow-revoked pulls it anyway (recorded in the pull record)")
    status = ("approved" + (" (by override)" if manifest.get("model", {}).get("override") else "")) if ok \
        else "revoked (allowed)"

    to = Path(to)
    files = manifest.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and "path" in f for f in files):
        raise VerificationFailed(f"{name}:{version}: the manifest's file list is malformed; nothing was pulled",
                                 hint="do not use this dataset; report it to its publisher")
    try:
        for f in files:  # before anything is written: a manifest must not reach outside the target
            safe_destination(to, f["path"])
    except VerificationFailed:
        TRANSFER_FAILURES.labels("pull", "verification").inc()
        raise
    marker = to / MARKER
    if to.exists() and any(to.iterdir()):
        if not marker.exists() or json.loads(marker.read_text()).get("manifest") != manifest.get("created") \
                or json.loads(marker.read_text()).get("ref") != f"{name}:{version}":
            raise DataError(f"{to} is not empty", hint="pull into a new or empty folder (an interrupted pull of the "
                                                       "same dataset into it resumes)")
    to.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, {"ref": f"{name}:{version}", "manifest": manifest.get("created"), "started": utc_now()})

    counts = {"skipped": 0, "resumed": 0, "new": 0}
    total = 0
    try:
        with reporter.task(f"pulling {name}:{version}", sum(f["size"] for f in files)) as advance, \
                ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(_fetch, st, f"{name}/{version}/{f['path']}", f, to) for f in files]
            for fut, f in zip(futures, files, strict=True):
                n, how = fut.result()
                total += n
                counts[how] += 1
                advance(f["size"])
    except VerificationFailed:
        TRANSFER_FAILURES.labels("pull", "verification").inc()
        raise
    except SynthgateError:
        TRANSFER_FAILURES.labels("pull", "store").inc()
        raise
    (to / MANIFEST).write_bytes(raw_manifest)
    write_json_atomic(to / "pull.json", {"ref": f"{name}:{version}", "store": st.uri, "pulled": utc_now(),
                                         "status": status, "why": why, "files_verified": len(files)})
    marker.unlink(missing_ok=True)
    TRANSFER_BYTES.labels("pull", st.kind).inc(total)
    TRANSFER_FILES.labels("pull", st.kind).inc(len(files) - counts["skipped"])
    notes = [] if ok else [f"revoked: {why}"]
    return PullResult(name, version, to, len(files), total, time.perf_counter() - t0, status,
                      skipped=counts["skipped"], resumed=counts["resumed"], notes=notes)
