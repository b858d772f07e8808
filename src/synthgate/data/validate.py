"""The validate stage: Great Expectations over the metadata, plus the two checks GE does not do
(duplicates across splits, DICOM PHI).

Nothing in ``metadata.parquet`` is trusted: shape, dtype, pixel hash and intensity statistics are
recomputed from ``images.npy`` and checked against the table. A dataset that passes (after the
optional drops and de-identification) is written to ``out``; a failing one leaves only the
report (``validation.json``, ``duplicates.csv`` and ``data_docs/index.html``: synthgate's offline
page with the verdict, Great Expectations' raw pages beside it; see ``validation_page``) and the
stage raises :class:`ValidationFailed`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthgate.data.canonical import (
    CanonicalDataset,
    image_stats,
    load_dataset,
    pixel_hashes,
    refuse_one_class,
    write_dataset,
)
from synthgate.data.config import ValidateConfig
from synthgate.data.dedup import DuplicateReport, find_duplicates
from synthgate.data.leakage import LeakageReport, dataset_leakage
from synthgate.data.validation_page import docs_site, write_page
from synthgate.errors import ValidationFailed
from synthgate.progress import NullReporter, Reporter
from synthgate.utils import write_json_atomic

log = logging.getLogger(__name__)

MAX_DELENTROPY = 0.5 * np.log2(511.0**2)  # every gradient bin equally likely


@dataclass
class Check:
    name: str
    passed: bool
    summary: str
    source: str = "synthgate"  # "great_expectations" or "synthgate"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ValidationResult:
    passed: bool
    checks: list[Check]
    report_dir: Path
    data_docs: Path | None
    dataset: CanonicalDataset | None
    dropped: dict[str, int]
    class_balance: dict[str, Any]
    leakage: LeakageReport | None = None  # the leakage diagnosis (validate.leakage), never a failing check

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


# --------------------------------------------------------------------------------------------
# Great Expectations


def _frame(ds: CanonicalDataset) -> pd.DataFrame:
    """Metadata plus columns recomputed from the pixels."""
    images = np.asarray(ds.images)
    frame = ds.meta.copy()
    stats = image_stats(images)
    frame["pixel_sha256"] = pixel_hashes(images)
    frame["pixel_std"] = stats["std"]
    frame["pixel_min"] = stats["min"]
    frame["pixel_max"] = stats["max"]
    frame["array_height"] = images.shape[1]
    frame["array_width"] = images.shape[2]
    frame["array_channels"] = images.shape[3]
    frame["dtype"] = str(images.dtype)
    classes = ds.classes
    frame["class_of_label"] = [classes[i] if 0 <= i < len(classes) else None for i in frame["label"]]
    return frame


def _counts_frame(ds: CanonicalDataset) -> pd.DataFrame:
    counts = ds.counts()
    rows = [{"class": c, **{s: counts[s][c] for s in counts}} for c in ds.classes]
    df = pd.DataFrame(rows, columns=["class", "train", "val", "test"])
    smallest = max(int(df["train"].min()), 1) if len(df) else 1
    df["train_ratio_to_smallest"] = df["train"] / smallest
    return df


def _ge_checks(
    ds: CanonicalDataset, frame: pd.DataFrame, counts: pd.DataFrame, cfg: ValidateConfig, docs_dir: Path
) -> list[Check]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe

    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # GE sets INFO on import

    res = ds.resolution
    n_classes = len(ds.classes)
    image_rules: list[tuple[str, Any]] = [
        ("at least one image", gxe.ExpectTableRowCountToBeBetween(min_value=1)),
        ("split names", gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "val", "test"])),
        ("dtype uint8", gxe.ExpectColumnValuesToBeInSet(column="dtype", value_set=["uint8"])),
        ("height", gxe.ExpectColumnValuesToBeInSet(column="array_height", value_set=[res])),
        ("width", gxe.ExpectColumnValuesToBeInSet(column="array_width", value_set=[res])),
        ("channels", gxe.ExpectColumnValuesToBeInSet(column="array_channels", value_set=[ds.channels])),
        ("metadata height", gxe.ExpectColumnValuesToBeInSet(column="height", value_set=[res])),
        ("metadata channels", gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[ds.channels])),
        ("pixel range", gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=255)),
        ("pixel range", gxe.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=255)),
        ("no empty images",
         gxe.ExpectColumnValuesToBeBetween(column="pixel_std", min_value=0, strict_min=True)),
        ("no NaN pixels in the source",
         gxe.ExpectColumnValuesToBeBetween(column="nan_fraction", min_value=0, max_value=0)),
        ("labels within the class list",
         gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(n_classes)))),
        ("class names within the class list",
         gxe.ExpectColumnValuesToBeInSet(column="label_name", value_set=ds.classes)),
        ("class name matches label",
         gxe.ExpectColumnPairValuesToBeEqual(column_A="label_name", column_B="class_of_label")),
        ("pixels match recorded sha256",
         gxe.ExpectColumnPairValuesToBeEqual(column_A="sha256", column_B="pixel_sha256")),
        ("delentropy in range",
         gxe.ExpectColumnValuesToBeBetween(column="delentropy", min_value=0, max_value=float(MAX_DELENTROPY))),
    ]
    for col in ("sha256", "source", "label", "mean", "std", "delentropy"):
        image_rules.append((f"{col} present", gxe.ExpectColumnValuesToNotBeNull(column=col)))
    count_rules: list[tuple[str, Any]] = [
        ("every class listed", gxe.ExpectTableRowCountToEqual(value=n_classes)),
        ("minimum images per class",
         gxe.ExpectColumnValuesToBeBetween(column="train", min_value=cfg.min_images_per_class)),
    ]
    if cfg.max_class_imbalance is not None:
        count_rules.append(
            ("class balance",
             gxe.ExpectColumnValuesToBeBetween(column="train_ratio_to_smallest", max_value=cfg.max_class_imbalance))
        )

    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    if docs_dir.exists():
        shutil.rmtree(docs_dir)
    ctx.update_data_docs_site("local_site", docs_site(docs_dir))  # made offline by validation_page.write_page
    source = ctx.data_sources.add_pandas("synthgate")
    checks: list[Check] = []
    for asset_name, frame_, rules, index_col in (
        ("images", frame, image_rules, "index"),
        ("class_counts", counts, count_rules, "class"),
    ):
        asset = source.add_dataframe_asset(asset_name)
        batch = asset.add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"synthgate_{asset_name}"))
        labels: list[str] = []
        for label, exp in rules:
            suite.add_expectation(exp)
            labels.append(label)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=asset_name, data=batch, suite=suite))
        cp = ctx.checkpoints.add(
            gx.Checkpoint(
                name=f"{asset_name}_checkpoint",
                validation_definitions=[vd],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
                result_format={"result_format": "SUMMARY", "unexpected_index_column_names": [index_col]},
            )
        )
        run = cp.run(batch_parameters={"dataframe": frame_})
        by_type: dict[tuple[str, str | None], str] = {}
        for label, (_, exp) in zip(labels, rules, strict=False):
            by_type[(exp.expectation_type, getattr(exp, "column", None) or getattr(exp, "column_A", None))] = label
        for vr in run.run_results.values():
            for r in vr.results:
                cfg_ = r.expectation_config
                col = cfg_.kwargs.get("column") or cfg_.kwargs.get("column_A")
                label = by_type.get((cfg_.type, col), cfg_.type)
                checks.append(_ge_check(label, cfg_, r, frame_, index_col))
                checks[-1].details.update(suite=f"synthgate_{asset_name}", ge_success=bool(r.success))
    return checks


def _ge_check(label: str, cfg: Any, r: Any, frame: pd.DataFrame, index_col: str) -> Check:
    col = cfg.kwargs.get("column") or cfg.kwargs.get("column_A")
    result = dict(r.result or {})
    where = f"{col}: " if col else ""
    if r.success:
        return Check(label, True, f"{where}ok", "great_expectations", {"expectation": cfg.type})
    n_bad = result.get("unexpected_count")
    examples: list[str] = []
    idx = result.get("partial_unexpected_index_list") or []
    for item in idx[:5]:
        key = item.get(index_col) if isinstance(item, dict) else item
        if index_col == "index" and key is not None and 0 <= int(key) < len(frame):
            examples.append(f"{frame['source'].iloc[int(key)]}")
        elif key is not None:
            examples.append(str(key))
    if not examples:
        examples = [str(v) for v in (result.get("partial_unexpected_list") or [])[:5]]
    observed = result.get("observed_value")
    if n_bad is not None:
        summary = f"{where}{n_bad} failing row(s)"
    else:
        summary = f"{where}observed {observed}"
    if examples:
        summary += f", e.g. {', '.join(examples)}"
    return Check(
        label, False, summary, "great_expectations",
        {"expectation": cfg.type, "kwargs": {k: v for k, v in cfg.kwargs.items() if k != "batch_id"},
         "unexpected_count": n_bad, "examples": examples, "observed_value": observed},
    )


# --------------------------------------------------------------------------------------------
# the stage


def group_check(groups: np.ndarray, splits: np.ndarray, keep: np.ndarray) -> Check:
    """Every patient group in one split (over the images that stay): a group in two splits puts
    one patient's images in training and in a held-out baseline. Reports groups per split."""
    g, sp = groups[keep], splits[keep]
    per_split = {s: int(len(set(g[sp == s].tolist()))) for s in ("train", "val", "test")}
    where: dict[str, set[str]] = {}
    for grp, split in zip(g.tolist(), sp.tolist(), strict=True):
        where.setdefault(grp, set()).add(split)
    straddle = sorted(k for k, v in where.items() if len(v) > 1)
    details = {"groups_per_split": per_split, "groups": len(where), "in_two_splits": len(straddle)}
    counts = ", ".join(f"{s} {n}" for s, n in per_split.items())
    if straddle:
        first = straddle[0]
        return Check("patient groups within one split", False,
                     f"{len(straddle)} of {len(where)} patient group(s) have images in more than one split, e.g. "
                     f"group {first} in {' and '.join(s for s in ('train', 'val', 'test') if s in where[first])}; "
                     "held-out images of training patients make every held-out baseline (copy null, fidelity floor, "
                     "utility) too optimistic. Prepare with the split grouped by patient (no data.source split, or "
                     f"fix the source's split). Groups per split: {counts}",
                     details={**details, "examples": straddle[:10]})
    return Check("patient groups within one split", True, f"{len(where)} patient group(s), each in one split "
                 f"({counts})", details=details)


def _pseudonym(source: str) -> str:
    return "dicom-" + hashlib.sha256(source.encode()).hexdigest()[:16]


def validate(
    dataset: Path,
    cfg: ValidateConfig,
    out: Path,
    report_dir: Path,
    reporter: Reporter | None = None,
) -> ValidationResult:
    """Validate the canonical dataset at ``dataset``; write the validated copy to ``out``.

    Raises :class:`ValidationFailed` (with the report written) when any check fails.
    """
    reporter = reporter or NullReporter()
    ds = load_dataset(Path(dataset), mmap=False)
    refuse_one_class(dataset, ds.classes)
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    docs_dir = report_dir / "data_docs"

    with reporter.task("Recomputing pixel statistics", None):
        frame = _frame(ds)
    counts = _counts_frame(ds)
    with reporter.task("Great Expectations suite", None):
        checks = _ge_checks(ds, frame, counts, cfg, docs_dir)

    # -- empty images can be dropped
    drop = np.zeros(len(ds.meta), bool)
    dropped: dict[str, int] = {}
    empty = np.flatnonzero(frame["pixel_std"].to_numpy() == 0)
    if len(empty) and cfg.drop_empty:
        drop[empty] = True
        dropped["empty"] = int(len(empty))
        for c in checks:
            if c.name == "no empty images" and not c.passed:
                c.passed = True
                c.summary = f"{len(empty)} constant image(s) dropped (validate.drop_empty)"
                c.details["cleared_by"] = "validate.drop_empty"  # details.ge_success stays False: GE's raw status

    with reporter.task("Duplicates across splits", None):
        checks.append(_duplicate_check(ds, frame, cfg, report_dir, drop, dropped))
    if "group" in ds.meta:
        checks.append(group_check(ds.meta["group"].astype(str).to_numpy(), frame["split"].astype(str).to_numpy(),
                                  ~drop))
    leakage = None
    if cfg.leakage.enabled:
        with reporter.task("Leakage diagnosis", None):
            leakage = dataset_leakage(ds.images, ds.meta, ds.classes, ~drop, cfg.leakage, report_dir,
                                      ds.manifest.get("groups"))
    tags = ds.dicom_tags
    deidentified = False
    if tags is not None:
        phi = _phi_check(tags, len(ds.meta), cfg)
        checks.append(phi)
        deidentified = bool(cfg.deidentify and len(tags) > 0)

    balance = {
        "counts": counts.set_index("class")[["train", "val", "test"]].to_dict(orient="index"),
        "largest_to_smallest_train_ratio": float(counts["train_ratio_to_smallest"].max()) if len(counts) else None,
        "max_class_imbalance": cfg.max_class_imbalance,
    }
    passed = all(c.passed for c in checks)
    index_html = docs_dir / "index.html"
    report = {
        "dataset": str(dataset),
        "content_hash": ds.content_hash,
        "passed": passed,
        "config": cfg.model_dump(mode="json"),
        "checks": [asdict(c) for c in checks],
        "class_balance": balance,
        "dropped": dropped,
        "leakage": leakage.to_dict() if leakage is not None else None,
        "data_docs": str(index_html),  # synthgate's page (validation_page), GE's raw pages beside it
    }

    result_ds: CanonicalDataset | None = None
    if passed:
        with reporter.task("Writing validated dataset", None):
            result_ds = _write_validated(ds, Path(dataset), out, report_dir, cfg, drop, dropped, deidentified, leakage)
        report["validated_dataset"] = {"path": str(out), "content_hash": result_ds.content_hash,
                                       "num_images": result_ds.manifest["num_images"]}
    else:
        # A stale validated copy from an earlier run must not outlive a failing validation.
        out = Path(out)
        if out.exists() and (out / "manifest.json").exists():
            shutil.rmtree(out, ignore_errors=True)
    write_json_atomic(report_dir / "validation.json", report)
    write_page(report, report_dir)

    result = ValidationResult(passed, checks, report_dir, index_html,
                              result_ds, dropped, balance, leakage)
    if not passed:
        lines = [f"  - {c.name}: {c.summary}" for c in result.failures]
        err = ValidationFailed(
            f"{dataset}: validation failed ({len(result.failures)} of {len(checks)} checks):\n" + "\n".join(lines),
            hint=f"details in {report_dir / 'validation.json'}"
            + f" and the validation page at {index_html}",
        )
        err.result = result
        raise err
    log.info("validation passed: %d checks", len(checks))
    return result


def _duplicate_check(ds: CanonicalDataset, frame: pd.DataFrame, cfg: ValidateConfig, report_dir: Path,
                     drop: np.ndarray, dropped: dict[str, int]) -> Check:
    """Exact, near and aligned duplicates across splits (all pairs in ``duplicates.csv``); with
    ``drop_duplicates`` their held-out members are marked in ``drop``, else the check fails."""
    found = find_duplicates(ds.images, frame["split"].to_numpy(), frame["pixel_sha256"].to_numpy(),
                            cfg.near_duplicate_threshold, aligned=cfg.aligned_duplicates)
    # a pair with an image already dropped (a blank image in two splits) is not in the validated dataset
    gone = (drop[found.pairs["index_a"].to_numpy()] | drop[found.pairs["index_b"].to_numpy()]) if len(found.pairs) \
        else np.zeros(0, bool)
    dups = DuplicateReport(found.pairs[~gone].reset_index(drop=True), found.within_split_exact)
    pairs = dups.pairs.copy()
    pairs["source_a"] = ds.meta["source"].to_numpy()[pairs["index_a"].to_numpy()] if len(pairs) else []
    pairs["source_b"] = ds.meta["source"].to_numpy()[pairs["index_b"].to_numpy()] if len(pairs) else []
    pairs.to_csv(report_dir / "duplicates.csv", index=False)
    n_exact = int((pairs["kind"] == "exact").sum())
    n_near = int(pairs["kind"].isin(["near", "aligned"]).sum())
    details = {"exact_pairs": n_exact, "near_pairs": n_near,
               "aligned_pairs": int((pairs["kind"] == "aligned").sum()), "within_split_exact": dups.within_split_exact,
               "threshold": cfg.near_duplicate_threshold, "csv": "duplicates.csv",
               "pairs_with_dropped_images": int(gone.sum())}
    if len(pairs) == 0:
        return Check("no duplicates across splits", True,
                     f"none (near-copy threshold r >= {cfg.near_duplicate_threshold})", details=details)
    to_drop = dups.to_drop()
    if cfg.drop_duplicates:
        drop[to_drop] = True
        dropped["duplicates"] = int(len(to_drop))
        return Check("no duplicates across splits", True,
                     f"{n_exact} exact and {n_near} near-duplicate pair(s) across splits; dropped {len(to_drop)} "
                     "held-out image(s) (validate.drop_duplicates)", details=details)
    ex = pairs.iloc[0]
    return Check("no duplicates across splits", False,
                 f"{n_exact} exact and {n_near} near-duplicate pair(s) (r >= {cfg.near_duplicate_threshold}) "
                 f"span splits, e.g. {ex.source_a} ({ex.split_a}) ~ {ex.source_b} ({ex.split_b}); "
                 f"rerun with --drop-duplicates to drop the {len(to_drop)} held-out member(s); "
                 "all pairs in duplicates.csv", details=details)


def _phi_check(tags: pd.DataFrame, n_images: int, cfg: ValidateConfig) -> Check:
    """DICOM PHI: none present passes; present fails unless ``deidentify`` strips it."""
    if len(tags) == 0:
        return Check("no DICOM PHI", True, "no identifying tags present")
    per_tag = tags.groupby("tag")["index"].nunique().sort_values(ascending=False)
    listing = ", ".join(f"{t} ({n})" for t, n in per_tag.items())
    n_img = int(tags["index"].nunique())
    if cfg.deidentify:
        return Check("no DICOM PHI", True, f"stripped identifying tags from {n_img} image(s): {listing}",
                     details={"tags_removed": per_tag.index.tolist()})
    return Check("no DICOM PHI", False,
                 f"{n_img} of {n_images} DICOM image(s) carry identifying tags: {listing}; refusing. "
                 "Rerun with --deidentify (validate.deidentify: true) to strip them",
                 details={"tags": per_tag.to_dict()})


def _write_validated(ds: CanonicalDataset, dataset: Path, out: Path, report_dir: Path, cfg: ValidateConfig,
                     drop: np.ndarray, dropped: dict[str, int], deidentified: bool,
                     leakage: LeakageReport | None = None) -> CanonicalDataset:
    """The validated copy: without the dropped images, pseudonymised sources when de-identified; its manifest
    carries the split's diagnosis (the evaluation report shows it beside the memorization evidence)."""
    tags = ds.dicom_tags
    keep = np.flatnonzero(~drop)
    meta = ds.meta.iloc[keep].copy()
    if deidentified:
        meta["source"] = [_pseudonym(s) for s in meta["source"]]
    extra = {k: v for k, v in ds.manifest.items()
             if k in ("source_kind", "source_description", "split_method", "skipped", "ignored_files", "dicom",
                      "groups")}
    extra["deidentified"] = deidentified if tags is not None else None
    extra["validation"] = {"passed": True, "dropped": dropped, "report": str(report_dir / "validation.json"),
                           "split": leakage.summary() if leakage is not None else None}
    if deidentified:
        extra["skipped"] = [{**s, "source": _pseudonym(s["source"])} for s in extra.get("skipped") or []]
    parent = {"stage": ds.manifest.get("stage"), "content_hash": ds.content_hash, "path": str(dataset)}
    return write_dataset(
        out, np.asarray(ds.images)[keep], meta, ds.classes, stage="validate",
        config={**ds.manifest.get("config", {}), "validate": cfg.model_dump(mode="json")},
        inputs=[parent], extra=extra, dicom_tags=None if (deidentified or tags is None) else tags,
    )
