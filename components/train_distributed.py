from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_distributed(params_json: str, generator_type: str, generator_size: str, train_steps: int, num_nodes: int,
                      gpus_per_node: int, trainer_image: str, dataset: Input[Dataset], generator: Output[Model],
                      tracking_uri: str = ""):
    """Multi-node training: a Kubeflow Trainer TrainJob of ``num_nodes`` x ``gpus_per_node`` GPUs running
    ``trainer_image``, submitted and awaited from this (CPU) step; the model lands in ``generator``.
    ``tracking_uri``: the MLflow server the job logs to (empty: ``$MLFLOW_TRACKING_URI`` from the ConfigMap)."""
    from synthgate.kubeflow import trainjob

    trainjob.run_trainjob(
        params_json, {"generator.type": generator_type, "generator.size": generator_size, "train.steps": train_steps},
        dataset, generator, num_nodes, gpus_per_node, trainer_image, tracking_uri=tracking_uri)
