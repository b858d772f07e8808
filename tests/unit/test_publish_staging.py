"""Staging debris of a killed publish is removed by the next publish of the same dataset, once it is
older than a day; a younger staging upload may belong to a publish still running and stays."""

import time

from synthgate.publish.package import STAGING, STAGING_MAX_AGE_S, collect_staging
from synthgate.stores import FileStore


def _stage(st, prefix, started=None):
    if started is not None:
        st.put_bytes(f"{prefix}/.started", repr(started).encode())
    st.put_bytes(f"{prefix}/images/shard-00000.npz", b"partial")


def test_only_abandoned_staging_of_the_same_dataset_is_removed(tmp_path):
    st = FileStore(tmp_path / "store")
    now = time.time()
    old = f"{STAGING}/ds/v1/aaaaaaaaaaaa"
    fresh = f"{STAGING}/ds/v2/bbbbbbbbbbbb"
    legacy = f"{STAGING}/ds/v1/cccccccccccc"  # written before the stamp existed
    other = f"{STAGING}/other/v1/dddddddddddd"
    _stage(st, old, now - STAGING_MAX_AGE_S - 60)
    _stage(st, fresh, now - 600)
    _stage(st, legacy)
    _stage(st, other, now - 3 * STAGING_MAX_AGE_S)
    st.put_bytes("ds/v0/manifest.json", b"{}")  # a published version is never touched

    assert collect_staging(st, "ds", now=now) == [old, legacy]
    keys = st.list_keys("")
    assert not any(k.startswith((old, legacy)) for k in keys)
    assert any(k.startswith(fresh) for k in keys) and any(k.startswith(other) for k in keys)
    assert "ds/v0/manifest.json" in keys
    assert collect_staging(st, "ds", now=now) == []  # nothing left to do
    assert collect_staging(st, "ds", now=now + STAGING_MAX_AGE_S) == [fresh]
