from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_distributed(params_json: str, generator_type: str, generator_size: str, train_steps: int, num_nodes: int,
                      gpus_per_node: int, trainer_image: str, dataset: Input[Dataset], generator: Output[Model]):
    """Multi-node training: a Kubeflow Trainer TrainJob of ``num_nodes`` x ``gpus_per_node`` GPUs running
    ``trainer_image``, submitted and awaited from this (CPU) step; the model lands in ``generator``."""
    from synthgate.generators import distributed

    distributed.run_trainjob(
        params_json, {"generator.type": generator_type, "generator.size": generator_size, "train.steps": train_steps},
        dataset, generator, num_nodes, gpus_per_node, trainer_image)
