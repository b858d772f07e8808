"""Everything synthgate knows about Kubeflow, in one place.

- :mod:`synthgate.kubeflow.cluster`: the cluster's names (Secret, ConfigMap and their keys,
  ServiceAccount, GPU resource, node label and toleration), plain constants.
- :mod:`synthgate.kubeflow.io`: the glue between a KFP component and its stage in
  :mod:`synthgate.stages` (pipeline parameters in, KFP's typed artifacts out).
- :mod:`synthgate.kubeflow.trainjob`: multi-node training as a Kubeflow Trainer ``TrainJob`` (the
  manifest, launching and awaiting it from a pipeline step, and what its nodes run before and
  after torchrun: ``synthgate trainjob fetch-dataset`` / ``upload-model``).
- :mod:`synthgate.kubeflow.submit`: ``synthgate pipeline compile`` / ``submit``.

The top-level ``components/`` and ``pipelines/`` folders of the repository keep the component and
pipeline definitions and the compiled YAML (``pipelines/compiled/``); they only call into this
subpackage. The DDP runtime that the training nodes use stays in :mod:`synthgate.generators.distributed`.
Nothing here imports kfp at module level.
"""
