"""Upload a package and commit it: the one step of a publish that concurrent writers race for.

Every writer uploads its package under a staging prefix of its own (``.staging/NAME/VERSION/UUID/``),
verifies it and has the gatekeeper sign it. Then, in ``NAME/VERSION/``:

1. the **claim**: the signature ``manifest.sig.json`` is created with a conditional create
   (:meth:`~synthgate.stores.Store.create_bytes`: a hard link that fails when the name exists on a
   folder, ``If-None-Match: *`` on S3). One writer creates it; every other finds it and reads the
   file list it signs. A writer whose files differ is refused by name and writes nothing there; one
   whose files are identical (packages are deterministic) goes on, idempotently. A claim is never
   removed: the files of ``NAME/VERSION/`` are only ever written with the claimed content, so they
   are immutable or identical byte for byte.
2. the files are copied from staging into ``NAME/VERSION/`` (by the claimant, and by a writer with
   identical content, which completes the claim of a writer that died half way);
3. the **commit**: ``manifest.json`` is created with a conditional create. It is what makes a
   version visible (:func:`~synthgate.publish.pull.list_datasets` lists ``NAME/VERSION/manifest.json``),
   and only one writer creates it; a writer that finds it already there with the same file list
   answers "already published with the same content".

A publish that fails before its commit leaves nothing listed: at most staging debris (removed by
the next publish of the name once a day old, :func:`collect_staging`) and, after a claim, unlisted
files that only the same content can complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from synthgate.errors import DataError, SynthgateError
from synthgate.progress import Reporter
from synthgate.stores import Store
from synthgate.utils import name_path, sha256_file

STAGING = ".staging"
#: Staging uploads older than this are abandoned (a killed publish); the next publish removes them.
STAGING_MAX_AGE_S = 24 * 3600.0
STARTED = ".started"
MANIFEST = "manifest.json"
#: The gatekeeper's signed dataset statement (a DSSE envelope) beside the manifest; created first (the claim).
SIGNATURE = "manifest.sig.json"
#: Local working folders of a publish: ``synthgate-publish-PID-*`` under the temporary directory.
TEMP_PREFIX = "synthgate-publish-"


class PublishRefused(SynthgateError):
    exit_code = 1


def files_root(files: list[dict[str, Any]]) -> str:
    from synthgate.trust.attest import files_root as root

    return root(files)


# -------------------------------------------------------------------------------------------- local folder
@contextlib.contextmanager
def working_folder() -> Iterator[Path]:
    """A local folder for the package, removed however the publish ends: on success, on an error, and on
    SIGTERM (turned into :class:`SystemExit` while the publish runs in the main thread, so that clean-up
    runs). Folders left by publishes killed with SIGKILL (their process gone) are removed first."""
    sweep_working_folders()
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))
    previous = None
    if threading.current_thread() is threading.main_thread():
        def _terminate(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield tmp
    except BaseException as e:
        name_path(e, tmp)  # a full disk under the package (TMPDIR): say where
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def sweep_working_folders(root: Path | None = None) -> list[Path]:
    """Remove ``synthgate-publish-PID-*`` folders whose process no longer runs. -> the removed folders."""
    removed = []
    for d in Path(root or tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        pid = d.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or not d.is_dir() or _alive(int(pid)):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


# -------------------------------------------------------------------------------------------- upload
def _upload_all(store: Store, files: list[dict[str, Any]], local_root: Path, prefix: str, workers: int,
                reporter: Reporter) -> int:
    done = 0

    def put(f: dict[str, Any]) -> int:
        store.put_file(local_root / f["path"], f"{prefix}/{f['path']}", f["sha256"])
        return int(f["size"])

    with reporter.task(f"uploading {len(files)} files", sum(f["size"] for f in files)) as advance, \
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for n in pool.map(put, files):
            done += n
            advance(n)
    return done


def _verify_staging(store: Store, files: list[dict[str, Any]], prefix: str) -> None:
    for f in files:
        size = store.size(f"{prefix}/{f['path']}")
        if size != f["size"]:
            raise DataError(f"publish: staging copy of {f['path']} has {size} bytes, expected {f['size']}; "
                            "nothing was published")
        if store.kind == "file":  # the S3 server already checked each upload's sha256
            got = sha256_file(Path(store.uri) / prefix / f["path"])
            if got != f["sha256"]:
                raise DataError(f"publish: staging copy of {f['path']} hashes to {got[:16]}, expected "
                                f"{f['sha256'][:16]}; nothing was published")


def upload(st: Store, final: str, staging: str, files: list[dict[str, Any]], pkg: Path, manifest: dict[str, Any],
           workers: int, reporter: Reporter, gatekeeper: str | None = None) -> tuple[int, dict[str, Any] | None]:
    """Every file to ``staging``, verified, signed by the gatekeeper (which reads the staged copy itself),
    then claimed and committed in ``final`` (:func:`commit`); staging removed. -> (bytes sent, the manifest
    another writer committed with the same content, or None when this writer committed its own)."""
    from synthgate.monitoring.metrics import TRANSFER_FAILURES
    from synthgate.registry.gatekeeper_app import call

    try:
        st.put_bytes(f"{staging}/{STARTED}", repr(time.time()).encode())  # first: dates this upload
        sent = _upload_all(st, files, pkg, staging, workers, reporter)
        _verify_staging(st, files, staging)
        envelope = call("/v1/datasets", {"store": st.uri, "staging": staging, "manifest": manifest}, gatekeeper)
        other = commit(st, final, staging, files, manifest, envelope)
    except SynthgateError:
        TRANSFER_FAILURES.labels("publish", "store").inc()
        raise
    except Exception:
        TRANSFER_FAILURES.labels("publish", "error").inc()
        raise
    finally:
        st.delete_prefix(staging)
    return sent, other


# -------------------------------------------------------------------------------------------- commit
def commit(st: Store, final: str, staging: str, files: list[dict[str, Any]], manifest: dict[str, Any],
           envelope: dict[str, Any]) -> dict[str, Any] | None:
    """Claim ``final`` with the signature, copy the staged files there, create the manifest (see the module
    docstring). -> None when this writer's manifest was committed; the committed manifest when another
    writer with the same files committed first. :class:`PublishRefused` naming the version when the
    version is claimed or committed with other files."""
    root = files_root(files)
    ref = f"{manifest['name']}:{manifest['version']}"
    if not st.create_bytes(f"{final}/{SIGNATURE}", json.dumps(envelope, indent=2).encode()):
        claimed = claimed_root(st, final)
        if claimed != root:
            existing = read_manifest(st, final)
            raise PublishRefused(
                f"{ref} is already published with other content" if existing is not None else
                f"{ref} is claimed by another publish with other content (running, or one that did not finish); "
                "nothing of this publish was written there",
                hint="datasets are immutable: publish under another --version")
        existing = read_manifest(st, final)
        if existing is not None and _same_files(existing, root):
            return existing  # committed by the other writer: nothing to copy
    for f in files:  # the claimed content only: the claimant's, or identical bytes
        st.copy(f"{staging}/{f['path']}", f"{final}/{f['path']}")
    if st.create_bytes(f"{final}/{MANIFEST}", json.dumps(manifest, indent=2).encode()):
        return None  # committed: now visible
    existing = read_manifest(st, final)
    if existing is not None and _same_files(existing, root):
        return existing
    raise PublishRefused(f"{ref} is already published with other content",  # only a hand-written manifest
                         hint="datasets are immutable: publish under another --version")


def _same_files(manifest: dict[str, Any], root: str) -> bool:
    try:
        return files_root(manifest.get("files") or []) == root
    except (KeyError, TypeError, ValueError):
        return False


def claimed_root(st: Store, final: str) -> str | None:
    """The file-list root that the signature in ``final`` signs (read, not verified: the puller verifies it;
    this only tells whether the claim is for the same files); None when there is none or it is unreadable."""
    import base64

    try:
        env = json.loads(st.get_bytes(f"{final}/{SIGNATURE}"))
        stmt = json.loads(base64.b64decode(env["payload"]))
        return str(stmt["subject"][0]["digest"]["sha256"])
    except (KeyError, ValueError, TypeError, IndexError):
        return None


def collect_staging(st: Store, name: str, now: float | None = None, max_age_s: float = STAGING_MAX_AGE_S
                    ) -> list[str]:
    """Remove the staging uploads of dataset ``name`` that a killed publish left behind: those whose
    ``.started`` stamp (the first object every publish writes) is older than ``max_age_s``, and
    those without one (left by synthgate before the stamp existed). Younger ones may belong to a
    publish still running and are kept. Returns the removed prefixes."""
    now = time.time() if now is None else now
    groups: dict[str, set[str]] = {}
    for key in st.list_keys(f"{STAGING}/{name}"):
        parts = key.split("/")
        if len(parts) >= 5:  # .staging/NAME/VERSION/UUID/file...
            groups.setdefault("/".join(parts[:4]), set()).add("/".join(parts[4:]))
    removed = []
    for prefix, files in sorted(groups.items()):
        started = None
        if STARTED in files:
            try:
                started = float(st.get_bytes(f"{prefix}/{STARTED}").decode())
            except (KeyError, ValueError):
                started = None
        if started is None or now - started > max_age_s:
            st.delete_prefix(prefix)
            removed.append(prefix)
    return removed


def read_manifest(st: Store, prefix: str) -> dict[str, Any] | None:
    try:
        return json.loads(st.get_bytes(f"{prefix}/{MANIFEST}"))
    except KeyError:
        return None
