"""Multi-node training as a Kubeflow Trainer v2 ``TrainJob``: the manifest
(:class:`TrainJobSpec`, :func:`trainjob_manifest`), launching and awaiting one from the pipeline's
``train_distributed`` step (:func:`run_trainjob`), and what each training node runs around
torchrun: ``synthgate trainjob fetch-dataset URI DEST`` (:func:`fetch_dataset`) before, and on node
rank 0 ``synthgate trainjob upload-model DIR URI`` (:func:`upload_model`) after.

The training itself (DDP under torchrun) is :mod:`synthgate.generators.distributed`; the cluster's
names (Secret, ConfigMap, GPU scheduling) are :mod:`synthgate.kubeflow.cluster`'s.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, Literal

from synthgate.errors import ConfigError, SynthgateError
from synthgate.kubeflow import io as kfp_io
from synthgate.kubeflow.cluster import (
    CONFIG_MAP,
    ENDPOINT_KEYS,
    GPU_NODE_SELECTOR,
    GPU_RESOURCE,
    GPU_TOLERATIONS,
    MLFLOW_SECRET,
    MLFLOW_SECRET_KEYS,
    NAMESPACE_FILE,
    SECRET,
    SECRET_KEYS,
)

#: The ClusterTrainingRuntime of Kubeflow Trainer v2 that sets torchrun's ``PET_*`` variables.
TORCH_RUNTIME = "torch-distributed"
#: Launch command of a training node: torchrun reads ``PET_NNODES``, ``PET_NPROC_PER_NODE``,
#: ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT`` (set by the Trainer runtime) from
#: the environment; the arguments that follow are ``synthgate``'s.
TORCHRUN = ["python", "-m", "torch.distributed.run", "-m", "synthgate"]
#: Where a node of a pipeline-launched TrainJob writes the params and trains (no shared volume).
JOB_PARAMS_FILE = "/tmp/synthgate-params.json"
JOB_OUT_DIR = "/tmp/out"
JOB_MODEL_DIR = f"{JOB_OUT_DIR}/model"
#: Environment of the TrainJob's container: the params as JSON, and where rank 0 puts the model.
PARAMS_ENV = "SYNTHGATE_PARAMS_JSON"
MODEL_URI_ENV = "SYNTHGATE_MODEL_URI"
#: The Kubeflow Trainer v2 API.
TRAINER_GROUP, TRAINER_VERSION, TRAINJOB_PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"


# ----------------------------------------------------------------------------------------------
# what a training node runs before and after torchrun


def fetch_dataset(uri: str, dest: Path) -> Path:
    """Copy a canonical dataset folder from ``s3://bucket/prefix`` (or a folder) to ``dest``.

    A training node runs this before ``torchrun`` when the dataset lives in S3/MinIO rather than
    on a mounted volume (``synthgate trainjob fetch-dataset URI DEST``).
    Endpoint and credentials come from the environment (``AWS_ENDPOINT_URL``, ``AWS_*``).
    """
    from synthgate.stores import open_store

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


def upload_model(model_dir: Path, uri: str) -> int:
    """Copy the model folder written by rank 0 to ``uri`` (``s3://bucket/prefix/`` or a folder);
    returns the number of files (``synthgate trainjob upload-model DIR URI``)."""
    from synthgate.stores import open_store

    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.rglob("*") if p.is_file()) if model_dir.is_dir() else []
    if not files:
        raise ConfigError(f"{model_dir}: no model files to upload", hint="training writes <--out>/model on rank 0")
    store = open_store(uri)
    for f in files:
        store.put_file(f, f.relative_to(model_dir).as_posix())
    return len(files)


# ----------------------------------------------------------------------------------------------
# the manifest


def _env_refs(refs: list[tuple[str, str | None, tuple[str, ...]]], extra: dict[str, str] | None) -> list[dict[str, Any]]:
    """``extra`` as values, then each (``secretKeyRef``/``configMapKeyRef``, name, keys) as optional
    references (a value given in ``extra`` wins: no duplicate names)."""
    extra = extra or {}
    env: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in extra.items()]
    seen = set(extra)
    for source, name, keys in refs:
        if name:
            env += [{"name": k, "valueFrom": {source: {"name": name, "key": k, "optional": True}}}
                    for k in keys if k not in seen]
            seen.update(keys)
    return env


@dataclass(frozen=True)
class TrainJobSpec:
    """What :func:`trainjob_manifest` builds a ``TrainJob`` from (the fields are described there).

    ``name``, ``image``, ``num_nodes``, ``gpus_per_node``, ``args`` and ``namespace`` may be given by
    position, the rest by keyword only."""

    name: str
    image: str
    num_nodes: int
    gpus_per_node: int
    args: list[str]
    namespace: str
    _: KW_ONLY
    runtime: str = TORCH_RUNTIME
    dataset_pvc: str | None = None
    mount_path: str = "/data"
    dataset_uri: str | None = None
    scratch_dir: str = "/scratch"
    secret: str | None = SECRET
    secret_keys: tuple[str, ...] = SECRET_KEYS
    mlflow_secret: str | None = MLFLOW_SECRET
    mlflow_secret_keys: tuple[str, ...] = MLFLOW_SECRET_KEYS
    configmap: str | None = CONFIG_MAP
    configmap_keys: tuple[str, ...] = ENDPOINT_KEYS
    env: dict[str, str] | None = None
    cpu: str | None = None
    memory: str | None = None
    shm_size: str = "8Gi"
    labels: dict[str, str] | None = None
    patch_api: Literal["podTemplateOverrides", "runtimePatches"] = "podTemplateOverrides"
    params_json: str | None = None
    model_uri: str | None = None
    model_dir: str = JOB_MODEL_DIR


def _command(spec: TrainJobSpec, args: list[str], env: dict[str, str] | None
             ) -> tuple[list[str], list[str], dict[str, str] | None]:
    """torchrun with synthgate's ``args``; in ``bash -c`` when the nodes first write the params file or
    fetch the dataset, or node rank 0 uploads the model after torchrun. -> (command, args, env)."""
    if not (spec.dataset_uri or spec.params_json is not None or spec.model_uri):
        return list(TORCHRUN), list(args), env
    lines = ["set -euo pipefail"]
    extra: dict[str, str] = {}
    if spec.params_json is not None:
        lines.append(f'printf \'%s\' "${PARAMS_ENV}" > {JOB_PARAMS_FILE}')
        extra[PARAMS_ENV] = spec.params_json
    if spec.dataset_uri:
        lines.append(f'synthgate trainjob fetch-dataset "$SYNTHGATE_DATASET_URI" {spec.scratch_dir}/dataset')
        extra["SYNTHGATE_DATASET_URI"] = spec.dataset_uri
    if spec.model_uri:  # node rank 0 holds global rank 0, the one that wrote the model
        lines += [f'{" ".join(TORCHRUN)} "$@"',
                  'if [ "${PET_NODE_RANK:-0}" = "0" ]; then',
                  f'  synthgate trainjob upload-model {spec.model_dir} "${MODEL_URI_ENV}"',
                  "fi"]
        extra[MODEL_URI_ENV] = spec.model_uri
    else:
        lines.append(f'exec {" ".join(TORCHRUN)} "$@"')
    return ["bash", "-c", "\n".join(lines) + "\n", "synthgate"], list(args), {**(env or {}), **extra}


def trainjob_manifest(spec: TrainJobSpec) -> dict[str, Any]:
    """A Kubeflow Trainer v2 ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) running
    ``synthgate <args>`` under torchrun on ``num_nodes`` nodes of ``gpus_per_node`` GPUs (the
    fields of ``spec``).

    ``args`` are synthgate's, e.g. ``["train", "--dataset", "/data/validated", "--out",
    "/data/runs/r1"]``. The ``torch-distributed`` runtime sets torchrun's ``PET_*`` variables
    (nodes, processes per node, node rank, master address); the command is
    :data:`TORCHRUN`. The run folder (``--out``) must be on storage that every node sees
    (a ReadWriteMany volume, ``dataset_pvc``): rank 0 writes the checkpoints and all ranks read
    them on resume. With ``dataset_uri`` (``s3://bucket/prefix``) each node first copies the
    dataset to ``<scratch_dir>/dataset`` on a node-local ``emptyDir`` (:func:`fetch_dataset`;
    give that path as ``--dataset``) and the command runs in ``bash -c``.

    The Secrets (S3; the pipeline's MLflow account, ``mlflow_secret``) and the ConfigMap reach the
    container as ``env`` entries (``valueFrom``, optional keys): the TrainJob API has no ``envFrom``. Node selector, toleration, volumes and a
    ``/dev/shm`` large enough for NCCL go in ``podTemplateOverrides`` (Trainer v2.0/v2.1) or, with
    ``patch_api="runtimePatches"``, in the ``runtimePatches`` of newer Trainer releases.

    For a run without shared storage (what :func:`run_trainjob` submits from a pipeline step):
    ``params_json`` travels in the environment (``SYNTHGATE_PARAMS_JSON``) and each node writes it
    to :data:`JOB_PARAMS_FILE` before training (give that path as ``--params``); with ``model_uri``
    (``s3://bucket/prefix/``) node rank 0 uploads ``model_dir`` (``<--out>/model``) there after
    torchrun has finished (``synthgate trainjob upload-model``), so the job completes only once the
    model is stored.
    """
    num_nodes, gpus_per_node, args, env = spec.num_nodes, spec.gpus_per_node, spec.args, spec.env
    if num_nodes < 1 or gpus_per_node < 1:
        raise ValueError("num_nodes and gpus_per_node must be at least 1")
    if not args:
        raise ValueError("args: give synthgate's arguments, e.g. ['train', '--dataset', ..., '--out', ...]")
    limits: dict[str, Any] = {GPU_RESOURCE: gpus_per_node}
    if spec.cpu:
        limits["cpu"] = spec.cpu
    if spec.memory:
        limits["memory"] = spec.memory
    command, cmd_args, env = _command(spec, args, env)
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": command,
        "args": cmd_args,
        "numNodes": num_nodes,
        "numProcPerNode": gpus_per_node,
        "resourcesPerNode": {"limits": limits},
        "env": _env_refs([("secretKeyRef", spec.secret, spec.secret_keys),
                          ("secretKeyRef", spec.mlflow_secret, spec.mlflow_secret_keys),
                          ("configMapKeyRef", spec.configmap, spec.configmap_keys)],
                         {"PYTHONUNBUFFERED": "1", **(env or {})}),
    }
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}}]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if spec.dataset_pvc:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": spec.dataset_pvc}})
        mounts.append({"name": "data", "mountPath": spec.mount_path})
    if spec.dataset_uri:  # each node's own copy: nodes never write the same files
        volumes.append({"name": "scratch", "emptyDir": {}})
        mounts.append({"name": "scratch", "mountPath": spec.scratch_dir})
    pod_spec = {
        "nodeSelector": dict(GPU_NODE_SELECTOR),
        "tolerations": copy.deepcopy(GPU_TOLERATIONS),
        "volumes": volumes,
        "containers": [{"name": "node", "volumeMounts": mounts}],
    }
    job_spec: dict[str, Any] = {
        "runtimeRef": {"name": spec.runtime, "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"},
        "trainer": trainer,
    }
    if spec.patch_api == "podTemplateOverrides":
        job_spec["podTemplateOverrides"] = [{"targetJobs": [{"name": "node"}], "spec": pod_spec}]
    elif spec.patch_api == "runtimePatches":
        job = {"name": "node", "template": {"spec": {"template": {"spec": pod_spec}}}}
        job_spec["runtimePatches"] = [{"manager": "synthgate",
                                       "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}}}]
    else:
        raise ValueError(f"patch_api: unknown {spec.patch_api!r}")
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": spec.name, "namespace": spec.namespace,
                     "labels": {"app.kubernetes.io/name": "synthgate", "app.kubernetes.io/component": "train",
                                **(spec.labels or {})}},
        "spec": job_spec,
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
    env = dict(os.environ) if env is None else env
    p = kfp_io.params(params_json, overrides)
    dataset_s3, endpoint = artifact_s3_uri(getattr(dataset, "uri", ""), env)
    name = name or f"synthgate-train-{uuid.uuid4().hex[:8]}"
    out_uri = output_prefix(dataset_s3, name, env)
    namespace = namespace or pod_namespace(env)
    body = trainjob_manifest(TrainJobSpec(
        name, image, num_nodes, gpus_per_node,
        ["train", "--params", JOB_PARAMS_FILE, "--dataset", "/scratch/dataset", "--out", JOB_OUT_DIR],
        namespace, dataset_uri=dataset_s3, params_json=kfp_io.params_json(p), model_uri=out_uri,
        env={k: v for k, v in {"SYNTHGATE_S3_ENDPOINT_URL": endpoint, "MLFLOW_TRACKING_URI": tracking_uri}.items()
             if v} or None,
        labels={"synthgate.io/launched-by": "pipeline"}))
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
