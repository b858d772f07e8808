"""The stage functions that the three shells (CLI, ``dvc.yaml``, Kubeflow components) call.

Each takes typed configuration and paths and returns a typed result; none parses arguments or
prints. Later stages (train, sample, evaluate, gate, register, publish) are added here as their
issues land.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthgate.config import Params
from synthgate.progress import Reporter

if TYPE_CHECKING:  # keep `import synthgate.stages` light: torch and pandas load with the stage
    from synthgate.data.canonical import CanonicalDataset
    from synthgate.data.validate import ValidationResult
    from synthgate.evaluation.evaluate import EvaluationResult
    from synthgate.gates.decision import GateDecision
    from synthgate.generators.train import TrainResult

DEFAULT_RAW = Path("data/raw")
DEFAULT_PREPARED = Path("data/prepared")
DEFAULT_VALIDATED = Path("data/validated")
DEFAULT_VALIDATION_REPORT = Path("reports/validation")
DEFAULT_GENERATOR = Path("models/generator")
DEFAULT_SAMPLES = Path("data/samples")
DEFAULT_EVALUATION = Path("reports/evaluation")
DEFAULT_POLICY = Path("gates.yaml")
DEFAULT_GATE = Path("reports/gate/gate.json")


def ingest(params: Params, out: Path = DEFAULT_RAW) -> dict[str, Any]:
    """Raw source -> ``out`` (a DVC-tracked copy with ``ingest.json``)."""
    from synthgate.data.ingest import ingest as _ingest

    return _ingest(params.data.source, Path(out))


def prepare(params: Params, out: Path = DEFAULT_PREPARED, reporter: Reporter | None = None) -> CanonicalDataset:
    """Raw source (``params.data.source``) -> canonical dataset at ``out``."""
    from synthgate.data.prepare import prepare as _prepare

    return _prepare(params.data.source, params.prepare, Path(out), reporter)


def validate(
    params: Params,
    dataset: Path = DEFAULT_PREPARED,
    out: Path = DEFAULT_VALIDATED,
    report_dir: Path = DEFAULT_VALIDATION_REPORT,
    reporter: Reporter | None = None,
) -> ValidationResult:
    """Canonical dataset -> validation report, and the validated dataset at ``out`` if it passes."""
    from synthgate.data.validate import validate as _validate

    return _validate(Path(dataset), params.validate_, Path(out), Path(report_dir), reporter)


def train(
    params: Params,
    dataset: Path = DEFAULT_VALIDATED,
    out: Path = DEFAULT_GENERATOR,
    reporter: Reporter | None = None,
    resume: bool = True,
) -> TrainResult:
    """Canonical dataset (train split) -> class-conditional generator in ``out/model``."""
    from synthgate.generators.train import train as _train

    return _train(Path(dataset), params.generator, params.train, Path(out), reporter, resume)


def sample(
    params: Params,
    model: Path = DEFAULT_GENERATOR / "model",
    out: Path = DEFAULT_SAMPLES,
    real: Path | None = DEFAULT_VALIDATED,
    reporter: Reporter | None = None,
) -> CanonicalDataset:
    """Generator -> synthetic canonical dataset (``real`` is needed for ``sample.match_real``)."""
    from synthgate.generators.sample import sample as _sample

    return _sample(Path(model), params.sample, Path(out), Path(real) if real is not None else None, reporter)


def evaluate(
    params: Params,
    real: Path = DEFAULT_VALIDATED,
    synthetic: Path = DEFAULT_SAMPLES,
    out: Path = DEFAULT_EVALUATION,
    reporter: Reporter | None = None,
    retrain_encoder: bool = False,
) -> EvaluationResult:
    """Real + synthetic canonical datasets -> evaluation.json and report.html in ``out``."""
    from synthgate.evaluation.evaluate import evaluate as _evaluate

    return _evaluate(Path(real), Path(synthetic), params.evaluate, Path(out), reporter, retrain_encoder)


def gate(
    evaluation: Path = DEFAULT_EVALUATION / "evaluation.json",
    policy: Path | None = DEFAULT_POLICY,
    out: Path = DEFAULT_GATE,
) -> GateDecision:
    """evaluation.json + gates.yaml -> gate.json: pass/fail with value, threshold and reason per rule."""
    from synthgate.gates.decision import gate as _gate
    from synthgate.gates.policy import load_policy

    return _gate(Path(evaluation), load_policy(policy), Path(out))


def standin(real: Path, out_real: Path, out_synthetic: Path, seed: int = 0) -> tuple[Path, Path]:
    """Split the real test split in two: one half stands in for a generator's output."""
    from synthgate.evaluation.evaluate import make_standin

    return make_standin(Path(real), Path(out_real), Path(out_synthetic), seed)
