"""The stage functions that the three shells (CLI, ``dvc.yaml``, Kubeflow components) call.

Each takes typed configuration and paths and returns a typed result; none parses arguments or
prints. Every stage reports its duration and outcome to Prometheus (``synthgate.monitoring``).
Arguments after the first (the configuration, or the thing acted on) are keyword-only, so every call
names what it passes and a reordered signature cannot silently swap two paths.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from synthgate.config import Params
from synthgate.errors import ConfigError
from synthgate.progress import Reporter
from synthgate.utils import environ

if TYPE_CHECKING:  # keep `import synthgate.stages` light: torch and pandas load with the stage
    from synthgate.data.canonical import CanonicalDataset
    from synthgate.data.validate import ValidationResult
    from synthgate.evaluation.evaluate import EvaluationResult
    from synthgate.gates.decision import GateDecision
    from synthgate.generators.train import TrainResult
    from synthgate.publish.package import PublishResult
    from synthgate.publish.pull import PullResult
    from synthgate.registry.registry import Registered

DEFAULT_RAW = Path("data/raw")
DEFAULT_PREPARED = Path("data/prepared")
DEFAULT_VALIDATED = Path("data/validated")
DEFAULT_VALIDATION_REPORT = Path("reports/validation")
DEFAULT_GENERATOR = Path("models/generator")
DEFAULT_SAMPLES = Path("data/samples")
DEFAULT_EVALUATION = Path("reports/evaluation")
DEFAULT_POLICY = Path("gates.yaml")
DEFAULT_GATE = Path("reports/gate/gate.json")
DEFAULT_REGISTERED = Path("reports/registry/registered.json")
DEFAULT_STORE = "data/published"  # a folder (or file:///...); s3://bucket/prefix for S3/MinIO

F = TypeVar("F", bound=Callable[..., Any])


def _tracked(fn: F) -> F:
    """Record the stage's duration and outcome in Prometheus (pushed when $PUSHGATEWAY_URL is set)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from synthgate.monitoring.push import track_stage

        with track_stage(fn.__name__):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@_tracked
def ingest(params: Params, *, out: Path = DEFAULT_RAW) -> dict[str, Any]:
    """Raw source -> ``out`` (a DVC-tracked copy with ``ingest.json``)."""
    from synthgate.data.ingest import ingest as _ingest

    return _ingest(params.data.source, Path(out))


@_tracked
def prepare(params: Params, *, out: Path = DEFAULT_PREPARED, reporter: Reporter | None = None) -> CanonicalDataset:
    """Raw source (``params.data.source``) -> canonical dataset at ``out``."""
    from synthgate.data.prepare import prepare as _prepare

    return _prepare(params.data.source, params.prepare, Path(out), reporter)


@_tracked
def validate(
    params: Params,
    *,
    dataset: Path = DEFAULT_PREPARED,
    out: Path = DEFAULT_VALIDATED,
    report_dir: Path = DEFAULT_VALIDATION_REPORT,
    reporter: Reporter | None = None,
) -> ValidationResult:
    """Canonical dataset -> validation report, and the validated dataset at ``out`` if it passes."""
    from synthgate.data.validate import validate as _validate

    return _validate(Path(dataset), params.validate_, Path(out), Path(report_dir), reporter)


@_tracked
def train(
    params: Params,
    *,
    dataset: Path = DEFAULT_VALIDATED,
    out: Path = DEFAULT_GENERATOR,
    reporter: Reporter | None = None,
    resume: bool = True,
    checkpoint_uri: str | None = None,
    tracking_uri: str | None = None,
) -> TrainResult:
    """Canonical dataset (train split) -> class-conditional generator in ``out/model``.

    ``tracking_uri``: the MLflow server this run logs to (default: ``$MLFLOW_TRACKING_URI``, else a
    SQLite store in ``out``).

    ``checkpoint_uri`` (``s3://bucket/prefix`` or a folder): checkpoints are mirrored there as they
    are written and the newest is restored first, so a restarted pod resumes
    (:mod:`synthgate.generators.checkpoint_sync`); without ``resume`` the mirror is cleared too.
    One process only: torchrun runs resume from ``out`` on a volume every node shares.
    """
    from synthgate.generators.distributed import world_size_from_env
    from synthgate.generators.train import train as _train

    mirror = None
    if checkpoint_uri:
        from synthgate.generators.checkpoint_sync import CheckpointMirror

        if world_size_from_env() > 1:
            raise ConfigError("--checkpoint-uri works in a single training process, not under torchrun",
                              hint="multi-node runs resume from --out on a volume every node mounts (k8s/training)")
        mirror = CheckpointMirror(checkpoint_uri, params.train.keep_checkpoints, reporter)
        if resume:
            mirror.restore(Path(out))
        else:
            mirror.clear()
    try:
        with environ({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}):
            return _train(Path(dataset), params.generator, params.train, Path(out), reporter, resume,
                          encoder=params.evaluate.encoder, fid_sampling=params.sample, on_checkpoint=mirror)
    finally:
        if mirror is not None:
            mirror.close()


@_tracked
def sample(
    params: Params,
    *,
    model: Path = DEFAULT_GENERATOR / "model",
    out: Path = DEFAULT_SAMPLES,
    real: Path | None = DEFAULT_VALIDATED,
    reporter: Reporter | None = None,
) -> CanonicalDataset:
    """Generator -> synthetic canonical dataset (``real`` is needed for ``sample.match_real``)."""
    from synthgate.generators.sample import sample as _sample

    return _sample(Path(model), params.sample, Path(out), Path(real) if real is not None else None, reporter)


@_tracked
def evaluate(
    params: Params,
    *,
    real: Path = DEFAULT_VALIDATED,
    synthetic: Path = DEFAULT_SAMPLES,
    out: Path = DEFAULT_EVALUATION,
    reporter: Reporter | None = None,
    retrain_encoder: bool = False,
) -> EvaluationResult:
    """Real + synthetic canonical datasets -> evaluation.json and report.html in ``out``."""
    from synthgate.evaluation.evaluate import evaluate as _evaluate

    return _evaluate(Path(real), Path(synthetic), params.evaluate, Path(out), reporter, retrain_encoder)


@_tracked
def gate(
    *,
    evaluation: Path = DEFAULT_EVALUATION / "evaluation.json",
    policy: Path | None = DEFAULT_POLICY,
    out: Path = DEFAULT_GATE,
) -> GateDecision:
    """evaluation.json + gates.yaml -> gate.json: pass/fail with value, threshold and reason per rule
    (and ``report.html`` beside it: the evaluation report with the verdict at the top)."""
    from synthgate.gates.decision import gate as _gate
    from synthgate.gates.policy import load_policy
    from synthgate.monitoring.push import record_gate

    decision = _gate(Path(evaluation), load_policy(policy), Path(out))
    record_gate(decision, _dataset_label(Path(evaluation)))
    return decision


def _dataset_label(evaluation: Path) -> str:
    """The metrics' ``dataset`` label: the real dataset's source name (e.g. mednist)."""
    from synthgate.registry.registry import default_model_name
    from synthgate.utils import read_json

    try:
        return default_model_name(read_json(evaluation)).removesuffix("-generator")
    except Exception:
        return "unknown"


@_tracked
def register(
    *,
    model: Path = DEFAULT_GENERATOR / "model",
    evaluation: Path = DEFAULT_EVALUATION / "evaluation.json",
    gate: Path = DEFAULT_GATE,
    record: Path | None = DEFAULT_REGISTERED,
    name: str | None = None,
    tracking_uri: str | None = None,
) -> Registered:
    """Generator + evaluation + gate record -> a new MLflow model version (never promotes);
    ``record`` gets ``registered.json`` (name, version, run) for publish."""
    from synthgate.registry.registry import register as _register
    from synthgate.registry.registry import write_record

    r = _register(Path(model), Path(evaluation), Path(gate), tracking_uri, name)
    if record is not None:
        write_record(r, Path(record))
    return r


@_tracked
def promote(name: str, version: str, *, alias: str = "approved", tracking_uri: str | None = None,
            force: bool = False, reason: str | None = None, gatekeeper: str | None = None) -> str:
    """Ask the gatekeeper to release a model version (it recomputes the verdict under the pinned policy,
    signs, and moves ``alias``); ``force`` with a reason asks for an owner's override."""
    from synthgate.registry.registry import promote as _promote

    return _promote(name, version, alias, tracking_uri, force, reason, gatekeeper)


def pin_policy(name: str, *, policy: Path | None, tracking_uri: str | None = None,
               gatekeeper: str | None = None) -> str:
    """Pin the policy the gatekeeper releases a registered model's versions under (owners)."""
    from synthgate.registry.registry import pin_policy as _pin

    return _pin(name, policy, tracking_uri, gatekeeper)


@_tracked
def publish(
    params: Params,
    *,
    model: str,
    store: str | None = None,
    alias: str | None = None,
    samples: Path | None = DEFAULT_SAMPLES,
    evaluation: Path | None = DEFAULT_EVALUATION,
    name: str | None = None,
    tracking_uri: str | None = None,
    reporter: Reporter | None = None,
    version: str | None = None,
    gatekeeper: str | None = None,
) -> PublishResult:
    """The version of registered ``model`` that holds ``alias`` -> a published synthetic dataset,
    signed by the gatekeeper.

    Publishes the evaluated sample set (content hash equal to the version's lineage tag), less the
    images flagged as copies; anything else is refused. Refused when no version holds ``alias``, the
    version holds no release attestation, or the gatekeeper does not sign the staged package.
    ``store`` and ``alias`` default to ``params.publish``."""
    from synthgate.publish.package import publish as _publish

    cfg = params.publish
    return _publish(model, store or cfg.store, alias=alias or cfg.alias,
                    samples=Path(samples) if samples else None,
                    evaluation=Path(evaluation) if evaluation else None, name=name, version=version,
                    tracking_uri=tracking_uri, config=cfg, reporter=reporter, gatekeeper=gatekeeper)


@_tracked
def pull(
    ref: str,
    *,
    to: Path,
    store: str = DEFAULT_STORE,
    tracking_uri: str | None = None,
    allow_revoked: bool = False,
    allow_rollback: bool = False,
    trust_root: Path | None = None,
    verify_images: bool = False,
    reporter: Reporter | None = None,
) -> PullResult:
    """``NAME[:VERSION]`` from ``store`` -> ``to``: the gatekeeper's signature (against the trust root),
    every file and the images verified; refused when revoked (unless ``allow_revoked``), older than
    the newest signed version seen (unless ``allow_rollback``) or signed for another model."""
    from synthgate.publish.pull import pull as _pull

    return _pull(ref, Path(to), store, tracking_uri=tracking_uri, allow_revoked=allow_revoked, reporter=reporter,
                 trust_root=trust_root, allow_rollback=allow_rollback, verify_images=verify_images)


def standin(real: Path, *, out_real: Path, out_synthetic: Path, seed: int = 0) -> tuple[Path, Path]:
    """Split the real test split in two: one half stands in for a generator's output."""
    from synthgate.evaluation.evaluate import make_standin

    return make_standin(Path(real), Path(out_real), Path(out_synthetic), seed)
