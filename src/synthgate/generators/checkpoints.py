"""Training checkpoints: list, read, write, prune, fingerprint, resume, mirror.

A checkpoint (``out_dir/checkpoints/step_*.pt``, format :data:`CHECKPOINT_FORMAT`) holds the
training task's state (weights, EMA, optimisers), the random generators' states, the step, the
last logged loss, the MLflow run id, the FID early-stopping state and the configuration's
fingerprint. A run resumes only from a checkpoint of the same fingerprint (network, noise schedule,
resolution, classes, dataset), so resuming continues exactly the run that wrote it.

Under DDP rank 0 writes; every rank reads the same newest checkpoint, which :meth:`Checkpointer.agreed_latest`
checks (``out_dir`` must be on storage every node shares).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from synthgate.errors import ConfigError, DataError

if TYPE_CHECKING:
    from synthgate.generators.config import GeneratorConfig
    from synthgate.generators.distributed import DistContext
    from synthgate.generators.task import TrainTask

CHECKPOINTS = "checkpoints"
CHECKPOINT_FORMAT = "synthgate.checkpoint/v1"
#: Generator settings that change the network or its noise schedule; a checkpoint must match them
#: (and its family's own :attr:`~synthgate.generators.family.GeneratorFamily.fingerprint_fields`).
FINGERPRINT_FIELDS = ("type", "size", "objective", "prediction_type", "beta_schedule", "num_train_timesteps", "z_dim")
#: ``objective: rectified_flow`` replaces the DDPM fields with these (the reflow pairs' settings; the
#: parent itself is checked by its weights hash, :mod:`~synthgate.generators.reflow`)
FLOW_FINGERPRINT_FIELDS = ("flow.timesteps", "flow.logit_mean", "flow.logit_std", "flow.reflow_pairs",
                           "flow.reflow_sampler", "flow.reflow_steps", "flow.reflow_guidance_scale", "flow.reflow_seed")
DDPM_ONLY = ("prediction_type", "beta_schedule")
#: the value of a field that checkpoints written before it existed were trained with
BEFORE_THE_FIELD = {"generator.objective": "ddpm"}


def fingerprint(gcfg: GeneratorConfig, resolution: int, channels: int, classes: list[str], dataset_hash: str
                ) -> dict[str, Any]:
    from synthgate.generators.family import get_family

    g = gcfg.model_dump(mode="json")
    out: dict[str, Any] = {}
    fields = FINGERPRINT_FIELDS + get_family(gcfg.type).fingerprint_fields
    if gcfg.objective == "rectified_flow":
        fields = tuple(f for f in fields if f not in DDPM_ONLY) + FLOW_FINGERPRINT_FIELDS
    for key in fields:
        value: Any = g
        for part in key.split("."):
            value = value[part]
        out[f"generator.{key}"] = value
    return {**out, "resolution": resolution, "channels": channels, "classes": list(classes),
            "dataset_content_hash": dataset_hash}


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


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a reader sees the old file or the complete new one, never a partial one."""
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


def check_fingerprint(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    diffs = [f"{k}: checkpoint {saved.get(k, BEFORE_THE_FIELD.get(k))!r}, now {now[k]!r}" for k in now
             if saved.get(k, BEFORE_THE_FIELD.get(k)) != now[k]]
    if diffs:
        raise ConfigError(
            f"{path}: checkpoint belongs to another configuration; mismatching fields:\n  " + "\n  ".join(diffs),
            hint=f"use another output directory, delete {path.parent}, or train without resuming to start over",
        )


def rng_state(ctx: DistContext) -> dict[str, Any]:
    """The random generators' states to resume from (one GPU's under DDP: one GPU per rank)."""
    device = ctx.device
    if device.type != "cuda":
        cuda: list[torch.Tensor] = []
    else:
        cuda = [torch.cuda.get_rng_state(device)] if ctx.enabled else torch.cuda.get_rng_state_all()
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng(state: dict[str, Any], ctx: DistContext) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if ctx.device.type == "cuda" and state.get("cuda"):
        if ctx.enabled:  # one GPU per rank: its generator state, written by rank 0 from its GPU
            torch.cuda.set_rng_state(state["cuda"][0].cpu(), ctx.device)
        else:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class Checkpointer:
    """The checkpoints of one run folder: rank 0 writes (and prunes, and mirrors); every rank reads."""

    def __init__(self, out_dir: Path, keep: int, fp: dict[str, Any], ctx: DistContext,
                 on_checkpoint: Callable[[Path], None] | None = None) -> None:
        self.out_dir, self.keep, self.fingerprint, self.ctx = Path(out_dir), keep, fp, ctx
        self.on_checkpoint = on_checkpoint
        if ctx.is_main:  # what a write killed with -9 left behind (write_checkpoint's temporary files): never read
            for stale in (self.out_dir / CHECKPOINTS).glob(".step_*.pt.tmp-*"):
                stale.unlink(missing_ok=True)

    def reset(self) -> None:
        """Start over: rank 0 deletes the folder's checkpoints; nobody looks for one before it has."""
        if self.ctx.is_main:
            shutil.rmtree(self.out_dir / CHECKPOINTS, ignore_errors=True)
        self.ctx.barrier()

    def agreed_latest(self) -> Path | None:
        """The newest checkpoint, which every rank must see (ConfigError naming both when not)."""
        mine = latest_checkpoint(self.out_dir)
        if self.ctx.enabled:
            chosen = self.ctx.broadcast(mine.name if mine else None)
            if not self.ctx.all_true((mine.name if mine else None) == chosen):
                raise ConfigError(
                    f"{self.out_dir}: the ranks see different checkpoints (rank 0: {chosen}, rank {self.ctx.rank}: "
                    f"{mine.name if mine else None})",
                    hint="put --out on storage that every node shares (a ReadWriteMany volume), "
                    "or train without resuming",
                )
        return mine

    def restore(self, path: Path, task: TrainTask) -> dict[str, Any]:
        """Load ``path`` into ``task`` and the random generators; -> the checkpoint's state."""
        state = read_checkpoint(path, self.ctx.device)
        check_fingerprint(path, state.get("fingerprint", {}), self.fingerprint)
        task.load_state_dict(state["task"])
        restore_rng(state["rng"], self.ctx)
        return state

    def save(self, step: int, task: TrainTask, extra: dict[str, Any]) -> Path:
        """Rank 0 writes step ``step`` (with ``extra``: loss, run id, configuration, FID state), prunes
        to the newest ``keep`` and hands the path to ``on_checkpoint``; -> the path (on every rank)."""
        path = self.out_dir / CHECKPOINTS / f"step_{step:08d}.pt"
        if self.ctx.is_main:
            write_checkpoint(path, {"format": CHECKPOINT_FORMAT, "step": step, "fingerprint": self.fingerprint,
                                    "task": task.state_dict(), "rng": rng_state(self.ctx),
                                    "world_size": self.ctx.world_size, **extra})
            for old in list_checkpoints(self.out_dir)[: -self.keep]:
                old.unlink(missing_ok=True)
            if self.on_checkpoint is not None:
                self.on_checkpoint(path)
        return path
