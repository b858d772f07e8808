"""The evaluate stage: real canonical dataset + synthetic canonical dataset -> evaluation.json
and a self-contained report.html. Every number carries the identities it depends on: the real
and synthetic datasets' content hashes, the generator recorded in the synthetic manifest, and the
reference encoder's id."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthgate import __version__
from synthgate.data.canonical import CanonicalDataset, load_dataset, pixel_hashes, write_dataset
from synthgate.devices import resolve_device
from synthgate.errors import DataError
from synthgate.evaluation.config import EvaluateConfig
from synthgate.evaluation.hashing import evaluation_hash  # noqa: F401 (re-exported)
from synthgate.evaluation.inception import _inception_fid, check_inception_weights  # noqa: F401 (re-exported)
from synthgate.progress import NullReporter, Reporter
from synthgate.utils import atomic_directory, utc_now, write_json_atomic

#: The report without real images or training file names, beside ``report.html`` (the full one): the one
#: that may leave the place where the real data is (registry, published package).
PUBLIC_REPORT = "report_public.html"

log = logging.getLogger(__name__)
FORMAT = "synthgate.evaluation/v1"


@dataclass
class EvaluationResult:
    path: Path
    report_html: Path
    data: dict[str, Any]

    @property
    def evaluation_hash(self) -> str:
        return str(self.data["evaluation_hash"])


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if not isinstance(v, np.ndarray)}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def check_compatible(real: CanonicalDataset, syn: CanonicalDataset) -> None:
    """Refuse pairs of datasets whose numbers would not mean anything."""
    if np.asarray(syn.images[:1]).dtype != np.uint8 or np.asarray(real.images[:1]).dtype != np.uint8:
        raise DataError(f"{syn.root}: images must be uint8 (found {syn.images.dtype})",
                        hint="write datasets with synthgate (prepare or sample)")
    if real.images.shape[1:3] != syn.images.shape[1:3]:
        raise DataError(
            f"{syn.root}: synthetic images are {syn.images.shape[1]}x{syn.images.shape[2]} but the real ones are "
            f"{real.images.shape[1]}x{real.images.shape[2]}",
            hint="sample at the real dataset's resolution (or prepare the real data at the generator's)")
    if real.channels != syn.channels:
        raise DataError(f"{syn.root}: synthetic images have {syn.channels} channel(s), the real ones {real.channels}",
                        hint="prepare both with the same prepare.channels")
    extra = [c for c in syn.classes if c not in real.classes]
    if extra:
        raise DataError(f"{syn.root}: synthetic class(es) {extra} do not exist in the real dataset {real.classes}",
                        hint="evaluate against the real dataset the generator was trained on")
    for ds in (real, syn):
        nan = ds.meta["nan_fraction"].to_numpy() if "nan_fraction" in ds.meta else np.zeros(len(ds.meta))
        bad = np.flatnonzero(~np.isfinite(nan) | (nan > 0))
        if len(bad):
            raise DataError(
                f"{ds.root}: {len(bad)} image(s) had NaN pixels, e.g. {ds.meta['source'].iloc[int(bad[0])]}",
                hint="drop or regenerate them (a generator that produced NaN diverged)")
    if len(syn.meta) == 0:
        raise DataError(f"{syn.root}: the synthetic dataset is empty")
    present = set(np.asarray(syn.classes)[np.unique(syn.labels())])
    missing = [c for c in real.classes if c not in present]
    if missing:
        raise DataError(
            f"{syn.root}: the synthetic dataset has no image of {len(missing)} of the real dataset's "
            f"{len(real.classes)} classes ({', '.join(map(str, missing))}): its utility, fidelity and per-class "
            "numbers would be measured on a different task than the real data's",
            hint="sample every class (synthgate sample --per-class N), or evaluate against a real dataset "
                 "prepared with these classes only")


def check_groups(real: CanonicalDataset, train_idx: np.ndarray) -> None:
    """Refuse a real dataset whose patient groups (a ``group`` column, when the metadata has one) put
    one patient in the training split and a held-out split: the held-out images calibrate the copy
    null as "patients not in training", which such a split breaks."""
    if "group" not in real.meta:
        return
    groups = real.meta["group"].astype(str).to_numpy()
    splits = real.meta["split"].astype(str).to_numpy()
    in_train = set(groups[train_idx])
    leaked = sorted({g for g, s in zip(groups, splits, strict=True) if s != "train" and g in in_train})
    if leaked:
        held = sorted({s for g, s in zip(groups, splits, strict=True) if g == leaked[0] and s != "train"})
        raise DataError(
            f"{real.root}: patient group {leaked[0]!r} has images in the train and {'/'.join(held)} splits"
            + (f" ({len(leaked)} groups in all)" if len(leaked) > 1 else "")
            + ": the held-out baseline of the copy search must not contain training patients",
            hint="prepare the dataset with a split grouped by patient (no group in two splits)")


def _relabel(syn: CanonicalDataset, real: CanonicalDataset) -> np.ndarray:
    names = np.asarray(syn.classes)[syn.labels()]
    index = {c: i for i, c in enumerate(real.classes)}
    return np.array([index[n] for n in names], dtype=np.int64)


def _sub(idx: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    if n is None or len(idx) <= n:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))


def make_standin(real_dir: Path, out_real: Path, out_synthetic: Path, seed: int = 0) -> tuple[Path, Path]:
    """Real held-out images standing in for a generator's output, for testing the evaluation.

    The real test split is halved per class: one half becomes the "synthetic" dataset, the other
    stays the real test split (so no image is both trained on and tested on).
    """
    real = load_dataset(real_dir, mmap=False)
    rng = np.random.default_rng(seed)
    test = real.split_indices("test")
    labels = real.labels()
    standin = []
    for k in np.unique(labels[test]):
        members = rng.permutation(test[labels[test] == k])
        standin.append(members[: len(members) // 2])
    s_idx = np.sort(np.concatenate(standin))
    keep = np.setdiff1d(np.arange(len(labels)), s_idx)
    meta_s = real.meta.iloc[s_idx].copy()
    meta_s["split"] = "train"
    manifest_extra = {"synthetic": True, "standin": f"real test images of {real.root} ({real.content_hash[:16]})"}
    write_dataset(out_synthetic, np.asarray(real.images)[s_idx], meta_s, real.classes, stage="standin",
                  config={"seed": seed}, inputs=[{"path": str(real_dir), "content_hash": real.content_hash}],
                  extra=manifest_extra)
    write_dataset(out_real, np.asarray(real.images)[keep], real.meta.iloc[keep].copy(), real.classes,
                  stage="standin-real", config={"seed": seed},
                  inputs=[{"path": str(real_dir), "content_hash": real.content_hash}])
    return out_real, out_synthetic


def evaluate(
    real_dir: Path,
    synthetic_dir: Path,
    cfg: EvaluateConfig,
    out: Path,
    reporter: Reporter | None = None,
    retrain_encoder: bool = False,
) -> EvaluationResult:
    """Evaluate ``synthetic_dir`` against ``real_dir``; write evaluation.json and report.html to ``out``."""
    from synthgate.data.complexity import delentropy
    from synthgate.evaluation.encoder import get_encoder
    from synthgate.evaluation.realism import realism
    from synthgate.evaluation.utility import utility
    from synthgate.evaluation.variety import complexity, variety

    reporter = reporter or NullReporter()
    timings: dict[str, float] = {}

    @contextmanager
    def part(name: str, label: str):
        start = time.perf_counter()
        with reporter.task(label, None):
            yield
        timings[name] = round(time.perf_counter() - start, 3)

    device = resolve_device(cfg.device, "evaluate.device")
    real, syn, readers = _inputs(Path(real_dir), Path(synthetic_dir), cfg)  # every check before any work
    classes = real.classes
    n_classes = len(classes)
    y_real = real.labels()
    y_syn = _relabel(syn, real)
    train_idx, val_idx, test_idx = (real.split_indices(s) for s in ("train", "val", "test"))
    syn_images = np.asarray(syn.images)

    with part("encoder", "Reference encoder"):
        enc = get_encoder(real, cfg.encoder, device, retrain=retrain_encoder, reporter=reporter)

    fc = cfg.fidelity
    ref_idx = _sub(train_idx, fc.max_images, cfg.seed)
    s_idx = _sub(np.arange(len(syn_images)), fc.max_images, cfg.seed)
    with part("features", "Encoder features"):
        f_ref = enc.features(np.asarray(real.images[ref_idx]))
        f_test = enc.features(np.asarray(real.images[test_idx]))
        f_syn = enc.features(syn_images)
    with part("fidelity", "Fidelity (FID, KID, precision/recall, density/coverage)"):
        fidelity = _fidelity(f_ref, f_test, f_syn[s_idx], y_real[ref_idx], y_syn[s_idx], classes, cfg)
        if cfg.inception_weights is not None:
            fidelity["inception_fid"] = _inception_fid(real, ref_idx, syn_images[s_idx], cfg.inception_weights,
                                                       test_idx)

    with part("variety", "Variety and complexity"):
        var = variety(np.asarray(real.images[train_idx]), y_real[train_idx], syn_images, y_syn, classes)
        comp = complexity(np.asarray(real.images[train_idx]), y_real[train_idx], syn_images, y_syn, classes,
                          real_de=real.meta["delentropy"].to_numpy()[train_idx], syn_de=delentropy(syn_images))

    test_imgs = np.asarray(real.images[test_idx])
    memorization, mem_arrays, m_train = _memorization(real, syn_images, y_real, y_syn, train_idx,
                                                      np.sort(np.concatenate([val_idx, test_idx])), cfg, device,
                                                      retrain_encoder, reporter, part)

    util: dict[str, Any] | None = None
    groups = real.meta["group"].astype(str).to_numpy() if "group" in real.meta else None  # patients: clusters
    if cfg.utility.enabled:
        with part("utility", "Utility (TRTR, TSTR, augmentation, transfer)"):
            # never select on the test split: without a validation split the classifiers train their
            # fixed budget (utility records it)
            util = utility((np.asarray(real.images[train_idx]), y_real[train_idx]),
                           (np.asarray(real.images[val_idx]), y_real[val_idx]),
                           (test_imgs, y_real[test_idx]), (syn_images, y_syn), n_classes, cfg.utility, device,
                           reporter, class_names=classes, train_groups=groups[train_idx] if groups is not None else None,
                           test_groups=groups[test_idx] if groups is not None else None)
    real_res: dict[str, Any] | None = None
    if cfg.realism.enabled:
        with part("realism", "Realism scores"):
            real_res = realism(f_ref, y_real[ref_idx], f_syn, y_syn, classes, cfg.realism.k, cfg.realism.per_class)

    summary = _summary(fidelity, util, memorization, cfg) | (
        {"reader_accuracy": readers["accuracy"]["mean"]} if readers else {})
    data = _record(real_dir, synthetic_dir, real, syn, y_syn, classes, enc.identity(), device, cfg,
                   {"fidelity": fidelity, "variety": var, "complexity": {"per_class": comp["per_class"]},
                    "memorization": memorization, "utility": util, "realism": real_res, "summary": summary,
                    "readers": readers})
    data = _jsonable(data)
    data["evaluation_hash"] = evaluation_hash(data)
    start = time.perf_counter()
    arrays = {"real_images": real, "train_idx": train_idx, "test_idx": test_idx, "syn_images": syn_images,
              "y_real": y_real, "y_syn": y_syn, "memorization": mem_arrays, "f_ref": f_ref, "f_syn": f_syn[s_idx],
              "y_ref": y_real[ref_idx], "y_syn_sub": y_syn[s_idx], "m_train": m_train, "comp": comp,
              "realism": real_res, "train_sources": real.meta["source"].to_numpy()}
    _write(Path(out), data, arrays, real_res, cfg.realism, syn, syn_images, synthetic_dir)
    timings["report"] = round(time.perf_counter() - start, 3)
    data["timings"] = timings
    write_json_atomic(Path(out) / "evaluation.json", data)
    return EvaluationResult(Path(out) / "evaluation.json", Path(out) / "report.html", data)


def _inputs(real_dir: Path, synthetic_dir: Path, cfg: EvaluateConfig) -> tuple[Any, Any, dict[str, Any] | None]:
    """The two datasets, checked, and the reader study's evidence (``None`` without one)."""
    from synthgate.evaluation.readers.evidence import reader_evidence

    if cfg.inception_weights is not None:
        check_inception_weights(cfg.inception_weights)
    real, syn = load_dataset(real_dir), load_dataset(synthetic_dir)
    check_compatible(real, syn)
    if len(real.split_indices("train")) == 0 or len(real.split_indices("test")) == 0:
        raise DataError(f"{real.root}: the real dataset needs train and test splits to evaluate against",
                        hint="prepare it with split.test > 0")
    check_groups(real, real.split_indices("train"))  # the held-out baseline must be patient-disjoint
    readers = reader_evidence(cfg.reader_study, real, syn) if cfg.reader_study else None
    return real, syn, readers


def _memorization(real: Any, syn_images: np.ndarray, y_real: np.ndarray, y_syn: np.ndarray, train_idx: np.ndarray,
                  held_idx: np.ndarray, cfg: EvaluateConfig, device: Any, retrain: bool, reporter: Reporter,
                  part: Any) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """The copy descriptor and the memorization evidence against the training split, calibrated on
    ``held_idx`` (every real image of a patient not in training); -> (evidence, its arrays for the
    report, the training indices searched)."""
    from synthgate.evaluation.memorization.descriptor import get_descriptor
    from synthgate.evaluation.memorization.evidence import memorization_evidence

    mc = cfg.memorization
    m_train = _sub(train_idx, mc.max_train, cfg.seed)
    m_held = _sub(held_idx, mc.max_held_out, cfg.seed)
    with part("descriptor", "Copy descriptor"):
        desc = get_descriptor(real, mc.descriptor, device, retrain=retrain, reporter=reporter)
    with part("memorization", "Memorization"):
        memorization, mem_arrays = memorization_evidence(
            np.asarray(real.images[m_train]), np.asarray(real.images[m_held]), syn_images, train_size=len(train_idx),
            cfg=mc, device=device, describe=desc.features, descriptor_identity=desc.identity(), syn_labels=y_syn,
            held_labels=y_real[m_held], classes=real.classes, seed=cfg.seed, task=reporter.task)
    for item in memorization["most_significant"]:  # training indices of the dataset (its file names stay out of
        item["train_index"] = int(m_train[item["train_index"]])  # evaluation.json: they can name a patient)
    return memorization, mem_arrays, m_train


def _fidelity(f_ref: np.ndarray, f_test: np.ndarray, f_syn: np.ndarray, y_ref: np.ndarray, y_syn: np.ndarray,
              classes: list[str], cfg: EvaluateConfig) -> dict[str, Any]:
    """FID, KID and PRDC of the synthetic features against the training reference, the same for the real
    test split (the baseline), and per class."""
    from synthgate.evaluation import fidelity as fid_mod

    fc = cfg.fidelity
    overall = fid_mod.fidelity_metrics(f_ref, f_syn, fc.k, fc.kid_subset_size, fc.kid_subsets, cfg.seed)
    baseline = fid_mod.fidelity_metrics(f_ref, f_test, fc.k, fc.kid_subset_size, fc.kid_subsets, cfg.seed)
    per_class: dict[str, Any] = {}
    for k, c in enumerate(classes):
        r = f_ref[y_ref == k]
        s = f_syn[y_syn == k]
        if len(r) > fc.k and len(s) > fc.k:
            per_class[c] = {"fid": fid_mod.fid(r, s), **fid_mod.prdc(r, s, fc.k), "n_synthetic": int(len(s))}
        else:
            per_class[c] = {"fid": None, "n_synthetic": int(len(s)),
                            "note": f"fewer than k+1={fc.k + 1} images of this class"}
    return {"overall": overall, "real_test_vs_train": baseline, "per_class": per_class}


def _record(real_dir: Path, synthetic_dir: Path, real: Any, syn: Any, y_syn: np.ndarray, classes: list[str],
            encoder: dict[str, Any], device: Any, cfg: EvaluateConfig, parts: dict[str, Any]) -> dict[str, Any]:
    """``evaluation.json`` before its hash: what was evaluated against what, with which settings, and
    the ``parts`` (fidelity, variety, complexity, memorization, utility, realism, summary)."""
    return {
        "format": FORMAT,
        "created": utc_now(),
        "synthgate_version": __version__,
        "real": {"path": str(real_dir), "content_hash": real.content_hash, "counts": real.counts(),
                 # how the held-out null was split off, and validation's diagnosis of it (leakage, representativeness)
                 "split": {"method": real.manifest.get("split_method"),
                           "groups": (real.manifest.get("groups") or {}).get("source"),
                           "diagnosis": (real.manifest.get("validation") or {}).get("split")},
                 "classes": classes},
        "synthetic": {"path": str(synthetic_dir), "content_hash": syn.content_hash,
                      "num_images": int(len(y_syn)), "generator": syn.manifest.get("generator"),
                      "standin": syn.manifest.get("standin"),
                      "counts": {c: int((y_syn == k).sum()) for k, c in enumerate(classes)},
                      # every image's pixel sha256, in order: the gatekeeper publishes only these images
                      "image_sha256": pixel_hashes(np.asarray(syn.images))},
        "encoder": encoder,
        "device": str(device),
        "config": cfg.model_dump(mode="json"),
        **parts,
    }


def _write(out: Path, data: dict[str, Any], arrays: dict[str, Any], real_res: dict[str, Any] | None, rcfg: Any,
           syn: Any, syn_images: np.ndarray, synthetic_dir: Path) -> None:
    """``evaluation.json``, the full and the public report, and the realism-filtered set, all at once."""
    from synthgate.evaluation.report import render_report

    with atomic_directory(out) as tmp:
        write_json_atomic(tmp / "evaluation.json", data)
        (tmp / "report.html").write_text(render_report(data, arrays))
        (tmp / PUBLIC_REPORT).write_text(render_report(data, arrays, public=True))
        if real_res is not None and rcfg.filter != "none":
            keep = np.flatnonzero(real_res["scores"]["global" if rcfg.filter == "global" else "per_class"] >= 1)
            write_dataset(tmp / "filtered", syn_images[keep], syn.meta.iloc[keep].copy(), syn.classes,
                          stage="realism-filter", config={"filter": rcfg.filter, "k": rcfg.k},
                          inputs=[{"path": str(synthetic_dir), "content_hash": syn.content_hash}],
                          extra={k: v for k, v in syn.manifest.items() if k in ("synthetic", "generator")})


def _summary(fidelity: dict[str, Any], util: dict[str, Any] | None, memo: dict[str, Any],
             cfg: EvaluateConfig) -> dict[str, Any]:
    """Headline numbers, and whether fidelity and utility tell the same story (xing2023's lesson)."""
    o, b = fidelity["overall"], fidelity["real_test_vs_train"]
    fid_ratio = o["fid"] / b["fid"] if b["fid"] and b["fid"] > 0 else None
    fidelity_good = bool(o["precision"] >= 0.5 and (fid_ratio is None or fid_ratio <= 3.0))
    out: dict[str, Any] = {
        "fid": o["fid"], "fid_real_baseline": b["fid"], "fid_ratio_to_baseline": fid_ratio,
        "precision": o["precision"], "recall": o["recall"], "f1": o["f1"],
        "density": o["density"], "coverage": o["coverage"],
        "flagged_copies": memo["flags"]["count"],
        "smallest_copy_p": min(memo["per_image"]["p_combined"], default=None),
        "planted_min_detection": min((v["rate"] for v in memo["planted"].values() if v["ruled"]), default=None),
        "membership_auc": memo["membership"]["descriptor"]["auc"],
        "membership_auc_pixel": memo["membership"]["pixel"]["auc"],
        "fidelity_good": fidelity_good,
    }
    if util is not None and "auc_gap" in util["stats"]:
        st = util["stats"]
        gap = st["auc_gap"]
        # judged like the gate: on the gap's upper confidence bound over seeds where there is one
        gap_upper = st.get("auc_gap_upper")
        utility_good = bool((gap if gap_upper is None else gap_upper) <= cfg.fidelity_utility_gap)
        out.update({"auc_real": util["settings"]["real"]["auroc_mean"],
                    "auc_real_full": (util["settings"].get("real_full") or {}).get("auroc_mean"),
                    "auc_synthetic": util["settings"]["synthetic"]["auroc_mean"],
                    "auc_gap": gap, "auc_gap_upper": gap_upper, "delta_syn": st.get("delta_syn"),
                    "delta_syn_upper": st.get("delta_syn_upper"), "augmented_gain": st.get("augmented_gain"),
                    "augmented_gain_lower": st.get("augmented_gain_lower"),
                    "utility_confidence": st.get("confidence"), "utility_seeds": st.get("n_seeds"),
                    "utility_good": utility_good})
        if fidelity_good != utility_good:
            out["fidelity_utility_disagree"] = True
            out["fidelity_utility_note"] = (
                "fidelity and utility disagree: " + ("high fidelity but poor utility" if fidelity_good
                                                     else "low fidelity but good utility")
                + " (xing2023: fidelity does not imply utility); judge release on utility and privacy")
        else:
            out["fidelity_utility_disagree"] = False
    return out
