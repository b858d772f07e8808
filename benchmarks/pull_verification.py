"""The cost of verifying a signed release at pull (issue #33): ``synthgate pull`` of a published dataset
(default 10,000 64x64 images) with the checks this issue added, against the same pull without them, in
one run, on the same store.

- baseline: the manifest read as it stands, every file's size and sha256 checked (pull before #33);
- signed (``pull``'s default): the gatekeeper's signature over the manifest's file list (Ed25519, DSSE)
  for this name and version, the name's model, rollback and revocations, and every file's sha256; the
  dataset's content hash (the signed file list's root) recomputed from the files;
- signed + images (``pull --verify-images``): also every image decoded from the shards and the images'
  content hash recomputed against the signed one.

Pulls rotate through the three modes ``--repeats`` times into fresh folders, each mode taking each
position in turn (a pull right after another one's 67 MB of writes is slower); the medians and the ratios
to the baseline are printed, for a folder store and for moto's S3 server on 127.0.0.1, and the signed
checks are also timed alone.

    python benchmarks/pull_verification.py                 # 10,000 x 64x64x1
    python benchmarks/pull_verification.py --n 200 --size 16 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def _checks_alone(pull_mod, store: str, name: str, version: str, pulled: Path, repeats: int) -> float:
    """Median seconds of what ``signed`` adds to a pull, each part called as pull calls it."""
    from synthgate.registry.gatekeeper_app import revocations
    from synthgate.stores import open_store
    from synthgate.trust.keys import load_trust_root

    st, out = open_store(store), []
    for _ in range(max(3, repeats)):
        t0 = time.perf_counter()
        trust = load_trust_root()
        manifest, _, signed = pull_mod.verified_manifest(st, name, version, trust)
        pull_mod.check_freshness(name, version, signed, {}, False, revocations() or [], trust)
        pull_mod._check_files_root(pulled, manifest["files"], signed)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=16)
    args = ap.parse_args()

    import publish_throughput as pt

    import synthgate.publish.pull as pull_mod
    from synthgate.config import PublishConfig
    from synthgate.publish.package import publish

    tmp = Path(tempfile.mkdtemp(prefix="synthgate-bench-"))
    ds = pt._dataset(tmp / "samples", args.n, args.size, 6)
    pt._stub_registry(ds.content_hash, tmp)
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for k, v in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"), ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(k, v)
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    os.environ["SYNTHGATE_PULL_STATE"] = str(tmp / "pull-state.json")
    import boto3

    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket="bench")

    real = (pull_mod.verified_manifest, pull_mod.check_freshness)

    def unchecked(st, name, version, trust):  # the manifest as it stands (sha256 of every file still checked)
        from types import SimpleNamespace

        from synthgate.trust.attest import files_root

        raw = st.get_bytes(f"{name}/{version}/manifest.json")
        m = json.loads(raw)
        return m, raw, SimpleNamespace(predicate={"verdict": "passed"}, keyid="none",
                                       subject={"digest": {"sha256": files_root(m["files"])}})

    try:
        for kind, store in (("file", str(tmp / "store")), ("s3", "s3://bench/datasets")):
            r = publish("bench-generator", store, samples=ds.root, config=PublishConfig(workers=args.workers))
            times: dict[str, list[float]] = {"baseline": [], "signed": [], "signed+images": []}
            modes = list(times)
            for i in range(args.repeats):
                for mode in modes[i % 3:] + modes[:i % 3]:  # each mode in each position: no order effect
                    if mode == "baseline":
                        pull_mod.verified_manifest, pull_mod.check_freshness = unchecked, lambda *a, **k: None
                    else:
                        pull_mod.verified_manifest, pull_mod.check_freshness = real[0], real[1]
                    t0 = time.perf_counter()
                    p = pull_mod.pull(r.name, tmp / f"{kind}-{mode}-{i}", store, workers=args.workers,
                                      verify_images=mode == "signed+images")
                    times[mode].append(time.perf_counter() - t0)
                    assert p.num_files == len(r.manifest["files"])
            base = statistics.median(times["baseline"])
            print(f"[{kind}] {args.n} images {args.size}x{args.size}, {len(r.manifest['files'])} files, "
                  f"{args.repeats} pulls each; baseline (file sha256 only) median {base:.3f} s")
            for mode in ("signed", "signed+images"):
                m = statistics.median(times[mode])
                # paired by round (the three modes of a round run back to back): the median of the per-round
                # differences, with the spread of the rounds, is less exposed to a slow moment than two medians
                diffs = sorted(a - b for a, b in zip(times[mode], times["baseline"], strict=True))
                print(f"[{kind}]   {mode}: median {m:.3f} s, overhead {100 * (m / base - 1):+.1f}% (ratio {m / base:.3f}x); "
                      f"per round: median difference {1000 * statistics.median(diffs):+.0f} ms "
                      f"({100 * statistics.median(diffs) / base:+.1f}%), rounds from {1000 * diffs[0]:+.0f} to "
                      f"{1000 * diffs[-1]:+.0f} ms; pulls {', '.join(f'{t:.2f}' for t in times[mode])} s against "
                      f"{', '.join(f'{t:.2f}' for t in times['baseline'])} s")
            checks = _checks_alone(pull_mod, store, r.name, r.version, tmp / f"{kind}-signed-0", args.repeats)
            print(f"[{kind}]   the signed checks alone (signature, freshness with the revocation fetch, files root), "
                  f"timed directly: median {1000 * checks:.1f} ms = {100 * checks / base:.1f}% of the baseline pull")
    finally:
        pull_mod.verified_manifest, pull_mod.check_freshness = real
        server.stop()


if __name__ == "__main__":
    main()
