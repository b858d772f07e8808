"""Publish and pull throughput for a synthetic dataset (default 10,000 64x64 images) through S3.

Runs against moto's S3 server on 127.0.0.1 (started here) or a real endpoint (``--endpoint`` with
credentials in the environment), and against a local folder store. For each store it measures
synthgate's ``publish`` (package: npz shards + PNG zips + labels; parallel upload to staging with
sha256 checks; verify; server-side copy; manifest last) and ``pull`` (parallel download, sha256
of every file), and as the baseline, in the same run, a plain sequential boto3 loop that uploads
and downloads the same package files (no staging, no verification). Prints images/s, MB/s and
the ratio synthgate / plain.

The registry checks at publish are stubbed out here (a few MLflow calls, ~0.1 s, not what this
measures; the integration tests run them for real); the gatekeeper's signature is real (a local key,
``trust_stub.py``) and pull verifies it, every file and the images' content.

    python benchmarks/publish_throughput.py                 # 10,000 x 64x64x1, moto + folder
    python benchmarks/publish_throughput.py --n 200 --size 16
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def _dataset(root: Path, n: int, size: int, classes: int):
    """A canonical dataset with MedNIST-like content (smooth shapes + noise), so compression is realistic."""
    from synthgate.data.canonical import metadata_for, write_dataset

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.empty((n, size, size, 1), np.uint8)
    for i in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.4)]
        blob = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / r**2))
        images[i, ..., 0] = np.clip(200 * blob + rng.normal(0, 12, (size, size)), 0, 255)
    labels = np.arange(n) % classes
    names = [f"class{k}" for k in range(classes)]
    meta = metadata_for(images, labels, names, "train", [f"synthetic:bench:{i}" for i in range(n)])
    return write_dataset(root, images, meta, names, stage="sample", config={}, inputs=[], extra={"synthetic": True})


def _stub_registry(content_hash: str, tmp: Path) -> None:
    """The registry stubbed; the gatekeeper replaced by a local key that signs for real (trust_stub.py)."""
    from trust_stub import local_gatekeeper, stub_release

    import synthgate.publish.package as package
    import synthgate.registry.client as client

    mv = SimpleNamespace(version="1", run_id="bench", tags={"lineage.synthetic_content_hash": content_hash,
                                                             "gate.sha256": "x"})
    gate = {"passed": True, "rules": [], "policy_hash": "bench", "evaluation_hash": "bench"}
    package.approved_version = lambda c, m, a: (mv, gate, {"summary": {}, "encoder": {}}, stub_release())
    package._download_run_file = lambda *a: None
    client.connect = lambda uri=None, **k: None
    local_gatekeeper(tmp)


def _plain_package(samples: Path, out: Path, shard_size: int = 5000) -> None:
    """Baseline packaging, the straightforward way: np.savez_compressed shards and PIL's default PNG
    settings, one after another."""
    import io
    import zipfile

    from PIL import Image

    from synthgate.data.canonical import load_dataset

    ds = load_dataset(samples)
    images, labels = np.asarray(ds.images), ds.labels()
    out.mkdir(parents=True)
    for s in range(0, len(images), shard_size):
        np.savez_compressed(out / f"shard-{s // shard_size:05d}.npz", images=images[s:s + shard_size],
                            labels=labels[s:s + shard_size])
    for k, c in enumerate(ds.classes):
        with zipfile.ZipFile(out / f"{c}.zip", "w") as zf:
            for i in np.flatnonzero(labels == k):
                buf = io.BytesIO()
                Image.fromarray(images[i, ..., 0]).save(buf, format="PNG")
                zf.writestr(f"{i:06d}.png", buf.getvalue())


def _plain(store_kind: str, files: list[Path], root: Path, s3: dict | None, dst: Path, prefix: str) -> tuple[float, float]:
    """Baseline: sequential boto3 put/get (or shutil copies for a folder) of the same files."""
    import shutil

    t0 = time.perf_counter()
    if store_kind == "s3":
        import boto3

        c = boto3.client("s3", endpoint_url=s3["endpoint"])
        for f in files:
            c.upload_file(str(f), s3["bucket"], f"{prefix}/{f.relative_to(root).as_posix()}")
        t_up = time.perf_counter() - t0
        t0 = time.perf_counter()
        for f in files:
            out = dst / f.relative_to(root)
            out.parent.mkdir(parents=True, exist_ok=True)
            c.download_file(s3["bucket"], f"{prefix}/{f.relative_to(root).as_posix()}", str(out))
    else:
        remote = dst.parent / "plain-store"
        for f in files:
            out = remote / f.relative_to(root)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, out)
        t_up = time.perf_counter() - t0
        t0 = time.perf_counter()
        for f in files:
            out = dst / f.relative_to(root)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(remote / f.relative_to(root), out)
    return t_up, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--endpoint", default=None, help="a real S3 endpoint (default: moto on 127.0.0.1)")
    args = ap.parse_args()

    from synthgate.config import PublishConfig
    from synthgate.publish.package import build_package, publish
    from synthgate.publish.pull import pull

    tmp = Path(tempfile.mkdtemp(prefix="synthgate-bench-"))
    ds = _dataset(tmp / "samples", args.n, args.size, args.classes)
    _stub_registry(ds.content_hash, tmp)
    t0 = time.perf_counter()
    _plain_package(ds.root, tmp / "plain-package")
    t_plain_pack = time.perf_counter() - t0
    plain_mb = sum(p.stat().st_size for p in (tmp / "plain-package").iterdir()) / 1e6
    t0 = time.perf_counter()
    info = build_package(ds.root, tmp / "package-only")
    t_pack = time.perf_counter() - t0
    files = [p for p in sorted((tmp / "package-only").rglob("*")) if p.is_file()]
    mb = sum(p.stat().st_size for p in files) / 1e6
    print(f"dataset: {args.n} images {args.size}x{args.size}, package {mb:.1f} MB in {len(files)} files "
          f"({info['shards']} shards)")
    print(f"packaging: plain sequential (savez_compressed, PNG defaults) {t_plain_pack:.2f} s ({plain_mb:.1f} MB), "
          f"synthgate {t_pack:.2f} s ({mb:.1f} MB); ratio {t_plain_pack / t_pack:.2f}x")

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = None
    if args.endpoint is None:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        args.endpoint = f"http://{host}:{port}"
        for k, v in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                     ("AWS_DEFAULT_REGION", "us-east-1")):
            os.environ.setdefault(k, v)
    os.environ["AWS_ENDPOINT_URL"] = args.endpoint
    import boto3

    bucket = "synthgate-bench"
    boto3.client("s3", endpoint_url=args.endpoint).create_bucket(Bucket=bucket)
    try:
        for kind, store in (("s3", f"s3://{bucket}/datasets"), ("file", str(tmp / "store"))):
            t0 = time.perf_counter()
            r = publish("bench-generator", store, samples=ds.root, config=PublishConfig(workers=args.workers))
            t_pub = time.perf_counter() - t0
            t0 = time.perf_counter()
            p = pull(r.name, tmp / f"pulled-{kind}", store, workers=args.workers)
            t_pull = time.perf_counter() - t0
            assert p.num_files == len(r.manifest["files"])
            t_up, t_down = _plain(kind, files, tmp / "package-only", {"endpoint": args.endpoint, "bucket": bucket},
                                  tmp / f"plain-{kind}", "plain")
            up = r.timings["upload"]
            print(f"[{kind}] synthgate publish {t_pub:.2f} s in all ({args.n / t_pub:,.0f} images/s): package "
                  f"{r.timings['package']:.2f} s, upload+verify+move+manifest {up:.2f} s ({mb / up:.1f} MB/s)")
            print(f"[{kind}] synthgate pull {t_pull:.2f} s ({args.n / t_pull:,.0f} images/s, {mb / t_pull:.1f} MB/s, "
                  "every sha256 checked)")
            print(f"[{kind}] plain sequential upload {t_up:.2f} s, download {t_down:.2f} s (no staging, no checks)")
            print(f"[{kind}] ratio upload: plain / synthgate {t_up / up:.2f}x; pull: plain / synthgate "
                  f"{t_down / t_pull:.2f}x (>1: synthgate faster; synthgate also stages, verifies and hashes)")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
