"""Planted-copy power against the size of the held-out null (issue #34: what would make the power target
reachable where it is not met).

For each dataset (prepared, validated and split by inferred groups exactly as
``benchmarks/memorization_gate.py --split inferred`` does; the same cache under --work), every held-out
image and the evaluation's planted copies (100 per kind) are scored once with synthgate's own copy search
and descriptor. Then, for each null size n (a seeded subsample of the held-out images, ``--repeats`` times),
the tail models are fitted with :func:`synthgate.evaluation.memorization.null.fit_null` exactly as
``assemble`` does, and each planted copy is tested as one copy among ``--m`` synthetic images (p <=
alpha/m after Bonferroni over the detectors, the gate's ``min_planted_detection``). Printed per kind: the
detection rate (mean over repeats) and the reachable share (copies beyond every image of that null on some
detector: the most any test on these detectors can flag). The held-out images left out of each subsample
are tested the same way as honest images: the count flagged at alpha/m (should stay about alpha of the set).

    python benchmarks/null_size.py --datasets breast pneumonia
    python benchmarks/null_size.py --datasets mednist --max-per-class 1000            # 64x64
    python benchmarks/null_size.py --datasets mednist --max-per-class 1000 --resolution 32   # the demo's
    python benchmarks/null_size.py --datasets mednist --prepared PATH   # all of MedNIST prepared at 64x64 with
        # inferred groups (synthgate prepare --resolution 64, prepare.max_per_class null, infer_groups on)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from memorization_gate import DATASETS, indexed, prepared  # noqa: E402

from synthgate.config import ValidateConfig  # noqa: E402
from synthgate.evaluation.config import MemorizationConfig  # noqa: E402
from synthgate.evaluation.memorization import planted as planted_mod  # noqa: E402
from synthgate.evaluation.memorization.evidence import combined_p, reachable  # noqa: E402
from synthgate.evaluation.memorization.null import fit_null  # noqa: E402


def curve(name: str, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    vcfg = ValidateConfig(drop_duplicates=True, drop_empty=True, near_duplicate_threshold=args.dedup)
    if args.prepared:  # an existing prepared (grouped) dataset, e.g. all of MedNIST at 64x64: validated once here
        from synthgate.data.validate import validate
        root = Path(args.work) / f"{name}-prepared-{Path(args.prepared).resolve().parent.name}" / "validated"
        if not (root / "manifest.json").exists():
            validate(Path(args.prepared), vcfg, root, root.parent / "validation")
    else:
        root = prepared(name, Path(args.work), vcfg, "inferred", args.max_per_class, args.resolution)
    _, cfg, images, _, (tr, va, te), _, engine = indexed(root, args, torch.device(args.device))
    train = images[tr]
    held = np.concatenate([va, te])
    held_scores = engine.score(images[held]).scores()
    drop = set(args.without or ())
    held_scores = {d: v for d, v in held_scores.items() if d not in drop}
    copies, _ = planted_mod.plant(train, cfg.planted, seed=0)
    kinds = [k for k in copies if k not in planted_mod.NOT_RULED]
    planted_scores = {k: {d: v for d, v in engine.score(copies[k]).scores().items() if d not in drop} for k in kinds}
    print(f"  {name}: {len(tr)} train, {len(held)} held-out scored ({time.perf_counter() - t0:.0f} s)", flush=True)
    level = cfg.alpha / args.m
    sizes = sorted({n for n in args.sizes if n < len(held)} | {len(held)})
    rows = []
    for n in sizes:
        reps = 1 if n == len(held) else args.repeats
        rates: dict[str, list[float]] = {k: [] for k in kinds}
        reach: dict[str, list[float]] = {k: [] for k in kinds}
        honest_flagged, honest_tested = 0, 0
        for r in range(reps):
            pick = np.sort(np.random.default_rng(100 + r).choice(len(held), n, replace=False))
            rest = np.setdiff1d(np.arange(len(held)), pick)
            nulls = {d: fit_null(d, v[pick], cfg.tail_fraction, cfg.min_exceedances, cfg.bootstrap, seed=r + j)
                     for j, (d, v) in enumerate(held_scores.items())}
            null_max = {d: float(v[pick].max()) for d, v in held_scores.items()}
            for k in kinds:
                pc = combined_p({d: nulls[d].pvalues(v) for d, v in planted_scores[k].items()})
                rates[k].append(float((pc <= level).mean()))
                reach[k].append(reachable(planted_scores[k], null_max))
            if len(rest):
                pc = combined_p({d: nulls[d].pvalues(v[rest]) for d, v in held_scores.items()})
                honest_flagged += int((pc <= level).sum())
                honest_tested += int(len(rest))
        row = {"n": n, "repeats": reps, "rate": {k: float(np.mean(v)) for k, v in rates.items()},
               "rate_min": {k: float(np.min(v)) for k, v in rates.items()},
               "reachable": {k: float(np.mean(v)) for k, v in reach.items()},
               "honest_flagged": honest_flagged, "honest_tested": honest_tested}
        rows.append(row)
        weakest = min(kinds, key=lambda k: row["rate"][k])
        print(f"  {name} n={n}: weakest {weakest} {row['rate'][weakest]:.2f} (reachable "
              f"{row['reachable'][weakest]:.2f}); honest flagged {honest_flagged}/{honest_tested}", flush=True)
    return {"dataset": name, "without": sorted(drop), "detectors": list(held_scores), "resolution": int(images.shape[1]), "max_per_class": args.max_per_class,
            "train": int(len(tr)), "held_out": int(len(held)), "m": args.m, "level": level, "kinds": kinds,
            "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}


def print_table(res: dict) -> None:
    without = f", without {', '.join(res['without'])}" if res["without"] else ""
    print(f"\n### {res['dataset']} {res['resolution']}x{res['resolution']}{without} (train {res['train']}, held-out "
          f"{res['held_out']}; one copy among m = {res['m']} at p <= {res['level']:.2g}; rate / reachable)\n")
    kinds = res["kinds"]
    print("| n (held-out null) | " + " | ".join(kinds) + " | honest flagged |")
    print("| --- " * (len(kinds) + 2) + "|")
    for row in res["rows"]:
        cells = [f"{row['rate'][k]:.2f} / {row['reachable'][k]:.2f}" for k in kinds]
        print(f"| {row['n']} ({row['repeats']}x) | " + " | ".join(cells)
              + f" | {row['honest_flagged']} of {row['honest_tested']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["breast", "pneumonia"], choices=list(DATASETS))
    ap.add_argument("--sizes", nargs="+", type=int, default=[60, 120, 250, 500, 1000, 2000, 4000, 8000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--m", type=int, default=300, help="synthetic images the copy is one of (the demo's: 300)")
    ap.add_argument("--max-per-class", type=int, default=None)
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--without", nargs="*", default=[], help="detectors left out (an ablation: e.g. structure)")
    ap.add_argument("--prepared", default=None, help="a prepared dataset folder to validate and use (one dataset)")
    ap.add_argument("--dedup", type=float, default=0.99)
    ap.add_argument("--descriptor-steps", type=int, default=MemorizationConfig().descriptor.steps)
    ap.add_argument("--work", default=str(REPO / "data" / "benchmarks"))
    ap.add_argument("--out", default=str(REPO / "reports" / "benchmarks" / "null_size.json"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name in args.datasets:
        results.append(curve(name, args))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    for res in results:
        print_table(res)


if __name__ == "__main__":
    main()
