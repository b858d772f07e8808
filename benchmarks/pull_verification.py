"""The cost of verifying a signed release at pull (issue #33): ``synthgate pull`` of a published dataset
(default 10,000 64x64 images) with every check, against the same pull without the checks this issue
added, in one run, on the same store.

Verified: the gatekeeper's signature over the manifest's file list (Ed25519, DSSE), the name's model,
rollback and revocations, every file's size and sha256, and the images' content hash recomputed from
the shards. Baseline: the same pull with the signature, freshness and content checks replaced by a
plain manifest read (every file's sha256 is still checked, as before the signatures). Pulls alternate
(baseline, verified) ``--repeats`` times into fresh folders; the medians and their ratio are printed,
for a folder store and for moto's S3 server on 127.0.0.1.

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

    real = (pull_mod.verified_manifest, pull_mod.check_freshness, pull_mod._check_content)

    def unchecked(st, name, version, trust):  # the manifest as it stands (sha256 of every file still checked)
        from types import SimpleNamespace

        raw = st.get_bytes(f"{name}/{version}/manifest.json")
        return json.loads(raw), raw, SimpleNamespace(predicate={"verdict": "passed"}, keyid="none")

    try:
        for kind, store in (("file", str(tmp / "store")), ("s3", "s3://bench/datasets")):
            r = publish("bench-generator", store, samples=ds.root, config=PublishConfig(workers=args.workers))
            times: dict[str, list[float]] = {"baseline": [], "verified": []}
            for i in range(args.repeats):
                for mode in ("baseline", "verified"):
                    if mode == "baseline":
                        pull_mod.verified_manifest, pull_mod.check_freshness = unchecked, lambda *a, **k: None
                        pull_mod._check_content = lambda *a, **k: 0
                    else:
                        pull_mod.verified_manifest, pull_mod.check_freshness, pull_mod._check_content = real
                    t0 = time.perf_counter()
                    p = pull_mod.pull(r.name, tmp / f"{kind}-{mode}-{i}", store, workers=args.workers)
                    times[mode].append(time.perf_counter() - t0)
                    assert p.num_files == len(r.manifest["files"])
            base, ver = statistics.median(times["baseline"]), statistics.median(times["verified"])
            print(f"[{kind}] {args.n} images {args.size}x{args.size}, {len(r.manifest['files'])} files, "
                  f"{args.repeats} pulls each: baseline (file sha256 only) median {base:.3f} s, verified (signature, "
                  f"freshness, sha256, images' content) median {ver:.3f} s; overhead {100 * (ver / base - 1):+.1f}% "
                  f"(ratio {ver / base:.3f}x)")
    finally:
        pull_mod.verified_manifest, pull_mod.check_freshness, pull_mod._check_content = real
        server.stop()


if __name__ == "__main__":
    main()
