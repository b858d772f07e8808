"""The memorization evidence of one evaluation: every synthetic image searched against every
training image, calibrated against real held-out images, with the power measured on planted copies.

Detectors (each a score where higher means more copy-like; :mod:`.search`, :mod:`.descriptor`):

==================  ========================================================================
``pixel``           Fisher z of the best full-resolution Pearson r over the 8 rotations/flips
``smooth``          the same after smoothing both images (noise, dithering, compression)
``margin``          z of the best minus z of the second-best training image
``smooth_margin``   the same margin after smoothing both images
``aligned``         z of the best correlation over shifts x scale/crop x small rotations
``aligned_margin``  z of the best minus z of the second-best training image after alignment
``tiles``           z of the tile-wise re-aligned correlation (local deformations)
``descriptor``      z of the cosine similarity of learned copy descriptors
``structure``       -ln of the share of the query's spatial structure its best pixel match leaves
                    unexplained (noise, contrast and clipping leave white residuals; :mod:`.residual`)
==================  ========================================================================

For every detector the held-out scores form its null (:mod:`.null`); each synthetic image gets one
p-value per detector and, combined (Bonferroni: the smallest times the number of detectors), one
p-value for "this image is no closer to a training image than unseen patients' images are". The
gate flags images whose combined p-value survives a multiplicity correction over the synthetic set
and applies its rules to the recorded numbers (:mod:`synthgate.gates.decision`): everything it
needs (per-image p-values, exceedance counts, AUCs with their standard errors, planted copies'
p-values) is recorded here, so that the policy's level, not this evaluation's, decides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from synthgate.evaluation.config import MemorizationConfig
from synthgate.evaluation.memorization import planted as planted_mod
from synthgate.evaluation.memorization.null import TailNull, fit_null
from synthgate.evaluation.memorization.residual import STRUCTURE_FLOOR
from synthgate.evaluation.memorization.scan import cosine_nn, distribution, pixel_nn
from synthgate.evaluation.memorization.search import SearchResult, SearchSpec, TrainIndex, make_spec, search
from synthgate.evaluation.memorization.stats import (
    auc_bound,
    clopper_pearson,
    exceedance_test,
    fisher_z,
    reject,
)

log = logging.getLogger(__name__)

DETECTORS: dict[str, str] = {
    "pixel": "full-resolution Pearson r over the 8 rotations/flips",
    "smooth": "Pearson r over the 8 rotations/flips after smoothing both images",
    "margin": "Fisher z of the best minus the second-best training image",
    "smooth_margin": "Fisher z of the best minus the second-best training image after smoothing both images",
    "aligned": "best Pearson r over shifts, scale/crop and small rotations (template matching)",
    "aligned_margin": "Fisher z of the best minus the second-best training image after alignment",
    "tiles": "tile-wise re-aligned Pearson r (local deformations)",
    "descriptor": "cosine similarity of the learned copy descriptors",
    "structure": "-ln of the share of the image's spatial structure its best pixel match leaves unexplained "
                 "(white noise, contrast changes and clipping leave none)",
}
#: Nearest training images in descriptor space added to each image's shortlist.
DESCRIPTOR_CANDIDATES = 8
#: Quantile of the null above which the exact exceedance test counts synthetic images.
EXCEEDANCE_QUANTILE = 0.99


@dataclass
class Scored:
    """The detectors' scores for a set of query images (arrays of equal length)."""

    search: SearchResult
    descriptor: np.ndarray  # best cosine similarity
    descriptor_index: np.ndarray

    def scores(self) -> dict[str, np.ndarray]:
        s = self.search
        return {"pixel": fisher_z(s.pixel), "smooth": fisher_z(s.smooth), "margin": s.margin, "smooth_margin": s.smooth_margin,
                "aligned": fisher_z(s.aligned), "aligned_margin": s.aligned_margin, "tiles": fisher_z(s.tiles),
                "descriptor": fisher_z(self.descriptor),
                "structure": -np.log(np.clip(s.structure.astype(np.float64), STRUCTURE_FLOOR, 1.0))}


class CopySearch:
    """The training split indexed once (pixels and descriptors) for every query set of an evaluation."""

    def __init__(self, train: np.ndarray, train_features: np.ndarray, spec: SearchSpec, device: torch.device,
                 describe: Callable[[np.ndarray], np.ndarray]) -> None:
        self.index = TrainIndex.build(train, device)
        self.spec = spec
        self.device = device
        self.train_features = train_features
        self.describe = describe

    def score(self, images: np.ndarray, advance: Callable[[int], None] | None = None) -> Scored:
        feats = self.describe(images)
        sim = torch.from_numpy(feats).to(self.device) @ torch.from_numpy(self.train_features).to(self.device).T
        top = torch.topk(sim, min(DESCRIPTOR_CANDIDATES, sim.shape[1]), dim=1)
        extra = top.indices.cpu().numpy()
        res = search(images, self.index, self.spec, extra=extra, advance=advance)
        return Scored(res, top.values[:, 0].cpu().numpy(), extra[:, 0])


def combined_p(p: dict[str, np.ndarray]) -> np.ndarray:
    """Bonferroni over detectors: min(1, D * min_d p_d)."""
    stack = np.stack(list(p.values()))
    return np.minimum(1.0, len(p) * stack.min(axis=0))


def reachable(copies: dict[str, np.ndarray], null_max: dict[str, float]) -> float:
    """The share of planted copies that score beyond *every* held-out image on at least one detector. A copy
    that some unseen patient's image matches or beats on every detector gets a p-value of at least 1/(n + 1)
    from any test that treats held-out and synthetic images alike (the empirical p-value inside the null's
    range, here), far above the per-copy level: this share bounds the power any combination of these
    detectors can reach on this held-out set. Below the policy's power it says the data (resolution, how
    alike unseen patients' images are) limits the evaluation, not the statistics."""
    beyond = np.zeros(len(next(iter(copies.values()))), bool)
    for d, v in copies.items():
        beyond |= np.asarray(v) > null_max[d]
    return float(beyond.mean()) if len(beyond) else 0.0


#: At most this many members and non-members enter the membership-inference AUC (seeded).
MIA_MAX = 2000


def memorization_evidence(
    train: np.ndarray,
    held_out: np.ndarray,
    synthetic: np.ndarray,
    *,
    train_size: int,
    cfg: MemorizationConfig,
    device: torch.device,
    describe: Callable[[np.ndarray], np.ndarray],
    descriptor_identity: dict[str, Any],
    syn_labels: np.ndarray,
    held_labels: np.ndarray,
    classes: list[str],
    seed: int = 0,
    task: Callable[[str, int | None], Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The memorization section of evaluation.json and the arrays the report draws from.

    ``train`` are the training images searched (all of them, unless ``cfg.max_train`` cut them: then
    ``train_size`` > len(train) and the coverage is recorded as partial); ``held_out`` the real images of
    patients not in training that calibrate the nulls; ``describe`` maps images to copy descriptors."""
    step = _stepper(task)
    spec = make_spec(train.shape[1], cfg.shortlist, cfg.max_shift, tuple(cfg.scales), tuple(cfg.rotations), cfg.tiles)
    with step("Memorization: indexing the training split"):
        engine = CopySearch(train, describe(train), spec, device, describe)
    with step("Memorization: held-out null", len(held_out)) as adv:
        s_held = engine.score(held_out, adv)
    with step("Memorization: synthetic images", len(synthetic)) as adv:
        s_syn = engine.score(synthetic, adv)
    copies, sources = planted_mod.plant(train, cfg.planted, seed) if cfg.planted > 0 else ({}, {})
    s_planted: dict[str, Scored] = {}
    with step("Memorization: planted copies", sum(len(c) for c in copies.values())) as adv:
        for kind, imgs in copies.items():
            s_planted[kind] = engine.score(imgs, adv)
    return assemble(engine, train, held_out, synthetic, s_held, s_syn, s_planted, sources, train_size=train_size,
                    cfg=cfg, descriptor_identity=descriptor_identity, syn_labels=syn_labels,
                    held_labels=held_labels, classes=classes, seed=seed, task=task)


def _stepper(task: Callable[[str, int | None], Any] | None) -> Callable[..., Any]:
    from contextlib import nullcontext

    def step(label: str, total: int | None = None) -> Any:
        return task(label, total) if task is not None else nullcontext(lambda n=1: None)

    return step


def assemble(
    engine: CopySearch,
    train: np.ndarray,
    held_out: np.ndarray,
    synthetic: np.ndarray,
    s_held: Scored,
    s_syn: Scored,
    s_planted: dict[str, Scored],
    planted_sources: dict[str, np.ndarray],
    *,
    train_size: int,
    cfg: MemorizationConfig,
    descriptor_identity: dict[str, Any],
    syn_labels: np.ndarray,
    held_labels: np.ndarray,
    classes: list[str],
    seed: int = 0,
    task: Callable[[str, int | None], Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The evidence from scored image sets (:func:`memorization_evidence` scores them; the benchmarks
    score a dataset's held-out images once and assemble many half-splits of them)."""
    step = _stepper(task)
    held_scores, syn_scores = s_held.scores(), s_syn.scores()
    nulls: dict[str, TailNull] = {}
    with step("Memorization: tail models of the nulls"):
        for k, (name, v) in enumerate(held_scores.items()):
            nulls[name] = fit_null(name, v, cfg.tail_fraction, cfg.min_exceedances, cfg.bootstrap, seed=seed + k)
    p_syn = {d: nulls[d].pvalues(v) for d, v in syn_scores.items()}
    p_comb = combined_p(p_syn)
    flagged = reject(p_comb, cfg.alpha, cfg.correction)

    planted: dict[str, Any] = {}
    arrays_planted: dict[str, Any] = {}
    level = cfg.alpha / max(len(synthetic), 1)  # one copy among the synthetic set, after the correction
    null_max = {d: float(np.max(v)) if len(v) else -np.inf for d, v in held_scores.items()}
    for kind, sc in s_planted.items():
        pk = {d: nulls[d].pvalues(v) for d, v in sc.scores().items()}
        pc = combined_p(pk)
        hit = pc <= level
        lo, hi = clopper_pearson(int(hit.sum()), len(hit))
        found = sc.search.aligned_index if kind.startswith(("shift", "crop")) else sc.search.pixel_index
        planted[kind] = {
            "what": planted_mod.describe(kind, int(train.shape[1])), "n": int(len(hit)),
            "ruled": kind not in planted_mod.NOT_RULED,
            "detected": int(hit.sum()), "rate": float(hit.mean()), "ci95": [lo, hi],
            "per_detector": {d: float((v * len(pk) <= level).mean()) for d, v in pk.items()},
            "source_found": float((found == planted_sources[kind]).mean()),
            "reachable": reachable(sc.scores(), null_max),
            "p_values": np.sort(pc).tolist(),
        }
        arrays_planted[kind] = pc

    # set level: exact exceedance tests, membership inference, distribution shift
    excess = {d: exceedance_test(held_scores[d], syn_scores[d], EXCEEDANCE_QUANTILE) for d in held_scores}
    with step("Memorization: membership inference"):
        mia = _membership(train, held_out, synthetic, engine, cfg, seed)
    shift = _shift(s_syn.search.pixel, s_held.search.pixel, seed)

    order = np.argsort(p_comb, kind="stable")[: cfg.top_k]
    top = [_describe_image(int(i), s_syn, p_syn, p_comb, bool(flagged[i])) for i in order]
    per_class = {}
    for k, c in enumerate(classes):
        ms, mh = syn_labels == k, held_labels == k
        per_class[c] = {"synthetic": distribution(s_syn.search.pixel[ms]),
                        "held_out": distribution(s_held.search.pixel[mh]),
                        "flagged": int(flagged[ms].sum()), "n_synthetic": int(ms.sum())}
    spec = engine.spec
    data: dict[str, Any] = {
        "method": "per-image copy p-values against the real held-out null, eight detectors combined (Bonferroni), "
                  "flagged after a multiplicity correction over the synthetic set",
        "coverage": {"train_compared": int(len(train)), "train_size": int(train_size),
                     "full": bool(len(train) == train_size), "synthetic_compared": int(len(synthetic)),
                     "synthetic_size": int(len(synthetic)), "held_out": int(len(held_out))},
        "search": spec.describe(),
        "descriptor": descriptor_identity,
        "detectors": {d: {"what": DETECTORS[d], "null": nulls[d].summary(),
                          "synthetic": distribution(syn_scores[d]), "held_out": distribution(held_scores[d]),
                          "exceedance": excess[d]} for d in DETECTORS},
        "null_sufficient": all(n.sufficient for n in nulls.values()),
        "held_out_needed": max(n.needed for n in nulls.values()),
        "per_image": {"p_combined": p_comb.tolist(), "n": int(len(p_comb))},
        "flags": {"alpha": cfg.alpha, "correction": cfg.correction, "count": int(flagged.sum()),
                  "indices": np.flatnonzero(flagged).tolist()},
        "most_significant": top,
        "planted": planted,
        "membership": mia,
        "pixel_shift": shift,
        "per_class": per_class,
    }
    arrays = {"syn": s_syn, "held": s_held, "syn_scores": syn_scores, "held_scores": held_scores,
              "p_comb": p_comb, "flagged": flagged, "nulls": nulls, "spec": spec, "planted_p": arrays_planted}
    return data, arrays


def _describe_image(i: int, s: Scored, p: dict[str, np.ndarray], pc: np.ndarray, flagged: bool) -> dict[str, Any]:
    best = min(p, key=lambda d: p[d][i])
    r = s.search
    aligned = best in ("aligned", "tiles")
    if best == "descriptor":
        train_index = int(s.descriptor_index[i])
    elif best == "tiles":
        train_index = int(r.tiles_index[i])
    elif aligned:
        train_index = int(r.aligned_index[i])
    else:
        train_index = int(r.pixel_index[i])
    d, sc, rot, dy, dx = (float(v) for v in r.aligned_transform[i])
    return {"synthetic_index": i, "p_combined": float(pc[i]), "flagged": flagged, "detector": best,
            "p": {k: float(v[i]) for k, v in p.items()}, "train_index": train_index,
            "pixel_r": float(r.pixel[i]), "aligned_r": float(r.aligned[i]), "descriptor_cos": float(s.descriptor[i]),
            "transform": ({"dihedral": int(d), "scale": sc, "rotation_deg": rot, "shift_px": [dy, dx]} if aligned
                          else {"dihedral": int(r.pixel_transform[i])})}


def _membership(train: np.ndarray, held_out: np.ndarray, synthetic: np.ndarray, engine: CopySearch,
                cfg: MemorizationConfig, seed: int) -> dict[str, Any]:
    """Membership inference: are training images (members) closer to their nearest synthetic image than
    held-out images (non-members) are? AUC of that separation in descriptor and in pixel space, with the
    standard error the gate turns into a confidence bound (0.5 = no leak)."""
    rng = np.random.default_rng(seed + 1)
    device = engine.device
    non = np.sort(rng.choice(len(held_out), size=min(len(held_out), MIA_MAX), replace=False))
    members = np.sort(rng.choice(len(train), size=min(len(train), len(non)), replace=False))
    syn_f = engine.describe(synthetic)
    f_m = cosine_nn(engine.train_features[members], syn_f, device).best
    f_n = cosine_nn(engine.describe(held_out[non]), syn_f, device).best
    p_m = pixel_nn(train[members], synthetic, device, cfg.chunk).best
    p_n = pixel_nn(held_out[non], synthetic, device, cfg.chunk).best
    out: dict[str, Any] = {"members": int(len(members)), "non_members": int(len(non))}
    for name, (a, b) in {"descriptor": (f_m, f_n), "pixel": (p_m, p_n)}.items():
        r = auc_bound(a, b, 0.5)  # the gate turns auc and se into a bound at its policy's level
        out[name] = {"auc": r["auc"], "se": r["se"], "p": r["p"]}
    return out


def _shift(syn: np.ndarray, held: np.ndarray, seed: int, n_boot: int = 2000) -> dict[str, Any]:
    """Median best pixel r of the synthetic images minus that of the held-out images, with its bootstrap
    standard error (the gate decides on the lower confidence bound)."""
    rng = np.random.default_rng(seed + 2)
    s, h = np.asarray(syn, np.float64), np.asarray(held, np.float64)
    boots = (np.median(s[rng.integers(0, len(s), (n_boot, len(s)))], axis=1)
             - np.median(h[rng.integers(0, len(h), (n_boot, len(h)))], axis=1))
    return {"shift": float(np.median(s) - np.median(h)), "se": float(boots.std(ddof=1)), "n_boot": n_boot}
