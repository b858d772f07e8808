"""What the training loop does between steps: FID early stopping, logging, checkpoints, sample grids.

Each hook says at which steps it is due; the loop calls the due ones in order (FID first, so that
an early stop also logs, checkpoints and draws a grid at that step). Under DDP every rank builds the
same hooks and calls them at the same steps, so the collective calls inside them (a mean over the
ranks, rank 0's broadcast decision) match; rank 0 alone writes files, and a hook that writes makes
every rank wait at a barrier after it (:attr:`Hook.writes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from synthgate.figures import make_grid, save_png
from synthgate.generators.config import GeneratorConfig, SampleConfig, TrainConfig
from synthgate.generators.early_stop import FidState

if TYPE_CHECKING:
    from synthgate.generators.checkpoints import Checkpointer
    from synthgate.generators.distributed import DistContext
    from synthgate.generators.early_stop import FidMonitor
    from synthgate.generators.feed import Clock
    from synthgate.generators.task import TrainTask
    from synthgate.generators.tracking import TrainTracker
    from synthgate.progress import Reporter

GRIDS = "grids"


@dataclass
class TrainState:
    """What the loop carries from step to step; a checkpoint keeps it."""

    start: int = 0  # the step this run started from (a resumed run: the checkpoint's)
    end: int = 0  # the step the loop runs to; an early stop lowers it
    run_id: str | None = None  # the MLflow run (a resumed run continues it)
    last_loss: float = math.nan  # the last logged mean loss
    last_good: Path | None = None  # the newest checkpoint written or resumed from
    fid: FidState = field(default_factory=FidState)
    best_weights: dict[str, torch.Tensor] | None = None  # the EMA weights of the best FID evaluation
    stop: bool = False  # set by a hook at a step where every rank stops


class Hook:
    """A part of the loop that runs every few steps (``due``) on every rank."""

    writes = False  # rank 0 writes files: every rank waits at a barrier after the hooks ran
    on_stop = False  # also runs at the step where training stops early

    def due(self, step: int) -> bool:
        raise NotImplementedError

    def __call__(self, step: int, state: TrainState) -> None:
        raise NotImplementedError


def _every(step: int, every: int, last: int) -> bool:
    return step % every == 0 or step == last


class FidHook(Hook):
    """FID early stopping (dumontschutte2021 S.3): rank 0 measures the EMA model's FID and keeps the
    best weights; every rank learns rank 0's decision to stop."""

    def __init__(self, monitor: FidMonitor | None, task: TrainTask, tcfg: TrainConfig, ctx: DistContext,
                 tracker: TrainTracker, reporter: Reporter) -> None:
        self.monitor, self.task, self.tcfg, self.ctx = monitor, task, tcfg, ctx
        self.tracker, self.reporter = tracker, reporter

    def due(self, step: int) -> bool:
        return _every(step, self.tcfg.fid_every, self.tcfg.steps)

    def __call__(self, step: int, state: TrainState) -> None:
        if self.monitor is not None:  # rank 0
            fs = state.fid
            module = self.task.ema_module()
            value = self.monitor(self.task, module)
            if fs.update(step, value, self.tcfg):
                state.best_weights = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            if step >= self.tcfg.steps:  # the budget ends here anyway: not an early stop
                fs.stopped_at = None
            del module
            self.tracker.fid(value, fs.best_fid, step)
            self.reporter.info(f"step {step}: FID {value:.3f} (best {fs.best_fid:.3f} at step {fs.best_step}"
                               f"{'' if not fs.since_best else f'; {fs.since_best} without improvement'})")
            if fs.stopped_at is not None:
                self.reporter.info(f"early stop at step {step}: no FID improvement in {fs.since_best} evaluations; "
                                   f"keeping the weights of step {fs.best_step} (FID {fs.best_fid:.3f})")
        state.stop = bool(self.ctx.broadcast(state.fid.stopped_at is not None))


class TimeBudgetHook(Hook):
    """``train.max_seconds``: after every step (under DDP every log step, where rank 0 decides for
    all), whether the training time since the loop started has reached the budget; every rank stops
    there (and logs, checkpoints, saves)."""

    def __init__(self, tcfg: TrainConfig, ctx: DistContext, reporter: Reporter) -> None:
        import time

        self.tcfg, self.ctx, self.reporter, self._clock = tcfg, ctx, reporter, time.perf_counter
        self.start = self._clock()

    def due(self, step: int) -> bool:
        if not self.ctx.enabled:  # one process: a clock read, no collective
            return self._clock() - self.start >= (self.tcfg.max_seconds or float("inf"))
        return _every(step, self.tcfg.log_every, self.tcfg.steps)

    def __call__(self, step: int, state: TrainState) -> None:
        elapsed = self._clock() - self.start
        out = bool(self.ctx.broadcast(self.tcfg.max_seconds is not None and elapsed >= self.tcfg.max_seconds))
        if out and step < self.tcfg.steps:
            self.reporter.info(f"time budget reached at step {step}: {elapsed:.1f} s >= train.max_seconds "
                               f"{self.tcfg.max_seconds:g}")
            state.stop = True


class LogHook(Hook):
    """Mean losses over the steps since the last log and over the ranks, and the throughput:
    to the progress reporter, Prometheus and MLflow."""

    on_stop = True

    def __init__(self, tcfg: TrainConfig, ctx: DistContext, clock: Clock, tracker: TrainTracker,
                 reporter: Reporter) -> None:
        self.tcfg, self.ctx, self.clock, self.tracker, self.reporter = tcfg, ctx, clock, tracker, reporter
        self.sums: dict[str, torch.Tensor] = {}
        self.window = 0

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        """Every step: accumulate on the device (no synchronisation until the next log)."""
        for k, v in losses.items():
            self.sums[k] = self.sums[k] + v.float() if k in self.sums else v.float()
        self.window += 1

    def due(self, step: int) -> bool:
        return _every(step, self.tcfg.log_every, self.tcfg.steps)

    def __call__(self, step: int, state: TrainState) -> None:
        keys = list(self.sums)
        mean = self.ctx.mean(torch.stack([self.sums[k] for k in keys]) / self.window)  # over the ranks
        means = {k: float(v) for k, v in zip(keys, mean.tolist(), strict=True)}
        self.sums, self.window = {}, 0
        state.last_loss, rate = means["loss"], self.clock.window_rate()
        self.reporter.info(f"step {step}/{self.tcfg.steps}  loss {state.last_loss:.4f}  {rate:.1f} images/s")
        self.tracker.losses(means, rate, step)


class CheckpointHook(Hook):
    """A checkpoint every ``train.checkpoint_every`` steps, at the end and at an early stop."""

    writes = True
    on_stop = True

    def __init__(self, checkpointer: Checkpointer, task: TrainTask, gcfg: GeneratorConfig, tcfg: TrainConfig
                 ) -> None:
        self.checkpointer, self.task, self.gcfg, self.tcfg = checkpointer, task, gcfg, tcfg

    def due(self, step: int) -> bool:
        return _every(step, self.tcfg.checkpoint_every, self.tcfg.steps)

    def __call__(self, step: int, state: TrainState) -> None:
        extra: dict[str, Any] = {"loss": state.last_loss, "mlflow_run_id": state.run_id,
                                 "generator": self.gcfg.model_dump(mode="json"),
                                 "train": self.tcfg.model_dump(mode="json")}
        if self.tcfg.fid_every > 0:
            extra |= {"fid": state.fid.to_dict(), "fid_best_weights": state.best_weights}
        state.last_good = self.checkpointer.save(step, self.task, extra)


class GridHook(Hook):
    """A per-class grid of EMA samples every ``train.sample_grid_every`` steps (0: never), logged to MLflow."""

    writes = True

    def __init__(self, out_dir: Path, task: TrainTask, gcfg: GeneratorConfig, tcfg: TrainConfig, n_classes: int,
                 ctx: DistContext, tracker: TrainTracker) -> None:
        self.out_dir, self.task, self.gcfg, self.tcfg, self.n_classes = out_dir, task, gcfg, tcfg, n_classes
        self.ctx, self.tracker = ctx, tracker
        self.on_stop = tcfg.sample_grid_every > 0

    def due(self, step: int) -> bool:
        return self.tcfg.sample_grid_every > 0 and _every(step, self.tcfg.sample_grid_every, self.tcfg.steps)

    def __call__(self, step: int, state: TrainState) -> None:
        path = self.out_dir / GRIDS / f"step_{step:08d}.png"
        if self.ctx.is_main:
            k = self.tcfg.sample_grid_per_class
            cfg = SampleConfig(sampler=self.task.preview_sampler,  # type: ignore[arg-type]
                               steps=min(self.tcfg.sample_grid_steps, self.gcfg.num_train_timesteps),
                               per_class=k, seed=self.tcfg.seed)
            images = self.task.sample(self.task.ema_module(), np.repeat(np.arange(self.n_classes), k), cfg)
            save_png(path, make_grid(images, nrow=k))
            self.tracker.artifact(path, GRIDS)
