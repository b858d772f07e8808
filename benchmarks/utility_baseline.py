"""The downstream classifier against a paper's table: TRTR (train on real, test on real) with the
default CPU settings of ``params.yaml`` (``evaluate.utility``) on PneumoniaMNIST and BreastMNIST,
beside MedMNIST v2's ResNet-18 (28) baseline (Yang et al., Sci. Data 2023, Table 3: AUC 0.944 /
ACC 0.854 and AUC 0.901 / ACC 0.863).

    python benchmarks/utility_baseline.py                       # both datasets, 5 seeds (~8 min, 1 core)
    python benchmarks/utility_baseline.py --datasets breast --seeds 0 1 2

Each dataset is prepared here from ``../shared/data/medmnist/*.npz`` with ``params.yaml``'s prepare
settings (32x32), then validated with its validate settings (which drop the val/test member of
every cross-split near duplicate). It is scored on both:

- ``official``: the prepared dataset, MedMNIST's own train/val/test split, the one the published
  numbers were measured on;
- ``validated``: the copy synthgate evaluates against, whose val/test splits lost the near copies
  of training images (an easier part of the test split: expect a lower AUC).

The classifier is the one :func:`synthgate.evaluation.utility.utility` trains for its
``real_full`` setting (the same call), selected on the validation split, tested once on the test
split. Prints AUROC, accuracy at the validation-chosen threshold and balanced accuracy as mean +-
sd over the seeds, with the seeds, the steps trained and the time taken.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
#: MedMNIST v2 (Yang et al. 2023), Table 3, ResNet-18 (28): (AUC, ACC) on the official test split.
PUBLISHED = {"pneumonia": (0.944, 0.854), "breast": (0.901, 0.863)}
FILES = {"pneumonia": "pneumoniamnist.npz", "breast": "breastmnist.npz"}


def settings(params_path: Path) -> tuple[Any, Any, Any]:
    """The ``prepare``, ``validate`` and ``evaluate.utility`` sections of the params file, typed
    (only these: the benchmark does not depend on the other stages' settings)."""
    import yaml

    from synthgate.config import PrepareConfig, ValidateConfig, parse_model
    from synthgate.evaluation.config import UtilityConfig

    raw = yaml.safe_load(Path(params_path).read_text()) or {}
    where = str(params_path)
    return (parse_model(PrepareConfig, raw.get("prepare", {}), where),
            parse_model(ValidateConfig, raw.get("validate", {}), where),
            parse_model(UtilityConfig, (raw.get("evaluate") or {}).get("utility", {}), where))


def prepare_medmnist(name: str, data_dir: Path, work: Path, params_path: Path) -> tuple[Path, Path]:
    """Prepare ``name`` from ``data_dir/medmnist`` into ``work`` with the params file's prepare and
    validate settings; return (prepared, validated) dataset folders. Reused when already there."""
    from synthgate.config import SourceConfig
    from synthgate.data.canonical import load_dataset
    from synthgate.data.prepare import prepare
    from synthgate.data.validate import validate

    prep_cfg, val_cfg, _ = settings(params_path)
    prepared, validated = work / f"{name}-prepared", work / f"{name}-validated"
    src = SourceConfig(type="medmnist", path=data_dir / "medmnist" / FILES[name])
    for path, make in ((prepared, lambda: prepare(src, prep_cfg, prepared)),
                       (validated, lambda: validate(prepared, val_cfg, validated, work / f"{name}-report"))):
        try:
            load_dataset(path)
        except Exception:
            make()
    return prepared, validated


def trtr(dataset: Path, seeds: list[int], params_path: Path) -> dict[str, Any]:
    """TRTR on the whole training split of ``dataset`` with ``params.yaml``'s ``evaluate.utility``."""
    from synthgate.data.canonical import load_dataset
    from synthgate.evaluation.utility import utility

    cfg = settings(params_path)[2].model_copy(update={"seeds": seeds, "settings": ["real_full"]})
    ds = load_dataset(dataset)
    x, y = np.asarray(ds.images), ds.labels()
    tr, va, te = (ds.split_indices(s) for s in ("train", "val", "test"))
    empty = (x[:0], y[:0])
    start = time.perf_counter()
    u = utility((x[tr], y[tr]), (x[va], y[va]), (x[te], y[te]), empty, len(ds.classes), cfg, torch.device("cpu"),
                class_names=ds.classes)
    runs = u["runs"]["real_full"]
    return {"runs": runs, "seconds": time.perf_counter() - start, "counts": ds.counts(),
            "validation": u["validation"], "training": u["training"]}


def _ms(v: list[float]) -> str:
    a = np.asarray(v, dtype=np.float64)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="the shared data folder")
    ap.add_argument("--datasets", nargs="+", default=["pneumonia", "breast"], choices=sorted(FILES))
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="default: evaluate.utility.seeds")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--work", type=Path, default=None, help="where to prepare the datasets (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: leave the other cores alone)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = args.seeds or settings(args.params)[2].seeds
    with tempfile.TemporaryDirectory(prefix="utility-baseline-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        for name in args.datasets:
            t0 = time.perf_counter()
            prepared, validated = prepare_medmnist(name, args.data, work, args.params)
            prep_s = time.perf_counter() - t0
            for split_kind, path in (("official", prepared), ("validated", validated)):
                r = trtr(path, seeds, args.params)
                runs = r["runs"]
                test = r["counts"]["test"]
                rows.append([name, split_kind, "/".join(str(test[c]) for c in test), _ms([x["auroc"] for x in runs]),
                             f"{PUBLISHED[name][0]:.3f}", _ms([x["accuracy"] for x in runs]), f"{PUBLISHED[name][1]:.3f}",
                             _ms([x["balanced_accuracy"] for x in runs]), " ".join(str(x["steps"]) for x in runs),
                             f"{r['seconds']:.0f} s"])
                per_seed = ", ".join(f"{x['seed']}: {x['auroc']:.4f}" for x in runs)
                print(f"{name} {split_kind}: AUROC per seed {per_seed}; early stopping "
                      f"{r['validation']['early_stopping']}; prepared in {prep_s:.0f} s", flush=True)
        tr = r["training"]
        print(f"\nTRTR, small CNN ({tr['arch']}), params.yaml evaluate.utility: max_steps {tr['max_steps']}, "
              f"batch {tr['batch_size']}, lr {tr['lr']}, eval every {tr['eval_every']}, patience {tr['patience']}; "
              f"seeds {' '.join(map(str, seeds))}; {torch.get_num_threads()} CPU thread(s)")
        header = ["dataset", "split", "test (per class)", "AUROC ours", "published", "ACC ours", "published",
                  "balanced ACC", "steps", "time"]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print("published: MedMNIST v2 ResNet-18 (28), official test split; ratio ours/published AUROC: "
              + ", ".join(f"{r[0]} {r[1]} {float(r[3].split()[0]) / float(r[4]):.3f}" for r in rows))


if __name__ == "__main__":
    main()
