"""``synthgate-publish``: publish the model version that holds an alias, sampling from the registered
model. For a reviewer who promoted a version in the MLflow UI (or with ``synthgate promote``)."""

from collections.abc import Callable
from typing import Any

from components import IMAGE, in_image
from components import publish as publish_component
from kfp import dsl

from pipelines import defaults
from pipelines.placement import configure

NAME = "synthgate-publish"


def build(gpu: bool = True, params_json: str | None = None) -> Callable[..., Any]:
    """The pipeline function; ``gpu``: the publish step samples on a GPU node."""
    default_params = defaults.params_json() if params_json is None else params_json
    publish_op = publish_component if gpu else in_image(publish_component, IMAGE)

    @dsl.pipeline(name=NAME, description="Publish the synthetic dataset of the model version holding an alias.")
    def publish(
        model_name: str,
        store: str = "s3://synthgate-datasets/",
        alias: str = "approved",
        samples_per_class: int = 0,
        tracking_uri: str = "",
        params_json: str = default_params,
    ):
        """Publish an approved generator's synthetic dataset.

        Args:
            model_name: Registered model name (e.g. mednist-generator).
            store: Where to publish: s3://bucket/prefix (MinIO via the ConfigMap) or a path.
            alias: The alias whose version is published; refused when its gate record does not verify.
            samples_per_class: Synthetic images per class. 0: sample.per_class of params_json.
            tracking_uri: MLflow tracking server. Empty: MLFLOW_TRACKING_URI from the synthgate-endpoints ConfigMap.
            params_json: The experiment settings (params.yaml as JSON); its sample section drives the sampler.
        """
        configure(publish_op(params_json=params_json, samples_per_class=samples_per_class, store=store,
                                    alias=alias, model_name=model_name, tracking_uri=tracking_uri),
                  "publish", gpu)

    return publish


publish = build()
