from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.images import CUDA_IMAGE


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def train(params_json: str, generator_type: str, generator_size: str, train_steps: int, dataset: Input[Dataset],
          generator: Output[Model], checkpoint_uri: str = "", tracking_uri: str = ""):
    """Class-conditional generator trained on the dataset's train split (``""``/0 = from the params).

    ``checkpoint_uri`` (s3://bucket/prefix): checkpoints are mirrored under it, in a folder of this run's
    task (:func:`synthgate.kubeflow.io.run_scoped`), and a restarted pod (preemption, a retry) resumes from
    the newest; empty: a restart starts over (the pod's work folder is new, so resuming finds nothing).
    ``tracking_uri``: the MLflow server the run logs to (empty: ``$MLFLOW_TRACKING_URI`` from the ConfigMap),
    the same as the register, promote and publish steps'."""
    from synthgate import stages
    from synthgate.kubeflow import io as kfp_io

    kfp_io.model_out(generator, stages.train(
        kfp_io.params(params_json, {"generator.type": generator_type, "generator.size": generator_size,
                                    "train.steps": train_steps}),
        dataset=kfp_io.folder(dataset), out=kfp_io.workdir("synthgate-train-"), reporter=kfp_io.reporter(), resume=True,
        checkpoint_uri=kfp_io.run_scoped(checkpoint_uri, generator), tracking_uri=kfp_io.optional(tracking_uri)))
