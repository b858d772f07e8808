"""The names a synthgate cluster is configured with, in one place: what the manifests in ``k8s/``
create and what the pipeline steps, the TrainJobs and ``synthgate pipeline submit`` refer to.

Plain constants, no kfp or kubernetes import: ``pipelines/placement.py`` turns them into KFP
platform config, :mod:`synthgate.kubeflow.trainjob` into a TrainJob manifest, and
:mod:`synthgate.kubeflow.submit` and the CLI use the ServiceAccount. The dicts and lists here are
shared: copy them before changing one.
"""

from __future__ import annotations

from pathlib import Path

#: The Secret with the S3/MinIO credentials (created by the ``k8s/`` overlays), and the keys a step or a
#: training node reads.
SECRET = "synthgate-s3"
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

#: The Secret with the pipeline's MLflow account (the MLflow server runs basic-auth; created by the
#: operator in the profile namespace, k8s/README.md), and its keys, which MLflow's clients read.
MLFLOW_SECRET = "synthgate-mlflow-pipeline"
MLFLOW_SECRET_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")

#: The ConfigMap with the service endpoints (MLflow, S3/MinIO, Pushgateway; created by ``k8s/``).
CONFIG_MAP = "synthgate-endpoints"
#: Its keys that every pipeline step gets as environment variables of the same name.
CONFIG_MAP_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "PUSHGATEWAY_URL",
                   "SYNTHGATE_GATEKEEPER_URL")
#: The ConfigMap with the gatekeeper's trust root (its public key; created by the operator from the
#: ``trust.json`` of `synthgate gatekeeper init`, k8s/README.md), and its key, which every step gets as the
#: environment variable of the same name (the JSON itself): load, publish and pull verify with it.
TRUST_CONFIG_MAP = "synthgate-trust-root"
TRUST_CONFIG_MAP_KEY = "SYNTHGATE_TRUST_ROOT"
#: Its keys that a TrainJob's training nodes get (``valueFrom``, optional: the TrainJob API has no ``envFrom``).
ENDPOINT_KEYS = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME",
                 "PUSHGATEWAY_URL")

#: The ServiceAccount the manifests create for pipeline pods (S3, MLflow, TrainJob access); runs are
#: submitted with it.
SERVICE_ACCOUNT = "synthgate-pipeline"

#: The extended resource a GPU step or training node requests, and the taint key GPU nodes carry.
GPU_RESOURCE = "nvidia.com/gpu"
#: The node label (key, value) of a node with GPUs (set by the NVIDIA GPU operator's feature discovery).
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")
#: :data:`GPU_NODE_LABEL` as a pod's ``nodeSelector``.
GPU_NODE_SELECTOR = {GPU_NODE_LABEL[0]: GPU_NODE_LABEL[1]}
#: The toleration of the GPU nodes' ``nvidia.com/gpu`` taint, as a pod's ``tolerations``.
GPU_TOLERATIONS = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]

#: The namespace of the pod a step runs in (mounted with its service account token).
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
