"""One training loop for both generator families.

The loop reads the canonical dataset's train split, feeds seeded batches to a
:class:`~synthgate.generators.task.TrainTask` (diffusion or cpD-GAN), and owns what both share:
reproducibility, checkpoints and resume, divergence handling, progress, MLflow, Prometheus, and
the final model (EMA weights, :func:`synthgate.generators.model.save_generator`).

Reproducibility: every random draw of step ``s`` comes from a generator seeded with
``(seed, s)`` and batches come from per-epoch permutations seeded with ``(seed, epoch)``, so a run
resumed from a checkpoint continues exactly as the uninterrupted run would (bit-identical on CPU).

The loop runs ``train.steps`` steps. With ``train.fid_every > 0`` it also stops early when the
FID of the EMA model (reference-encoder features, :mod:`synthgate.generators.early_stop`) has not
improved for ``train.fid_patience`` evaluations (dumontschutte2021 S.3), and saves the best
evaluation's weights instead of the last.

Several GPUs or nodes (DDP): started by ``torchrun`` with a world size above 1 (no option needed;
:mod:`synthgate.generators.distributed`), every rank runs this loop on its own GPU, and

- ``train.batch_size`` is per rank: a step averages the gradients of ``world_size`` batches, so
  the global batch is ``batch_size x world_size`` (logged at the start) and the learning rate is
  not rescaled. Rank ``r`` takes batch ``k * world_size + r`` of the same seeded stream of
  per-epoch permutations, so the ranks see different images and a resumed run continues the
  same order (with the same world size);
- model initialisation is seeded identically on every rank (and DDP broadcasts rank 0's weights),
  the step noise is seeded with ``(seed, step, rank)``: different on every rank;
- the gradients are all-reduced, so weights, optimiser states and the EMA (updated on every rank)
  stay identical everywhere; the logged losses (progress, MLflow, Prometheus) are the means over
  the ranks, images/s counts the images of all ranks;
- rank 0 alone writes checkpoints, sample grids, the final model and the MLflow run; the other
  ranks wait at a barrier after each write. On resume every rank reads the same newest checkpoint,
  so ``out_dir`` must be on storage all nodes share (one node: any folder);
- a diverging loss (NaN on any rank) stops every rank at the same step, and the process group
  is left at the end, also after an error.

A single process (no ``WORLD_SIZE``, or 1) trains exactly as it did before DDP support.

The parts: :mod:`~synthgate.generators.feed` (batches, throughput), :mod:`~synthgate.generators.checkpoints`
(list, read, write, prune, fingerprint, resume, mirror), :mod:`~synthgate.generators.tracking`
(MLflow, Prometheus), :mod:`~synthgate.generators.hooks` (the training state, and FID early
stopping, logging, checkpoints and grids between steps), :mod:`~synthgate.generators.distributed`
(the DDP runtime). This module is the loop that joins them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthgate.data.canonical import CanonicalDataset, load_dataset
from synthgate.errors import ConfigError, DataError, SynthgateError
from synthgate.generators.checkpoints import (  # noqa: F401  (re-exported: the checkpoint API of a run folder)
    CHECKPOINT_FORMAT,
    CHECKPOINTS,
    FINGERPRINT_FIELDS,
    Checkpointer,
    fingerprint,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
)
from synthgate.generators.common import make_generator
from synthgate.generators.config import GeneratorConfig, SampleConfig, TrainConfig
from synthgate.generators.distributed import DistContext, setup, wrap_task
from synthgate.generators.early_stop import FidMonitor, FidState
from synthgate.generators.family import get_family
from synthgate.generators.feed import Clock, Feed
from synthgate.generators.hooks import (  # noqa: F401  (GRIDS re-exported)
    GRIDS,
    CheckpointHook,
    FidHook,
    GridHook,
    Hook,
    LogHook,
    TimeBudgetHook,
    TrainState,
)
from synthgate.generators.preemption import Preempted, Preemption
from synthgate.generators.task import TrainTask
from synthgate.generators.tracking import MlflowRun, TrainTracker, flat
from synthgate.progress import NullReporter, Reporter

MODEL = "model"


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    final_loss: float
    images_per_second: float
    checkpoint: Path | None
    mlflow_run_id: str | None
    resumed_from: int = 0
    #: FID early stopping (``train.fid_every > 0``): history, best step/FID, where it stopped, encoder
    fid: dict[str, Any] | None = None

    @property
    def stopped_early(self) -> bool:
        return bool(self.fid and self.fid.get("stopped_at") is not None)


def check_resolution(gcfg: GeneratorConfig, resolution: int) -> None:
    """ConfigError naming ``resolution`` and the sizes that work, for the configured model."""
    get_family(gcfg.type).check_resolution(gcfg, resolution)


def build_task(gcfg: GeneratorConfig, tcfg: TrainConfig, resolution: int, channels: int, n_classes: int,
               device: torch.device) -> TrainTask:
    return get_family(gcfg.type).make_task(gcfg, tcfg, resolution, channels, n_classes, device)


def train(
    dataset_dir: Path,
    gcfg: GeneratorConfig,
    tcfg: TrainConfig,
    out_dir: Path,
    reporter: Reporter | None = None,
    resume: bool = True,
    encoder: Any = None,
    fid_sampling: SampleConfig | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> TrainResult:
    """Train a class-conditional generator on the train split of ``dataset_dir``.

    Writes ``out_dir/checkpoints/step_*.pt`` (the newest ``keep_checkpoints``), ``out_dir/grids/``
    (per-class sample grids), and the final EMA model to ``out_dir/model``. With ``resume`` it
    continues from the newest checkpoint, refusing one of another configuration (``ConfigError``
    listing the fields); without, it deletes old checkpoints and starts over. A non-finite loss
    stops training with a :class:`SynthgateError` naming the step and the last good checkpoint.

    Under ``torchrun`` (``WORLD_SIZE > 1``) it trains data-parallel with DDP: ``train.batch_size``
    images per rank and step (global batch ``batch_size x world_size``), rank 0 writing every file
    (see the module docstring). Every rank returns the same :class:`TrainResult`.

    FID early stopping (``tcfg.fid_every > 0``): ``encoder`` is the reference encoder's
    :class:`~synthgate.evaluation.config.EncoderConfig` (default settings when None; the same cache
    as the evaluation stage), ``fid_sampling`` how the evaluation samples are drawn (diffusion:
    sampler, steps, guidance; default :class:`SampleConfig`'s). The model saved is the best
    evaluation's, and ``TrainResult.fid`` tells which step that was and why training stopped.

    ``on_checkpoint(path)`` is called on rank 0 after each checkpoint is written (and older ones
    pruned), e.g. a :class:`~synthgate.generators.checkpoint_sync.CheckpointMirror`.
    """
    get_family(gcfg.type)  # an unknown type: ConfigError before anything starts
    ctx = setup(tcfg.device, "train.device")
    try:
        return _train(Path(dataset_dir), gcfg, tcfg, Path(out_dir), reporter, resume, ctx, encoder, fid_sampling,
                      on_checkpoint)
    finally:
        ctx.close()


def _train(dataset_dir: Path, gcfg: GeneratorConfig, tcfg: TrainConfig, out_dir: Path, reporter: Reporter | None,
           resume: bool, ctx: DistContext, encoder_cfg: Any = None, fid_sampling: SampleConfig | None = None,
           on_checkpoint: Callable[[Path], None] | None = None) -> TrainResult:
    # progress and messages from rank 0 only; the others would repeat them
    reporter = (reporter or NullReporter()) if ctx.is_main else NullReporter()
    ds, images, labels = _train_split(dataset_dir, gcfg)
    torch.manual_seed(tcfg.seed)  # the same on every rank: identical initial weights
    task = build_task(gcfg, tcfg, ds.resolution, ds.channels, len(ds.classes), ctx.device)
    if ctx.is_main:  # e.g. the latent family's autoencoder: rank 0 trains and caches it, the others load it
        task.prepare(ds, reporter)
    ctx.barrier()
    if not ctx.is_main:
        task.prepare(ds, reporter)
    _agree_on_prepared(task, ctx)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(out_dir, tcfg.keep_checkpoints,
                        fingerprint(gcfg, ds.resolution, ds.channels, ds.classes, ds.content_hash), ctx, on_checkpoint)
    if resume:
        ctx.barrier()
    else:
        ckpt.reset()
    state = _resume(ckpt, task, tcfg, ctx, reporter)
    wrap_task(task, ctx)
    if ctx.enabled:
        reporter.info(f"distributed data parallel: world size {ctx.world_size} ({ctx.backend}, {ctx.device.type}), "
                      f"{tcfg.batch_size} images per rank and step, global batch {tcfg.batch_size * ctx.world_size}")
    use_fid = tcfg.fid_every > 0
    if use_fid:
        fid_sampling = _fid_sampling(gcfg, fid_sampling)
    monitor = _fid_monitor(ds, images, labels, tcfg, ctx, encoder_cfg, fid_sampling, reporter) if (
        use_fid and ctx.is_main) else None  # rank 0 evaluates; the others wait for its decision
    ctx.barrier()
    state.end = state.start if state.fid.stopped_at is not None else tcfg.steps  # an early stop is final on resume
    mlflow = MlflowRun(out_dir, state.run_id, _run_params(dataset_dir, ds, gcfg, tcfg, ctx, task, len(images), monitor),
                       f"{gcfg.type}-{gcfg.size}") if (tcfg.mlflow and ctx.is_main) else None
    tracker = TrainTracker(gcfg.type, mlflow)
    state.run_id = ctx.broadcast(tracker.run_id) if tcfg.mlflow else None
    clock = Clock(ctx.device)
    log = LogHook(tcfg, ctx, clock, tracker, reporter)
    hooks: list[Hook] = ([FidHook(monitor, task, tcfg, ctx, tracker, reporter)] if use_fid else []) + (
        [TimeBudgetHook(tcfg, ctx, reporter)] if tcfg.max_seconds is not None else []) + [
        log, CheckpointHook(ckpt, task, gcfg, tcfg),
        GridHook(out_dir, task, gcfg, tcfg, len(ds.classes), ctx, tracker)]
    status = "FAILED"
    try:
        with Preemption() as preempt:  # SIGTERM/SIGINT: finish the step, checkpoint, stop (generators/preemption.py)
            _loop(task, Feed(images, labels, tcfg, ctx.device, task.memory_format, ctx.rank, ctx.world_size), hooks,
                  log, state, tcfg, ctx, clock, tracker, reporter, f"Training {gcfg.type} ({gcfg.size}, {ctx.device.type})",
                  preempt)
        state.end = max(state.start, state.end)
        fid_info = _fid_info(state, tcfg, monitor) if use_fid else None
        model_dir = _save_model(out_dir / MODEL, task, ds, state, fid_info, ctx, tracker, reporter)
        ctx.barrier()  # the model folder is complete before any rank returns it
        status = "FINISHED"
    except Preempted:
        status = "KILLED"  # resuming reopens the same run (its id is in the checkpoint)
        raise
    finally:
        tracker.finish(status)
    rate = clock.rate()
    return TrainResult(model_dir, state.end, state.last_loss, rate if math.isfinite(rate) else 0.0,
                       state.last_good, state.run_id, state.start,
                       ctx.broadcast(fid_info) if ctx.enabled else fid_info)


def _train_split(dataset_dir: Path, gcfg: GeneratorConfig) -> tuple[CanonicalDataset, np.ndarray, np.ndarray]:
    """The dataset and its train split's images and labels; errors naming what a class-conditional
    generator needs (two classes with training images, a resolution the network takes)."""
    ds = load_dataset(dataset_dir)
    classes = ds.classes
    idx = ds.split_indices("train")
    if len(classes) < 2:
        raise ConfigError(
            f"{dataset_dir}: the dataset has {len(classes)} class ({', '.join(classes) or 'none'}); "
            "class-conditional generators need at least 2 classes",
            hint="prepare a dataset with two or more classes",
        )
    if len(idx) == 0:
        raise DataError(f"{dataset_dir}: the train split is empty", hint="re-run `synthgate prepare` with a train split")
    labels = ds.labels()[idx]
    present = [classes[k] for k in np.unique(labels)]
    if len(present) < 2:
        raise ConfigError(
            f"{dataset_dir}: the train split holds images of one class only ({present[0]}); "
            "class-conditional generators need at least 2 classes",
            hint="re-split the dataset so that every class has training images",
        )
    check_resolution(gcfg, ds.resolution)
    return ds, np.ascontiguousarray(ds.images[idx]), labels


def _fid_sampling(gcfg: GeneratorConfig, cfg: SampleConfig | None) -> SampleConfig:
    """How FID early stopping samples: ``cfg`` (ConfigError before the first step when its sampler is not one of
    the model's objective), or the objective's default sampler."""
    from synthgate.generators.config import OBJECTIVE_FAMILIES
    from synthgate.generators.flow import check_sampler, default_sampler

    if cfg is None:
        return SampleConfig(per_class=1, sampler=default_sampler(gcfg.objective))  # type: ignore[arg-type]
    if gcfg.type in OBJECTIVE_FAMILIES:
        check_sampler(gcfg.objective, cfg.sampler)
    return cfg


def _agree_on_prepared(task: TrainTask, ctx: DistContext) -> None:
    """Every rank must train on what rank 0 prepared (the latent family: the same autoencoder, read
    from a cache every node sees)."""
    if not ctx.enabled:
        return
    mine = task.prepared_identity()
    chosen = ctx.broadcast(mine)
    if not ctx.all_true(mine == chosen):
        raise ConfigError(
            f"rank {ctx.rank} prepared {str(mine)[:16]}, rank 0 {str(chosen)[:16]} (the latent family's autoencoder): "
            "the ranks would train on different latents",
            hint="put generator.autoencoder.cache_dir on storage every node shares (a ReadWriteMany volume)")


def _resume(ckpt: Checkpointer, task: TrainTask, tcfg: TrainConfig, ctx: DistContext, reporter: Reporter
            ) -> TrainState:
    """The state to continue from: the newest checkpoint's (every rank the same one), else a fresh one."""
    state = TrainState()
    path = ckpt.agreed_latest()
    if path is None:
        return state
    saved = ckpt.restore(path, task)
    state.start, state.run_id, state.last_loss = int(saved["step"]), saved.get("mlflow_run_id"), float(saved["loss"])
    state.last_good = path
    if tcfg.fid_every > 0 and saved.get("fid"):
        state.fid, state.best_weights = FidState.from_dict(saved["fid"]), saved.get("fid_best_weights")
    reporter.info(f"resuming from {path} (step {state.start})")
    saved_world = int(saved.get("world_size", 1))
    if saved_world != ctx.world_size:
        reporter.info(f"the checkpoint was written with world size {saved_world}, this run has {ctx.world_size}: "
                      "weights and optimiser states continue, the order of the batches differs")
    return state


def _fid_monitor(ds: CanonicalDataset, images: np.ndarray, labels: np.ndarray, tcfg: TrainConfig, ctx: DistContext,
                 encoder_cfg: Any, fid_sampling: SampleConfig | None, reporter: Reporter) -> FidMonitor:
    from synthgate.evaluation.config import EncoderConfig
    from synthgate.evaluation.encoder import get_encoder

    device = ctx.device
    # the encoder's own training must not shift the generator's random streams
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        enc = get_encoder(ds, encoder_cfg or EncoderConfig(), device, reporter=reporter)
    monitor = FidMonitor(enc, images, labels, tcfg, fid_sampling)
    reporter.info(f"FID early stopping: every {tcfg.fid_every} steps on {monitor.n} images, encoder "
                  f"{monitor.encoder_id}, patience {tcfg.fid_patience}, not before step {tcfg.fid_min_steps}")
    return monitor


def _run_params(dataset_dir: Path, ds: CanonicalDataset, gcfg: GeneratorConfig, tcfg: TrainConfig, ctx: DistContext,
                task: TrainTask, n_train: int, monitor: FidMonitor | None) -> dict[str, Any]:
    """The MLflow run's parameters."""
    params = {**flat("generator", gcfg.model_dump(mode="json")), **flat("train", tcfg.model_dump(mode="json")),
              "dataset.path": str(dataset_dir), "dataset.content_hash": ds.content_hash,
              "dataset.train_images": n_train, "dataset.classes": ",".join(ds.classes), "device": str(ctx.device),
              "parameters": sum(p.numel() for p in task.ema_target.parameters())}
    if ctx.enabled:
        params |= {"world_size": ctx.world_size, "global_batch_size": tcfg.batch_size * ctx.world_size}
    if monitor is not None:
        params |= flat("fid", monitor.describe())
    return params


def _loop(task: TrainTask, feed: Feed, hooks: list[Hook], log: LogHook, state: TrainState, tcfg: TrainConfig,
          ctx: DistContext, clock: Clock, tracker: TrainTracker, reporter: Reporter, label: str,
          preempt: Preemption | None = None) -> None:
    """Steps ``state.start`` to ``state.end``; the due hooks between steps, on every rank at the same step; a
    signal recorded by ``preempt`` ends the loop after the current step with a checkpoint (:class:`Preempted`)."""
    device, draws = ctx.device, task.draws_per_step
    images_per_step = tcfg.batch_size * draws * ctx.world_size
    # the step noise: as before in a single process, one stream per rank under DDP
    noise_key: tuple[object, ...] = ("step",) if not ctx.enabled else ("rank", ctx.rank, "step")
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss
    with reporter.task(label, tcfg.steps) as advance:
        advance(state.start)
        for step in range(state.start, state.end):
            s = step + 1
            batches = [feed.batch(step * draws + k) for k in range(draws)]
            losses = task.step(batches, make_generator(device, tcfg.seed, *noise_key, step))
            finite = torch.stack([v.float() for v in losses.values()]).isfinite().all()
            first_bad = torch.where((first_bad < 0) & ~finite, torch.full_like(first_bad, s), first_bad)
            log.add(losses)
            clock.count(images_per_step)
            tracker.step()
            advance(1)
            if preempt is not None and (signum := preempt.due(ctx)):
                _stop_for(signum, s, preempt, hooks, state, tcfg, ctx, first_bad, tracker)
            due = [h.due(s) for h in hooks]
            if not any(due):
                if clock.t is None:
                    clock.start()  # after the first step of this run
                continue
            clock.stop()
            _check_divergence(ctx, first_bad, s, state.last_good, tracker.kind)
            wrote = False
            for hook, is_due in zip(hooks, due, strict=True):
                if is_due or (state.stop and hook.on_stop):  # FID runs first: its stop reaches the others
                    hook(s, state)
                    wrote |= hook.writes
            if ctx.enabled and wrote:
                ctx.barrier()  # rank 0 has finished writing
            if state.stop:
                state.end = s
                break
            clock.start()


def _stop_for(signum: int, step: int, preempt: Preemption, hooks: list[Hook], state: TrainState, tcfg: TrainConfig,
              ctx: DistContext, first_bad: torch.Tensor, tracker: TrainTracker) -> None:
    """After a signal: the checkpoint of ``step`` (unless the loss diverged: that error wins), then :class:`Preempted`."""
    _check_divergence(ctx, first_bad, step, state.last_good, tracker.kind)
    writer = next(h for h in hooks if isinstance(h, CheckpointHook))
    writer(step, state)
    ctx.barrier()  # rank 0 has written it
    seconds = time.monotonic() - (preempt.at or time.monotonic())
    raise Preempted(signum, step, str(state.last_good) if state.last_good else None, seconds, tcfg.grace_seconds)


def _check_divergence(ctx: DistContext, first_bad: torch.Tensor, step: int, last_good: Path | None, kind: str) -> None:
    """Every rank stops at the same step when a loss became NaN/inf on any rank."""
    if (bad := ctx.first_step(first_bad)) >= 0:
        where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written before it"
        raise SynthgateError(
            f"training diverged: the {kind} loss became NaN/inf at step {bad}; stopped at step {step}, {where}",
            hint="lower the learning rate (train.lr; GAN: generator.g_lr/d_lr) and train again; "
            "it resumes from the last good checkpoint",
        )


def _fid_info(state: TrainState, tcfg: TrainConfig, monitor: FidMonitor | None) -> dict[str, Any]:
    return {**state.fid.to_dict(), **(monitor.describe() if monitor else {}), "patience": tcfg.fid_patience,
            "min_steps": tcfg.fid_min_steps, "min_delta": tcfg.fid_min_delta, "every": tcfg.fid_every}


def _save_model(model_dir: Path, task: TrainTask, ds: CanonicalDataset, state: TrainState,
                fid_info: dict[str, Any] | None, ctx: DistContext, tracker: TrainTracker, reporter: Reporter) -> Path:
    """Rank 0 saves the EMA model: the best FID evaluation's weights when FID early stopping kept
    some, else the last step's."""
    if not ctx.is_main:
        return model_dir
    module, saved_step, selection = task.ema_module(), state.end, None
    if fid_info is not None and state.best_weights is not None:
        fs = state.fid
        module.load_state_dict(state.best_weights)
        saved_step = int(fs.best_step or state.end)
        selection = {"by": "fid", "step": saved_step, "fid": fs.best_fid, "trained_steps": state.end,
                     "stopped_early": fs.stopped_at is not None, "encoder_id": fid_info.get("encoder_id")}
        reporter.info(f"saving the weights of step {saved_step} (best FID {fs.best_fid:.3f})")
    model_dir = task.save(model_dir, module, classes=ds.classes, dataset_hash=ds.content_hash, step=saved_step,
                          selection=selection)
    tracker.artifact(model_dir / "synthgate_generator.json", MODEL)
    return model_dir
