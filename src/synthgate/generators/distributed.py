"""Data-parallel training on several GPUs and nodes: the DDP runtime under ``torchrun``.

No option switches it on: ``torchrun`` (and the Kubeflow runtimes that start it) set
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in every worker, and
where ``WORLD_SIZE`` is above 1 :func:`synthgate.generators.train.train` calls :func:`setup`, which
joins the process group (NCCL on CUDA, device ``cuda:LOCAL_RANK``; gloo on the CPU), and
:func:`wrap_task`, which routes the task's forward passes through ``DistributedDataParallel``.
A plain process (no ``WORLD_SIZE``, or 1) gets a :class:`DistContext` whose collectives do nothing.

What the training loop does with it is described in :mod:`synthgate.generators.train`. The
Kubeflow ``TrainJob`` that starts torchrun on a cluster's nodes is
:mod:`synthgate.kubeflow.trainjob`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from synthgate.devices import resolve_device
from synthgate.errors import ConfigError

if TYPE_CHECKING:
    from synthgate.generators.task import TrainTask


@dataclass(frozen=True)
class DistContext:
    """This process's place in the training job. ``world_size == 1``: a plain single process."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False  # True when :func:`setup` initialised the process group (and closes it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The average of ``values`` over all ranks (a new tensor; ``values`` itself if single)."""
        if not self.enabled:
            return values
        out = values.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world_size

    def first_step(self, step: torch.Tensor) -> int:
        """The smallest non-negative ``step`` over all ranks, or -1 where every rank holds -1."""
        if not self.enabled:
            return int(step.item())
        big = torch.iinfo(torch.long).max
        s = torch.where(step < 0, torch.full_like(step, big), step).clone()
        dist.all_reduce(s, op=dist.ReduceOp.MIN)
        value = int(s.item())
        return -1 if value == big else value

    def all_true(self, flag: bool) -> bool:
        """True when ``flag`` holds on every rank."""
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (small picklable objects)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def close(self) -> None:
        """Leave the process group where :func:`setup` joined it (also after an error)."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def world_size_from_env(env: dict[str, str] | None = None) -> int:
    env = dict(os.environ) if env is None else env
    try:
        return max(1, int(env.get("WORLD_SIZE") or 1))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={env.get('WORLD_SIZE')!r} is not a number",
                          hint="start distributed training with torchrun, which sets it") from None


def setup(device_name: str, field: str = "train.device", env: dict[str, str] | None = None) -> DistContext:
    """The :class:`DistContext` of this process; joins the process group when ``WORLD_SIZE > 1``.

    ``device_name`` is the configured device (``auto``, ``cpu``, ``cuda``): a CUDA run uses NCCL
    and the GPU ``cuda:LOCAL_RANK``, a CPU run gloo. A process group that is already initialised
    (by a caller of its own) is used as it is and left open.
    """
    env = dict(os.environ) if env is None else env
    device = resolve_device(device_name, field)
    world = world_size_from_env(env)
    if world == 1:
        return DistContext(device=device)
    local_rank = int(env.get("LOCAL_RANK") or 0)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank}: this node has {torch.cuda.device_count()} visible GPU(s)",
                hint="start at most one process per GPU (torchrun --nproc_per_node <= number of GPUs)",
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    owns = not dist.is_initialized()
    if owns:
        if "MASTER_ADDR" not in env or "RANK" not in env:
            raise ConfigError(
                f"WORLD_SIZE={world} but RANK/MASTER_ADDR are not set",
                hint="start distributed training with torchrun (or python -m torch.distributed.run)",
            )
        _init_group(backend, device)
    if dist.get_world_size() != world:
        raise ConfigError(f"WORLD_SIZE={world} but the process group has {dist.get_world_size()} ranks")
    return DistContext(world, dist.get_rank(), local_rank, device, backend, owns)


_joined = 0  # process groups this process has joined (and left) so far


def _init_group(backend: str, device: torch.device) -> None:
    """``init_process_group`` from torchrun's environment. Joining again in the same process (a
    second ``train`` call) uses fresh keys in the rendezvous store: the first group's keys are
    still there and a rank could otherwise read its peers' old addresses."""
    global _joined
    device_id = device if device.type == "cuda" else None
    if _joined == 0:
        dist.init_process_group(backend, device_id=device_id)
    else:
        store, rank, world = next(dist.rendezvous("env://"))
        dist.init_process_group(backend, store=dist.PrefixStore(f"synthgate/{_joined}", store), rank=rank,
                                world_size=world, device_id=device_id)
    _joined += 1


def wrap_task(task: TrainTask, ctx: DistContext) -> None:
    """Route ``task``'s training forward passes through ``DistributedDataParallel``.

    DDP averages the gradients over the ranks during ``backward``; the task's optimisers, EMA,
    state dicts and sampling keep using the plain modules (``task.modules``), so checkpoints and
    saved models look exactly as in a single process. ``torch.compile`` (CUDA) wraps the DDP
    module, as PyTorch recommends. Which modules are wrapped is the family's business
    (:meth:`~synthgate.generators.task.TrainTask.wrap_ddp`: the diffusion UNet; the GAN's generator
    and discriminator, with why its gradient penalty needs no ``find_unused_parameters``).
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not ctx.enabled:
        return
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None

    def ddp(module: torch.nn.Module) -> torch.nn.Module:
        return DDP(module, device_ids=ids, output_device=ids[0] if ids else None)

    def compiled(module: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(module) if (task.tcfg.compile and task.cuda) else module

    task.wrap_ddp(ddp, compiled)
