"""Glue between Kubeflow Pipelines components (``components/``) and :mod:`synthgate.stages`.

A KFP component body only imports synthgate and calls a stage (docs/ARCHITECTURE.md, principle 1). What a
stage cannot know about KFP lives here, once, as small functions with no branching on pipeline
logic: turning the ``params_json`` pipeline parameter (plus explicit overrides) into
:class:`~synthgate.config.Params`, fetching the data source into the pod (a path, ``s3://`` or a
DVC repository at a revision), and recording a stage's result on KFP's typed artifacts
(``Dataset``/``Model`` metadata, ``Metrics``, ``HTML``). Artifacts are duck-typed (``.path``,
``.metadata``, ``.log_metric``) so nothing here imports kfp.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from synthgate.config import Params, apply_overrides, parse_model
from synthgate.errors import ConfigError, DataError

#: Values of an explicit pipeline parameter that mean "not set: keep the value from params_json".
UNSET: tuple[Any, ...] = (None, "", 0)


# --------------------------------------------------------------------------------------------
# parameters


def params(params_json: str, overrides: dict[str, Any] | None = None) -> Params:
    """``params_json`` (``Params.model_dump(mode="json", by_alias=True)``) with dotted-key
    ``overrides`` applied; an override that is ``None``, ``""`` or ``0`` is not set."""
    try:
        data = json.loads(params_json) if params_json and params_json.strip() else {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"params_json: not valid JSON ({e})",
                          hint="pass the params as JSON, e.g. the pipeline's default value") from None
    if not isinstance(data, dict):
        raise ConfigError("params_json: top level must be a mapping of sections")
    # a KFP parameter cannot be null: its "not given" ("" or 0) becomes the shared rule's None
    apply_overrides(data, {k: None if (not isinstance(v, bool) and v in UNSET) else v
                           for k, v in (overrides or {}).items()})
    return parse_model(Params, data, "params_json")


def params_json(p: Params) -> str:
    """The inverse of :func:`params`: the JSON string a pipeline takes (sorted keys, stable)."""
    return json.dumps(p.model_dump(mode="json", by_alias=True), sort_keys=True)


def optional(text: str) -> str | None:
    """An empty string parameter means "not given" (e.g. tracking_uri: ``$MLFLOW_TRACKING_URI``, from
    the ConfigMap; model_name: named after the dataset)."""
    return text.strip() or None


def run_scoped(uri: str, output: Any) -> str | None:
    """Where the train step mirrors its checkpoints: ``uri/<scope>``, the scope a hash of the step's
    output artifact URI, which KFP derives from the run and the task: the same for a retried pod of
    this task, another one for every other run. (The run id as an input parameter would change the
    step's cache key in every run.) None when ``uri`` is empty."""
    import hashlib

    uri = uri.strip().rstrip("/")
    if not uri:
        return None
    where = str(getattr(output, "uri", "") or getattr(output, "path", "") or "")
    return f"{uri}/{hashlib.sha256(where.encode()).hexdigest()[:16]}"


def text_file(text: str, name: str) -> Path | None:
    """Write a string parameter (e.g. the gate policy YAML) to a temporary file; empty -> None."""
    if not text.strip():
        return None
    path = Path(tempfile.mkdtemp(prefix="synthgate-")) / name
    path.write_text(text)
    return path


def workdir(prefix: str = "synthgate-") -> Path:
    """A scratch folder in the pod (for what is not an output artifact, e.g. training checkpoints)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def folder(artifact: Any) -> Path:
    """The local folder of a folder-valued artifact (a canonical dataset, an evaluation)."""
    return Path(artifact.path)


def gate_json(artifact: Any) -> Path:
    """gate.json inside the gate artifact (a folder: MLflow and the promote check keep the file name)."""
    return Path(artifact.path) / "gate.json"


def registered_json(artifact: Any) -> Path:
    """registered.json inside the registered artifact (a folder)."""
    return Path(artifact.path) / "registered.json"


def optional_folder(artifact: Any) -> Path | None:
    return Path(artifact.path) if artifact is not None else None


# --------------------------------------------------------------------------------------------
# data source


def dvc_get_command(repo: str, path: str, rev: str, out: Path) -> list[str]:
    """``dvc get REPO PATH -o OUT [--rev REV]`` (DVC fetches from the repository's remote)."""
    cmd = [sys.executable, "-m", "dvc", "get", repo, path, "-o", str(out)]
    if rev:
        cmd += ["--rev", rev]
    return cmd


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> (``bucket``, ``some/key``)."""
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ConfigError(f"source_uri {uri!r}: no bucket", hint="use s3://BUCKET/KEY or s3://BUCKET/PREFIX/")
    return bucket, key.strip("/")


def s3_download(uri: str, dest: Path) -> Path:
    """Download an S3 object (-> ``dest/<name>``) or every object under a prefix (-> ``dest/<name>/...``).

    The endpoint (MinIO) and credentials come from the environment, as for every S3 access."""
    from synthgate.stores import open_store

    bucket, key = split_s3(uri)
    store = open_store(f"s3://{bucket}")
    name = key.rsplit("/", 1)[-1] or bucket
    if key and store.size(key) is not None:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(key, target)
        return target
    keys = store.list_keys(key)
    if not keys:
        raise DataError(f"source_uri {uri}: no object or prefix with that name",
                        hint="check the bucket and key (and AWS_ENDPOINT_URL for MinIO)")
    root = dest / name
    for k in keys:
        target = root / (k[len(key):].lstrip("/") if key else k)
        target.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(k, target)
    return root


def fetch_source(source_uri: str, dvc_repo: str = "", dvc_rev: str = "", dest: Path | None = None) -> Path:
    """Make the raw data readable in the pod: a local path as is; ``s3://`` downloaded with boto3;
    with ``dvc_repo``, ``source_uri`` is the path inside that repository, fetched at ``dvc_rev``."""
    source_uri = source_uri.strip()
    if dvc_rev and not dvc_repo:
        raise ConfigError("dvc_rev is set but dvc_repo is empty", hint="pass the DVC repository URL as dvc_repo")
    if dvc_repo:
        if not source_uri:
            raise ConfigError("dvc_repo is set but source_uri is empty",
                              hint="source_uri names the path inside the DVC repository, e.g. data/raw")
        dest = dest or workdir("synthgate-source-")
        out = dest / Path(source_uri).name
        proc = subprocess.run(dvc_get_command(dvc_repo, source_uri, dvc_rev, out), capture_output=True, text=True)
        if proc.returncode != 0:
            raise DataError(f"dvc get {dvc_repo} {source_uri}" + (f" --rev {dvc_rev}" if dvc_rev else "")
                            + f" failed: {proc.stderr.strip()[-2000:]}",
                            hint="check the repository URL, the path, the revision and the DVC remote's credentials")
        return out
    if source_uri.startswith("s3://"):
        return s3_download(source_uri, dest or workdir("synthgate-source-"))
    if source_uri.startswith("file://"):
        return Path(source_uri[len("file://"):])
    return Path(source_uri)


def source_params(params_json: str, source_uri: str, dvc_repo: str = "", dvc_rev: str = "",
                  overrides: dict[str, Any] | None = None) -> Params:
    """:func:`params` with ``data.source.path`` pointing at the fetched source (when one is given).

    A fetched source is read with ``data.source.type: auto`` (detected from the path) unless the
    overrides name a type: the type in ``params_json`` describes its own path, not this one."""
    path = str(fetch_source(source_uri, dvc_repo, dvc_rev)) if source_uri.strip() else None
    merged = {**(overrides or {}), "data.source.path": path}
    if path is not None and merged.get("data.source.type") in UNSET:
        merged["data.source.type"] = "auto"
    return params(params_json, merged)


# --------------------------------------------------------------------------------------------
# recording results on artifacts


def _set_metadata(artifact: Any, values: dict[str, Any]) -> None:
    artifact.metadata.update({k: v for k, v in values.items() if v is not None})


def dataset_out(artifact: Any, ds: Any) -> Any:
    """Canonical dataset written at ``artifact.path``: copy its identity onto the artifact."""
    _set_metadata(artifact, {"num_images": int(ds.manifest.get("num_images", 0)), "classes": ds.classes,
                             "content_hash": ds.content_hash, "resolution": ds.resolution,
                             "channels": ds.channels, "synthetic": bool(ds.manifest.get("synthetic", False))})
    return ds


def validation_out(dataset: Any, report: Any, data_docs: Any, result: Any) -> Any:
    """The validated dataset's identity, and the Great Expectations data docs as one HTML page."""
    dataset_out(dataset, result.dataset)
    _set_metadata(report, {"passed": bool(result.passed), "dropped": dict(result.dropped)})
    Path(data_docs.path).parent.mkdir(parents=True, exist_ok=True)
    if result.data_docs and Path(result.data_docs).exists():
        shutil.copyfile(result.data_docs, data_docs.path)
    else:
        Path(data_docs.path).write_text("<html><body>no data docs were written</body></html>")
    return result


def model_out(artifact: Any, result: Any) -> Any:
    """Move the trained generator (``result.model_dir``) to the Model artifact; checkpoints stay behind."""
    target = Path(artifact.path)
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(result.model_dir), str(target))
    _set_metadata(artifact, {"steps": int(result.steps), "final_loss": float(result.final_loss),
                             "images_per_second": float(result.images_per_second),
                             "mlflow_run_id": result.mlflow_run_id})
    info_file = target / "synthgate_generator.json"
    if info_file.exists():
        info = json.loads(info_file.read_text())
        _set_metadata(artifact, {"type": (info.get("generator") or {}).get("type"),
                                 "dataset_content_hash": info.get("dataset_content_hash")})
    return result


def evaluation_json(artifact: Any) -> Path:
    return Path(artifact.path) / "evaluation.json"


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and v == v}  # v == v: not NaN


def _write_metrics_file(metrics: Any) -> None:
    """KFP keeps metrics in the artifact's metadata; a file at its path as well (for caches, downloads)."""
    path = Path(metrics.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(metrics.metadata), indent=1, sort_keys=True))


def evaluation_out(evaluation: Any, report: Any, metrics: Any, result: Any) -> Any:
    """Headline numbers -> Metrics; report.html -> the HTML artifact (rendered by the KFP UI)."""
    for k, v in sorted(_numbers(result.data.get("summary", {})).items()):
        metrics.log_metric(k, v)
    _write_metrics_file(metrics)
    Path(report.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.report_html, report.path)
    _set_metadata(evaluation, {"evaluation_hash": result.evaluation_hash})
    return result


def gate_out(gate: Any, metrics: Any, report: Any, decision: Any) -> bool:
    """The gate's verdict as metrics (1 = passed), on the gate.json artifact and as the HTML artifact
    the KFP UI renders: the report with the verdict at the top, or (an evaluation without a report)
    a page with the verdict and the failing rules; returns the verdict."""
    from synthgate.gates.decision import gated_report

    target = Path(report.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    gated = gated_report(gate_json(gate))
    if gated.exists():
        shutil.copyfile(gated, target)
    else:
        target.write_text(_verdict_page(decision))
    metrics.log_metric("gate_passed", 1.0 if decision.passed else 0.0)
    metrics.log_metric("gate_rules", float(len(decision.rules)))
    metrics.log_metric("gate_failures", float(len(decision.failures)))
    _write_metrics_file(metrics)
    _set_metadata(gate, {"passed": bool(decision.passed), "failures": [r.rule for r in decision.failures],
                         "evaluation_hash": decision.evaluation_hash, "policy_hash": decision.policy_hash})
    return bool(decision.passed)


def _verdict_page(decision: Any) -> str:
    import html

    rows = "".join(f"<li><b>{html.escape(r.rule)}</b>: {html.escape(r.reason)}</li>" for r in decision.failures)
    verdict = "PASSED" if decision.passed else "FAILED"
    return (f"<html><body><h1>Gate {verdict}</h1><p>evaluation {html.escape(str(decision.evaluation_hash))}, "
            f"policy {html.escape(str(decision.policy_hash))}</p>"
            f"{'<h2>Failing rules</h2><ul>' + rows + '</ul>' if rows else ''}"
            "<p>The evaluation had no report.html.</p></body></html>")


def registered_out(artifact: Any, registered: Any) -> str:
    """registered.json is at ``artifact.path`` (written by the stage); its identity on the artifact."""
    _set_metadata(artifact, {"name": registered.name, "version": registered.version, "run_id": registered.run_id,
                             "gate_passed": bool(registered.gate_passed)})
    return f"{registered.name}:{registered.version}"


def name_version(registered: Any) -> tuple[str, str]:
    """(model name, version) from a registered artifact's registered.json."""
    from synthgate.registry.registry import read_record

    return read_record(registered_json(registered), hint="connect the register step's output")


def model_name(name: str, registered: Any = None) -> str:
    """The model to publish: ``name`` if given, else the one in the registered.json artifact."""
    if name.strip():
        return name.strip()
    if registered is None:
        raise ConfigError("model_name is empty", hint="pass the registered model's name")
    return name_version(registered)[0]


def published_out(artifact: Any, result: Any) -> str:
    """The publication's record (:meth:`PublishResult.record`, as the CLI's ``published.json``) ->
    JSON at ``artifact.path``; its name, version, URI and size as the artifact's metadata."""
    data = json.loads(json.dumps(result.record(), default=str))
    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    _set_metadata(artifact, {k: data.get(k) for k in ("name", "version", "uri", "num_images")})
    return str(data.get("uri", ""))


# --------------------------------------------------------------------------------------------
# progress in pod logs


class LogReporter:
    """A :class:`~synthgate.progress.Reporter` for pod logs: one line per task and about every 10%."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout

    def _print(self, message: str) -> None:
        print(f"[synthgate] {message}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        start = time.perf_counter()
        done = [0, 0]  # items done, last decile printed
        self._print(f"{description} ..." + (f" ({total})" if total else ""))

        def advance(n: int = 1) -> None:
            done[0] += n
            if total and done[0] * 10 // total > done[1]:
                done[1] = done[0] * 10 // total
                self._print(f"{description}: {done[0]}/{total} ({time.perf_counter() - start:.1f} s)")

        yield advance
        self._print(f"{description}: done in {time.perf_counter() - start:.1f} s")

    def info(self, message: str) -> None:
        self._print(message)


def reporter() -> LogReporter:
    return LogReporter()
