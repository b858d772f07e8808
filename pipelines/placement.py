"""Where each step runs: resources, GPU scheduling, the cluster's Secrets and ConfigMap as environment,
and caching. The cluster's names (Secrets ``synthgate-s3`` and ``synthgate-mlflow-pipeline``, ConfigMap ``synthgate-endpoints``, GPU
resource, node label and toleration; ServiceAccount ``synthgate-pipeline``, given at submit time)
are :mod:`synthgate.kubeflow.cluster`'s, which match the manifests in ``k8s/``."""

from __future__ import annotations

from kfp import kubernetes
from kfp.dsl import PipelineTask

from synthgate.kubeflow.cluster import (
    CONFIG_MAP,
    CONFIG_MAP_KEYS,
    GPU_NODE_LABEL,
    GPU_RESOURCE,
    GPU_TOLERATIONS,
    MLFLOW_SECRET,
    MLFLOW_SECRET_KEYS,
    SECRET,
    SECRET_KEYS,
    TRUST_CONFIG_MAP,
    TRUST_CONFIG_MAP_KEY,
)

#: Steps that read or write S3 (the data source, MLflow's artifact store, the dataset store).
S3_STEPS = frozenset({"prepare", "train", "train_distributed", "register", "promote", "publish"})
#: Steps that log in to MLflow (runs, the registry): they get the pipeline's MLflow account.
MLFLOW_STEPS = frozenset({"train", "train_distributed", "register", "promote", "publish"})
#: Deterministic steps whose outputs KFP may reuse for equal inputs (sampling is seeded; a new model is
#: a new input, so it reruns after every training run). Training is cached only when
#: compiled with ``--cache-training``; register, promote and publish have side effects: never cached.
CACHED_STEPS = frozenset({"prepare", "validate", "sample", "evaluate", "gate"})
#: Steps that get a GPU in the GPU pipelines: training and sampling the generator, and evaluate (the
#: reference encoder and the utility classifiers train there, the memorization scan is a matmul, and
#: Inception-FID needs torch-fidelity, which only the CUDA image holds).
GPU_STEPS = frozenset({"train", "sample", "evaluate", "publish"})

#: The GPU train step is retried this often (a preempted or evicted GPU node); with the pipeline's
#: checkpoint_uri the retry resumes from the newest mirrored checkpoint instead of step 0.
TRAIN_RETRIES = 2
TRAIN_RETRY_BACKOFF = "60s"

#: (cpu request, cpu limit, memory request, memory limit) per step.
RESOURCES: dict[str, tuple[str, str, str, str]] = {
    "prepare": ("2", "4", "4Gi", "16Gi"),
    "validate": ("2", "4", "4Gi", "16Gi"),
    "train": ("4", "8", "16Gi", "32Gi"),
    # submits a TrainJob, waits, downloads the model: the job's pods get the GPUs
    "train_distributed": ("500m", "1", "1Gi", "4Gi"),
    "sample": ("4", "8", "8Gi", "32Gi"),
    "evaluate": ("4", "8", "8Gi", "32Gi"),
    "gate": ("500m", "1", "512Mi", "2Gi"),
    "register": ("1", "2", "2Gi", "8Gi"),
    "promote": ("500m", "1", "512Mi", "2Gi"),
    "publish": ("2", "4", "4Gi", "16Gi"),
}


def configure(task: PipelineTask, step: str, gpu: bool, cache_training: bool = False) -> PipelineTask:
    """Resources, caching, environment and (``gpu``) GPU scheduling for the task of ``step``."""
    cpu_req, cpu_lim, mem_req, mem_lim = RESOURCES[step]
    task.set_cpu_request(cpu_req).set_cpu_limit(cpu_lim).set_memory_request(mem_req).set_memory_limit(mem_lim)
    task.set_caching_options(step in CACHED_STEPS or (step == "train" and cache_training))
    kubernetes.use_config_map_as_env(task, config_map_name=CONFIG_MAP,
                                     config_map_key_to_env={k: k for k in CONFIG_MAP_KEYS})
    if step in S3_STEPS:
        kubernetes.use_secret_as_env(task, secret_name=SECRET, secret_key_to_env={k: k for k in SECRET_KEYS})
    if step in MLFLOW_STEPS:
        kubernetes.use_secret_as_env(task, secret_name=MLFLOW_SECRET,
                                     secret_key_to_env={k: k for k in MLFLOW_SECRET_KEYS})
        # the gatekeeper's public key: register, promote and publish verify releases with it
        kubernetes.use_config_map_as_env(task, config_map_name=TRUST_CONFIG_MAP,
                                         config_map_key_to_env={TRUST_CONFIG_MAP_KEY: TRUST_CONFIG_MAP_KEY})
    if gpu and step in GPU_STEPS:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1)
        kubernetes.add_node_selector(task, label_key=GPU_NODE_LABEL[0], label_value=GPU_NODE_LABEL[1])
        for toleration in GPU_TOLERATIONS:
            kubernetes.add_toleration(task, **toleration)
        if step == "train":
            task.set_retry(num_retries=TRAIN_RETRIES, backoff_duration=TRAIN_RETRY_BACKOFF)
    return task
