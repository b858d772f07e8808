"""Preemption-safe training: SIGTERM (what Kubernetes sends a preempted or evicted pod before SIGKILL) and
SIGINT finish the current step, write a checkpoint and stop with a retryable exit status.

:class:`Preemption` installs the handlers for the duration of a run (main thread only; the previous
handlers come back afterwards) and only records the signal; the training loop asks :meth:`Preemption.due`
after every step, which under DDP agrees across ranks (a pod's ranks may see the signal a step apart),
so that every rank stops at the same step and rank 0 writes one checkpoint. The run then ends with
:class:`Preempted`: the MLflow run is closed as KILLED (a resumed run reopens the same run id from the
checkpoint) and the CLI exits with 128 + the signal number (143 for SIGTERM, 130 for SIGINT), which the
Kubeflow training operator's ``ExitCode`` restart policy and a Job's ``podFailurePolicy`` treat as
retryable. ``train.grace_seconds`` is the time the checkpoint must fit in: the pod's
``terminationGracePeriodSeconds`` (k8s/training) is set above it, and a checkpoint that took longer is
reported so that an operator can raise both.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Any

from synthgate.errors import SynthgateError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(SynthgateError):
    """Training stopped by a signal after writing a checkpoint; running the same command again resumes."""

    def __init__(self, signum: int, step: int, checkpoint: str | None, seconds: float, grace: float) -> None:
        name = signal.Signals(signum).name
        late = (f"; the checkpoint took {seconds:.1f} s, more than train.grace_seconds ({grace:g} s): raise it and "
                "the pod's terminationGracePeriodSeconds" if seconds > grace else "")
        where = f"checkpoint {checkpoint} written" if checkpoint else "no checkpoint could be written"
        super().__init__(f"training stopped by {name} after step {step}: {where} in {seconds:.1f} s{late}",
                         hint="run the same command again: training resumes from that checkpoint (resume is on by "
                              "default); on Kubernetes the restart policy does this")
        self.exit_code = 128 + int(signum)
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


class Preemption:
    """Records SIGTERM/SIGINT while a run is in progress (a context manager)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.at: float | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum, self.at = signum, time.monotonic()

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def due(self, ctx: Any) -> int | None:
        """The signal to stop for, agreed by every rank (any rank's signal stops all), or None."""
        mine = self.signum or 0
        if ctx is None or not ctx.enabled:
            return mine or None
        import torch
        import torch.distributed as dist

        t = torch.tensor([mine], dtype=torch.long, device=ctx.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        agreed = int(t.item())
        if agreed and self.signum is None:
            self.signum, self.at = agreed, time.monotonic()
        return agreed or None
