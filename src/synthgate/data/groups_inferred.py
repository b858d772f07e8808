"""Acquisition groups inferred from the pixels, for sources that name no patients.

Images of one scan or one patient (adjacent slices, re-crops, repeat acquisitions) are closer to each
other than unseen patients' images are; :mod:`synthgate.data.leakage` defines that rule and calibrates it
on a patient-disjoint split. Here every image of a class is linked to its nearest image by that rule, and
linked images form a group:

1. **Links.** In each of ``rounds`` rounds the current groups of a class are dealt into ``folds`` random
   folds (all images of a group into one fold; in the first round every image is its own group); every
   image is searched (the copy search, :func:`synthgate.data.dedup.aligned_nearest`, at the reference
   resolution) against the other folds, and linked to its nearest image there when that passes the rule.
   As in Boruvka's algorithm, each round links a group to images outside it, never to its own members
   again, so groups grow round by round towards the single-linkage components of the rule. With
   ``pattern``, images whose file paths give the same capture are linked first. The classes are grouped
   side by side (one torch thread each, as many at once as torch has threads), each with folds seeded by
   (seed, class), so the groups do not depend on how many run at once.
2. **Groups.** A round's links are taken in order of decreasing similarity, except that a link
   that would make a group larger than ``max_group_size`` is not made: a chain of false links (A ~ B ~ C
   ... across patients) cannot grow into one giant group. The group-size distribution is reported, and a
   class whose largest group holds more than ``max_group_share`` of it is refused as collapsed.

The grouped split (:func:`synthgate.data.prepare.grouped_splits`) then keeps every group in one split, as
it does for named patients; :func:`regroup_split` moves the images of a source's own split that straddle.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthgate.data.config import InferGroupsConfig
from synthgate.errors import DataError

SPLIT_PRIORITY = {"train": 0, "test": 1, "val": 2}  # a tie keeps the group in training first, then in test


class _Union:
    def __init__(self, n: int) -> None:
        self.parent: np.ndarray = np.arange(n)
        self.size: np.ndarray = np.ones(n, np.int64)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = int(self.parent[root])
        while self.parent[a] != root:
            self.parent[a], a = root, int(self.parent[a])
        return root

    def join(self, a: int, b: int, cap: int | None = None) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if cap is not None and self.size[ra] + self.size[rb] > cap:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True


@dataclass
class InferredGroups:
    ids: np.ndarray  # one group id per image, "g<first member>"
    links: int  # pixel links made
    capped: int  # pixel links not made because of max_group_size
    pattern_links: int
    settings: dict[str, Any]

    def sizes(self) -> np.ndarray:
        return np.unique(self.ids, return_counts=True)[1]

    def distribution(self) -> dict[str, Any]:
        """How many groups, of which sizes (bins 1, 2, 3-4, 5-8, ...), the largest five."""
        sizes = self.sizes()
        hist: dict[str, int] = {}
        lo = 1
        while lo <= (sizes.max() if len(sizes) else 0):
            hi = 1 if lo == 1 else 2 * lo - 1
            n = int(((sizes >= lo) & (sizes <= hi)).sum())
            if n:
                hist[str(lo) if lo == hi else f"{lo}-{hi}"] = n
            lo = hi + 1
        return {"groups": len(sizes), "images": int(sizes.sum()), "singletons": int((sizes == 1).sum()),
                "images_in_groups_of_2_or_more": int(sizes[sizes > 1].sum()),
                "largest": sorted(sizes.tolist(), reverse=True)[:5], "histogram": hist}

    def summary(self) -> dict[str, Any]:
        return {"method": "inferred from the pixels (aligned similarity; synthgate.data.groups_inferred)",
                **self.distribution(), "links": self.links, "links_capped": self.capped,
                "pattern_links": self.pattern_links, "settings": self.settings}


def pattern_keys(paths: list[str], pattern: str) -> list[str | None]:
    """The capture of ``pattern`` (or its whole match) in every path, None where it does not match; refuses
    a pattern that matches no path."""
    rx = re.compile(pattern)
    keys: list[str | None] = []
    for p in paths:
        m = rx.search(p)
        keys.append(None if m is None else (m.group(1) if rx.groups else m.group(0)))
    if paths and all(k is None for k in keys):
        examples = ", ".join(paths[:3])
        raise DataError(f"prepare.infer_groups.pattern {pattern!r} matches none of the {len(paths)} file path(s), "
                        f"e.g. {examples}",
                        hint="write the pattern against these paths (a regular expression searched in each; its "
                             "first capture group names the acquisition), or leave it out to group by pixels only")
    return keys


def _class_round(small: np.ndarray, members: np.ndarray, uf: _Union, cfg: InferGroupsConfig,
                 rng: np.random.Generator, lock: threading.Lock) -> list[tuple[float, int, int]]:
    """One round over one class: its current groups are dealt into random folds (a group's images into one
    fold) and every image is linked to its nearest image in the other folds, where that passes the rule.
    -> (similarity, a, b) of the links found."""
    from synthgate.data.dedup import aligned_nearest
    from synthgate.data.leakage import flags

    with lock:  # classes run side by side; a file-name pattern may have joined groups across classes
        roots = np.array([uf.find(int(i)) for i in members])
    uniq, inv = np.unique(roots, return_inverse=True)
    k = min(cfg.folds, len(uniq))
    if k < 2:
        return []
    fold = (rng.permutation(len(uniq)) % k)[inv]
    out: list[tuple[float, int, int]] = []
    for f in range(k):
        q, ref = members[fold == f], members[fold != f]
        if len(q) == 0 or len(ref) == 0:
            continue
        near = aligned_nearest(small[q][..., None], small[ref][..., None], shortlist=cfg.shortlist)
        hit = flags(near.similarity, near.margin, cfg)
        out.extend(zip(near.similarity[hit].tolist(), q[hit].tolist(), ref[near.index[hit]].tolist(), strict=True))
    return out


def _group_class(small: np.ndarray, members: np.ndarray, uf: _Union, cfg: InferGroupsConfig,
                 rng: np.random.Generator, lock: threading.Lock) -> tuple[int, int]:
    """All rounds over one class; a round's links are made in order of decreasing similarity, a link that
    would exceed ``max_group_size`` is not made. -> (links made, links capped)."""
    links = capped = 0
    for _ in range(cfg.rounds):
        found = sorted(_class_round(small, members, uf, cfg, rng, lock), reverse=True)
        with lock:
            for _, a, b in found:
                made = uf.join(a, b, cfg.max_group_size)
                links += int(made)
                capped += int(not made)
    return links, capped


def infer_groups(images: np.ndarray, labels: np.ndarray, classes: list[str], paths: list[str],
                 cfg: InferGroupsConfig, seed: int = 0) -> InferredGroups:
    """Groups of the images (N, H, W[, C]) uint8 by the module's rule; ``paths`` for ``cfg.pattern``.
    Raises :class:`DataError` when a class collapses into one group (with the group sizes)."""
    from synthgate.data.leakage import at_resolution

    labels = np.asarray(labels)
    small = at_resolution(images, cfg.resolution)
    usable = small.reshape(len(small), -1).std(axis=1) > 0  # a constant image has no correlation
    uf = _Union(len(small))
    pattern_links = 0
    if cfg.pattern is not None:
        first: dict[str, int] = {}
        for i, key in enumerate(pattern_keys(list(paths), cfg.pattern)):
            if key is not None and key in first:
                pattern_links += int(uf.join(first[key], i))
            elif key is not None:
                first[key] = i
    lock = threading.Lock()
    members = [np.flatnonzero((labels == k) & usable) for k in range(len(classes))]
    # The classes are grouped side by side, one torch thread each (as many at once as torch had threads): on a
    # shared CPU, one thread per class loses nothing to the other threads' waits. Each class has its own seeded
    # folds, so the groups do not depend on the order in which the classes finish.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(classes)))) as pool:
            done = list(pool.map(lambda k: _group_class(small, members[k], uf, cfg,
                                                        np.random.default_rng([seed, k]), lock),
                                 range(len(classes))))
    finally:
        torch.set_num_threads(threads)
    links, capped = sum(d[0] for d in done), sum(d[1] for d in done)
    roots = np.array([uf.find(i) for i in range(len(small))])
    ids = np.array([f"g{r:06d}" for r in roots], dtype=object)
    groups = InferredGroups(ids, links, capped, pattern_links,
                            cfg.model_dump(mode="json", exclude={"enabled", "source_split"}))
    _check_collapse(groups, labels, classes, cfg)
    return groups


def _check_collapse(groups: InferredGroups, labels: np.ndarray, classes: list[str], cfg: InferGroupsConfig) -> None:
    for k, name in enumerate(classes):
        members = groups.ids[labels == k]
        if len(members) < 2:
            continue
        _, sizes = np.unique(members, return_counts=True)
        sizes = np.sort(sizes)[::-1]
        if sizes[0] > cfg.max_group_share * len(members):
            shown = ", ".join(str(s) for s in sizes[:8]) + (" ..." if len(sizes) > 8 else "")
            raise DataError(
                f"inferred groups collapsed: class {name!r} ({len(members)} images) forms {len(sizes)} group(s) "
                f"whose largest holds {sizes[0]} ({sizes[0] / len(members):.0%} > prepare.infer_groups."
                f"max_group_share {cfg.max_group_share}); group sizes: {shown}",
                hint="its images are too alike for the calibrated rule (one scan, or one near-constant look): "
                     "give patient ids (a label table's patient column or data.source.group_pattern), or raise "
                     "prepare.infer_groups.similarity / margin for this source")


def regroup_split(splits: np.ndarray, labels: np.ndarray, classes: list[str], groups: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A source's own split with every group in one split: the images of a group that straddles move to the
    split that holds most of them (a tie: train, then test). -> (new splits, indices of the moved images).
    Refuses a result that leaves a class without images in a held-out split that had some."""
    splits = np.asarray(splits).astype(object)
    new = splits.copy()
    gid = np.asarray(groups).astype(str)
    order = np.argsort(gid, kind="stable")
    bounds = np.flatnonzero(np.r_[True, gid[order][1:] != gid[order][:-1], True])
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        members = order[s:e]
        present, counts = np.unique(splits[members].astype(str), return_counts=True)
        if len(present) < 2:
            continue
        best = max(zip(counts.tolist(), present.tolist(), strict=True),
                   key=lambda cs: (cs[0], -SPLIT_PRIORITY.get(cs[1], 9)))[1]
        new[members] = best
    labels = np.asarray(labels)
    for sp in ("val", "test"):
        lost = [classes[k] for k in range(len(classes))
                if np.any((labels == k) & (splits == sp)) and not np.any((labels == k) & (new == sp))]
        if lost:
            k = classes.index(lost[0])
            n = int(np.sum((labels == k) & (splits == sp)))
            raise DataError(
                f"the regrouped split leaves class {lost[0]!r} without {sp} images: all {n} of its {sp} image(s) "
                "share an inferred group with training images and move to train"
                + (f" (also without {sp} images: {', '.join(lost[1:])})" if len(lost) > 1 else ""),
                hint="keep the source's split (prepare.infer_groups.source_split: keep) and report the leak, or "
                     "let prepare draw a grouped split (a source without a split of its own), or give patient ids")
    return new, np.flatnonzero(new != splits)
