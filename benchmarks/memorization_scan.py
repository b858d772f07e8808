"""Pixel-space memorization scan: synthgate's chunked scan (one matmul per chunk over all 8
rotations/flips) against a baseline measured in the same run (one matmul per transform and
chunk, the straightforward implementation).

    python benchmarks/memorization_scan.py                     # CPU: 1,000 x 10,000 64x64
    python benchmarks/memorization_scan.py --queries 10000 --reference 50000 --device cuda

Prints both times, the images compared per second and the ratio. Absolute times are only
meaningful on the machine they were measured on (report GPU numbers from the GPU).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from synthgate.evaluation.memorization import _normalise, dihedral, pixel_nn


def baseline(queries: np.ndarray, reference: np.ndarray, device: torch.device, chunk: int) -> np.ndarray:
    ref = _normalise(torch.from_numpy(reference[..., 0].astype(np.float32))).to(device).T.contiguous()
    best = []
    for i in range(0, len(queries), chunk):
        q = torch.from_numpy(queries[i : i + chunk, ..., 0].astype(np.float32)).to(device)
        s = torch.stack([_normalise(v) @ ref for v in dihedral(q)]).max(dim=0).values
        best.append(s.max(dim=1).values.cpu())
    return torch.cat(best).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--reference", type=int, default=10000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (args.queries, args.size, args.size, 1), dtype=np.uint8)
    ref = rng.integers(0, 256, (args.reference, args.size, args.size, 1), dtype=np.uint8)
    q[:10] = ref[:10]  # a few planted copies, so both must find r = 1

    def timed(fn):
        fn()  # warm-up (kernels, allocator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, out

    t_base, b = timed(lambda: baseline(q, ref, device, args.chunk))
    t_ours, r = timed(lambda: pixel_nn(q, ref, device, args.chunk).best)
    assert np.allclose(b[:10], 1.0, atol=1e-2) and np.allclose(r[:10], 1.0, atol=1e-2)
    pairs = args.queries * args.reference * 8
    print(f"device {device}, {args.queries} x {args.reference} images {args.size}x{args.size} x 8 transforms")
    print(f"baseline (matmul per transform): {t_base:.2f} s  ({pairs / t_base / 1e9:.2f} G pairs/s)")
    print(f"synthgate (one matmul per chunk{', bf16' if device.type == 'cuda' else ''}): {t_ours:.2f} s  "
          f"({pairs / t_ours / 1e9:.2f} G pairs/s)")
    print(f"ratio baseline/synthgate: {t_base / t_ours:.2f}x")


if __name__ == "__main__":
    main()
