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

import contextlib
import copy
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist

from synthgate.devices import resolve_device
from synthgate.errors import ConfigError, SynthgateError

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
#: Where a node of a pipeline-launched TrainJob writes the params and trains (no shared volume).
JOB_PARAMS_FILE = "/tmp/synthgate-params.json"
JOB_OUT_DIR = "/tmp/out"
JOB_MODEL_DIR = f"{JOB_OUT_DIR}/model"
#: Environment of the TrainJob's container: the params as JSON, and where rank 0 puts the model.
PARAMS_ENV = "SYNTHGATE_PARAMS_JSON"
MODEL_URI_ENV = "SYNTHGATE_MODEL_URI"
#: The Kubeflow Trainer v2 API.
TRAINER_GROUP, TRAINER_VERSION, TRAINJOB_PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
#: The namespace of the pod a step runs in (mounted with its service account token).
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
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
    extra = extra or {}
    env: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in extra.items()]
    for source, name, keys in (("secretKeyRef", secret, secret_keys), ("configMapKeyRef", configmap, configmap_keys)):
        if name:  # a value given in ``extra`` wins over the Secret's/ConfigMap's (no duplicate names)
            env += [{"name": k, "valueFrom": {source: {"name": name, "key": k, "optional": True}}}
                    for k in keys if k not in extra]
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
    params_json: str | None = None,
    model_uri: str | None = None,
    model_dir: str = JOB_MODEL_DIR,
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

    For a run without shared storage (what :func:`run_trainjob` submits from a pipeline step):
    ``params_json`` travels in the environment (``SYNTHGATE_PARAMS_JSON``) and each node writes it
    to :data:`JOB_PARAMS_FILE` before training (give that path as ``--params``); with ``model_uri``
    (``s3://bucket/prefix/``) node rank 0 uploads ``model_dir`` (``<--out>/model``) there after
    torchrun has finished (``upload-model``), so the job completes only once the model is stored.
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
    if dataset_uri or params_json is not None or model_uri:
        lines = ["set -euo pipefail"]
        extra: dict[str, str] = {}
        if params_json is not None:
            lines.append(f'printf \'%s\' "${PARAMS_ENV}" > {JOB_PARAMS_FILE}')
            extra[PARAMS_ENV] = params_json
        if dataset_uri:
            lines.append(f'python -m synthgate.generators.distributed fetch-dataset "$SYNTHGATE_DATASET_URI" '
                         f"{scratch_dir}/dataset")
            extra["SYNTHGATE_DATASET_URI"] = dataset_uri
        if model_uri:  # node rank 0 holds global rank 0, the one that wrote the model
            lines += [f'{" ".join(TORCHRUN)} "$@"',
                      'if [ "${PET_NODE_RANK:-0}" = "0" ]; then',
                      f'  python -m synthgate.generators.distributed upload-model {model_dir} "${MODEL_URI_ENV}"',
                      "fi"]
            extra[MODEL_URI_ENV] = model_uri
        else:
            lines.append(f'exec {" ".join(TORCHRUN)} "$@"')
        command, cmd_args = ["bash", "-c", "\n".join(lines) + "\n", "synthgate"], list(args)
        env = {**(env or {}), **extra}
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


# ----------------------------------------------------------------------------------------------
# a TrainJob launched from a pipeline step


class TrainJobError(SynthgateError):
    """A TrainJob could not be launched, failed, or did not finish in time."""


def _endpoint(env: dict[str, str]) -> str | None:
    return env.get("AWS_ENDPOINT_URL") or env.get("MLFLOW_S3_ENDPOINT_URL") or None


def artifact_s3_uri(uri: str, env: dict[str, str] | None = None) -> tuple[str, str | None]:
    """Where the TrainJob's pods read a KFP artifact: ``(s3://bucket/key, endpoint or None)``.

    On a cluster KFP keeps artifacts in object storage: ``minio://bucket/key`` (KFP's MinIO, reached
    at ``AWS_ENDPOINT_URL`` or else ``MLFLOW_S3_ENDPOINT_URL``) or ``s3://bucket/key``. A local path
    (``kfp.local``) cannot be read by other pods and is refused.
    """
    env = dict(os.environ) if env is None else env
    uri = (uri or "").strip()
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme == "file":
        raise TrainJobError(
            f"dataset artifact {uri or '(no uri)'} is a local path: multi-node training needs a cluster with object "
            "storage (the TrainJob's pods download the dataset from S3/MinIO)",
            hint="run the pipeline on Kubeflow Pipelines, or train on one node (train_nodes=1)")
    bucket, _, key = rest.partition("/")
    if not bucket or not key.strip("/"):
        raise TrainJobError(f"dataset artifact {uri}: no bucket and key")
    if scheme == "minio":
        endpoint = _endpoint(env)
        if not endpoint:
            raise TrainJobError(f"dataset artifact {uri} is in MinIO but no endpoint is set",
                                hint="set AWS_ENDPOINT_URL (or MLFLOW_S3_ENDPOINT_URL) in the synthgate-endpoints "
                                     "ConfigMap")
        return f"s3://{bucket}/{key.strip('/')}", endpoint
    if scheme == "s3":
        return f"s3://{bucket}/{key.strip('/')}", _endpoint(env)
    raise TrainJobError(f"dataset artifact {uri}: {scheme}:// storage is not supported for multi-node training",
                        hint="KFP's artifact store must be S3 or MinIO")


def output_prefix(dataset_s3: str, job_name: str, env: dict[str, str] | None = None) -> str:
    """``s3://<bucket>/trainjobs/<job_name>/``: the bucket is ``SYNTHGATE_ARTIFACTS_BUCKET`` or else the
    dataset artifact's (KFP's artifact bucket, which the step's credentials can already write)."""
    env = dict(os.environ) if env is None else env
    bucket = (env.get("SYNTHGATE_ARTIFACTS_BUCKET") or "").strip().removeprefix("s3://").strip("/")
    bucket = bucket or dataset_s3.removeprefix("s3://").split("/", 1)[0]
    return f"s3://{bucket}/trainjobs/{job_name}/"


def pod_namespace(env: dict[str, str] | None = None, path: Path = NAMESPACE_FILE) -> str:
    """The namespace this pod runs in (the service account's mount, else ``POD_NAMESPACE``/``NAMESPACE``)."""
    env = dict(os.environ) if env is None else env
    with contextlib.suppress(OSError):
        text = Path(path).read_text().strip()
        if text:
            return text
    name = (env.get("POD_NAMESPACE") or env.get("NAMESPACE") or "").strip()
    if not name:
        raise TrainJobError("cannot tell the namespace to create the TrainJob in",
                            hint=f"run in a pod (it reads {NAMESPACE_FILE}) or set POD_NAMESPACE")
    return name


@contextlib.contextmanager
def _s3_endpoint(endpoint: str | None) -> Iterator[None]:
    """``SYNTHGATE_S3_ENDPOINT_URL`` (which the stores prefer) set to ``endpoint`` for a block."""
    if not endpoint:
        yield
        return
    old = os.environ.get("SYNTHGATE_S3_ENDPOINT_URL")
    os.environ["SYNTHGATE_S3_ENDPOINT_URL"] = endpoint
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SYNTHGATE_S3_ENDPOINT_URL", None)
        else:
            os.environ["SYNTHGATE_S3_ENDPOINT_URL"] = old


def upload_model(model_dir: Path, uri: str) -> int:
    """Copy the model folder written by rank 0 to ``uri`` (``s3://bucket/prefix/`` or a folder);
    returns the number of files (``python -m synthgate.generators.distributed upload-model DIR URI``)."""
    from synthgate.publish.stores import open_store

    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.rglob("*") if p.is_file()) if model_dir.is_dir() else []
    if not files:
        raise ConfigError(f"{model_dir}: no model files to upload", hint="training writes <--out>/model on rank 0")
    store = open_store(uri)
    for f in files:
        store.put_file(f, f.relative_to(model_dir).as_posix())
    return len(files)


def trainjob_conditions(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The TrainJob's status conditions that are ``True``, by type (``Complete``, ``Failed``, ...)."""
    conds = ((job or {}).get("status") or {}).get("conditions") or []
    return {c.get("type", ""): c for c in conds if str(c.get("status", "")).lower() == "true"}


def wait_for_trainjob(api: Any, namespace: str, name: str, timeout_s: float = 24 * 3600.0, poll_s: float = 30.0,
                      sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Poll the TrainJob until its ``Complete`` or ``Failed`` condition is True; returns the object.
    ``Failed`` (its message in the error) and a timeout raise :class:`TrainJobError`."""
    deadline = clock() + timeout_s
    while True:
        job = api.get_namespaced_custom_object(TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOB_PLURAL, name)
        conds = trainjob_conditions(job)
        if "Failed" in conds:
            c = conds["Failed"]
            raise TrainJobError(f"TrainJob {namespace}/{name} failed: {c.get('message') or c.get('reason') or '?'}",
                                hint=f"kubectl logs -n {namespace} -l jobset.sigs.k8s.io/jobset-name={name}")
        if "Complete" in conds:
            return job
        if clock() >= deadline:
            raise TrainJobError(f"TrainJob {namespace}/{name} did not finish within {timeout_s:.0f} s",
                                hint=f"kubectl get trainjob -n {namespace} {name}; raise the timeout")
        sleep(poll_s)


def _in_cluster_api() -> Any:
    from kubernetes import client, config

    config.load_incluster_config()
    return client.CustomObjectsApi()


def run_trainjob(
    params_json: str,
    overrides: dict[str, Any] | None,
    dataset: Any,
    generator: Any,
    num_nodes: int,
    gpus_per_node: int,
    image: str,
    *,
    api: Any = None,
    namespace: str | None = None,
    name: str | None = None,
    timeout_s: float = 24 * 3600.0,
    poll_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    env: dict[str, str] | None = None,
    tracking_uri: str | None = None,
) -> Path:
    """Train on ``num_nodes`` x ``gpus_per_node`` GPUs as a Kubeflow Trainer ``TrainJob`` and put the
    model in the ``generator`` artifact (the ``train_distributed`` pipeline step).

    ``dataset`` and ``generator`` are KFP artifacts (duck-typed: ``.uri``; ``.path``/``.metadata``).
    The job's pods read the dataset where KFP stored it (:func:`artifact_s3_uri`; a local path is
    refused), each node fetches it, writes ``params_json`` (with ``overrides``, as in the ``train``
    step) to :data:`JOB_PARAMS_FILE` and runs ``synthgate train`` under torchrun; node rank 0
    uploads the model to :func:`output_prefix`. This step submits the job with ``api`` (a
    ``kubernetes.client.CustomObjectsApi``; None: in-cluster config) in ``namespace`` (None: the
    pod's), polls it (:func:`wait_for_trainjob`) and downloads the model folder. Returns its path.
    ``tracking_uri`` (empty: not given) replaces the ConfigMap's ``MLFLOW_TRACKING_URI`` in the job's pods.
    """
    from synthgate import kfp_io

    env = dict(os.environ) if env is None else env
    p = kfp_io.params(params_json, overrides)
    dataset_s3, endpoint = artifact_s3_uri(getattr(dataset, "uri", ""), env)
    name = name or f"synthgate-train-{uuid.uuid4().hex[:8]}"
    out_uri = output_prefix(dataset_s3, name, env)
    namespace = namespace or pod_namespace(env)
    body = trainjob_manifest(
        name, image, num_nodes, gpus_per_node,
        ["train", "--params", JOB_PARAMS_FILE, "--dataset", "/scratch/dataset", "--out", JOB_OUT_DIR],
        namespace, dataset_uri=dataset_s3, params_json=kfp_io.params_json(p), model_uri=out_uri,
        env={k: v for k, v in {"SYNTHGATE_S3_ENDPOINT_URL": endpoint, "MLFLOW_TRACKING_URI": tracking_uri}.items()
             if v} or None,
        labels={"synthgate.io/launched-by": "pipeline"})
    api = api if api is not None else _in_cluster_api()
    print(f"[synthgate] TrainJob {namespace}/{name}: {num_nodes} node(s) x {gpus_per_node} GPU(s), dataset "
          f"{dataset_s3}, model -> {out_uri}", flush=True)
    api.create_namespaced_custom_object(group=TRAINER_GROUP, version=TRAINER_VERSION, namespace=namespace,
                                        plural=TRAINJOB_PLURAL, body=body)
    wait_for_trainjob(api, namespace, name, timeout_s, poll_s, sleep)
    target = Path(generator.path)
    try:
        with _s3_endpoint(endpoint):
            fetch_dataset(out_uri, target)  # any store folder: here the model rank 0 uploaded
    except ConfigError:
        raise TrainJobError(f"TrainJob {namespace}/{name} completed but left no model at {out_uri}",
                            hint="node rank 0 uploads <--out>/model there; check its log") from None
    info_file = target / "synthgate_generator.json"
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(info_file.read_text())
    generator.metadata.update({k: v for k, v in {
        "steps": int(p.train.steps), "type": (info.get("generator") or {}).get("type"),
        "dataset_content_hash": info.get("dataset_content_hash"), "trainjob": f"{namespace}/{name}",
        "num_nodes": int(num_nodes), "gpus_per_node": int(gpus_per_node), "model_uri": out_uri}.items()
        if v is not None})
    print(f"[synthgate] TrainJob {namespace}/{name} complete; model in {target}", flush=True)
    return target


USAGE = ("usage: python -m synthgate.generators.distributed fetch-dataset URI DEST\n"
         "       python -m synthgate.generators.distributed upload-model DIR URI")


def main(argv: list[str] | None = None) -> int:
    """``python -m synthgate.generators.distributed fetch-dataset URI DEST`` / ``upload-model DIR URI``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in ("fetch-dataset", "upload-model"):
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] == "fetch-dataset":
        print(fetch_dataset(argv[1], Path(argv[2])))
    else:
        print(f"uploaded {upload_model(Path(argv[1]), argv[2])} file(s) to {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
