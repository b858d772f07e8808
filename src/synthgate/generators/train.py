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
"""

from __future__ import annotations

import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthgate.data.canonical import load_dataset
from synthgate.errors import ConfigError, DataError, SynthgateError
from synthgate.figures import make_grid, save_png
from synthgate.generators.common import make_generator, mix_seed, to_model_space
from synthgate.generators.config import GeneratorConfig, SampleConfig, TrainConfig
from synthgate.generators.distributed import DistContext, setup, wrap_task
from synthgate.generators.early_stop import FidMonitor, FidState
from synthgate.generators.family import get_family
from synthgate.generators.task import TrainTask
from synthgate.progress import NullReporter, Reporter

CHECKPOINTS = "checkpoints"
MODEL = "model"
GRIDS = "grids"
CHECKPOINT_FORMAT = "synthgate.checkpoint/v1"
#: Generator settings that change the network or its noise schedule; a checkpoint must match them.
FINGERPRINT_FIELDS = ("type", "size", "prediction_type", "beta_schedule", "num_train_timesteps", "z_dim")


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


def fingerprint(gcfg: GeneratorConfig, resolution: int, channels: int, classes: list[str], dataset_hash: str) -> dict[str, Any]:
    g = gcfg.model_dump(mode="json")
    return {**{f"generator.{k}": g[k] for k in FINGERPRINT_FIELDS}, "resolution": resolution, "channels": channels,
            "classes": list(classes), "dataset_content_hash": dataset_hash}


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Checkpoints under ``out_dir/checkpoints``, oldest first."""
    found = []
    for p in (Path(out_dir) / CHECKPOINTS).glob("step_*.pt"):
        try:
            found.append((int(p.stem.removeprefix("step_")), p))
        except ValueError:
            continue
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: Path) -> Path | None:
    ckpts = list_checkpoints(out_dir)
    return ckpts[-1] if ckpts else None


def _write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise DataError(f"{path}: cannot read the checkpoint ({e})",
                        hint="delete it to resume from an earlier one, or train with resume disabled") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a synthgate checkpoint", hint="delete it or train with resume disabled")
    return state


def _check_fingerprint(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in now if saved.get(k) != now[k]]
    if diffs:
        raise ConfigError(
            f"{path}: checkpoint belongs to another configuration; mismatching fields:\n  " + "\n  ".join(diffs),
            hint=f"use another output directory, delete {path.parent}, or train without resuming to start over",
        )


class _Feed:
    """Seeded batches of the train split: batch ``k`` is positions ``k*B .. (k+1)*B`` of the
    concatenated per-epoch permutations, so any batch can be recomputed from its index alone.
    Under DDP, rank ``r`` of ``W`` is given batch ``k*W + r`` of that stream when asked for ``k``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, tcfg: TrainConfig, device: torch.device,
                 memory_format: torch.memory_format, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.seed = len(images), tcfg.batch_size, tcfg.seed
        self.rank, self.world_size = rank, world_size
        self.device, self.memory_format = device, memory_format
        on_gpu = device.type == "cuda" and (
            tcfg.data_on_gpu == "always"
            or (tcfg.data_on_gpu == "auto" and images.nbytes < 0.25 * torch.cuda.mem_get_info(device)[0])
        )
        self.store = device if on_gpu else torch.device("cpu")
        self.images = torch.from_numpy(images).to(self.store)
        self.labels = torch.from_numpy(labels).to(self.store)
        self._perm: tuple[int, torch.Tensor] | None = None

    def _epoch(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, "epoch", epoch))
            self._perm = (epoch, torch.randperm(self.n, generator=g).to(self.store))
        return self._perm[1]

    def batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos, parts = (k * self.world_size + self.rank) * self.batch_size, []
        while (need := self.batch_size - sum(len(p) for p in parts)) > 0:
            epoch, offset = divmod(pos, self.n)
            take = self._epoch(epoch)[offset : offset + need]
            parts.append(take)
            pos += len(take)
        idx = torch.cat(parts)
        x = to_model_space(self.images[idx].to(self.device, non_blocking=True))
        return x.contiguous(memory_format=self.memory_format), self.labels[idx].to(self.device, non_blocking=True)


class _Clock:
    """Training throughput, excluding the first step (warm-up, compilation) and checkpoint/grid work."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.t: float | None = None
        self.win_t = self.win_n = self.tot_t = self.tot_n = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self.t = time.perf_counter()

    def stop(self) -> None:
        if self.t is not None:
            self._sync()
            dt = time.perf_counter() - self.t
            self.win_t += dt
            self.tot_t += dt
            self.t = None

    def count(self, n: int) -> None:
        if self.t is not None:
            self.win_n += n
            self.tot_n += n

    def window_rate(self) -> float:
        rate = self.win_n / self.win_t if self.win_t > 0 else math.nan
        self.win_t = self.win_n = 0.0
        return rate

    def rate(self) -> float:
        return self.tot_n / self.tot_t if self.tot_t > 0 else math.nan


def _tracking_uri() -> str | None:
    """The tracking URI set by ``MLFLOW_TRACKING_URI`` or ``mlflow.set_tracking_uri``, else None."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    try:
        import mlflow
        from mlflow.tracking._tracking_service.utils import is_tracking_uri_set
    except ImportError:  # pragma: no cover - private helper moved
        return None
    return mlflow.get_tracking_uri() if is_tracking_uri_set() else None


class _Tracker:
    """MLflow through an explicit client (leaves the fluent API's active run alone). The current
    tracking URI is used; where none is set, ``out_dir/mlflow.db`` (SQLite) with artifacts under
    ``out_dir/mlruns``. A run interrupted and resumed from a checkpoint continues the same MLflow run."""

    def __init__(self, out_dir: Path, run_id: str | None, params: dict[str, Any], run_name: str) -> None:
        env_uri = _tracking_uri()
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


def _flat(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in d.items()}


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
    from synthgate.monitoring.metrics import (
        TRAIN_FID,
        TRAIN_FID_BEST,
        TRAIN_IMAGES_PER_SECOND,
        TRAIN_LOSS,
        TRAIN_STEPS,
    )

    # progress and messages from rank 0 only; the others would repeat them
    reporter = (reporter or NullReporter()) if ctx.is_main else NullReporter()
    device, world = ctx.device, ctx.world_size

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
    images = np.ascontiguousarray(ds.images[idx])

    torch.manual_seed(tcfg.seed)  # the same on every rank: identical initial weights
    task = build_task(gcfg, tcfg, ds.resolution, ds.channels, len(classes), device)
    fp = fingerprint(gcfg, ds.resolution, ds.channels, classes, ds.content_hash)

    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume and ctx.is_main:
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
    ctx.barrier()  # nobody looks for checkpoints before rank 0 has deleted them
    start, run_id, last_loss = 0, None, math.nan
    use_fid = tcfg.fid_every > 0
    fid_state, best_weights = FidState(), None
    last_good = latest_checkpoint(out_dir)
    if ctx.enabled:  # every rank must resume from rank 0's checkpoint: out_dir must be shared
        chosen = ctx.broadcast(last_good.name if last_good else None)
        mine = last_good.name if last_good else None
        if not ctx.all_true(mine == chosen):
            raise ConfigError(
                f"{out_dir}: the ranks see different checkpoints (rank 0: {chosen}, rank {ctx.rank}: {mine})",
                hint="put --out on storage that every node shares (a ReadWriteMany volume), "
                "or train without resuming",
            )
    if last_good is not None:
        state = read_checkpoint(last_good, device)
        _check_fingerprint(last_good, state.get("fingerprint", {}), fp)
        task.load_state_dict(state["task"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if device.type == "cuda" and state["rng"].get("cuda"):
            if ctx.enabled:  # one GPU per rank: its generator state, written by rank 0 from its GPU
                torch.cuda.set_rng_state(state["rng"]["cuda"][0].cpu(), device)
            else:
                torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        start, run_id, last_loss = int(state["step"]), state.get("mlflow_run_id"), float(state["loss"])
        if use_fid and state.get("fid"):
            fid_state, best_weights = FidState.from_dict(state["fid"]), state.get("fid_best_weights")
        reporter.info(f"resuming from {last_good} (step {start})")
        saved_world = int(state.get("world_size", 1))
        if saved_world != world:
            reporter.info(f"the checkpoint was written with world size {saved_world}, this run has {world}: "
                          "weights and optimiser states continue, the order of the batches differs")
    wrap_task(task, ctx)
    if ctx.enabled:
        reporter.info(f"distributed data parallel: world size {world} ({ctx.backend}, {device.type}), "
                      f"{tcfg.batch_size} images per rank and step, global batch {tcfg.batch_size * world}")

    monitor = None
    if use_fid and ctx.is_main:  # rank 0 evaluates; the others wait for its decision
        from synthgate.evaluation.config import EncoderConfig
        from synthgate.evaluation.encoder import get_encoder

        # the encoder's own training must not shift the generator's random streams
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            enc = get_encoder(ds, encoder_cfg or EncoderConfig(), device, reporter=reporter)
        monitor = FidMonitor(enc, images, labels, tcfg, fid_sampling)
        reporter.info(f"FID early stopping: every {tcfg.fid_every} steps on {monitor.n} images, encoder "
                      f"{monitor.encoder_id}, patience {tcfg.fid_patience}, not before step {tcfg.fid_min_steps}")
    ctx.barrier()
    end = start if fid_state.stopped_at is not None else tcfg.steps  # an early stop is final on resume

    feed = _Feed(images, labels, tcfg, device, task.memory_format, ctx.rank, world)
    params = {**_flat("generator", gcfg.model_dump(mode="json")), **_flat("train", tcfg.model_dump(mode="json")),
              "dataset.path": str(dataset_dir), "dataset.content_hash": ds.content_hash,
              "dataset.train_images": len(idx), "dataset.classes": ",".join(classes), "device": str(device),
              "parameters": sum(p.numel() for p in task.ema_target.parameters())}
    if ctx.enabled:
        params |= {"world_size": world, "global_batch_size": tcfg.batch_size * world}
    if monitor is not None:
        params |= _flat("fid", monitor.describe())
    tracker = _Tracker(out_dir, run_id, params, f"{gcfg.type}-{gcfg.size}") if (tcfg.mlflow and ctx.is_main) else None
    run_id = ctx.broadcast(tracker.run_id if tracker else None) if tcfg.mlflow else None

    def save_checkpoint(step: int) -> Path:
        path = out_dir / CHECKPOINTS / f"step_{step:08d}.pt"
        if ctx.is_main:
            if device.type != "cuda":
                cuda_rng = []
            else:
                cuda_rng = [torch.cuda.get_rng_state(device)] if ctx.enabled else torch.cuda.get_rng_state_all()
            state = {"format": CHECKPOINT_FORMAT, "step": step, "fingerprint": fp, "task": task.state_dict(),
                     "rng": {"torch": torch.get_rng_state(), "cuda": cuda_rng}, "loss": last_loss,
                     "mlflow_run_id": run_id, "generator": gcfg.model_dump(mode="json"),
                     "train": tcfg.model_dump(mode="json"), "world_size": world}
            if use_fid:
                state |= {"fid": fid_state.to_dict(), "fid_best_weights": best_weights}
            _write_checkpoint(path, state)
            for old in list_checkpoints(out_dir)[: -tcfg.keep_checkpoints]:
                old.unlink(missing_ok=True)
            if on_checkpoint is not None:
                on_checkpoint(path)
        return path

    def sample_grid(step: int) -> Path:
        path = out_dir / GRIDS / f"step_{step:08d}.png"
        if ctx.is_main:
            k = tcfg.sample_grid_per_class
            cfg = SampleConfig(sampler="ddim", steps=min(tcfg.sample_grid_steps, gcfg.num_train_timesteps),
                               per_class=k, seed=tcfg.seed)
            images = task.sample(task.ema_module(), np.repeat(np.arange(len(classes)), k), cfg)
            save_png(path, make_grid(images, nrow=k))
            if tracker:
                tracker.artifact(path, GRIDS)
        return path

    kind = gcfg.type
    draws, images_per_step = task.draws_per_step, tcfg.batch_size * task.draws_per_step * world
    # the step noise: as before in a single process, one stream per rank under DDP
    noise_key: tuple[object, ...] = ("step",) if not ctx.enabled else ("rank", ctx.rank, "step")
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss
    sums: dict[str, torch.Tensor] = {}
    window = 0
    clock = _Clock(device)
    status = "FAILED"
    try:
        with reporter.task(f"Training {kind} ({gcfg.size}, {device.type})", tcfg.steps) as advance:
            advance(start)
            for step in range(start, end):
                s = step + 1
                batches = [feed.batch(step * draws + k) for k in range(draws)]
                losses = task.step(batches, make_generator(device, tcfg.seed, *noise_key, step))
                finite = torch.stack([v.float() for v in losses.values()]).isfinite().all()
                first_bad = torch.where((first_bad < 0) & ~finite, torch.full_like(first_bad, s), first_bad)
                for k, v in losses.items():
                    sums[k] = sums[k] + v.float() if k in sums else v.float()
                window += 1
                clock.count(images_per_step)
                TRAIN_STEPS.labels(kind).inc()
                advance(1)
                log_due = s % tcfg.log_every == 0 or s == tcfg.steps
                ckpt_due = s % tcfg.checkpoint_every == 0 or s == tcfg.steps
                grid_due = tcfg.sample_grid_every > 0 and (s % tcfg.sample_grid_every == 0 or s == tcfg.steps)
                fid_due = use_fid and (s % tcfg.fid_every == 0 or s == tcfg.steps)
                if not (log_due or ckpt_due or grid_due or fid_due):
                    if clock.t is None:
                        clock.start()  # after the first step of this run
                    continue
                clock.stop()
                if (bad := ctx.first_step(first_bad)) >= 0:
                    where = (f"the last good checkpoint is {last_good}" if last_good
                             else "no checkpoint was written before it")
                    raise SynthgateError(
                        f"training diverged: the {kind} loss became NaN/inf at step {bad}; stopped at step {s}, "
                        f"{where}",
                        hint="lower the learning rate (train.lr; GAN: generator.g_lr/d_lr) and train again; "
                        "it resumes from the last good checkpoint",
                    )
                stop = False
                if fid_due:
                    if monitor is not None:
                        module = task.ema_module()
                        value = monitor(task, module)
                        if fid_state.update(s, value, tcfg):
                            best_weights = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
                        if s >= tcfg.steps:  # the budget ends here anyway: not an early stop
                            fid_state.stopped_at = None
                        del module
                        TRAIN_FID.labels(kind).set(value)
                        TRAIN_FID_BEST.labels(kind).set(fid_state.best_fid)
                        if tracker:
                            tracker.metrics({"fid": value, "fid_best": fid_state.best_fid}, s)
                        reporter.info(
                            f"step {s}: FID {value:.3f} (best {fid_state.best_fid:.3f} at step {fid_state.best_step}"
                            f"{'' if not fid_state.since_best else f'; {fid_state.since_best} without improvement'})")
                        if fid_state.stopped_at is not None:
                            reporter.info(
                                f"early stop at step {s}: no FID improvement in {fid_state.since_best} evaluations; "
                                f"keeping the weights of step {fid_state.best_step} (FID {fid_state.best_fid:.3f})")
                    stop = bool(ctx.broadcast(fid_state.stopped_at is not None))
                    if stop:
                        log_due = ckpt_due = True
                        grid_due = tcfg.sample_grid_every > 0
                if log_due:
                    keys = list(sums)
                    mean = ctx.mean(torch.stack([sums[k] for k in keys]) / window)  # over the ranks
                    means = {k: float(v) for k, v in zip(keys, mean.tolist(), strict=True)}
                    sums, window = {}, 0
                    last_loss, rate = means["loss"], clock.window_rate()
                    reporter.info(f"step {s}/{tcfg.steps}  loss {last_loss:.4f}  {rate:.1f} images/s")
                    TRAIN_LOSS.labels(kind).set(last_loss)
                    if math.isfinite(rate):
                        TRAIN_IMAGES_PER_SECOND.labels(kind).set(rate)
                    if tracker:
                        tracker.metrics({**means, "images_per_second": rate}, s)
                if ckpt_due:
                    last_good = save_checkpoint(s)
                if grid_due:
                    sample_grid(s)
                if ctx.enabled and (ckpt_due or grid_due):
                    ctx.barrier()  # rank 0 has finished writing
                if stop:
                    end = s
                    break
                clock.start()
        model_dir = out_dir / MODEL
        end = max(start, end)
        fid_info = None
        if use_fid:
            fid_info = {**fid_state.to_dict(), **(monitor.describe() if monitor else {}),
                        "patience": tcfg.fid_patience, "min_steps": tcfg.fid_min_steps,
                        "min_delta": tcfg.fid_min_delta, "every": tcfg.fid_every}
        if ctx.is_main:
            module, saved_step, selection = task.ema_module(), end, None
            if use_fid and best_weights is not None:
                module.load_state_dict(best_weights)
                saved_step = int(fid_state.best_step or end)
                selection = {"by": "fid", "step": saved_step, "fid": fid_state.best_fid, "trained_steps": end,
                             "stopped_early": fid_state.stopped_at is not None,
                             "encoder_id": fid_info.get("encoder_id") if fid_info else None}
                reporter.info(f"saving the weights of step {saved_step} (best FID {fid_state.best_fid:.3f})")
            model_dir = task.save(model_dir, module, classes=classes, dataset_hash=ds.content_hash,
                                  step=saved_step, selection=selection)
            if tracker:
                tracker.artifact(model_dir / "synthgate_generator.json", MODEL)
        ctx.barrier()  # the model folder is complete before any rank returns it
        status = "FINISHED"
    finally:
        if tracker:
            tracker.finish(status)
    rate = clock.rate()
    return TrainResult(model_dir, end, last_loss, rate if math.isfinite(rate) else 0.0,
                       last_good, run_id, start, ctx.broadcast(fid_info) if ctx.enabled else fid_info)
