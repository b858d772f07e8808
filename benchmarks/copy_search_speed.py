"""Speed of the memorization evaluation's full copy search against the scan it replaced, in one run.

    python benchmarks/copy_search_speed.py                      # CPU: 1,000 x 10,000 64x64 images
    python benchmarks/copy_search_speed.py --queries 10000 --train 50000 --device cuda

The full search (:mod:`synthgate.evaluation.memorization.search` plus the copy descriptor): index the
training images (block means, smoothed copies), descriptor features of both sets, the shortlist,
then pixel, smoothed, margin, aligned (shifts x scale/crop x rotations, refined) and tile scores. The
baseline is synthgate's previous scan: the exhaustive max Pearson correlation over the 8
rotations/flips (:func:`synthgate.evaluation.memorization.scan.pixel_nn`), which found neither
shifted, re-cropped nor noisy copies. Images are MedNIST's (``--images``: a canonical dataset, e.g. the
one ``benchmarks/memorization_gate.py`` prepares) or, without one, smooth random fields. The
descriptor is untrained here: its cost does not depend on its weights (its training is cached per
dataset and measured in ``memorization_gate.py``). Absolute times are only meaningful on the machine
they were measured on; the ratio is the claim.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from synthgate.evaluation.memorization.descriptor import DescriptorNet, prepare_input, standardise
from synthgate.evaluation.memorization.scan import pixel_nn
from synthgate.evaluation.memorization.search import TrainIndex, make_spec, search

REPO = Path(__file__).resolve().parents[1]


def images(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    n = args.queries + args.train
    path = Path(args.images)
    if (path / "manifest.json").exists():
        from synthgate.data.canonical import load_dataset

        ds = load_dataset(path)
        if len(ds.meta) >= n and ds.resolution == args.size:
            idx = np.random.default_rng(0).permutation(len(ds.meta))[:n]
            x = np.asarray(ds.images)[np.sort(idx)]
            return x[: args.queries], x[args.queries :], f"{path} ({ds.resolution}x{ds.resolution})"
    rng = np.random.default_rng(0)
    small = rng.random((n, args.size // 8, args.size // 8)).astype(np.float32)
    x = torch.nn.functional.interpolate(torch.from_numpy(small)[:, None], size=args.size, mode="bicubic")
    x = (x[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()[..., None]
    return x[: args.queries], x[args.queries :], "smooth random fields"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", default=str(REPO / "data" / "benchmarks" / "mednist" / "validated"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    q, t, where = images(args)
    q[:5] = t[:5]  # a few planted copies: both must find them

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    net = DescriptorNet().to(device).eval()

    @torch.no_grad()
    def describe(x: np.ndarray) -> torch.Tensor:
        out = [net(standardise(prepare_input(x[i : i + 1024], 32)).to(device)) for i in range(0, len(x), 1024)]
        return torch.cat(out)

    start = time.perf_counter()
    base = pixel_nn(q, t, device)
    sync()
    t_base = time.perf_counter() - start

    start = time.perf_counter()
    index = TrainIndex.build(t, device)
    ft, fq = describe(t), describe(q)
    extra = torch.topk(fq @ ft.T, 8, dim=1).indices.cpu().numpy()
    res = search(q, index, make_spec(args.size), extra=extra)
    sync()
    t_full = time.perf_counter() - start
    assert np.allclose(base.best[:5], 1, atol=1e-4) and np.allclose(res.pixel[:5], 1, atol=1e-4)
    assert (res.pixel_index[:5] == np.arange(5)).all()
    print(f"{args.queries} x {args.train} {args.size}x{args.size} images ({where}) on {device} "
          f"({torch.get_num_threads()} threads)")
    print(f"  previous scan (8 rotations/flips, exhaustive): {t_base:7.1f} s")
    print(f"  full copy search (shortlist, 5 pixel scores, descriptor): {t_full:7.1f} s")
    print(f"  ratio full / previous: {t_full / t_base:.2f}x  ({1000 * t_full / args.queries:.1f} ms per image)")


if __name__ == "__main__":
    main()
