"""The leakage reference and the inferred groups, measured on the real data of ../shared/data.

    python benchmarks/leakage_reference.py calibrate   # the thresholds on PneumoniaMNIST's patient-disjoint split
    python benchmarks/leakage_reference.py mednist     # the diagnosis on MedNIST (random split), before/after groups
    python benchmarks/leakage_reference.py quality     # re-crops land in one group; PneumoniaMNIST patients merged
    python benchmarks/leakage_reference.py speed       # time to group one MedNIST class at 64x64 (extrapolated)

Every part runs synthgate's own code (prepare, validate's diagnosis, infer_groups) and prints one table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from synthgate.config import PrepareConfig, SourceConfig
from synthgate.data.canonical import load_dataset
from synthgate.data.config import InferGroupsConfig, LeakageConfig
from synthgate.data.groups_inferred import infer_groups
from synthgate.data.leakage import diagnose_leakage
from synthgate.data.prepare import prepare

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PNEUMONIA = SourceConfig(type="medmnist", path=SHARED / "medmnist" / "pneumoniamnist.npz")
MEDNIST = SourceConfig(type="mednist", path=SHARED / "mednist" / "MedNIST.tar.gz")


def _prepared(work: Path, name: str, source: SourceConfig, cfg: PrepareConfig):
    out = work / name
    if not (out / "manifest.json").exists():
        prepare(source, cfg, out)
    return load_dataset(out)


def calibrate(work: Path, args: argparse.Namespace) -> None:
    """Test split (unseen patients) against the training split: the thresholds and their false alarms."""
    ds = _prepared(work, "pneumonia32", PNEUMONIA, PrepareConfig(resolution=32, workers=1))
    split = ds.meta["split"].to_numpy()
    keep = split != "val"  # val was drawn from the training patients' images (it holds exact copies): not a reference
    wide = LeakageConfig(similarity=1.0, margin=1e9)  # scores only: nothing flagged
    t = time.time()
    rep = diagnose_leakage(np.asarray(ds.images)[keep], split[keep], ds.meta["label"].to_numpy()[keep], ds.classes,
                           ds.meta["source"].to_numpy()[keep], wide)
    s, m = rep.pairs["similarity"].to_numpy(), rep.pairs["margin"].to_numpy()
    q = args.quantile
    sim_t, mar_t = float(np.quantile(s, q)), float(np.quantile(m, q))
    print(f"PneumoniaMNIST 32x32: {len(s)} test images vs {int((split == 'train').sum())} training images "
          f"({time.time() - t:.1f} s)")
    print(f"similarity: max {s.max():.4f}, q{q} {sim_t:.4f}; margin: max {m.max():.4f}, q{q} {mar_t:.4f}")
    print(f"in-sample share flagged at these: {np.mean((s >= sim_t) | (m >= mar_t)):.4f}")
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(args.halvings):
        perm = rng.permutation(len(s))
        a, b = perm[: len(s) // 2], perm[len(s) // 2 :]
        for cal, held in ((a, b), (b, a)):
            ts, tm = np.quantile(s[cal], q), np.quantile(m[cal], q)
            rates.append(np.mean((s[held] >= ts) | (m[held] >= tm)))
    r = np.array(rates)
    print(f"two-fold false alarms over {args.halvings} halvings: mean {r.mean():.4f}, min {r.min():.4f}, "
          f"max {r.max():.4f} (per held-out half of {len(s) // 2})")
    val = split == "val"
    vrep = diagnose_leakage(np.asarray(ds.images)[~(split == "test")], split[~(split == "test")],
                            ds.meta["label"].to_numpy()[~(split == "test")], ds.classes,
                            ds.meta["source"].to_numpy()[~(split == "test")], LeakageConfig())
    print(f"val split (not patient-disjoint) at the shipped thresholds: {vrep.flagged} of {int(val.sum())} flagged")


def mednist(work: Path, args: argparse.Namespace) -> None:
    """The demo's data: 1,000 images per class at 32x32, seeded random split; then split by inferred groups."""
    base = PrepareConfig(resolution=32, max_per_class=args.per_class, workers=2)
    rows = []
    for name, cfg in (("random split", base),
                      (f"inferred groups, {args.rounds} rounds",
                       base.model_copy(update={"infer_groups": InferGroupsConfig(enabled=True, rounds=args.rounds)}))):
        t = time.time()
        ds = _prepared(work, f"mednist_{name.split(',')[0].replace(' ', '_')}_{args.rounds}", MEDNIST, cfg)
        took = time.time() - t
        rep = diagnose_leakage(ds.images, ds.meta["split"].to_numpy(), ds.meta["label"].to_numpy(), ds.classes,
                               ds.meta["source"].to_numpy(), LeakageConfig())
        per_class = {c: sum(rep.counts[sp].get(c, {}).get("flagged", 0) for sp in rep.counts) for c in ds.classes}
        groups = ds.manifest.get("groups") or {}
        rows.append((name, rep.held_out, rep.flagged, per_class, groups.get("largest"), groups.get("singletons"),
                     took))
        print(f"{name}: {rep.verdict}")
    print("| split | held-out | flagged | per class | largest groups | singletons | prepare s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]:.0f} |")


def _recrop(image: np.ndarray, rng: np.random.Generator, keep: float) -> np.ndarray:
    from PIL import Image

    h = image.shape[0]
    c = int(round(h * keep))
    y, x = rng.integers(0, h - c + 1, size=2)
    return np.asarray(Image.fromarray(image[y : y + c, x : x + c]).resize((h, h), Image.Resampling.BILINEAR))


def quality(work: Path, args: argparse.Namespace) -> None:
    """(1) PneumoniaMNIST train + test (patient-disjoint), grouped without the split: groups that hold images of
    both sides merge distinct patients. (2) sources re-cropped 3 times each (90-95% crops, resized back), mixed
    into the other images: how many sources have all their re-crops in one group."""
    ds = _prepared(work, "pneumonia32", PNEUMONIA, PrepareConfig(resolution=32, workers=1))
    split = ds.meta["split"].to_numpy()
    sel = np.flatnonzero(split != "val")
    images = np.asarray(ds.images)[sel][..., 0]
    labels = ds.meta["label"].to_numpy()[sel]
    side = split[sel]
    rng = np.random.default_rng(0)
    src = rng.choice(np.flatnonzero(side == "test"), size=args.sources, replace=False)
    crops = np.stack([_recrop(images[i], rng, rng.uniform(0.9, 0.95)) for i in src for _ in range(3)])
    allim = np.concatenate([images, crops])[..., None]
    alllab = np.concatenate([labels, np.repeat(labels[src], 3)])
    cfg = InferGroupsConfig(enabled=True, rounds=args.rounds)
    t = time.time()
    g = infer_groups(allim, alllab, ds.classes, [""] * len(allim), cfg, seed=0)
    took = time.time() - t
    ids = g.ids[: len(images)]
    tr_groups, te_groups = set(ids[side == "train"].tolist()), set(ids[side == "test"].tolist())
    mixed = tr_groups & te_groups
    test_in_mixed = int(np.isin(ids[side == "test"], list(mixed)).sum())
    n_tr, n_te = int((side == "train").sum()), int((side == "test").sum())
    pairs = sum(int((ids[side == "train"] == k).sum()) * int((ids[side == "test"] == k).sum()) for k in mixed)
    crop_ids = g.ids[len(images):].reshape(-1, 3)
    together = int(np.sum([len(set(r.tolist())) == 1 for r in crop_ids]))
    with_source = int(np.sum([len(set(r.tolist()) | {ids[i]}) == 1 for r, i in zip(crop_ids, src, strict=True)]))
    print(f"grouped {len(allim)} images at 32x32 in {took:.1f} s, {args.rounds} rounds; {g.distribution()}")
    print(f"PneumoniaMNIST: {len(mixed)} of {len(set(ids.tolist()))} groups hold both training and test images; "
          f"{test_in_mixed} of {n_te} test images share a group with training images; cross-split pairs in one group "
          f"{pairs} of {n_tr * n_te} ({pairs / (n_tr * n_te):.2e})")
    print(f"re-crops: {together} of {args.sources} sources have their 3 re-crops in one group, {with_source} with "
          "the source image too")


def speed(work: Path, args: argparse.Namespace) -> None:
    """Group the first ``n`` images of one MedNIST class prepared at 64x64 (compared at 32x32), wall and CPU
    time. Classes are grouped one after the other and independently, so 60,000 images in 6 classes of 10,000
    take about 6 times one class of 10,000 (extrapolated, labelled so); with two sizes, also the fit
    t = c1 n + c2 n^2 (the shortlist scan is quadratic in the class size, the aligned scores linear)."""
    ds = _prepared(work, "mednist64", MEDNIST, PrepareConfig(resolution=64, workers=2,
                                                             max_per_class=max(args.sizes)))
    lab = ds.meta["label"].to_numpy()
    times = {}
    for n in args.sizes:
        idx = np.flatnonzero(lab == 0)[:n]
        images = np.asarray(ds.images)[idx]
        t, c = time.time(), time.process_time()
        g = infer_groups(images, np.zeros(len(idx), np.int64), ["one"], [""] * len(idx),
                         InferGroupsConfig(enabled=True, rounds=args.rounds), seed=0)
        times[n] = time.time() - t
        print(f"{len(idx)} images of {ds.classes[0]} at 64x64: {times[n]:.1f} s wall, {time.process_time() - c:.1f} s "
              f"CPU, {torch.get_num_threads()} thread(s) ({g.distribution()['largest']})")
    ns = sorted(times)
    if ns[-1] >= 10_000:
        print(f"extrapolated: 60,000 images in 6 classes of 10,000 about 6 x {times[ns[-1]]:.0f} s = "
              f"{6 * times[ns[-1]]:.0f} s")
    if len(ns) < 2:
        return
    a, b = ns[0], ns[-1]
    # t(n) = c1 n + c2 n^2 through the two measured points
    c2 = (times[b] / b - times[a] / a) / (b - a)
    c1 = times[a] / a - c2 * a
    per_class = c1 * 10_000 + c2 * 10_000**2
    print(f"extrapolated (t = c1 n + c2 n^2 through n = {a} and {b}): one class of 10,000 images {per_class:.0f} s, "
          f"60,000 images in 6 classes of 10,000 {6 * per_class:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["calibrate", "mednist", "quality", "speed"])
    p.add_argument("--work", type=Path, default=None, help="folder for prepared datasets (default: a temporary one)")
    p.add_argument("--quantile", type=float, default=0.995)
    p.add_argument("--halvings", type=int, default=20)
    p.add_argument("--per-class", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=InferGroupsConfig().rounds)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sources", type=int, default=100)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        {"calibrate": calibrate, "mednist": mednist, "quality": quality, "speed": speed}[args.part](work, args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
