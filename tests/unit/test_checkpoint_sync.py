"""Checkpoints mirrored to a store (here a folder; S3 in tests/integration/test_publish.py): a training
pod that restarts on an empty disk resumes from the mirror exactly where it stopped."""

import numpy as np
import pytest
import torch

from synthgate import stages
from synthgate.config import Params
from synthgate.errors import ConfigError, DataError
from synthgate.generators.checkpoint_sync import CheckpointMirror
from synthgate.generators.train import list_checkpoints, read_checkpoint
from synthgate.stores import StoreError
from tests.unit.generators_helpers import (  # noqa: F401 (fixtures)
    RecordingReporter,
    dataset_fixture,
    one_thread_fixture,
    quick,
    tiny,
)


def _params(**train):
    return Params(generator=tiny(), train=quick(**train))


def _remote(mirror_dir):
    return sorted(p.name for p in (mirror_dir / "checkpoints").iterdir())


def test_restarted_pod_resumes_from_the_mirror_bit_identically(dataset, tmp_path):
    mirror = tmp_path / "mirror"
    full = stages.train(_params(steps=6, checkpoint_every=2), dataset=dataset.root, out=tmp_path / "full")
    # pod 1: trains 4 steps, its disk is then lost
    first = stages.train(_params(steps=4, checkpoint_every=2), dataset=dataset.root, out=tmp_path / "pod1",
                         checkpoint_uri=str(mirror))
    assert first.steps == 4
    assert _remote(mirror) == ["step_00000002.pt", "step_00000002.pt.sha256",
                               "step_00000004.pt", "step_00000004.pt.sha256"]
    # pod 2: an empty disk, the same mirror
    rep = RecordingReporter()
    second = stages.train(_params(steps=6, checkpoint_every=2), dataset=dataset.root, out=tmp_path / "pod2",
                          reporter=rep, checkpoint_uri=str(mirror))
    assert second.resumed_from == 4 and second.steps == 6
    assert any("restored step_00000004.pt" in m for m in rep.messages)
    a, b = read_checkpoint(full.checkpoint)["task"], read_checkpoint(second.checkpoint)["task"]
    for k, m in a["modules"].items():
        for n, t in m.items():
            torch.testing.assert_close(t, b["modules"][k][n], rtol=0, atol=0, msg=f"{k}.{n}")
    # only the newest keep_checkpoints (2) stay in the mirror
    assert _remote(mirror) == ["step_00000004.pt", "step_00000004.pt.sha256",
                               "step_00000006.pt", "step_00000006.pt.sha256"]


def test_incomplete_and_corrupted_uploads(dataset, tmp_path):
    mirror_dir = tmp_path / "mirror"
    stages.train(_params(steps=4, checkpoint_every=2), dataset=dataset.root, out=tmp_path / "pod1",
                 checkpoint_uri=str(mirror_dir))
    ck = mirror_dir / "checkpoints"
    (ck / "step_00000006.pt").write_bytes(b"half an upload")  # no .sha256: never completed
    m = CheckpointMirror(str(mirror_dir))
    assert m.restore(tmp_path / "pod2").name == "step_00000004.pt"
    m.close()
    data = bytearray((ck / "step_00000004.pt").read_bytes())
    data[100] ^= 0xFF
    (ck / "step_00000004.pt").write_bytes(bytes(data))
    m = CheckpointMirror(str(mirror_dir))
    with pytest.raises(DataError, match=r"checkpoints/step_00000004.pt: sha256 .* does not match its checksum") as e:
        m.restore(tmp_path / "pod3")
    m.close()
    assert "older checkpoint" in e.value.hint
    assert not list((tmp_path / "pod3" / "checkpoints").glob("*"))  # nothing half-written left behind


def test_a_failed_upload_warns_and_training_goes_on(dataset, tmp_path, monkeypatch):
    from synthgate import stores

    def refuse(self, local, key, sha256=None):
        raise StoreError("store unreachable")

    monkeypatch.setattr(stores.FileStore, "put_file", refuse)
    rep = RecordingReporter()
    r = stages.train(_params(steps=2, checkpoint_every=2), dataset=dataset.root, out=tmp_path / "o", reporter=rep,
                     checkpoint_uri=str(tmp_path / "mirror"))
    assert r.steps == 2 and np.isfinite(r.final_loss) and list_checkpoints(tmp_path / "o")
    assert any("not mirrored" in m and "store unreachable" in m for m in rep.messages)
    assert not list((tmp_path / "o" / "checkpoints").glob(".*upload*"))  # the upload snapshot is removed


def test_no_resume_clears_the_mirror_and_torchrun_is_refused(dataset, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    stages.train(_params(steps=4, checkpoint_every=2), dataset=dataset.root, out=tmp_path / "a",
                 checkpoint_uri=str(mirror))
    again = stages.train(_params(steps=2, checkpoint_every=2), dataset=dataset.root, out=tmp_path / "b", resume=False,
                         checkpoint_uri=str(mirror))
    assert again.resumed_from == 0 and _remote(mirror) == ["step_00000002.pt", "step_00000002.pt.sha256"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="--checkpoint-uri works in a single training process") as e:
        stages.train(_params(steps=2), dataset=dataset.root, out=tmp_path / "c", checkpoint_uri=str(mirror))
    assert "every node mounts" in e.value.hint


def test_bad_store_uri_is_refused(dataset, tmp_path):
    with pytest.raises(StoreError, match="unsupported scheme 'gs'"):
        stages.train(_params(steps=2), dataset=dataset.root, out=tmp_path / "o", checkpoint_uri="gs://bucket/ckpt")
