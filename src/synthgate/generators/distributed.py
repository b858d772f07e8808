"""Data-parallel training on several GPUs and nodes (DDP under ``torchrun``), and the Kubeflow
``TrainJob`` that runs it on a cluster.

No option switches it on: ``torchrun`` (and the Kubeflow runtimes that start it) set
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in every worker, and
where ``WORLD_SIZE`` is above 1 :func:`synthgate.generators.train.train` calls :func:`setup`, which
joins the process group (NCCL on CUDA, device ``cuda:LOCAL_RANK``; gloo on the CPU), and
:func:`wrap_task`, which routes the task's forward passes through ``DistributedDataParallel``.
A plain process (no ``WORLD_SIZE``, or 1) gets a :class:`DistContext` whose collectives do nothing.

What the training loop does with it is described in :mod:`synthgate.generators.train`.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist

from synthgate.devices import resolve_device
from synthgate.errors import ConfigError

if TYPE_CHECKING:
    from synthgate.generators.task import TrainTask

#: The ClusterTrainingRuntime of Kubeflow Trainer v2 that sets torchrun's ``PET_*`` variables.
TORCH_RUNTIME = "torch-distributed"
#: Launch command of a training node: torchrun reads ``PET_NNODES``, ``PET_NPROC_PER_NODE``,
#: ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT`` (set by the Trainer runtime) from
#: the environment; the arguments that follow are ``synthgate``'s.
TORCHRUN = ["python", "-m", "torch.distributed.run", "-m", "synthgate"]
#: Keys of the ``synthgate-s3`` Secret and the ``synthgate-endpoints`` ConfigMap passed to training.
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
ENDPOINT_KEYS = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME",
                 "PUSHGATEWAY_URL")
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


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
    module, as PyTorch recommends.

    - Diffusion: the UNet.
    - GAN: generator and discriminator. The WGAN-GP penalty runs ``autograd.grad(create_graph=True)``
      through the DDP-wrapped discriminator: that gradient is taken with respect to the
      interpolated images only, so it fires none of DDP's parameter hooks; the penalty's
      second-order gradient reaches the parameters in the one ``d_loss.backward()`` of the
      critic step, together with the Wasserstein terms, and is all-reduced there. Every
      discriminator parameter gets a gradient in that step and the discriminator is frozen
      (``requires_grad_(False)``) in the generator step, so ``find_unused_parameters`` stays off.
      Batch statistics (the minibatch standard deviation feature) are per rank.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    from synthgate.generators.diffusion import DiffusionTask
    from synthgate.generators.gan import GanTask

    if not ctx.enabled:
        return
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None

    def ddp(module: torch.nn.Module) -> torch.nn.Module:
        return DDP(module, device_ids=ids, output_device=ids[0] if ids else None)

    def compiled(module: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(module) if (task.tcfg.compile and task.cuda) else module

    if isinstance(task, DiffusionTask):
        task.forward = compiled(ddp(task.unet))
    elif isinstance(task, GanTask):
        task.g_forward = compiled(ddp(task.g))
        task.d = ddp(task.d)  # type: ignore[assignment]  (modules["discriminator"] stays the plain one)
    else:  # pragma: no cover - a new family must say how it is wrapped
        raise TypeError(f"no DDP wrapping for {type(task).__name__}")


# ----------------------------------------------------------------------------------------------
def fetch_dataset(uri: str, dest: Path) -> Path:
    """Copy a canonical dataset folder from ``s3://bucket/prefix`` (or a folder) to ``dest``.

    A training node runs this before ``torchrun`` when the dataset lives in S3/MinIO rather than
    on a mounted volume (``python -m synthgate.generators.distributed fetch-dataset URI DEST``).
    Endpoint and credentials come from the environment (``AWS_ENDPOINT_URL``, ``AWS_*``).
    """
    from synthgate.publish.stores import open_store

    store = open_store(uri)
    keys = store.list_keys("")
    if not keys:
        raise ConfigError(f"{uri}: no files found", hint="point at the folder holding manifest.json")
    dest = Path(dest)
    for key in keys:
        target = dest.joinpath(*key.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(key, target)
    return dest


def _env_refs(secret: str | None, secret_keys: tuple[str, ...], configmap: str | None,
              configmap_keys: tuple[str, ...], extra: dict[str, str] | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in (extra or {}).items()]
    for source, name, keys in (("secretKeyRef", secret, secret_keys), ("configMapKeyRef", configmap, configmap_keys)):
        if name:
            env += [{"name": k, "valueFrom": {source: {"name": name, "key": k, "optional": True}}} for k in keys]
    return env


def trainjob_manifest(
    name: str,
    image: str,
    num_nodes: int,
    gpus_per_node: int,
    args: list[str],
    namespace: str,
    *,
    runtime: str = TORCH_RUNTIME,
    dataset_pvc: str | None = None,
    mount_path: str = "/data",
    dataset_uri: str | None = None,
    scratch_dir: str = "/scratch",
    secret: str | None = "synthgate-s3",
    secret_keys: tuple[str, ...] = S3_SECRET_KEYS,
    configmap: str | None = "synthgate-endpoints",
    configmap_keys: tuple[str, ...] = ENDPOINT_KEYS,
    env: dict[str, str] | None = None,
    cpu: str | None = None,
    memory: str | None = None,
    shm_size: str = "8Gi",
    labels: dict[str, str] | None = None,
    patch_api: Literal["podTemplateOverrides", "runtimePatches"] = "podTemplateOverrides",
) -> dict[str, Any]:
    """A Kubeflow Trainer v2 ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) running
    ``synthgate <args>`` under torchrun on ``num_nodes`` nodes of ``gpus_per_node`` GPUs.

    ``args`` are synthgate's, e.g. ``["train", "--dataset", "/data/validated", "--out",
    "/data/runs/r1"]``. The ``torch-distributed`` runtime sets torchrun's ``PET_*`` variables
    (nodes, processes per node, node rank, master address); the command is
    :data:`TORCHRUN`. The run folder (``--out``) must be on storage that every node sees
    (a ReadWriteMany volume, ``dataset_pvc``): rank 0 writes the checkpoints and all ranks read
    them on resume. With ``dataset_uri`` (``s3://bucket/prefix``) each node first copies the
    dataset to ``<scratch_dir>/dataset`` on a node-local ``emptyDir`` (:func:`fetch_dataset`;
    give that path as ``--dataset``) and the command runs in ``bash -c``.

    The Secret and ConfigMap reach the container as ``env`` entries (``valueFrom``, optional
    keys): the TrainJob API has no ``envFrom``. Node selector, toleration, volumes and a
    ``/dev/shm`` large enough for NCCL go in ``podTemplateOverrides`` (Trainer v2.0/v2.1) or, with
    ``patch_api="runtimePatches"``, in the ``runtimePatches`` of newer Trainer releases.
    """
    if num_nodes < 1 or gpus_per_node < 1:
        raise ValueError("num_nodes and gpus_per_node must be at least 1")
    if not args:
        raise ValueError("args: give synthgate's arguments, e.g. ['train', '--dataset', ..., '--out', ...]")
    limits: dict[str, Any] = {"nvidia.com/gpu": gpus_per_node}
    if cpu:
        limits["cpu"] = cpu
    if memory:
        limits["memory"] = memory
    if dataset_uri:
        script = (f"set -euo pipefail\npython -m synthgate.generators.distributed fetch-dataset "
                  f"\"$SYNTHGATE_DATASET_URI\" {scratch_dir}/dataset\nexec {' '.join(TORCHRUN)} \"$@\"\n")
        command, cmd_args = ["bash", "-c", script, "synthgate"], list(args)
        env = {**(env or {}), "SYNTHGATE_DATASET_URI": dataset_uri}
    else:
        command, cmd_args = list(TORCHRUN), list(args)
    trainer: dict[str, Any] = {
        "image": image,
        "command": command,
        "args": cmd_args,
        "numNodes": num_nodes,
        "numProcPerNode": gpus_per_node,
        "resourcesPerNode": {"limits": limits},
        "env": _env_refs(secret, secret_keys, configmap, configmap_keys, {"PYTHONUNBUFFERED": "1", **(env or {})}),
    }
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}}]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if dataset_pvc:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": dataset_pvc}})
        mounts.append({"name": "data", "mountPath": mount_path})
    if dataset_uri:  # each node's own copy: nodes never write the same files
        volumes.append({"name": "scratch", "emptyDir": {}})
        mounts.append({"name": "scratch", "mountPath": scratch_dir})
    pod_spec = {
        "nodeSelector": dict(GPU_NODE_SELECTOR),
        "tolerations": copy.deepcopy(GPU_TOLERATIONS),
        "volumes": volumes,
        "containers": [{"name": "node", "volumeMounts": mounts}],
    }
    spec: dict[str, Any] = {
        "runtimeRef": {"name": runtime, "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"},
        "trainer": trainer,
    }
    if patch_api == "podTemplateOverrides":
        spec["podTemplateOverrides"] = [{"targetJobs": [{"name": "node"}], "spec": pod_spec}]
    elif patch_api == "runtimePatches":
        job = {"name": "node", "template": {"spec": {"template": {"spec": pod_spec}}}}
        spec["runtimePatches"] = [{"manager": "synthgate",
                                   "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}}}]
    else:
        raise ValueError(f"patch_api: unknown {patch_api!r}")
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "synthgate", "app.kubernetes.io/component": "train",
                                **(labels or {})}},
        "spec": spec,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m synthgate.generators.distributed fetch-dataset URI DEST``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] != "fetch-dataset":
        print("usage: python -m synthgate.generators.distributed fetch-dataset URI DEST", file=sys.stderr)
        return 2
    print(fetch_dataset(argv[1], Path(argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
