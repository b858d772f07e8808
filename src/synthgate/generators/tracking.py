"""Where a training run reports: MLflow (rank 0's run) and Prometheus (every process's gauges).

:class:`TrainTracker` is the one object the training loop's hooks report to; it writes the MLflow
run through an explicit client (the fluent API's active run is left alone) and sets the
``synthgate_train_*`` metrics of :mod:`synthgate.monitoring.metrics`.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from synthgate.errors import SynthgateError


def tracking_uri() -> str | None:
    """The tracking URI set by ``MLFLOW_TRACKING_URI`` or ``mlflow.set_tracking_uri``, else None."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    try:
        import mlflow
        from mlflow.tracking._tracking_service.utils import is_tracking_uri_set
    except ImportError:  # pragma: no cover - private helper moved
        return None
    return mlflow.get_tracking_uri() if is_tracking_uri_set() else None


def flat(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in d.items()}


class MlflowRun:
    """MLflow through an explicit client. The current tracking URI is used; where none is set,
    ``out_dir/mlflow.db`` (SQLite) with artifacts under ``out_dir/mlruns``. A run interrupted and
    resumed from a checkpoint continues the same MLflow run (``run_id``)."""

    def __init__(self, out_dir: Path, run_id: str | None, params: dict[str, Any], run_name: str) -> None:
        env_uri = tracking_uri()
        uri = env_uri or f"sqlite:///{(out_dir / 'mlflow.db').resolve()}"
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=uri)
            run = None
            if run_id:
                try:
                    run = self.client.get_run(run_id)
                except Exception:
                    run = None
            if run is None:
                name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "synthgate-train")
                exp = self.client.get_experiment_by_name(name)
                artifacts = None if env_uri else (out_dir / "mlruns").resolve().as_uri()
                exp_id = exp.experiment_id if exp else self.client.create_experiment(name, artifact_location=artifacts)
                run = self.client.create_run(exp_id, run_name=run_name)
                self.run_id = run.info.run_id
                self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
            else:
                self.run_id = run.info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
        except Exception as e:
            raise SynthgateError(f"MLflow tracking at {uri} is not usable ({e})",
                                 hint="check MLFLOW_TRACKING_URI, or set train.mlflow: false") from None

    def metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        ms = [Metric(k, float(v), ts, step) for k, v in values.items() if math.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=ms)

    def artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


class TrainTracker:
    """What the loop reports, to Prometheus (every process) and MLflow (rank 0, when ``mlflow`` is set)."""

    def __init__(self, kind: str, mlflow: MlflowRun | None) -> None:
        from synthgate.monitoring import metrics as m

        self.kind, self.mlflow, self._m = kind, mlflow, m

    @property
    def run_id(self) -> str | None:
        return self.mlflow.run_id if self.mlflow else None

    def step(self) -> None:
        self._m.TRAIN_STEPS.labels(self.kind).inc()

    def losses(self, means: dict[str, float], images_per_second: float, step: int) -> None:
        self._m.TRAIN_LOSS.labels(self.kind).set(means["loss"])
        if math.isfinite(images_per_second):
            self._m.TRAIN_IMAGES_PER_SECOND.labels(self.kind).set(images_per_second)
        if "augment_p" in means:  # a family that augments the discriminator's inputs (stylegan2's ADA)
            self._m.TRAIN_AUGMENT_P.labels(self.kind).set(means["augment_p"])
        if self.mlflow:
            self.mlflow.metrics({**means, "images_per_second": images_per_second}, step)

    def fid(self, value: float, best: float, step: int) -> None:
        self._m.TRAIN_FID.labels(self.kind).set(value)
        self._m.TRAIN_FID_BEST.labels(self.kind).set(best)
        if self.mlflow:
            self.mlflow.metrics({"fid": value, "fid_best": best}, step)

    def artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.mlflow:
            self.mlflow.artifact(path, artifact_path)

    def finish(self, status: str) -> None:
        if self.mlflow:
            self.mlflow.finish(status)
