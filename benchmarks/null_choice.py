"""Which null: the held-out split, or leave-group-out from the training split itself (issue #34, item 3)?

    python benchmarks/null_choice.py data/benchmarks/breast-inferred-/validated --folds 10 --splits 5

On a validated dataset with groups (named or inferred), for ``--splits`` honest half-splits of the test split
(one half stands in for an honest generator, as in ``benchmarks/memorization_gate.py``), the memorization
evidence is assembled twice with synthgate's own code and the default policy:

- **held-out null**: the val split and the other test half, each image scored against the whole training split
  (what ``synthgate evaluate`` does);
- **leave-group-out null**: every training image, scored against the training images of the groups dealt into
  the other ``--folds`` folds (far larger than a small test split).

Printed per split: the gate's memorization verdict and the planted-copy detection rate of every kind under each
null. A null that is heavier (training images closer to other training groups than unseen patients are to
training) costs power; a lighter one would cost specificity.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memorization_gate import concat, memorization_verdict, take  # noqa: E402

from synthgate.data.canonical import load_dataset  # noqa: E402
from synthgate.evaluation.config import MemorizationConfig  # noqa: E402
from synthgate.evaluation.memorization import planted as planted_mod  # noqa: E402
from synthgate.evaluation.memorization.descriptor import get_descriptor  # noqa: E402
from synthgate.evaluation.memorization.evidence import CopySearch, assemble  # noqa: E402
from synthgate.evaluation.memorization.search import make_spec  # noqa: E402
from synthgate.gates.policy import GatePolicy  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path, help="a validated canonical dataset (with a group column)")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("data/benchmarks"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    ds = load_dataset(args.dataset)
    img, lab = np.asarray(ds.images), ds.labels()
    groups = (ds.meta["group"].astype(str).to_numpy() if "group" in ds.meta else np.arange(len(img)).astype(str))
    tr, va, te = (ds.split_indices(s) for s in ("train", "val", "test"))
    held = np.concatenate([va, te])
    cfg = MemorizationConfig(descriptor={"cache_dir": args.work / "descriptors"})
    dev = torch.device(args.device)
    t0 = time.perf_counter()
    desc = get_descriptor(ds, cfg.descriptor, dev)
    spec = make_spec(img.shape[1], cfg.shortlist, cfg.max_shift, tuple(cfg.scales), tuple(cfg.rotations), cfg.tiles)
    train, f_train = img[tr], desc.features(img[tr])
    engine = CopySearch(train, f_train, spec, dev, desc.features)
    s_held = engine.score(img[held])
    _, inverse = np.unique(groups[tr], return_inverse=True)
    fold = np.random.default_rng(0).integers(0, args.folds, inverse.max() + 1)[inverse]
    parts, order = [], []
    for f in range(args.folds):
        q, r = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        if len(q) and len(r):
            parts.append(CopySearch(train[r], f_train[r], spec, dev, desc.features).score(train[q]))
            order.append(q)
    s_lgo, lgo = concat(parts), np.concatenate(order)
    copies, sources = planted_mod.plant(train, cfg.planted, seed=0)
    s_planted = {k: engine.score(v) for k, v in copies.items()}
    print(f"{args.dataset}: {len(tr)} train ({len(np.unique(groups[tr]))} groups), {len(va)} val, {len(te)} test; "
          f"scored in {time.perf_counter() - t0:.0f} s", flush=True)
    policy = GatePolicy()
    pos = {int(i): j for j, i in enumerate(held)}

    def verdict(s_null, null_images, null_labels, syn, seed):  # type: ignore[no-untyped-def]
        s_syn = take(s_held, np.array([pos[int(i)] for i in syn]))
        data, _ = assemble(engine, train, null_images, img[syn], s_null, s_syn, s_planted, sources,
                           train_size=len(train), cfg=cfg, descriptor_identity=desc.identity(), syn_labels=lab[syn],
                           held_labels=null_labels, classes=ds.classes, seed=seed)
        ok, failed, det = memorization_verdict(data, policy)
        rates = " ".join(f"{k} {v['rate']:.2f}" for k, v in data["planted"].items())
        return f"{'pass' if ok else 'FAIL ' + ','.join(failed)}; flagged {len(det.get('flagged', []))}; {rates}"

    for s in range(args.splits):
        r = np.random.default_rng(1000 + s)
        syn = np.sort(np.concatenate([r.permutation(te[lab[te] == k])[: int((lab[te] == k).sum()) // 2]
                                      for k in np.unique(lab[te])]))
        null = np.sort(np.concatenate([va, np.setdiff1d(te, syn)]))
        print(f"split {s} (m = {len(syn)})\n  held-out null (n = {len(null)}): "
              f"{verdict(take(s_held, np.array([pos[int(i)] for i in null])), img[null], lab[null], syn, s)}\n"
              f"  leave-group-out null (n = {len(lgo)}): {verdict(s_lgo, train[lgo], lab[tr][lgo], syn, s)}",
              flush=True)


if __name__ == "__main__":
    main()
