"""Publish the synthetic dataset of an approved generator version.

``publish(model, store, alias="approved")``:

1. resolves the version holding ``alias`` in MLflow and re-verifies it: its gate record and
   evaluation must hash to what was registered, and the gate must have passed (or an override
   must be recorded on the version). An alias set by hand in the MLflow UI on a version whose gate
   failed is refused here too: the gate is enforced where the data leaves.
2. takes the evaluated sample set when it is the one the version was gated on (content hash equal
   to the version's ``lineage.synthetic_content_hash``), else samples afresh from the registered
   model (downloaded from MLflow).
3. packages: ``images/shard-*.npz`` (``images`` uint8 NHWC, ``labels``, ``classes``), PNG files
   zipped per class under ``png/``, ``labels.csv``, the evaluation's ``report.html``,
   ``evaluation.json`` and ``gate.json`` from the registered run, a ``DATACARD.md``, and
   ``manifest.json`` (every file with size and sha256, model, gate, lineage).
4. uploads atomically for readers: every file under ``.staging/NAME/VERSION/UUID/`` (S3 checks each
   upload against its sha256), verifies the staging copy, copies it into ``NAME/VERSION/``
   (server-side on S3) and writes ``manifest.json`` there last. A dataset exists for readers only
   when its manifest does; a killed publish leaves staging debris that no reader lists, and the
   next publish of the same dataset removes it once it is a day old (:func:`collect_staging`).
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import tempfile
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthgate import __version__
from synthgate.errors import ConfigError, DataError, SynthgateError
from synthgate.progress import NullReporter, Reporter
from synthgate.stores import Store, open_store
from synthgate.utils import sha256_file, utc_now

FORMAT = "synthgate.published-dataset/v1"
STAGING = ".staging"
#: Staging uploads older than this are abandoned (a killed publish); the next publish removes them.
STAGING_MAX_AGE_S = 24 * 3600.0
STARTED = ".started"
MANIFEST = "manifest.json"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


class PublishRefused(SynthgateError):
    exit_code = 1


class NothingApproved(PublishRefused):
    """No version of the model holds the alias (yet): nothing may be published."""


@dataclass
class PublishResult:
    name: str
    version: str
    uri: str
    num_images: int
    manifest: dict[str, Any]
    bytes: int = 0
    seconds: float = 0.0
    already_published: bool = False
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: resolve_and_sample, package, upload

    def record(self) -> dict[str, Any]:
        """``published.json``: what every shell (CLI, ``dvc.yaml``, the Kubeflow step) records of a
        publication. The full manifest stays in the store, beside the dataset."""
        return {"published": True, "name": self.name, "version": self.version, "uri": self.uri,
                "num_images": self.num_images, "files": len(self.manifest.get("files", [])),
                "model": self.manifest.get("model"), "bytes": self.bytes, "seconds": round(self.seconds, 3),
                "already_published": self.already_published, "notes": list(self.notes),
                "timings": dict(self.timings)}


def not_published_record(reason: str) -> dict[str, Any]:
    """``published.json`` when nothing holds the alias yet (``synthgate publish --if-approved``)."""
    from synthgate.utils import utc_now

    return {"published": False, "reason": reason, "checked": utc_now()}


def check_name(value: str, what: str = "dataset name") -> str:
    """Names and versions become key prefixes: no ``/``, no ``..``, lower-case letters, digits, ``._-``."""
    if not NAME_RE.fullmatch(value or "") or ".." in value:
        raise ConfigError(f"{what} {value!r} is not allowed: use lower-case letters, digits, '.', '_' and '-' "
                          "(no '/', no '..', at most 100 characters)")
    return value


def default_dataset_name(model: str) -> str:
    base = re.sub(r"-generator$", "", model.lower())
    return check_name(re.sub(r"[^a-z0-9._-]+", "-", base).strip("-.") + "-synthetic")


# --------------------------------------------------------------------------------------------
def approved_version(client: Any, model: str, alias: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The version holding ``alias``, its verified gate record and evaluation; refused unless the gate
    passed or an override is recorded."""
    from synthgate.registry.client import unless_missing
    from synthgate.registry.registry import verify_version

    try:
        client.get_registered_model(model)
    except Exception as e:
        unless_missing(e, client)
        raise DataError(f"no registered model {model!r}", hint="list them with `synthgate models`") from None
    try:
        mv = client.get_model_version_by_alias(model, alias)
    except Exception as e:
        unless_missing(e, client)
        raise NothingApproved(f"{model} has no version @{alias}: nothing is approved for publishing",
                             hint=f"a reviewer promotes a version whose gate passed: `synthgate promote {model} "
                                  f"VERSION --alias {alias}`") from None
    gate, evaluation = verify_version(client, model, str(mv.version))
    if not gate.get("passed") and not mv.tags.get("override.reason"):
        failing = ", ".join(r["rule"] for r in gate.get("rules", []) if not r.get("passed"))
        raise PublishRefused(f"{model} version {mv.version} holds @{alias} but its gate failed ({failing}) and no "
                             "override is recorded (was the alias set outside `synthgate promote`?)",
                             hint="promote a version that passed, or record an override with "
                                  "`synthgate promote --force --reason`")
    return mv, gate, evaluation


def flagged_copies(gate: dict[str, Any], evaluation: dict[str, Any]) -> list[int]:
    """Indices (in the evaluated sample set) of the images flagged as copies: by the gate record at its
    policy's level and by the evaluation at its own; none of them is ever released."""
    from_gate = ((gate.get("details") or {}).get("memorization") or {}).get("flagged") or []
    from_eval = ((evaluation.get("memorization") or {}).get("flags") or {}).get("indices") or []
    return sorted({int(i) for i in [*from_gate, *from_eval]})


def _download_run_file(client: Any, run_id: str, path: str, dst: Path) -> Path | None:
    try:
        return Path(client.download_artifacts(run_id, path, str(dst)))
    except Exception:
        return None


def _fresh_samples(model: str, version: str, uri: str, sample_config: Any, out: Path, reporter: Reporter) -> Path:
    """Download the registered generator and sample ``sample_config`` from it into ``out``."""
    import mlflow

    from synthgate.generators.model import INFO
    from synthgate.generators.sample import sample
    from synthgate.registry.registry import _tracking_env

    if sample_config is None:
        raise ConfigError("publish: the evaluated sample set is not at hand and no sampling settings were given",
                          hint="pass --samples (the evaluated set) or set the `sample` section of params.yaml")
    reporter.info(f"sampling from {model} version {version} (registered model)")
    (out.parent / "model").mkdir(parents=True, exist_ok=True)
    with _tracking_env(uri):  # models:/ URIs resolve through the registry URI, not the tracking_uri argument
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model}/{version}",
                                                         dst_path=str(out.parent / "model")))
    found = sorted(local.rglob(INFO))
    if not found:
        raise DataError(f"{model} version {version}: the registered model has no generator folder ({INFO})")
    return sample(found[0].parent, sample_config, out, None, reporter).root


# --------------------------------------------------------------------------------------------
def _png_bytes(image: np.ndarray, level: int) -> bytes:
    from PIL import Image

    arr = image[..., 0] if image.shape[-1] == 1 else image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def _write_shard(path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str], level: int) -> None:
    """An ``.npz`` readable by ``np.load``, deflated at ``level`` (numpy's savez_compressed is fixed at 6)."""
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for key, arr in (("images", images), ("labels", labels), ("classes", np.array(classes))):
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
    tmp.rename(path)


def _write_png_zip(path: Path, images: np.ndarray, indices: np.ndarray, level: int) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:  # PNG is compressed already
        for i in indices:
            zf.writestr(f"{i:06d}.png", _png_bytes(images[i], level))


def build_package(samples: Path, out: Path, shard_size: int = 5000, png: bool = True, level: int = 3,
                  workers: int = 8, exclude: list[int] | None = None) -> dict[str, Any]:
    """Write shards, PNG zips and labels.csv for the canonical dataset at ``samples`` into ``out``,
    without the images at the indices ``exclude`` (copies flagged by the memorization evidence).

    Shards and per-class PNG archives are written in parallel threads (zlib and PIL's encoder
    release the GIL); ``level`` is the deflate level of both (3: most of level 6's size at a
    fraction of its time on image data)."""
    import hashlib

    from synthgate.data.canonical import load_dataset

    ds = load_dataset(samples)
    excluded = sorted({int(i) for i in (exclude or [])})
    keep = np.setdiff1d(np.arange(len(ds.meta)), np.asarray(excluded, np.int64))
    images, labels, classes = np.asarray(ds.images)[keep], ds.labels()[keep], ds.classes
    (out / "images").mkdir(parents=True)
    rows = []
    n_shards = max(1, -(-len(images) // shard_size))
    jobs: list[Any] = []
    for s in range(n_shards):
        sl = slice(s * shard_size, (s + 1) * shard_size)
        name = f"images/shard-{s:05d}.npz"
        jobs.append((_write_shard, out / name, images[sl], labels[sl], classes, level))
        for i in range(*sl.indices(len(images))):
            rows.append({"index": i, "source_index": int(keep[i]), "class": classes[labels[i]],
                         "label": int(labels[i]), "shard": name, "shard_index": i - s * shard_size,
                         "png": f"png/{classes[labels[i]]}.zip:{i:06d}.png" if png else ""})
    if png:
        (out / "png").mkdir()
        jobs += [(_write_png_zip, out / "png" / f"{c}.zip", images, np.flatnonzero(labels == k), level)
                 for k, c in enumerate(classes)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for fut in [pool.submit(fn, *a) for fn, *a in jobs]:
            fut.result()
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["index", "source_index", "class", "label", "shard", "shard_index", "png"])
        w.writeheader()
        w.writerows(rows)
    counts = {c: int((labels == k).sum()) for k, c in enumerate(classes)}
    content = ds.content_hash if not excluded else hashlib.sha256(
        f"{ds.content_hash}:excluded:{','.join(map(str, excluded))}".encode()).hexdigest()
    return {"num_images": int(len(images)), "classes": classes, "counts": counts, "resolution": ds.resolution,
            "channels": ds.channels, "content_hash": content, "evaluated_content_hash": ds.content_hash,
            "excluded": excluded, "shards": n_shards, "source_manifest": ds.manifest}


def _memorization_lines(gate: dict[str, Any], evaluation: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """What the copy search guarantees about this release, and what was left out of it."""
    mem = (gate.get("details") or {}).get("memorization") or {}
    cov = (evaluation.get("memorization") or {}).get("coverage") or {}
    out = []
    if mem.get("statement"):
        out.append(f"Memorization: {mem['statement']}.")
    if cov:
        out.append(f"Every one of the {cov.get('synthetic_size')} evaluated images was searched against "
                   f"{cov.get('train_compared')} of {cov.get('train_size')} training images (shifts, scale/crop, "
                   f"rotations, flips, a learned copy descriptor), calibrated on {cov.get('held_out')} real held-out "
                   "images.")
    if info.get("excluded"):
        out.append(f"**{len(info['excluded'])} image(s) of the evaluated set were flagged as copies of training "
                   f"images and are not in this dataset** (evaluated-set indices {', '.join(map(str, info['excluded'][:30]))}"
                   f"{' ...' if len(info['excluded']) > 30 else ''}); `labels.csv` maps each released image to its "
                   "index in the evaluated set (`source_index`).")
    if info.get("samples_source") == "fresh":
        out.append("**These images were sampled afresh from the approved model after its evaluation: the copy "
                   "search scanned the evaluated set, not these images.**")
    return [*out, ""] if out else []


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def datacard(name: str, version: str, info: dict[str, Any], model: dict[str, Any], gate: dict[str, Any],
             evaluation: dict[str, Any], licence: str, intended_use: str) -> str:
    """``DATACARD.md``: what the dataset is, how it was made and gated, and what it must not be used for."""
    s = evaluation.get("summary", {})
    enc = evaluation.get("encoder", {})
    lines = [
        f"# {name} {version}: synthetic images",
        "",
        f"{info['num_images']} synthetic {info['resolution']}x{info['resolution']} images "
        f"({info['channels']} channel{'s' if info['channels'] != 1 else ''}) in {len(info['classes'])} classes, "
        f"sampled from the generator **{model['name']} version {model['version']}** (MLflow, alias "
        f"`@{model['alias']}`). No image in this dataset is a patient image; each was generated by a model "
        "trained on patient images, and "
        + ("was released only after passing the checks below." if gate.get("passed") else
           "**was released by a recorded override although its gate failed** (see below)."),
        "",
        "## Classes",
        "",
        "| class | images |",
        "| --- | --- |",
        *[f"| {c} | {n} |" for c, n in info["counts"].items()],
        "",
        "## Files",
        "",
        "- `images/shard-*.npz`: arrays `images` (uint8, N x H x W x C), `labels` (int), `classes`.",
        "- `png/CLASS.zip`: the same images as PNG files, one archive per class; `labels.csv` maps each index to",
        "  its class, shard and PNG.",
        "- `report.html`: the evaluation report the release decision was based on (its public version: no real "
        "image, no training file name); `evaluation.json`, `gate.json`:",
        "  its numbers and the gate decision. `manifest.json`: every file with size and sha256.",
        "",
        "## How it was gated",
        "",
        f"Release policy hash `{str(gate.get('policy_hash', ''))[:16]}`; gate **{'PASSED' if gate.get('passed') else 'FAILED'}**"
        + (f" (released by override: {model['override']})" if model.get("override") else "") + ".",
        "",
        "| rule | value | threshold | result |",
        "| --- | --- | --- | --- |",
        *[f"| {r['rule']} | {_fmt(r.get('value'))} | {r.get('comparison', '')} {_fmt(r.get('threshold'))} | "
          f"{'pass' if r.get('passed') else 'FAIL'} |" for r in gate.get("rules", [])],
        "",
        *_memorization_lines(gate, evaluation, info),
        "## Evaluation (limitations a user must know)",
        "",
        f"Feature-space numbers use the reference encoder `{enc.get('encoder_id')}` ({enc.get('arch')}), a "
        "classifier trained on the real training split: they are comparable only with numbers from the same "
        "encoder, not with Inception-based FIDs in the literature.",
        "",
    ]
    facts = [
        ("FID (reference encoder)", s.get("fid")), ("FID of real held-out vs training (baseline)", s.get("fid_real_baseline")),
        ("precision / recall", f"{_fmt(s.get('precision'))} / {_fmt(s.get('recall'))}"
         if s.get("precision") is not None else None),
        ("downstream AUROC trained on real (TRTR, as many images per class as the synthetic set)", s.get("auc_real")),
        ("downstream AUROC trained on the whole real training split", s.get("auc_real_full")),
        ("downstream AUROC trained on synthetic (TSTR)", s.get("auc_synthetic")),
        ("utility gap AUC_real - AUC_syn (mean over seeds)", s.get("auc_gap")),
        (f"utility gap, one-sided {s.get('utility_confidence')} upper confidence bound over "
         f"{s.get('utility_seeds')} seeds, the training sets and the test split (what the gate decides on)",
         s.get("auc_gap_upper")),
        ("synthetic images flagged as copies of training images (not released)", s.get("flagged_copies")),
        ("planted copies found by the copy search (weakest kind)", s.get("planted_min_detection")),
        ("membership-inference AUC, copy-descriptor space (0.5 = no leak)", s.get("membership_auc")),
    ]
    lines += [f"- {k}: {_fmt(v)}" for k, v in facts if v is not None]
    if s.get("fidelity_utility_disagree"):
        lines.append("- Fidelity and utility disagree for this generator (see the report): do not read one as the other.")
    lines += [
        "- A gate bounds measured risks on the evaluated sample; it is not a formal privacy guarantee "
        "(no differential privacy). Rare cases in the training data are the most exposed.",
        f"- Resolution {info['resolution']}x{info['resolution']}: not a substitute for diagnostic-quality images.",
        "",
        "## Intended use",
        "",
        intended_use,
        "",
        "Not for clinical decisions, and not for re-identifying anyone. Do not combine with other data to "
        "re-identify patients.",
        "",
        "## Lineage and licence",
        "",
        f"- training data content hash `{model.get('training_dataset_hash', '')}`",
        f"- evaluation hash `{evaluation.get('evaluation_hash', '')}`",
        f"- source data licence: {licence}",
        f"- generated by synthgate {__version__} on {utc_now()}",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
def _upload_all(store: Store, files: list[dict[str, Any]], local_root: Path, prefix: str, workers: int,
                reporter: Reporter) -> int:
    done = 0

    def put(f: dict[str, Any]) -> int:
        store.put_file(local_root / f["path"], f"{prefix}/{f['path']}", f["sha256"])
        return int(f["size"])

    with reporter.task(f"uploading {len(files)} files", sum(f["size"] for f in files)) as advance, \
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for n in pool.map(put, files):
            done += n
            advance(n)
    return done


def _verify_staging(store: Store, files: list[dict[str, Any]], local_root: Path, prefix: str) -> None:
    for f in files:
        size = store.size(f"{prefix}/{f['path']}")
        if size != f["size"]:
            raise DataError(f"publish: staging copy of {f['path']} has {size} bytes, expected {f['size']}; "
                            "nothing was published")
        if store.kind == "file":  # the S3 server already checked each upload's sha256
            got = sha256_file(Path(store.uri) / prefix / f["path"])
            if got != f["sha256"]:
                raise DataError(f"publish: staging copy of {f['path']} hashes to {got[:16]}, expected "
                                f"{f['sha256'][:16]}; nothing was published")


def publish(
    model: str,
    store: str | Path,
    alias: str = "approved",
    samples: Path | None = None,
    evaluation: Path | None = None,
    name: str | None = None,
    version: str | None = None,
    tracking_uri: str | None = None,
    sample_config: Any = None,
    licence: str = "see the source dataset's licence",
    intended_use: str = ("Method development, teaching and benchmarking of image analysis models where the real "
                         "images cannot be shared."),
    shard_size: int = 5000,
    png: bool = True,
    workers: int = 16,
    reporter: Reporter | None = None,
) -> PublishResult:
    """Publish the dataset of ``model``'s version at ``alias`` into ``store`` (see the module docstring)."""
    from synthgate.data.canonical import load_dataset
    from synthgate.monitoring.metrics import (
        PUBLISHED_IMAGES,
        TRANSFER_BYTES,
        TRANSFER_FAILURES,
        TRANSFER_FILES,
    )
    from synthgate.registry.client import connect
    from synthgate.registry.client import tracking_uri as resolve_uri

    reporter = reporter or NullReporter()
    t0 = time.perf_counter()
    name = check_name(name) if name else default_dataset_name(model)
    st = open_store(store)
    st.check()
    client = connect(tracking_uri)
    uri = resolve_uri(tracking_uri)
    mv, gate, ev = approved_version(client, model, alias)
    mversion = str(mv.version)
    version = check_name(version, "dataset version") if version else f"v{mversion}"
    notes: list[str] = []

    with tempfile.TemporaryDirectory(prefix="synthgate-publish-") as tmp_s:
        tmp = Path(tmp_s)
        gated_hash = mv.tags.get("lineage.synthetic_content_hash")
        source = "evaluated"
        if samples is not None and (Path(samples) / "manifest.json").exists() \
                and load_dataset(Path(samples)).content_hash == gated_hash:
            sample_dir = Path(samples)
        else:
            if samples is not None:
                notes.append(f"{samples} is not the sample set version {mversion} was gated on; sampled afresh")
            sample_dir = _fresh_samples(model, mversion, uri, sample_config, tmp / "fresh" / "samples", reporter)
            source = "fresh"

        t_sample = time.perf_counter() - t0
        pkg = tmp / "package"
        excluded = flagged_copies(gate, ev) if source == "evaluated" else []
        if excluded:
            notes.append(f"{len(excluded)} image(s) flagged as copies of training images are not released: "
                         f"{', '.join(map(str, excluded[:20]))}{' ...' if len(excluded) > 20 else ''}")
        elif source == "fresh":
            notes.append("the released images were sampled afresh: the copy search scanned the evaluated set, "
                         "not these images (the data card says so)")
        reporter.info(f"packaging {sample_dir}")
        info = build_package(sample_dir, pkg, shard_size, png, workers=min(workers, 8), exclude=excluded)
        info["samples_source"] = source
        t_package = time.perf_counter() - t0 - t_sample
        from synthgate.evaluation.evaluate import PUBLIC_REPORT
        from synthgate.evaluation.report import PUBLIC_MARK

        for rel, dst in (("evaluation/report.html", "report.html"), ("evaluation/evaluation.json", "evaluation.json"),
                         ("gate/gate.json", "gate.json")):
            got = _download_run_file(client, mv.run_id, rel, tmp / "run")
            if rel.endswith("report.html"):
                # only a public report leaves: one that shows real images (an older registration) never does
                if got is not None and PUBLIC_MARK not in got.read_text(errors="replace"):
                    got = None
                local = Path(evaluation) / PUBLIC_REPORT if evaluation else None
                if got is None and local is not None and local.exists() and PUBLIC_MARK in local.read_text():
                    got = local
                if got is None:
                    notes.append("no public evaluation report was found, so none is included (the full report "
                                 "shows real images and never leaves)")
            if got is not None:
                shutil.copyfile(got, pkg / dst)
        model_info = {
            "name": model, "version": mversion, "alias": alias, "run_id": mv.run_id, "tracking_uri": uri,
            "gate_passed": bool(gate.get("passed")), "gate_sha256": mv.tags.get("gate.sha256"),
            "override": mv.tags.get("override.reason"),
            "training_dataset_hash": mv.tags.get("lineage.training_dataset_hash"),
        }
        (pkg / "DATACARD.md").write_text(datacard(name, version, info, model_info, gate, ev, licence, intended_use))

        files = [{"path": p.relative_to(pkg).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in sorted(pkg.rglob("*")) if p.is_file()]
        manifest = {
            "format": FORMAT, "name": name, "version": version, "created": utc_now(),
            "synthgate_version": __version__,
            "dataset": {k: info[k] for k in ("num_images", "classes", "counts", "resolution", "channels",
                                              "content_hash", "evaluated_content_hash", "shards")},
            "samples_source": source,
            "excluded": {"count": len(info["excluded"]), "indices": info["excluded"],
                         "reason": "flagged as copies of training images by the memorization evidence (the gate "
                                   "record's flags at its policy's level, and the evaluation's own)"},
            "model": model_info,
            "gate": {"passed": bool(gate.get("passed")), "policy_hash": gate.get("policy_hash"),
                     "evaluation_hash": gate.get("evaluation_hash"),
                     "rules": [{k: r.get(k) for k in ("rule", "passed", "value", "comparison", "threshold")}
                               for r in gate.get("rules", [])]},
            "lineage": {"real_content_hash": ev.get("real", {}).get("content_hash"),
                        "training_dataset_hash": mv.tags.get("lineage.training_dataset_hash"),
                        "evaluation_hash": ev.get("evaluation_hash"),
                        "evaluated_synthetic_content_hash": gated_hash,
                        "encoder_id": ev.get("encoder", {}).get("encoder_id"),
                        "encoder_weights_sha256": ev.get("encoder", {}).get("weights_sha256"),
                        "code_version": mv.tags.get("lineage.code_version")},
            "files": files,
        }

        final = f"{name}/{version}"
        existing = _read_manifest(st, final)
        if existing is not None:
            if existing.get("dataset", {}).get("content_hash") == info["content_hash"]:
                return PublishResult(name, version, f"{st.uri}/{final}", info["num_images"], existing,
                                     already_published=True, seconds=time.perf_counter() - t0,
                                     notes=[*notes, "already published with the same content; nothing uploaded"])
            raise PublishRefused(f"{name}:{version} is already published with other content",
                                 hint="datasets are immutable: publish under another --version")
        abandoned = collect_staging(st, name)
        if abandoned:
            notes.append(f"removed {len(abandoned)} abandoned staging upload(s) of {name} (a killed publish)")
        staging = f"{STAGING}/{name}/{version}/{uuid.uuid4().hex[:12]}"
        t_upload0 = time.perf_counter()
        try:
            st.put_bytes(f"{staging}/{STARTED}", repr(time.time()).encode())  # first: dates this upload
            sent = _upload_all(st, files, pkg, staging, workers, reporter)
            _verify_staging(st, files, pkg, staging)
            for f in files:
                st.copy(f"{staging}/{f['path']}", f"{final}/{f['path']}")
            st.put_bytes(f"{final}/{MANIFEST}", json.dumps(manifest, indent=2).encode())  # last: now visible
        except SynthgateError:
            TRANSFER_FAILURES.labels("publish", "store").inc()
            raise
        except Exception:
            TRANSFER_FAILURES.labels("publish", "error").inc()
            raise
        finally:
            st.delete_prefix(staging)
    TRANSFER_BYTES.labels("publish", st.kind).inc(sent)
    TRANSFER_FILES.labels("publish", st.kind).inc(len(files) + 1)
    PUBLISHED_IMAGES.labels(name).set(info["num_images"])
    timings = {"resolve_and_sample": t_sample, "package": t_package, "upload": time.perf_counter() - t_upload0}
    return PublishResult(name, version, f"{st.uri}/{final}", info["num_images"], manifest, bytes=sent,
                         seconds=time.perf_counter() - t0, notes=notes, timings=timings)


def collect_staging(st: Store, name: str, now: float | None = None, max_age_s: float = STAGING_MAX_AGE_S
                    ) -> list[str]:
    """Remove the staging uploads of dataset ``name`` that a killed publish left behind: those whose
    ``.started`` stamp (the first object every publish writes) is older than ``max_age_s``, and
    those without one (left by synthgate before the stamp existed). Younger ones may belong to a
    publish still running and are kept. Returns the removed prefixes."""
    now = time.time() if now is None else now
    groups: dict[str, set[str]] = {}
    for key in st.list_keys(f"{STAGING}/{name}"):
        parts = key.split("/")
        if len(parts) >= 5:  # .staging/NAME/VERSION/UUID/file...
            groups.setdefault("/".join(parts[:4]), set()).add("/".join(parts[4:]))
    removed = []
    for prefix, files in sorted(groups.items()):
        started = None
        if STARTED in files:
            try:
                started = float(st.get_bytes(f"{prefix}/{STARTED}").decode())
            except (KeyError, ValueError):
                started = None
        if started is None or now - started > max_age_s:
            st.delete_prefix(prefix)
            removed.append(prefix)
    return removed


def _read_manifest(st: Store, prefix: str) -> dict[str, Any] | None:
    try:
        return json.loads(st.get_bytes(f"{prefix}/{MANIFEST}"))
    except KeyError:
        return None
