"""Kubeflow Pipelines from the CLI (``synthgate pipeline compile`` / ``synthgate pipeline submit``):
compile the pipelines of the repository, and submit a compiled one (``pipelines/compiled/*.yaml``)
to a Kubeflow Pipelines API server. The pipeline definitions and their components live in the
repository (``pipelines/``, ``components/``), not in this package: compiling runs
``python -m pipelines.compile`` there, in a process of its own.

``--param NAME=VALUE`` values are checked against the pipeline's declared parameters and converted
to their types (``@FILE`` reads the value from a file, e.g. ``gate_policy_yaml=@gates.yaml``). A host
that cannot be reached, or that refuses the request, is a :class:`PipelineError` naming the host.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from synthgate.errors import ConfigError, SynthgateError
from synthgate.kubeflow.cluster import SERVICE_ACCOUNT

DEFAULT_PACKAGE = Path("pipelines/compiled/synthesis.yaml")
DEFAULT_EXPERIMENT = "synthgate"
#: The ServiceAccount the k8s manifests create for pipeline pods (S3, MLflow access).
DEFAULT_SERVICE_ACCOUNT = SERVICE_ACCOUNT


class PipelineError(SynthgateError):
    """The pipeline cannot be compiled or submitted; the message says where and why."""


@dataclass
class Submitted:
    run_id: str
    url: str
    pipeline: str
    arguments: dict[str, Any]


def read_package(package: Path) -> dict[str, Any]:
    """The compiled pipeline spec (the first YAML document; the second holds the platform config)."""
    package = Path(package)
    if not package.exists():
        raise PipelineError(f"{package}: compiled pipeline not found",
                            hint="compile with `synthgate pipeline compile` (or `make pipelines`) in the repository")
    try:
        docs = [d for d in yaml.safe_load_all(package.read_text()) if d]
    except yaml.YAMLError as e:
        raise PipelineError(f"{package}: not valid YAML ({e})") from None
    spec = docs[0] if docs else None
    if not isinstance(spec, dict) or "pipelineInfo" not in spec or "root" not in spec:
        raise PipelineError(f"{package}: not a compiled KFP pipeline (no pipelineInfo/root)",
                            hint="pass a file from pipelines/compiled/")
    return spec


def declared_parameters(spec: dict[str, Any]) -> dict[str, str]:
    """Pipeline parameter name -> KFP parameter type (STRING, NUMBER_INTEGER, BOOLEAN, ...)."""
    params = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {name: str(p.get("parameterType", "STRING")) for name, p in params.items()}


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``; ``@FILE`` values are read from the file."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--param {item!r}: expected NAME=VALUE", hint="e.g. --param train_steps=20000")
        if value.startswith("@"):
            path = Path(value[1:])
            if not path.exists():
                raise ConfigError(f"--param {name}: file {path} not found")
            value = path.read_text()
        out[name] = value
    return out


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def coerce(raw: dict[str, str], declared: dict[str, str], pipeline: str = "the pipeline") -> dict[str, Any]:
    """Convert each value to its declared type; an unknown name or a bad value is a ConfigError."""
    args: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in declared:
            raise ConfigError(f"--param {name}: {pipeline} has no parameter {name!r}",
                              hint="its parameters: " + ", ".join(sorted(declared)))
        kind = declared[name]
        try:
            if kind == "NUMBER_INTEGER":
                args[name] = int(value)
            elif kind == "NUMBER_DOUBLE":
                args[name] = float(value)
            elif kind == "BOOLEAN":
                low = value.strip().lower()
                if low not in _TRUE | _FALSE:
                    raise ValueError(value)
                args[name] = low in _TRUE
            elif kind in ("LIST", "STRUCT"):
                args[name] = json.loads(value)
            else:
                args[name] = value
        except ValueError:
            raise ConfigError(f"--param {name}={value!r}: not a valid {kind.lower().replace('number_', '')}",
                              hint=f"{name} is declared {kind} in the compiled pipeline") from None
    return args


def _unreachable(host: str, e: BaseException) -> PipelineError:
    reason = getattr(e, "reason", None) or e
    detail = str(reason).split(": ", 1)[-1] if reason else type(e).__name__
    return PipelineError(f"Kubeflow Pipelines API at {host} is not reachable ({type(e).__name__}: {detail})",
                         hint="check --host (e.g. http://localhost:8080 after `kubectl port-forward -n kubeflow "
                              "svc/ml-pipeline-ui 8080:80`) and that the cluster is up")


def _api_error(host: str, e: Any) -> PipelineError:
    status = getattr(e, "status", None)
    reason = getattr(e, "reason", None) or ""
    body = str(getattr(e, "body", "") or "")[:500]
    hint = {401: "authenticate (a token or cookies for the Kubeflow endpoint)",
            403: "the account has no access to this namespace or experiment",
            404: "--host must be the KFP API (or UI) root, e.g. http://localhost:8080"}.get(status or 0)
    return PipelineError(f"Kubeflow Pipelines API at {host} refused the request: HTTP {status} {reason}"
                         + (f" ({body})" if body else ""), hint=hint)


class _DropWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def submit(host: str, package: Path = DEFAULT_PACKAGE, params: list[str] | None = None,
           experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None, namespace: str | None = None,
           service_account: str | None = DEFAULT_SERVICE_ACCOUNT,
           client_factory: Callable[..., Any] | None = None) -> Submitted:
    """Create a run of the compiled ``package`` on the KFP API server at ``host``."""
    spec = read_package(package)
    pipeline = str(spec["pipelineInfo"].get("name", package))
    arguments = coerce(parse_assignments(params or []), declared_parameters(spec), pipeline)
    if not host.strip():
        raise ConfigError("--host is empty", hint="pass the KFP endpoint, e.g. --host http://localhost:8080")
    if client_factory is None:
        import kfp

        client_factory = kfp.Client
    import urllib3

    try:
        from kfp_server_api.exceptions import ApiException
    except ImportError:  # pragma: no cover - kfp always brings kfp-server-api
        ApiException = ()  # type: ignore[assignment,misc]  # noqa: N806
    # urllib3's retry warnings would precede our one clear error (a filter: kfp resets the level)
    quiet = logging.getLogger("urllib3.connectionpool")
    drop = _DropWarnings()
    quiet.addFilter(drop)
    try:
        with warnings.catch_warnings():  # kfp's FutureWarning about server versions: not actionable here
            warnings.simplefilter("ignore")
            client = client_factory(host=host) if namespace is None else client_factory(host=host, namespace=namespace)
            result = client.create_run_from_pipeline_package(
                str(package), arguments=arguments, run_name=run_name, experiment_name=experiment,
                namespace=namespace, service_account=service_account or None)
    except (urllib3.exceptions.HTTPError, ConnectionError, OSError) as e:
        raise _unreachable(host, e) from None
    except ApiException as e:  # type: ignore[misc]
        raise _api_error(host, e) from None
    finally:
        quiet.removeFilter(drop)
    run_id = str(getattr(result, "run_id", "") or "")
    return Submitted(run_id=run_id, url=f"{host.rstrip('/')}/#/runs/details/{run_id}", pipeline=pipeline,
                     arguments=arguments)


def repo_root(start: Path | None = None) -> Path:
    """The repository folder holding ``pipelines/`` and ``components/`` (the working directory or a parent)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pipelines" / "compile.py").exists() and (d / "components").is_dir():
            return d
    raise PipelineError(f"no pipelines/compile.py in {here} or its parents",
                        hint="run `synthgate pipeline compile` inside the synthgate repository")


def compile_pipelines(check: bool = False, cache_training: bool = False, root: Path | None = None) -> list[str]:
    """Run ``python -m pipelines.compile`` in the repository at ``root`` (a subprocess, so the
    repository's ``pipelines`` and ``components`` packages are imported from there); returns the files
    written. With ``check``, write nothing and raise naming the stale files."""
    root = repo_root(root)
    out = root / "pipelines" / "compiled"
    cmd = [sys.executable, "-m", "pipelines.compile", "--out", str(out)]
    if check:
        cmd.append("--check")
    if cache_training:
        cmd.append("--cache-training")
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    stale = [line for line in proc.stderr.splitlines() if line.startswith("stale compiled pipelines: ")]
    if check and proc.returncode == 1 and stale:
        raise PipelineError(stale[0],
                            hint="recompile with `synthgate pipeline compile` (or `make pipelines`) and commit")
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise PipelineError(f"python -m pipelines.compile in {root} failed (exit {proc.returncode})"
                            + (f": {detail}" if detail else ""),
                            hint="run `python -m pipelines.compile` there for the whole output")
    if check:
        return []
    return [line.removeprefix("wrote ") for line in proc.stdout.splitlines() if line.startswith("wrote ")]
