from kfp import dsl
from kfp.dsl import Artifact, Input

from components.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote(alias: str, tracking_uri: str, registered: Input[Artifact]) -> str:
    """Set ``alias`` on the registered version only if its verified gate passed; a failed gate fails the
    step (and the run) with the failing rules."""
    from synthgate import stages
    from synthgate.kubeflow import io as kfp_io

    return stages.promote(*kfp_io.name_version(registered), alias=alias, tracking_uri=kfp_io.optional(tracking_uri))
