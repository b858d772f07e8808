"""Specificity and power of the memorization gate on real data (MedNIST, PneumoniaMNIST, BreastMNIST
from ../shared/data), with synthgate's own evaluation code and the default release policy.

    python benchmarks/memorization_gate.py                         # all three datasets
    python benchmarks/memorization_gate.py --datasets breast --splits 20 --power-splits 5
    python benchmarks/memorization_gate.py --split inferred --max-per-class 1000   # the leak-aware split (#34)

``--split``: ``source`` (before: the source's own split, or prepare's seeded random split of a source without
one) or ``inferred`` (after: ``prepare.infer_groups`` with its calibrated defaults; a source with its own split
is regrouped, every group that straddles moves to the split holding most of its images).

For each dataset (prepared and validated with the project's defaults; cached under --work):

- **specificity**: the real test split is halved per class, 20 times at random (as ``synthgate
  standin`` does); one half stands in for an honest generator, the other half and the val split form
  the held-out null. Every memorization rule of ``gates.yaml``'s defaults is applied; an honest
  "generator" should pass in at least 19 of 20 splits.
- **power**: the same "generator" with 2% of its images (at least 3) replaced by copies of training
  images of one kind: each kind the evaluation plants, and each modification of
  ``benchmarks/copy_modifications.py`` that it never plants. The gate should fail every time.
- **one exact copy** among 1,000 synthetic images (held-out images; fewer where the held-out split
  is smaller): is it flagged, by name?

Every image is scored once per dataset (training split indexed once); each split re-fits the nulls
and re-applies the rules with :func:`synthgate.evaluation.memorization.evidence.assemble` and
:func:`synthgate.gates.decision.decide`, the functions ``synthgate evaluate`` and ``synthgate gate`` use.
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
SHARED = REPO.parent / "shared" / "data"

import copy_modifications  # noqa: E402

from synthgate.config import PrepareConfig, SourceConfig, ValidateConfig  # noqa: E402
from synthgate.data.canonical import load_dataset  # noqa: E402
from synthgate.evaluation.config import MemorizationConfig  # noqa: E402
from synthgate.evaluation.memorization import planted as planted_mod  # noqa: E402
from synthgate.evaluation.memorization.descriptor import get_descriptor  # noqa: E402
from synthgate.evaluation.memorization.evidence import CopySearch, Scored, assemble, reachable  # noqa: E402
from synthgate.evaluation.memorization.search import SearchResult, make_spec  # noqa: E402
from synthgate.gates.decision import decide  # noqa: E402
from synthgate.gates.policy import GatePolicy  # noqa: E402

DATASETS = {
    "mednist": (SourceConfig(type="mednist", path=SHARED / "mednist" / "MedNIST.tar.gz"), 64),
    "pneumonia": (SourceConfig(type="medmnist", path=SHARED / "medmnist" / "pneumoniamnist.npz"), 32),
    "breast": (SourceConfig(type="medmnist", path=SHARED / "medmnist" / "breastmnist.npz"), 32),
}


def prepared(name: str, work: Path, validate_cfg: ValidateConfig, split: str = "source",
             max_per_class: int | None = None, resolution: int | None = None) -> Path:
    from synthgate.data.config import InferGroupsConfig
    from synthgate.data.prepare import prepare
    from synthgate.data.validate import validate

    tag = (name + ("" if split == "source" else f"-{split}") + (f"-{max_per_class}" if max_per_class else "")
           + (f"-{resolution}px" if resolution else ""))
    out = work / tag / "validated"
    if not (out / "manifest.json").exists():
        src, res = DATASETS[name]
        res = resolution or res
        groups = InferGroupsConfig(enabled=split == "inferred", source_split="regroup")
        t = time.perf_counter()
        prepare(src, PrepareConfig(resolution=res, max_per_class=max_per_class, infer_groups=groups),
                work / tag / "prepared")
        t_prep = time.perf_counter() - t
        r = validate(work / tag / "prepared", validate_cfg, out, work / tag / "validation")
        leak = json.loads((work / tag / "validation" / "validation.json").read_text()).get("leakage", {})
        print(f"  {tag}: prepared in {t_prep:.0f} s; validation {'passed' if r.passed else 'FAILED'}, dropped "
              f"{r.dropped}; leakage: {leak.get('verdict', '-')}", flush=True)
    return out


def take(s: Scored, idx: np.ndarray) -> Scored:
    return Scored(s.search.take(idx), s.descriptor[idx], s.descriptor_index[idx])


def concat(parts: list[Scored]) -> Scored:
    fields = SearchResult.__dataclass_fields__
    res = SearchResult(*(np.concatenate([getattr(p.search, f) for p in parts]) for f in fields))
    return Scored(res, np.concatenate([p.descriptor for p in parts]), np.concatenate([p.descriptor_index for p in parts]))


def ceiling(null: Scored, copies: Scored) -> dict:
    """The evaluation's reachable share (:func:`synthgate.evaluation.memorization.evidence.reachable`) against
    *all* held-out images (not one split's null), in all and per detector."""
    ns, cs = null.scores(), copies.scores()
    null_max = {d: float(v.max()) for d, v in ns.items()}
    return {"beyond_null_max": reachable(cs, null_max),
            "beyond_per_detector": {d: reachable({d: v}, null_max) for d, v in cs.items()},
            "n_null_all": int(len(null.descriptor))}


def memorization_verdict(mem: dict, policy: GatePolicy) -> tuple[bool, list[str], dict]:
    """The gate's decision on the memorization rules only (utility etc. are other benchmarks')."""
    ev = {"memorization": mem, "evaluation_hash": "benchmark", "synthetic": {}, "summary": {}, "utility": None}
    d = decide(ev, policy)
    failed = [r.rule for r in d.failures if r.rule.startswith("memorization.")]
    return not failed, failed, d.details.get("memorization", {})


def indexed(root: Path, args: argparse.Namespace, device: torch.device) -> tuple:
    """A validated dataset's images, labels and splits, its copy descriptor (cached under --work) and the copy
    search with the training split indexed, as the evaluation builds them: (ds, cfg, images, labels, (train,
    val, test) indices, descriptor, engine)."""
    ds = load_dataset(root)
    cfg = MemorizationConfig(descriptor={"cache_dir": Path(args.work) / "descriptors", "steps": args.descriptor_steps})
    images = np.asarray(ds.images)
    splits = tuple(ds.split_indices(s) for s in ("train", "val", "test"))
    desc = get_descriptor(ds, cfg.descriptor, device)
    spec = make_spec(images.shape[1], cfg.shortlist, cfg.max_shift, tuple(cfg.scales), tuple(cfg.rotations), cfg.tiles)
    train = images[splits[0]]
    engine = CopySearch(train, desc.features(train), spec, device, desc.features)
    return ds, cfg, images, ds.labels(), splits, desc, engine


def run(name: str, args: argparse.Namespace, policy: GatePolicy) -> dict:
    t0 = time.perf_counter()
    device = torch.device(args.device)
    root = prepared(name, Path(args.work), ValidateConfig(drop_duplicates=True, drop_empty=True,
                                                          near_duplicate_threshold=args.dedup),
                    args.split, args.max_per_class, args.resolution)
    ds, cfg, images, labels, (tr, va, te), desc, engine = indexed(root, args, device)
    t_desc = time.perf_counter() - t0
    train = images[tr]
    held_idx = np.concatenate([va, te])
    t = time.perf_counter()
    s_all = engine.score(images[held_idx])
    t_score = time.perf_counter() - t
    pos = {int(i): j for j, i in enumerate(held_idx)}
    copies, sources = planted_mod.plant(train, cfg.planted, seed=0)
    s_planted = {k: engine.score(v) for k, v in copies.items()}
    rng = np.random.default_rng(1)
    pool_src = rng.choice(len(train), size=min(len(train), args.pool), replace=False)
    pools: dict[str, tuple[np.ndarray, Scored]] = {}
    for kind in list(planted_mod.KINDS) + list(copy_modifications.KINDS):
        if kind in planted_mod.KINDS:
            imgs = np.stack([planted_mod.modify(kind, train[i], rng, train[j])
                             for i, j in zip(pool_src, rng.choice(len(train), len(pool_src)), strict=True)])
        else:
            imgs = copy_modifications.make(kind, train[pool_src], seed=2)
        pools[kind] = (imgs, engine.score(imgs))
    print(f"  {name}: {len(tr)} train, {len(va)} val, {len(te)} test; descriptor {t_desc:.0f} s, held-out scored "
          f"in {t_score:.0f} s ({1000 * t_score / len(held_idx):.1f} ms/image)", flush=True)

    def evidence(syn_idx: np.ndarray, null_idx: np.ndarray, extra: tuple[np.ndarray, Scored] | None = None,
                 seed: int = 0) -> dict:
        s_syn = take(s_all, np.array([pos[int(i)] for i in syn_idx]))
        syn_imgs = images[syn_idx]
        syn_lab = labels[syn_idx]
        if extra is not None:
            syn_imgs = np.concatenate([syn_imgs, extra[0]])
            s_syn = concat([s_syn, extra[1]])
            syn_lab = np.concatenate([syn_lab, np.zeros(len(extra[0]), int)])
        s_null = take(s_all, np.array([pos[int(i)] for i in null_idx]))
        data, _ = assemble(engine, train, images[null_idx], syn_imgs, s_null, s_syn, s_planted, sources,
                           train_size=len(train), cfg=cfg, descriptor_identity=desc.identity(), syn_labels=syn_lab,
                           held_labels=labels[null_idx], classes=ds.classes, seed=seed)
        return data

    def half_split(seed: int) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(1000 + seed)
        syn = []
        for k in np.unique(labels[te]):
            members = r.permutation(te[labels[te] == k])
            syn.append(members[: len(members) // 2])
        syn_idx = np.sort(np.concatenate(syn))
        return syn_idx, np.sort(np.concatenate([va, np.setdiff1d(te, syn_idx)]))

    spec_rows = []
    for s in range(args.splits):
        syn_idx, null_idx = half_split(s)
        data = evidence(syn_idx, null_idx, seed=s)
        ok, failed, det = memorization_verdict(data, policy)
        spec_rows.append({"split": s, "passed": ok, "failed": failed, "flagged": len(det.get("flagged", [])),
                          "m": len(syn_idx), "n_null": len(null_idx),
                          "min_planted": min((v["rate"] for v in data["planted"].values() if v["ruled"]), default=None),
                          "weakest": min((k for k, v in data["planted"].items() if v["ruled"]),
                                         key=lambda k: data["planted"][k]["rate"])})
        print(f"  {name} split {s}: {'pass' if ok else 'FAIL ' + ','.join(failed)}", flush=True)
    planted_table = {k: {"rate": v["rate"], "ci95": v["ci95"], "per_detector": v["per_detector"],
                         "median_p": float(np.median(v["p_values"])),
                         "level": cfg.alpha / max(len(syn_idx), 1), **ceiling(s_all, s_planted[k])}
                     for k, v in data["planted"].items()}

    power_rows = []
    for kind, (imgs, scored) in pools.items():
        fails = flagged_planted = planted_total = 0
        for s in range(args.power_splits):
            syn_idx, null_idx = half_split(s)
            k_copies = max(3, int(round(0.02 * len(syn_idx))))
            pick = np.random.default_rng(50 + s).choice(len(imgs), k_copies, replace=False)
            # the copies replace 2% of the honest images
            keep = np.random.default_rng(60 + s).choice(len(syn_idx), len(syn_idx) - k_copies, replace=False)
            data = evidence(np.sort(syn_idx[keep]), null_idx, (imgs[pick], take(scored, pick)), seed=s)
            ok, failed, det = memorization_verdict(data, policy)
            fails += not ok
            m_honest = len(keep)
            flagged_planted += sum(i >= m_honest for i in det.get("flagged", []))
            planted_total += k_copies
        power_rows.append({"kind": kind, "planted_by_evaluation": kind in planted_mod.KINDS,
                           "in_descriptor_augmentations": kind in copy_modifications.IN_DESCRIPTOR_AUGMENTATIONS,
                           "gate_failed": fails, "splits": args.power_splits, "copies_flagged": flagged_planted,
                           "copies": planted_total})
        print(f"  {name} power {kind}: gate failed {fails}/{args.power_splits}, copies flagged "
              f"{flagged_planted}/{planted_total}", flush=True)

    # one exact copy among (up to) 1,000 synthetic images
    r = np.random.default_rng(7)
    n_syn = min(999, len(held_idx) // 2)
    syn_idx = np.sort(r.choice(held_idx, n_syn, replace=False))
    null_idx = np.setdiff1d(held_idx, syn_idx)
    src = int(r.integers(len(train)))
    exact = train[src : src + 1]
    data = evidence(syn_idx, null_idx, (exact, engine.score(exact)), seed=0)
    ok, failed, det = memorization_verdict(data, policy)
    one = {"m": n_syn + 1, "n_null": len(null_idx), "flagged": det.get("flagged", []), "copy_index": n_syn,
           "flagged_by_name": n_syn in det.get("flagged", []), "only_the_copy": det.get("flagged", []) == [n_syn],
           "gate_failed": not ok, "failed": failed}
    print(f"  {name} one exact copy among {n_syn + 1}: flagged {one['flagged']} (copy is #{n_syn})", flush=True)
    return {"dataset": name, "split": args.split, "max_per_class": args.max_per_class, "resolution": int(images.shape[1]), "train": int(len(tr)), "val": int(len(va)),
            "test": int(len(te)), "seconds": round(time.perf_counter() - t0, 1), "ms_per_image": 1000 * t_score / len(held_idx),
            "descriptor": desc.identity(), "specificity": spec_rows, "planted": planted_table, "power": power_rows,
            "one_exact_copy": one, "statement": det.get("statement")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--power-splits", type=int, default=5)
    ap.add_argument("--pool", type=int, default=100, help="copies per modification scored once per dataset")
    ap.add_argument("--split", choices=["source", "inferred"], default="source",
                    help="source: the source's own (or a seeded random) split; inferred: split by inferred groups")
    ap.add_argument("--max-per-class", type=int, default=None, help="prepare at most N images per class (seeded)")
    ap.add_argument("--resolution", type=int, default=None, help="prepare at this resolution (default: per dataset)")
    ap.add_argument("--dedup", type=float, default=0.99, help="validate.near_duplicate_threshold")
    ap.add_argument("--descriptor-steps", type=int, default=MemorizationConfig().descriptor.steps)
    ap.add_argument("--work", default=str(REPO / "data" / "benchmarks"))
    ap.add_argument("--out", default=None, help="default reports/benchmarks/memorization_gate[-inferred].json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out is None:
        suffix = (("" if args.split == "source" else f"-{args.split}")
                  + (f"-{args.max_per_class}" if args.max_per_class else "")
                  + (f"-{args.resolution}px" if args.resolution else ""))
        args.out = str(REPO / "reports" / "benchmarks" / f"memorization_gate{suffix}.json")
    policy = GatePolicy()
    results = []
    for name in args.datasets:
        results.append(run(name, args, policy))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    print_tables(results)


def print_tables(results: list[dict]) -> None:
    print(f"\n## Specificity: honest half-splits passing every memorization rule (split: {results[0]['split']}, "
          f"at most {results[0]['max_per_class'] or 'all'} images per class)")
    print("| dataset | passed | failing rules (count) | flagged images (total) | weakest planted kind (min rate) |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        rows = r["specificity"]
        fails: dict[str, int] = {}
        for x in rows:
            for f in x["failed"]:
                fails[f] = fails.get(f, 0) + 1
        weakest = min(rows, key=lambda x: x["min_planted"] or 0)
        print(f"| {r['dataset']} | {sum(x['passed'] for x in rows)}/{len(rows)} | "
              f"{', '.join(f'{k} ({v})' for k, v in fails.items()) or '-'} | {sum(x['flagged'] for x in rows)} | "
              f"{weakest['weakest']} ({weakest['min_planted']:.2f}) |")
    print("\n## Power: the gate fails a generator with 2% copies of one kind (fails / splits; copies flagged)")
    kinds = [p["kind"] for p in results[0]["power"]]
    print("| kind | planted by the evaluation | " + " | ".join(r["dataset"] for r in results) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in results) + " |")
    for k in kinds:
        cells = []
        for r in results:
            p = next(x for x in r["power"] if x["kind"] == k)
            cells.append(f"{p['gate_failed']}/{p['splits']} ({p['copies_flagged']}/{p['copies']})")
        p0 = next(x for x in results[0]["power"] if x["kind"] == k)
        where = "yes" if p0["planted_by_evaluation"] else ("no (descriptor aug.)" if p0["in_descriptor_augmentations"]
                                                            else "no")
        print(f"| {k} | {where} | " + " | ".join(cells) + " |")
    print("\n## Planted-copy detection (last specificity split; one copy among m, combined p-value)")
    print("| kind | " + " | ".join(r["dataset"] for r in results) + " |")
    print("| --- | " + " | ".join("---" for _ in results) + " |")
    for k in results[0]["planted"]:
        print(f"| {k} | " + " | ".join(f"{r['planted'][k]['rate']:.2f} [{r['planted'][k]['ci95'][0]:.2f}, "
                                        f"{r['planted'][k]['ci95'][1]:.2f}]" for r in results) + " |")
    print("\n## Ceiling: planted copies beyond every held-out image on at least one detector (bounds any "
          "calibrated combination's power); median combined p of the copies against the level")
    print("| kind | " + " | ".join(r["dataset"] for r in results) + " |")
    print("| --- | " + " | ".join("---" for _ in results) + " |")
    for k in results[0]["planted"]:
        print(f"| {k} | " + " | ".join(f"{r['planted'][k]['beyond_null_max']:.2f} (p {r['planted'][k]['median_p']:.1e}"
                                        f" vs {r['planted'][k]['level']:.1e})" for r in results) + " |")
    print("\n## One exact copy")
    for r in results:
        o = r["one_exact_copy"]
        print(f"- {r['dataset']}: among {o['m']} images (null {o['n_null']}): flagged {o['flagged']}, the copy is "
              f"#{o['copy_index']}: {'flagged by name' if o['flagged_by_name'] else 'NOT flagged'}")
    for r in results:
        print(f"- {r['dataset']}: {r['seconds']:.0f} s in all, {r['ms_per_image']:.1f} ms per image searched")


if __name__ == "__main__":
    main()
