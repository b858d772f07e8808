"""What the search's 2026-12-07 change costs and buys, in one run: two rotations/flips aligned per candidate
instead of one (:data:`synthgate.evaluation.memorization.search.ALIGN_DIHEDRALS`) and the shortlist's 8x8 scan
tried at the search's largest shifts (``SearchSpec.shift_shortlist``); the baseline is the former search.

    python benchmarks/align_dihedrals.py --images data/benchmarks/mednist-inferred-1000/validated

The same queries (held-out images and copies of training images shifted by 4 px at 64x64) searched against
the same training split with one and with two rotations/flips aligned per candidate: the search's wall time
(ratio against one, the baseline), and how many shifted copies score beyond every held-out image on the
aligned score (what any test on it can flag).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from synthgate.data.canonical import load_dataset
from synthgate.evaluation.memorization import planted
from synthgate.evaluation.memorization.search import TrainIndex, make_spec, search


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", required=True, help="a canonical dataset (e.g. one memorization_gate.py prepared)")
    ap.add_argument("--queries", type=int, default=400, help="held-out images searched")
    ap.add_argument("--copies", type=int, default=100, help="shifted copies searched")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    ds = load_dataset(Path(args.images))
    images = np.asarray(ds.images)
    train = images[ds.split_indices("train")]
    held = images[np.concatenate([ds.split_indices("val"), ds.split_indices("test")])][: args.queries]
    copies = planted.plant(train, args.copies, seed=0, kinds=("shift_4px",))[0]["shift_4px"]
    device = torch.device("cpu")
    index = TrainIndex.build(train, device)
    results = {}
    for nd in (1, 2, 1, 2)[: 2 * args.repeats]:
        spec = make_spec(images.shape[1], dihedrals=nd, shift_shortlist=nd > 1)
        t = time.perf_counter()
        h = search(held, index, spec)
        dt = time.perf_counter() - t
        s = search(copies, index, spec)
        r = results.setdefault(nd, {"seconds": [], "beyond": float((s.aligned > h.aligned.max()).mean()),
                                    "null_max": float(h.aligned.max())})
        r["seconds"].append(dt)
    base = float(np.median(results[1]["seconds"]))
    print(f"{len(held)} held-out images x {len(train)} training images at {images.shape[1]}x{images.shape[1]}, "
          f"{len(copies)} copies shifted by 4 px (at 64x64), CPU, {torch.get_num_threads()} threads")
    print("| search (rotations/flips aligned per candidate) | search time (median) | ratio | held-out max aligned r | "
          "shifted copies beyond it |")
    print("| --- | --- | --- | --- | --- |")
    for nd, r in sorted(results.items()):
        med = float(np.median(r["seconds"]))
        print(f"| {'former (1)' if nd == 1 else 'now (2, shifted shortlist)'} | {med:.1f} s | {med / base:.2f}x | {r['null_max']:.4f} | {r['beyond']:.2f} |")


if __name__ == "__main__":
    main()
