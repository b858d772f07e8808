"""Specificity and power of the utility rules (``gates.yaml`` ``utility:``) with the default
``params.yaml`` ``evaluate.utility`` settings, on PneumoniaMNIST and BreastMNIST.

    python benchmarks/utility_gate.py                      # 20 honest + 10 x 2 degraded splits per dataset
    python benchmarks/utility_gate.py --datasets breast --splits 5 --degraded-splits 3

- Specificity: an honest stand-in (:func:`synthgate.evaluation.evaluate.make_standin`: half of the
  real test split, per class, stands in for a generator's output; the other half stays the test
  split) must pass the utility rules: its true gap is 0 at matched sizes. Each split ``s`` draws
  its own stand-in (seed ``s``) and its own classifier seeds (``100 s + k`` for the configured
  seeds ``k``). ``--standin train`` halves the real *training* split instead (one half stays the
  training split, the other stands in; the whole test split tests): the size a generator's output
  has in practice, which half of a small test split (BreastMNIST: 78 images) is far from.
- Power: degraded "generators" must fail: (a) the same stand-in images blurred (Gaussian, sigma
  chosen on the first ``--cal-splits`` splits (2) as the one whose TSTR AUROC drop is closest to
  0.1, from an ascending sweep that stops once the drop reaches 0.1; the sweep is printed), (b) the
  same images with the labels of a random 30% of them shuffled among themselves
  (``--degraded-splits 0``: specificity only).

Each split runs :func:`synthgate.evaluation.utility.utility` (settings ``real`` and
``synthetic``: the gate's default rules read the gap and Delta_syn) and the gate's own
:func:`synthgate.gates.utility_rules.utility_rules` with the policy in ``gates.yaml``. A degraded
set keeps the class counts, so its matched real networks are the honest run's (same seeds, same
real subsets): only its TSTR networks are trained, and its gaps are paired with those. Prints both
tables with the pass counts, the bounds and the seeds, and writes every split's numbers to
``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from utility_baseline import FILES, REPO, prepare_medmnist, settings  # noqa: E402


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each (H, W) plane (scipy.ndimage), back to uint8."""
    from scipy.ndimage import gaussian_filter

    out = gaussian_filter(images.astype(np.float32), sigma=(0, sigma, sigma, 0), mode="nearest")
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def shuffle_labels(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """The labels of a random ``share`` of the images permuted among those images."""
    rng = np.random.default_rng(seed)
    y = labels.copy()
    idx = rng.choice(len(y), int(round(share * len(y))), replace=False)
    y[idx] = y[rng.permutation(idx)]
    return y


def _arrays(real_dir: Path, syn_dir: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    from synthgate.data.canonical import load_dataset

    real, syn = load_dataset(real_dir), load_dataset(syn_dir)
    x, y = np.asarray(real.images), real.labels()
    out = {s: (x[real.split_indices(s)], y[real.split_indices(s)]) for s in ("train", "val", "test")}
    names = np.asarray(syn.classes)[syn.labels()]
    index = {c: i for i, c in enumerate(real.classes)}
    out["synthetic"] = (np.asarray(syn.images), np.array([index[n] for n in names], dtype=np.int64))
    return out, real.classes


def train_halves(validated: Path, seed: int) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """The larger honest stand-in: the real training split halved per class (seeded); one half
    stays the real training split, the other stands in for a generator's output; val and the whole
    test split stay as they are. Its true gap is 0 at matched sizes too, at the size a generator's
    output has in practice (about the training split's), which the test-half stand-in cannot
    reach on a small dataset."""
    from synthgate.data.canonical import load_dataset

    real = load_dataset(validated)
    x, y = np.asarray(real.images), real.labels()
    rng = np.random.default_rng(seed)
    tr = real.split_indices("train")
    keep, give = [], []
    for k in np.unique(y[tr]):
        members = rng.permutation(tr[y[tr] == k])
        keep.append(members[: len(members) // 2])
        give.append(members[len(members) // 2:])
    a = {s: (x[real.split_indices(s)], y[real.split_indices(s)]) for s in ("val", "test")}
    a["train"] = (x[np.sort(np.concatenate(keep))], y[np.sort(np.concatenate(keep))])
    g = np.sort(np.concatenate(give))
    a["synthetic"] = (x[g], y[g])
    return a, real.classes


def judge(a: dict[str, tuple[np.ndarray, np.ndarray]], synthetic: tuple[np.ndarray, np.ndarray], classes: list[str],
          cfg: Any, policy: Any, real: dict[str, Any] | None = None) -> dict[str, Any]:
    """utility() on ``synthetic`` and the gate's utility rules on its result. With ``real`` (the
    matched TRTR AUCs and test probabilities of the honest run of the same split and seeds) only
    TSTR is trained: the matched real networks are the same ones (same seeds, same per-class counts,
    so the same real subsets), and the paired gaps and their variance record are formed against
    them, as :func:`synthgate.evaluation.utility.utility` forms them."""
    from synthgate.evaluation.utility import PAIRED_SIDES, auc_influence, confidence_bound, paired_design
    from synthgate.gates.utility_rules import utility_rules as _utility_rules

    run_cfg = cfg if real is None else cfg.model_copy(update={"settings": ["synthetic"]})
    u = utility_fn(a["train"], a["val"], a["test"], synthetic, len(classes), run_cfg, torch.device("cpu"),
                   class_names=classes, return_proba=True)
    syn_auc = [r["auroc"] for r in u["runs"]["synthetic"]]
    syn_p = u["test_proba"]["synthetic"]
    if real is None:
        real = {"auc": [r["auroc"] for r in u["runs"]["real"]], "proba": u["test_proba"]["real"]}
    yt, k = a["test"][1], len(classes)
    ratios = u["train_sizes"]["set_ratios"]
    paired = {**u["paired"], "auc_gap": list(np.subtract(real["auc"], syn_auc))}
    paired["variance"] = {**paired.get("variance", {}), "auc_gap": paired_design(
        [("real (matched)", real["auc"], np.inf if ratios["real"] is None else ratios["real"]),
         ("synthetic (TSTR)", syn_auc, np.inf if ratios["synthetic"] is None else ratios["synthetic"])],
        [auc_influence(yt, pr, k) - auc_influence(yt, ps, k) for pr, ps in zip(real["proba"], syn_p, strict=True)],
        yt)}
    runs = {"real": [{"auroc": a} for a in real["auc"]], "synthetic": u["runs"]["synthetic"]}
    evaluation = {"utility": {"paired": paired, "runs": runs, "train_sizes": u["train_sizes"],
                              "stats": {"n_seeds": len(paired["seeds"])}}}
    rules: list[Any] = []
    _utility_rules(evaluation, policy, rules, [])
    bounds = {r.rule.split(".")[1]: r.value for r in rules if r.rule in ("utility.max_auc_gap", "utility.max_delta_syn")}
    gap = np.array(paired["auc_gap"])
    naive = confidence_bound(gap, policy.utility.confidence, PAIRED_SIDES["auc_gap"])
    return {"passed": all(r.passed for r in rules), "failed": [r.rule for r in rules if not r.passed],
            "gap_upper": bounds.get("max_auc_gap"), "delta_syn_upper": bounds.get("max_delta_syn"),
            "gap_upper_seeds_only": naive,
            "auc_real": float(np.mean(real["auc"])), "auc_syn": float(np.mean(syn_auc)), "real": real,
            "gap_mean": float(gap.mean()), "gap_sd": float(gap.std(ddof=1)),
            "delta_syn_mean": float(np.mean(paired["delta_syn"])), "seeds": paired["seeds"],
            "paired": paired, "matched": u["train_sizes"]["matched_per_class"], "set_ratios": ratios,
            "reasons": [r.reason for r in rules]}


def utility_fn(*args: Any, **kw: Any) -> dict[str, Any]:
    from synthgate.evaluation.utility import utility

    return utility(*args, **kw)


def _med(v: list[float | None]) -> str:
    a = np.array([x for x in v if x is not None], dtype=np.float64)
    return f"{np.median(a):.3f} [{a.min():.3f}, {a.max():.3f}]" if len(a) else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--datasets", nargs="+", default=["pneumonia", "breast"], choices=sorted(FILES))
    ap.add_argument("--splits", type=int, default=20, help="honest stand-in splits per dataset")
    ap.add_argument("--standin", choices=["test", "train"], default="test",
                    help="test: half of the real test split stands in (synthgate standin); train: half of the "
                         "training split stands in and the whole test split tests")
    ap.add_argument("--start", type=int, default=0,
                    help="first split (to continue a run: splits --start..--splits-1, each with its own seeds)")
    ap.add_argument("--degraded-splits", type=int, default=10, help="splits per degradation (<= --splits)")
    ap.add_argument("--sigmas", nargs="+", type=float, default=[1.0, 2.0, 3.0, 4.0, 6.0],
                    help="blur sweep, ascending (stops at the first sigma that reaches --target-drop)")
    ap.add_argument("--cal-splits", type=int, default=2, help="splits the blur sigma is chosen on")
    ap.add_argument("--target-drop", type=float, default=0.1, help="TSTR AUROC drop the blur is chosen for")
    ap.add_argument("--shuffle", type=float, default=0.3, help="share of images whose labels are shuffled")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--policy", type=Path, default=REPO / "gates.yaml")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write every split's numbers here (JSON)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from synthgate.evaluation.evaluate import make_standin
    from synthgate.gates.policy import load_policy

    base = settings(args.params)[2].model_copy(update={"settings": ["real", "synthetic"]})
    policy = load_policy(args.policy)
    record: dict[str, Any] = {"policy": policy.utility.model_dump(), "config": base.model_dump(mode="json"),
                              "standin": args.standin}
    spec_rows, power_rows = [], []
    with tempfile.TemporaryDirectory(prefix="utility-gate-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.datasets:
            _, validated = prepare_medmnist(name, args.data, work, args.params)
            honest: list[dict[str, Any]] = []
            splits: list[tuple[dict[str, Any], list[str], Any]] = []
            run = list(range(args.start, args.splits))
            t0 = time.perf_counter()
            for s in run:
                if args.standin == "train":
                    a, classes = train_halves(validated, seed=s)
                else:
                    real_dir, syn_dir = make_standin(validated, work / f"{name}-s{s}-real", work / f"{name}-s{s}-syn",
                                                     seed=s)
                    a, classes = _arrays(real_dir, syn_dir)
                cfg = base.model_copy(update={"seeds": [100 * s + k for k in base.seeds]})
                splits.append((a, classes, cfg))
                r = judge(a, a["synthetic"], classes, cfg, policy)
                r["split"] = s
                honest.append(r)
                print(f"{name} honest split {s}: {'PASS' if r['passed'] else 'FAIL ' + ','.join(r['failed'])} "
                      f"gap {r['gap_mean']:+.4f} sd {r['gap_sd']:.4f} upper {r['gap_upper']:.4f} (seeds only "
                      f"{r['gap_upper_seeds_only']:.4f}) delta_syn upper "
                      f"{r['delta_syn_upper']} (AUC real {r['auc_real']:.4f} syn {r['auc_syn']:.4f}) "
                      f"[{time.perf_counter() - t0:.0f} s]", flush=True)
            spec_rows.append([name, f"{run[0]}-{run[-1]}", f"{sum(r['passed'] for r in honest)}/{len(run)}",
                              _med([r["gap_upper"] for r in honest]), _med([r["gap_upper_seeds_only"] for r in honest]),
                              _med([r["delta_syn_upper"] for r in honest]),
                              _med([r["gap_mean"] for r in honest]), f"{np.mean([r['auc_syn'] for r in honest]):.3f}",
                              str(honest[0]["matched"]), f"{len(base.seeds)} per split (100 s + {base.seeds})"])
            record[name] = {"honest": honest}

            # blur calibrated on the first --cal-splits splits: the sigma whose TSTR drop is closest to the target
            if args.degraded_splits == 0:
                continue
            n_cal = min(args.cal_splits, len(run))
            sweep = []
            for sigma in sorted(args.sigmas):
                drops = []
                for s in range(n_cal):
                    a, classes, cfg = splits[s]
                    xs, ys = a["synthetic"]
                    u = utility_fn(a["train"], a["val"], a["test"], (blur(xs, sigma), ys), len(classes),
                                   cfg.model_copy(update={"settings": ["synthetic"]}), torch.device("cpu"),
                                   class_names=classes)
                    drops.append(honest[s]["auc_syn"] - u["settings"]["synthetic"]["auroc_mean"])
                sweep.append((sigma, float(np.mean(drops))))
                print(f"{name} blur sigma {sigma}: TSTR drop {np.mean(drops):+.4f} (splits {run[0]}-{run[n_cal - 1]})",
                      flush=True)
                if np.mean(drops) >= args.target_drop:  # the sweep ascends: a larger sigma only drops further
                    break
            sigma = min(sweep, key=lambda sd: abs(sd[1] - args.target_drop))[0]
            record[name]["blur_sweep"] = sweep
            degraded: dict[str, list[dict[str, Any]]] = {"blur": [], "shuffle": []}
            for s in range(min(args.degraded_splits, len(run))):
                a, classes, cfg = splits[s]
                xs, ys = a["synthetic"]
                for kind, syn in (("blur", (blur(xs, sigma), ys)), ("shuffle", (xs, shuffle_labels(ys, args.shuffle, run[s])))):
                    r = judge(a, syn, classes, cfg, policy, real=honest[s]["real"])
                    assert r["matched"] == honest[s]["matched"], "the degraded set must keep the class counts"
                    r["tstr_drop"] = honest[s]["auc_syn"] - r["auc_syn"]
                    r["split"] = run[s]
                    degraded[kind].append(r)
                    print(f"{name} {kind} split {s}: {'PASS' if r['passed'] else 'FAIL ' + ','.join(r['failed'])} "
                          f"TSTR drop {r['tstr_drop']:+.4f} gap upper {r['gap_upper']} delta_syn upper "
                          f"{r['delta_syn_upper']} [{time.perf_counter() - t0:.0f} s]", flush=True)
            for kind, rs in degraded.items():
                what = f"Gaussian sigma {sigma}" if kind == "blur" else f"{args.shuffle:.0%} of labels shuffled"
                drops = np.array([r["tstr_drop"] for r in rs])
                n_fail_gap = sum("utility.max_auc_gap" in r["failed"] for r in rs)
                n_fail_ds = sum("utility.max_delta_syn" in r["failed"] for r in rs)
                power_rows.append([name, kind, what, str(len(rs)), f"{sum(not r['passed'] for r in rs)}/{len(rs)}",
                                   f"{n_fail_gap} / {n_fail_ds}", f"{drops.mean():+.3f} ± {drops.std(ddof=1):.3f}",
                                   _med([r["gap_upper"] for r in rs]), _med([r["delta_syn_upper"] for r in rs])])
            record[name].update(degraded)
            record[name]["seconds"] = time.perf_counter() - t0
    pu = policy.utility
    print(f"\npolicy: max_auc_gap {pu.max_auc_gap}, max_delta_syn {pu.max_delta_syn}, one-sided bounds at "
          f"{pu.confidence}, min_seeds {pu.min_seeds}; classifier: params.yaml evaluate.utility "
          f"(max_steps {base.max_steps}, patience {base.patience} x {base.eval_every}); {torch.get_num_threads()} thread(s)")
    print("\nSpecificity (honest stand-in must pass)")
    h = ["dataset", "splits", "passed", "gap upper bound, median [min, max]", "seeds-only bound (not used)",
         "Δsyn upper bound", "gap mean",
         "TSTR AUROC", "matched per class", "seeds"]
    print("| " + " | ".join(h) + " |\n|" + "---|" * len(h))
    for row in spec_rows:
        print("| " + " | ".join(row) + " |")
    print("\nPower (degraded stand-in must fail)")
    h = ["dataset", "degradation", "setting", "splits", "failed", "failed on gap / Δsyn", "TSTR drop",
         "gap upper bound", "Δsyn upper bound"]
    print("| " + " | ".join(h) + " |\n|" + "---|" * len(h))
    for row in power_rows:
        print("| " + " | ".join(row) + " |")
    if args.out:
        args.out.write_text(json.dumps(record, indent=1,
                                            default=lambda o: None if isinstance(o, np.ndarray) else float(o)))


if __name__ == "__main__":
    main()
