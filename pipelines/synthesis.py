"""``synthgate-synthesis``: prepare -> validate -> train -> sample -> evaluate -> gate -> register
[-> promote -> publish]. One container per stage (``components/``), train and sample on a GPU node.

By default a reviewer promotes in MLflow (``synthgate promote``, or the ``synthgate-publish``
pipeline after promoting); with ``auto_promote`` the run promotes through the gate-checked
``promote`` (which fails the run, naming the failing rules, when the gate failed) and then publishes
to ``publish_store`` when one is given.
"""

import inspect
from collections.abc import Callable
from typing import Any

from components import (
    CUDA_IMAGE,
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
    train_distributed,
    validate,
)
from kfp import dsl, kubernetes

from pipelines import defaults
from pipelines.placement import configure

NAME = "synthgate-synthesis"
#: Parameters of the GPU pipeline only: multi-node training as a Kubeflow Trainer TrainJob.
MULTI_NODE_PARAMS = ("train_nodes", "gpus_per_node")


def build(gpu: bool = True, cache_training: bool = False, params_json: str | None = None,
          gate_policy_yaml: str | None = None) -> Callable[..., Any]:
    """The pipeline function. ``gpu``: train, sample, evaluate and publish request an ``nvidia.com/gpu``
    on a GPU node
    (a compile-time choice in KFP); ``cache_training``: let KFP reuse a training run for equal inputs.

    Only the GPU pipeline has ``train_nodes``/``gpus_per_node``: with ``train_nodes > 1`` the
    ``train-distributed`` step launches a Kubeflow Trainer ``TrainJob`` instead of training in its
    own pod (``dsl.If``/``dsl.Else``, and ``dsl.OneOf`` picks the generator for sample and register).
    The CPU pipeline keeps the single ``train`` step: a TrainJob needs GPU nodes and object storage,
    and ``kfp.local`` (which runs the CPU pipeline in the tests) cannot resolve a ``OneOf`` of artifacts.
    """
    default_params = defaults.params_json() if params_json is None else params_json
    default_policy = defaults.gate_policy_yaml() if gate_policy_yaml is None else gate_policy_yaml
    # without GPUs, the GPU steps run in the (smaller) CPU image
    train_op, sample_op, evaluate_op, publish_op = (train, sample, evaluate, publish) if gpu else (
        in_image(train, IMAGE), in_image(sample, IMAGE), in_image(evaluate, IMAGE), in_image(publish, IMAGE))

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
        checkpoint_uri: str = "",
        train_nodes: int = 1,
        gpus_per_node: int = 1,
    ):
        """Train, evaluate, gate and register a generator.

        Args:
            source_uri: Raw images: a path in the pod, s3://bucket/key (MinIO via the ConfigMap), or with dvc_repo the path inside that repository. Empty: data.source.path of params_json.
            dvc_repo: A DVC repository URL (git); source_uri is then fetched with `dvc get` at dvc_rev.
            dvc_rev: Git revision (tag, branch, commit) of dvc_repo.
            generator_type: diffusion, gan or latent. Empty: generator.type of params_json.
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
            checkpoint_uri: s3://bucket/prefix: the single-node train step mirrors its checkpoints under prefix (a folder per run and task), so a restarted pod (preempted node, retry) resumes from the newest. Empty: a restarted train step starts over.
            train_nodes: Training nodes. Above 1: a Kubeflow Trainer TrainJob trains on train_nodes x gpus_per_node GPUs (DDP under torchrun); the dataset and model travel through the artifact bucket.
            gpus_per_node: GPUs (training processes) per node of the TrainJob; used when train_nodes is above 1.
        """
        prep = configure(prepare(params_json=params_json, source_uri=source_uri, dvc_repo=dvc_repo, dvc_rev=dvc_rev,
                                 resolution=resolution), "prepare", gpu)
        val = configure(validate(params_json=params_json, dataset=prep.outputs["dataset"]), "validate", gpu)
        real = val.outputs["validated"]
        overrides = {"generator_type": generator_type, "generator_size": generator_size, "train_steps": train_steps,
                     "tracking_uri": tracking_uri}
        resumable = {"checkpoint_uri": checkpoint_uri}
        if gpu:
            with dsl.If(train_nodes > 1, name="multi-node"):
                dist = configure(train_distributed(params_json=params_json, **overrides, num_nodes=train_nodes,
                                                   gpus_per_node=gpus_per_node, trainer_image=CUDA_IMAGE,
                                                   dataset=real), "train_distributed", gpu)
                # the TrainJob goes into the namespace of this step's pod
                kubernetes.use_field_path_as_env(dist, env_name="POD_NAMESPACE", field_path="metadata.namespace")
            with dsl.Else(name="single-node"):
                tr = configure(train_op(params_json=params_json, **overrides, dataset=real, **resumable), "train",
                               gpu, cache_training)
            generator = dsl.OneOf(dist.outputs["generator"], tr.outputs["generator"])
        else:
            tr = configure(train_op(params_json=params_json, **overrides, dataset=real, **resumable), "train", gpu,
                           cache_training)
            generator = tr.outputs["generator"]
        smp = configure(sample_op(params_json=params_json, samples_per_class=samples_per_class,
                               generator=generator, real=real), "sample", gpu)
        ev = configure(evaluate_op(params_json=params_json, real=real, synthetic=smp.outputs["synthetic"]),
                       "evaluate", gpu)
        gt = configure(gate(gate_policy_yaml=gate_policy_yaml, evaluation=ev.outputs["evaluation"]), "gate", gpu)
        reg = configure(register(model_name=model_name, tracking_uri=tracking_uri, generator=generator,
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

    if not gpu:
        # The CPU pipeline has no train_nodes/gpus_per_node: KFP takes the parameters from the signature and
        # their descriptions from the docstring, and calls the function with its parameters positionally
        # (the two dropped ones come last and keep their defaults).
        sig = inspect.signature(synthesis)
        synthesis.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[p for n, p in sig.parameters.items() if n not in MULTI_NODE_PARAMS])
        synthesis.__doc__ = "\n".join(line for line in (synthesis.__doc__ or "").splitlines()
                                      if line.strip().split(":", 1)[0] not in MULTI_NODE_PARAMS)
    return dsl.pipeline(name=NAME, description="Train, evaluate, gate and register a class-conditional generator of "
                                               "synthetic medical images; optionally promote and publish.")(synthesis)


#: The GPU pipeline with the defaults from the repository (what ``pipelines/compiled/synthesis.yaml`` holds).
synthesis = build()
