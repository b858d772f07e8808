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
4. uploads atomically for readers and for concurrent writers (:mod:`synthgate.publish.commit`): every
   file under ``.staging/NAME/VERSION/UUID/`` (S3 checks each upload against its sha256), verifies the
   staging copy, has the gatekeeper sign it, claims ``NAME/VERSION/`` by creating the signature there
   with a conditional create, copies the files in (server-side on S3) and creates ``manifest.json``
   last, conditionally too. A dataset exists for readers only when its manifest does; of two
   publishes of one name and version at once exactly one commits, the other succeeds idempotently
   when its files are identical (packages are deterministic) and is refused by name otherwise. A
   killed publish leaves staging debris that no reader lists, and the next publish of the same
   dataset removes it once it is a day old (:func:`collect_staging`).
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthgate import __version__
from synthgate.config import PublishConfig
from synthgate.errors import ConfigError, DataError, SynthgateError
from synthgate.progress import NullReporter, Reporter
from synthgate.publish.commit import (  # noqa: F401  (re-exported: pull, the CLI and the tests use them here)
    MANIFEST,
    SIGNATURE,
    STAGING,
    STAGING_MAX_AGE_S,
    STARTED,
    PublishRefused,
    collect_staging,
    files_root,
    read_manifest,
    upload,
    working_folder,
)
from synthgate.publish.datacard import datacard
from synthgate.publish.files import build_package  # noqa: F401  (re-exported: the benchmark builds packages)
from synthgate.registry.outage import answers_in_time
from synthgate.stores import open_store
from synthgate.utils import sha256_file, utc_now

FORMAT = "synthgate.published-dataset/v1"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


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
def approved_version(client: Any, model: str, alias: str) -> tuple[Any, dict[str, Any], dict[str, Any], Any]:
    """The version holding ``alias``, its verified gate record and evaluation, and its release attestation
    (signed by the gatekeeper, verified against the trust root); refused without one."""
    from synthgate.registry.client import unless_missing
    from synthgate.registry.verify import verify_version

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
    from synthgate.registry.registry import release_of

    gate, evaluation = verify_version(client, model, str(mv.version), registry_pin=False)
    try:
        release = release_of(client, model, str(mv.version))
    except SynthgateError as e:
        raise PublishRefused(f"{model} version {mv.version} holds @{alias} but is not released: {e.message}",
                             hint="a version is released when the gatekeeper signs it (`synthgate promote`); an "
                                  "alias moved by hand grants nothing") from None
    return mv, gate, evaluation, release


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


# --------------------------------------------------------------------------------------------
@answers_in_time("publishing", after="nothing was committed to the store (a staged upload is swept by the next "
                                     "publish): run it again")
def publish(
    model: str,
    store: str | Path,
    *,
    alias: str = "approved",
    samples: Path | None = None,
    evaluation: Path | None = None,
    name: str | None = None,
    version: str | None = None,
    tracking_uri: str | None = None,
    config: PublishConfig | None = None,
    reporter: Reporter | None = None,
    gatekeeper: str | None = None,
) -> PublishResult:
    """Publish the dataset of ``model``'s version at ``alias`` into ``store`` (see the module docstring).
    ``config`` (``params.publish``) gives the shards, PNGs, transfers and the data card's licence and
    intended use; its ``store`` and ``alias`` are the caller's to apply."""
    cfg = config or PublishConfig()
    shard_size, png, workers = cfg.shard_size, cfg.png, cfg.workers
    from synthgate.monitoring.metrics import PUBLISHED_IMAGES, TRANSFER_BYTES, TRANSFER_FILES
    from synthgate.registry.client import connect
    from synthgate.registry.client import tracking_uri as resolve_uri

    reporter = reporter or NullReporter()
    t0 = time.perf_counter()
    name = check_name(name) if name else default_dataset_name(model)
    st = open_store(store)
    st.check()
    client = connect(tracking_uri)
    uri = resolve_uri(tracking_uri)
    mv, gate, ev, release = approved_version(client, model, alias)
    mversion = str(mv.version)
    version = check_name(version, "dataset version") if version else f"v{mversion}"
    notes: list[str] = []

    with working_folder() as tmp:
        sample_dir, source = _sample_set(samples, mv, model)
        t_sample = time.perf_counter() - t0
        pkg = tmp / "package"
        excluded = sorted({*flagged_copies(gate, ev), *(release.predicate.get("samples") or {}).get("flagged", [])})
        if excluded:
            notes.append(f"{len(excluded)} image(s) flagged as copies of training images are not released: "
                         f"{', '.join(map(str, excluded[:20]))}{' ...' if len(excluded) > 20 else ''}")
        reporter.info(f"packaging {sample_dir}")
        info = build_package(sample_dir, pkg, shard_size, png, workers=min(workers, 8), exclude=excluded)
        info["samples_source"] = source
        t_package = time.perf_counter() - t0 - t_sample
        _copy_run_files(client, mv.run_id, evaluation, pkg, tmp / "run", notes, release.predicate)
        model_info = {
            "name": model, "version": mversion, "alias": alias, "run_id": mv.run_id, "tracking_uri": uri,
            "gate_passed": release.predicate.get("verdict") == "passed", "gate_sha256": mv.tags.get("gate.sha256"),
            "override": (release.predicate.get("override") or {}).get("reason"),
            "release_attestation_sha256": release.envelope_sha256,
            "training_dataset_hash": mv.tags.get("lineage.training_dataset_hash"),
        }
        (pkg / "DATACARD.md").write_text(datacard(name, version, info, model_info, gate, ev, cfg.licence, cfg.intended_use))
        files = [{"path": p.relative_to(pkg).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in sorted(pkg.rglob("*")) if p.is_file()]
        manifest = _manifest(name, version, info, model_info, gate, ev, mv.tags, files)
        final = f"{name}/{version}"
        if (existing := _published(st, final, files, manifest)) is not None:
            return PublishResult(name, version, f"{st.uri}/{final}", info["num_images"], existing,
                                 already_published=True, seconds=time.perf_counter() - t0,
                                 notes=[*notes, "already published with the same content; nothing uploaded"])
        abandoned = collect_staging(st, name)
        if abandoned:
            notes.append(f"removed {len(abandoned)} abandoned staging upload(s) of {name} (a killed publish)")
        t_upload0 = time.perf_counter()
        sent, other = upload(st, final, f"{STAGING}/{name}/{version}/{uuid.uuid4().hex[:12]}", files, pkg, manifest,
                             workers, reporter, gatekeeper)
    if other is not None:  # a concurrent publish of the same files committed first
        return PublishResult(name, version, f"{st.uri}/{final}", info["num_images"], other, already_published=True,
                             bytes=sent, seconds=time.perf_counter() - t0,
                             notes=[*notes, "already published with the same content by a concurrent publish"])
    TRANSFER_BYTES.labels("publish", st.kind).inc(sent)
    TRANSFER_FILES.labels("publish", st.kind).inc(len(files) + 1)
    PUBLISHED_IMAGES.labels(name).set(info["num_images"])
    timings = {"resolve_and_sample": t_sample, "package": t_package, "upload": time.perf_counter() - t_upload0}
    return PublishResult(name, version, f"{st.uri}/{final}", info["num_images"], manifest, bytes=sent,
                         seconds=time.perf_counter() - t0, notes=notes, timings=timings)


def _published(st: Any, final: str, files: list[dict[str, Any]], manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest already committed at ``final`` when its files are these files, byte for byte (packages are
    deterministic); None when nothing is committed there; :class:`PublishRefused` naming the version when
    other files are."""
    existing = read_manifest(st, final)
    if existing is None:
        return None
    try:
        same = files_root(existing.get("files") or []) == files_root(files)
    except (KeyError, TypeError, ValueError):
        same = False
    if same:
        return existing
    images = (existing.get("dataset") or {}).get("content_hash") == manifest["dataset"]["content_hash"]
    raise PublishRefused(f"{manifest['name']}:{manifest['version']} is already published with other content"
                         + (" (the same images, other files: another package setting or synthgate version)"
                            if images else ""), hint="datasets are immutable: publish under another --version")


def _sample_set(samples: Path | None, mv: Any, model: str) -> tuple[Path, str]:
    """The evaluated sample set, when it is the one the version was gated on (its content hash is the
    version's ``lineage.synthetic_content_hash``); -> (folder, "evaluated"). Anything else is refused:
    only images the copy search scanned and the gatekeeper attested are released (the gatekeeper
    checks every published image against the release), so a fresh sample is evaluated, gated and
    released as its own version first."""
    from synthgate.data.canonical import load_dataset

    gated_hash = mv.tags.get("lineage.synthetic_content_hash")
    if samples is not None and (Path(samples) / "manifest.json").exists() \
            and load_dataset(Path(samples)).content_hash == gated_hash:
        return Path(samples), "evaluated"
    what = f"{samples} is not" if samples is not None else "no sample set was given as"
    raise PublishRefused(f"{what} the sample set {model} version {mv.version} was gated on (content hash "
                         f"{str(gated_hash)[:16]}): only images the copy search scanned and the gatekeeper attested "
                         "are published", hint="pass --samples the evaluated set; to release new samples, sample, "
                                               "evaluate, gate and register them as a new version")


def _copy_run_files(client: Any, run_id: str, evaluation: Path | None, pkg: Path, tmp: Path, notes: list[str],
                    release: dict[str, Any]) -> None:
    """The registered run's public report, evaluation and gate record into the package, as registered (the
    gatekeeper signs them only byte for byte); the report with the signed release at its top (who released it,
    by override or not: :func:`~synthgate.gates.page.insert_release`, which the gatekeeper recomputes). Only
    a public report leaves: one that shows real images (an older registration) never does."""
    from synthgate.evaluation.report import PUBLIC_MARK
    from synthgate.gates.page import insert_release

    for rel, dst in (("evaluation/report.html", "report.html"), ("evaluation/evaluation.json", "evaluation.json"),
                     ("gate/gate.json", "gate.json")):
        got = _download_run_file(client, run_id, rel, tmp)
        if rel.endswith("report.html") and got is not None and PUBLIC_MARK not in got.read_text(errors="replace"):
            got = None
        if got is None and rel.endswith("report.html"):
            notes.append("the registered run has no public evaluation report, so none is included (the full report "
                         "shows real images and never leaves)")
        if got is not None and dst == "report.html":
            (pkg / dst).write_bytes(insert_release(got.read_bytes().decode("utf-8"), release).encode("utf-8"))
        elif got is not None:
            shutil.copyfile(got, pkg / dst)


def _manifest(name: str, version: str, info: dict[str, Any], model_info: dict[str, Any], gate: dict[str, Any],
              ev: dict[str, Any], tags: dict[str, str], files: list[dict[str, Any]]) -> dict[str, Any]:
    """``manifest.json``: the dataset, what was left out, the model, its gate, the lineage, every file."""
    return {
        "format": FORMAT, "name": name, "version": version, "created": utc_now(),
        "synthgate_version": __version__,
        "dataset": {k: info[k] for k in ("num_images", "classes", "counts", "resolution", "channels",
                                          "content_hash", "evaluated_content_hash", "shards")},
        "samples_source": info["samples_source"],
        "excluded": {"count": len(info["excluded"]), "indices": info["excluded"],
                     "reason": "flagged as copies of training images by the memorization evidence (the gate "
                               "record's flags at its policy's level, and the evaluation's own)"},
        "model": model_info,
        "gate": {"passed": bool(gate.get("passed")), "policy_hash": gate.get("policy_hash"),
                 "evaluation_hash": gate.get("evaluation_hash"),
                 "rules": [{k: r.get(k) for k in ("rule", "passed", "value", "comparison", "threshold")}
                           for r in gate.get("rules", [])]},
        "lineage": {"real_content_hash": ev.get("real", {}).get("content_hash"),
                    "training_dataset_hash": tags.get("lineage.training_dataset_hash"),
                    "evaluation_hash": ev.get("evaluation_hash"),
                    "evaluated_synthetic_content_hash": tags.get("lineage.synthetic_content_hash"),
                    "encoder_id": ev.get("encoder", {}).get("encoder_id"),
                    "encoder_weights_sha256": ev.get("encoder", {}).get("weights_sha256"),
                    "code_version": tags.get("lineage.code_version")},
        "files": files,
    }
