"""Training checkpoints mirrored to object storage (or a folder), so that a training pod that is
restarted -- a preempted GPU node, an eviction, a Kubeflow retry -- resumes where its predecessor
stopped instead of at step 0. A pod's own disk (and a KFP output artifact) is gone after a restart.

Layout under the URI: ``checkpoints/step_XXXXXXXX.pt`` and, written after it, its
``step_XXXXXXXX.pt.sha256``: a checkpoint counts only once its checksum is there, so an upload cut
short is never restored. Uploads run in one background thread (training does not wait for the
network), each from a hard link or copy of the file so that local pruning cannot pull it away; the
newest ``keep`` checkpoints are kept remotely. A failed upload is a warning, not a failed run: the
run goes on and a restart resumes from an older checkpoint. :meth:`close` waits for the last upload.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from synthgate.errors import DataError, SynthgateError
from synthgate.progress import NullReporter, Reporter
from synthgate.stores import open_store
from synthgate.utils import sha256_file

log = logging.getLogger(__name__)
PREFIX = "checkpoints"
_NAME = re.compile(r"step_(\d{8})\.pt")


class CheckpointMirror:
    """``mirror(path)`` after each checkpoint write (the training loop's ``on_checkpoint``);
    :meth:`restore` before training; :meth:`close` after it."""

    def __init__(self, uri: str, keep: int = 2, reporter: Reporter | None = None) -> None:
        self.uri = str(uri).rstrip("/")
        self.store = open_store(self.uri)
        self.keep = max(1, int(keep))
        self.reporter = reporter or NullReporter()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-upload")
        self._pending: Future[None] | None = None
        self.uploaded: list[str] = []
        self.failures: list[str] = []

    # -- remote state --------------------------------------------------------------------------
    def remote_checkpoints(self) -> list[str]:
        """Complete remote checkpoints (with their checksum), oldest first, as file names."""
        keys = set(self.store.list_keys(PREFIX))
        found = []
        for key in keys:
            name = key.rsplit("/", 1)[-1]
            m = _NAME.fullmatch(name)
            if m and f"{key}.sha256" in keys:
                found.append((int(m.group(1)), name))
        return [name for _, name in sorted(found)]

    def restore(self, out_dir: Path) -> Path | None:
        """Download the newest complete remote checkpoint into ``out_dir/checkpoints`` (unless a
        local copy with the same checksum is there), verify its sha256, and return its path."""
        self.store.check()
        names = self.remote_checkpoints()
        if not names:
            self.reporter.info(f"checkpoint mirror {self.uri}: empty, training starts at step 0")
            return None
        name = names[-1]
        key = f"{PREFIX}/{name}"
        want = self.store.get_bytes(f"{key}.sha256").decode().strip()
        local = Path(out_dir) / "checkpoints" / name
        if local.is_file() and sha256_file(local) == want:
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{name}.download-{uuid.uuid4().hex[:8]}")
        try:
            self.store.get_file(key, tmp)
            got = sha256_file(tmp)
            if got != want:
                raise DataError(f"{self.uri}/{key}: sha256 {got[:16]}... does not match its checksum {want[:16]}...",
                                hint=f"delete {self.uri}/{key} (and its .sha256) to resume from an older checkpoint")
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        self.reporter.info(f"checkpoint mirror {self.uri}: restored {name}")
        return local

    def clear(self) -> None:
        """Delete every remote checkpoint (training without resume starts over here too)."""
        self.store.delete_prefix(PREFIX)

    # -- uploads -------------------------------------------------------------------------------
    def __call__(self, path: Path) -> None:
        """Queue ``path`` (a checkpoint just written) for upload; returns at once."""
        path = Path(path)
        snap = path.with_name(f".{path.name}.upload-{uuid.uuid4().hex[:8]}")
        try:
            os.link(path, snap)  # the same bytes, immune to the loop's pruning of old checkpoints
        except OSError:
            shutil.copyfile(path, snap)
        self._wait()  # one upload at a time: the newest checkpoint matters, bandwidth is shared
        self._pending = self._pool.submit(self._upload, snap, path.name)

    def _upload(self, snap: Path, name: str) -> None:
        key = f"{PREFIX}/{name}"
        try:
            sha = sha256_file(snap)
            self.store.put_file(snap, key, sha256=sha)
            self.store.put_bytes(f"{key}.sha256", sha.encode())  # after the data: marks it complete
            self.uploaded.append(name)
            for old in self.remote_checkpoints()[: -self.keep]:
                self.store.delete_prefix(f"{PREFIX}/{old}.sha256")
                self.store.delete_prefix(f"{PREFIX}/{old}")
        except (SynthgateError, OSError) as e:
            msg = e.message if isinstance(e, SynthgateError) else str(e)
            self.failures.append(name)
            log.warning("checkpoint mirror %s: uploading %s failed (%s); training goes on, a restart would "
                        "resume from an older checkpoint", self.uri, name, msg)
            self.reporter.info(f"WARNING: checkpoint {name} not mirrored to {self.uri}: {msg}")
        finally:
            snap.unlink(missing_ok=True)

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def close(self) -> None:
        """Wait for the last upload and stop the upload thread."""
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
