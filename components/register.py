from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(model_name: str, tracking_uri: str, generator: Input[Model], evaluation: Input[Artifact],
             gate: Input[Artifact], real: Input[Dataset], synthetic: Input[Dataset],
             registered: Output[Artifact]) -> str:
    """A new MLflow model version with metrics, gate record and lineage tags (never promotes).
    ``real``/``synthetic`` are inputs so that the datasets the evaluation names are present in this pod
    (the default model name and the sample grid come from them). Returns ``NAME:VERSION``."""
    from synthgate import stages
    from synthgate.kubeflow import io as kfp_io

    return kfp_io.registered_out(registered, stages.register(
        model=kfp_io.folder(generator), evaluation=kfp_io.evaluation_json(evaluation), gate=kfp_io.gate_json(gate),
        record=kfp_io.registered_json(registered), name=kfp_io.optional(model_name),
        tracking_uri=kfp_io.optional(tracking_uri)))
