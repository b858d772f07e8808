"""``synthgate-synthesis``: prepare -> validate -> train -> sample -> evaluate -> gate -> register
[-> promote -> publish]. One container per stage (``components/``), train and sample on a GPU node.

By default a reviewer promotes in MLflow (``synthgate promote``, or the ``synthgate-publish``
pipeline after promoting); with ``auto_promote`` the run promotes through the gate-checked
``promote`` (which fails the run, naming the failing rules, when the gate failed) and then publishes
to ``publish_store`` when one is given.
"""

from collections.abc import Callable
from typing import Any

from components import (
    IMAGE,
    evaluate,
    gate,
    in_image,
    prepare,
    promote,
    publish,
    register,
    sample,
    train,
    validate,
)
from kfp import dsl

from pipelines import defaults
from pipelines.placement import configure

NAME = "synthgate-synthesis"


def build(gpu: bool = True, cache_training: bool = False, params_json: str | None = None,
          gate_policy_yaml: str | None = None) -> Callable[..., Any]:
    """The pipeline function. ``gpu``: train and sample request an ``nvidia.com/gpu`` on a GPU node
    (a compile-time choice in KFP); ``cache_training``: let KFP reuse a training run for equal inputs."""
    default_params = defaults.params_json() if params_json is None else params_json
    default_policy = defaults.gate_policy_yaml() if gate_policy_yaml is None else gate_policy_yaml
    # without GPUs, the GPU steps run in the (smaller) CPU image
    train_op, sample_op, publish_op = (train, sample, publish) if gpu else (
        in_image(train, IMAGE), in_image(sample, IMAGE), in_image(publish, IMAGE))

    @dsl.pipeline(name=NAME, description="Train, evaluate, gate and register a class-conditional generator of "
                                         "synthetic medical images; optionally promote and publish.")
    def synthesis(
        source_uri: str = "",
        dvc_repo: str = "",
        dvc_rev: str = "",
        generator_type: str = "",
        generator_size: str = "",
        train_steps: int = 0,
        samples_per_class: int = 0,
        resolution: int = 0,
        gate_policy_yaml: str = default_policy,
        model_name: str = "",
        auto_promote: bool = False,
        alias: str = "approved",
        publish_store: str = "",
        tracking_uri: str = "",
        params_json: str = default_params,
    ):
        """Train, evaluate, gate and register a generator.

        Args:
            source_uri: Raw images: a path in the pod, s3://bucket/key (MinIO via the ConfigMap), or with dvc_repo the path inside that repository. Empty: data.source.path of params_json.
            dvc_repo: A DVC repository URL (git); source_uri is then fetched with `dvc get` at dvc_rev.
            dvc_rev: Git revision (tag, branch, commit) of dvc_repo.
            generator_type: diffusion or gan. Empty: generator.type of params_json.
            generator_size: tiny, small or base. Empty: generator.size of params_json.
            train_steps: Training steps. 0: train.steps of params_json.
            samples_per_class: Synthetic images per class. 0: sample.per_class of params_json.
            resolution: Image size in pixels (a multiple of 8). 0: prepare.resolution of params_json.
            gate_policy_yaml: The release policy (gates.yaml content). Default: the repository's gates.yaml.
            model_name: Registered model name. Empty: named after the dataset (e.g. mednist-generator).
            auto_promote: Promote the new version to alias when its gate passed (the run fails when it did not). Default: a reviewer promotes in MLflow.
            alias: The alias promote sets and publish reads.
            publish_store: With auto_promote: publish the synthetic dataset to this store (s3://bucket/prefix or a path). Empty: do not publish.
            tracking_uri: MLflow tracking server. Empty: MLFLOW_TRACKING_URI from the synthgate-endpoints ConfigMap.
            params_json: The experiment settings (params.yaml as JSON); the parameters above override fields of it.
        """
        prep = configure(prepare(params_json=params_json, source_uri=source_uri, dvc_repo=dvc_repo, dvc_rev=dvc_rev,
                                 resolution=resolution), "prepare", gpu)
        val = configure(validate(params_json=params_json, dataset=prep.outputs["dataset"]), "validate", gpu)
        real = val.outputs["validated"]
        tr = configure(train_op(params_json=params_json, generator_type=generator_type, generator_size=generator_size,
                             train_steps=train_steps, dataset=real), "train", gpu, cache_training)
        smp = configure(sample_op(params_json=params_json, samples_per_class=samples_per_class,
                               generator=tr.outputs["generator"], real=real), "sample", gpu)
        ev = configure(evaluate(params_json=params_json, real=real, synthetic=smp.outputs["synthetic"]),
                       "evaluate", gpu)
        gt = configure(gate(gate_policy_yaml=gate_policy_yaml, evaluation=ev.outputs["evaluation"]), "gate", gpu)
        reg = configure(register(model_name=model_name, tracking_uri=tracking_uri, generator=tr.outputs["generator"],
                                 evaluation=ev.outputs["evaluation"], gate=gt.outputs["gate"], real=real,
                                 synthetic=smp.outputs["synthetic"]), "register", gpu)
        with dsl.If(auto_promote == True, name="auto-promote"):  # noqa: E712 (a KFP condition, not Python)
            pro = configure(promote(alias=alias, tracking_uri=tracking_uri, registered=reg.outputs["registered"]),
                            "promote", gpu)
            with dsl.If(publish_store != "", name="publish-to-store"):
                configure(publish_op(params_json=params_json, samples_per_class=samples_per_class, store=publish_store,
                                  alias=alias, model_name="", tracking_uri=tracking_uri,
                                  registered=reg.outputs["registered"], samples=smp.outputs["synthetic"],
                                  evaluation=ev.outputs["evaluation"]).after(pro), "publish", gpu)

    return synthesis


#: The GPU pipeline with the defaults from the repository (what ``pipelines/compiled/synthesis.yaml`` holds).
synthesis = build()
