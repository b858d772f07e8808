"""Getting metrics out: Pushgateway for batch stages, ``/metrics`` for long-running processes.

``track_stage("train")`` wraps a stage: it records the duration, the outcome (success/failure) and
the time of the last success, and, when ``PUSHGATEWAY_URL`` is set, pushes the stage's metrics to
the Pushgateway under ``job="synthgate"`` and grouping key ``stage`` (a failed push is a warning,
never a failed stage). Only series that belong to that stage are pushed (label ``stage`` equal to
it, or series of the stage's own families: training for ``train``, the gate for ``gate``,
transfers for ``publish``/``pull``), so one process running several stages (the demo) pushes each
under its own group without one overwriting another's labels.

``serve_metrics(port)`` exposes the registry on ``http://ADDR:PORT/metrics`` for the life of the
process (``SYNTHGATE_METRICS_PORT`` makes the CLI do it, e.g. during a long training run).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from synthgate.monitoring.metrics import (
    REGISTRY,
    STAGE_DURATION,
    STAGE_FAILED,
    STAGE_LAST_SUCCESS,
    STAGE_RUNS,
)

log = logging.getLogger(__name__)
JOB = "synthgate"
_OWN_FAMILIES = {
    "train": ("synthgate_train_",),
    "gate": ("synthgate_gate_",),
    "publish": ("synthgate_transfer_", "synthgate_published_"),
    "pull": ("synthgate_transfer_",),
}


class _StageView:
    """A read-only view of ``REGISTRY`` with the samples that belong to one stage."""

    def __init__(self, stage: str):
        self.stage = stage

    def collect(self) -> Iterator[Any]:
        own = _OWN_FAMILIES.get(self.stage, ())
        for family in REGISTRY.collect():
            if family.name.startswith("synthgate_stage_"):
                keep = [s for s in family.samples if s.labels.get("stage") == self.stage]
            elif family.name.startswith(own):
                keep = [s for s in family.samples if s.labels.get("operation", self.stage) == self.stage]
            else:
                continue
            if keep:
                family.samples = keep
                yield family


def push(stage: str, url: str | None = None) -> bool:
    """Push the stage's metrics to the Pushgateway at ``url`` (default ``$PUSHGATEWAY_URL``)."""
    from prometheus_client import push_to_gateway

    url = url or os.environ.get("PUSHGATEWAY_URL")
    if not url or os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return False
    try:
        push_to_gateway(url, job=JOB, grouping_key={"stage": stage}, registry=_StageView(stage), timeout=5)  # type: ignore[arg-type]
        return True
    except Exception as e:  # monitoring must never fail the work it watches
        log.warning("could not push metrics of stage %s to %s: %s", stage, url, e)
        return False


@contextlib.contextmanager
def track_stage(stage: str) -> Iterator[None]:
    t0 = time.perf_counter()
    outcome = "failure"
    try:
        yield
        outcome = "success"
    finally:
        STAGE_DURATION.labels(stage).set(time.perf_counter() - t0)
        STAGE_RUNS.labels(stage, outcome).inc()
        STAGE_FAILED.labels(stage).set(0 if outcome == "success" else 1)
        if outcome == "success":
            STAGE_LAST_SUCCESS.labels(stage).set_to_current_time()
        push(stage)


def record_gate(decision: Any, dataset: str) -> None:
    from synthgate.monitoring.metrics import GATE_DECISIONS, GATE_PASSED, GATE_RULE_PASSED

    GATE_PASSED.labels(dataset).set(1 if decision.passed else 0)
    for r in decision.rules:
        GATE_RULE_PASSED.labels(dataset, r.rule).set(1 if r.passed else 0)
        GATE_DECISIONS.labels(r.rule, "pass" if r.passed else "fail").inc()


_served: dict[int, Any] = {}


def serve_metrics(port: int, addr: str = "127.0.0.1") -> int:
    """Serve ``REGISTRY`` on ``/metrics``; returns the bound port (0 picks a free one)."""
    from prometheus_client import start_http_server

    if port in _served and port:
        return port
    server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    bound = int(server.server_address[1])
    _served[bound] = server
    return bound
