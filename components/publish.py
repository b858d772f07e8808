from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.images import CUDA_IMAGE


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def publish(params_json: str, samples_per_class: int, store: str, alias: str, model_name: str, tracking_uri: str,
            publication: Output[Artifact], registered: Optional[Input[Artifact]] = None,  # noqa: UP045 (KFP parses Optional)
            samples: Optional[Input[Dataset]] = None, evaluation: Optional[Input[Artifact]] = None) -> str:  # noqa: UP045
    """The version holding ``alias`` -> a published synthetic dataset (images, manifest with sha256, data
    card, report) in ``store`` (a folder or s3://bucket/prefix). The model is ``model_name``, or the one in
    ``registered``. Takes ``samples`` when they are the set the version was gated on, else samples
    ``samples_per_class`` (0 = from the params) from the registered model. Returns the dataset's URI."""
    from synthgate import stages
    from synthgate.kubeflow import io as kfp_io

    return kfp_io.published_out(publication, stages.publish(
        kfp_io.params(params_json, {"sample.per_class": samples_per_class}),
        model=kfp_io.model_name(model_name, registered), store=store, alias=alias,
        samples=kfp_io.optional_folder(samples), evaluation=kfp_io.optional_folder(evaluation),
        tracking_uri=kfp_io.optional(tracking_uri), reporter=kfp_io.reporter()))
