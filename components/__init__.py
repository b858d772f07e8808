"""Kubeflow Pipelines components: one lightweight Python component per stage, each running in the
project's image (``components.images``). A component body only imports synthgate and calls its
stage in :mod:`synthgate.stages`; :mod:`synthgate.kubeflow.io` turns pipeline parameters and KFP's
typed artifacts into the stage's arguments and records the result on the outputs (docs/ARCHITECTURE.md,
principle 1). ``train_distributed`` calls :func:`synthgate.kubeflow.trainjob.run_trainjob`. The
Kubeflow glue itself lives in :mod:`synthgate.kubeflow`; this folder holds only the definitions.
"""

from kfp import dsl
from kfp.dsl.python_component import PythonComponent

from components.evaluate import evaluate
from components.gate import gate
from components.images import CUDA_IMAGE, IMAGE
from components.prepare import prepare
from components.promote import promote
from components.publish import publish
from components.register import register
from components.sample import sample
from components.train import train
from components.train_distributed import train_distributed
from components.validate import validate

#: Every component, in flow order, keyed by the stage function it calls.
COMPONENTS = {"prepare": prepare, "validate": validate, "train": train, "sample": sample, "evaluate": evaluate,
              "gate": gate, "register": register, "promote": promote, "publish": publish}


#: Not a stage of its own: launches ``train`` as a multi-node Kubeflow Trainer TrainJob (GPU pipeline).
DISTRIBUTED = {"train_distributed": train_distributed}


def in_image(component: PythonComponent, image: str) -> PythonComponent:
    """The same component in another image: the CPU variants of the GPU steps run in the CPU image."""
    return dsl.component(base_image=image, install_kfp_package=False)(component.python_func)


__all__ = ["COMPONENTS", "CUDA_IMAGE", "DISTRIBUTED", "IMAGE", "evaluate", "in_image", "gate", "prepare", "promote", "publish", "register",
           "sample", "train", "train_distributed", "validate"]
