from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from components.images import CUDA_IMAGE


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def evaluate(params_json: str, real: Input[Dataset], synthetic: Input[Dataset], evaluation: Output[Artifact],
             report: Output[HTML], metrics: Output[Metrics]):
    """Fidelity, variety, memorization/privacy, utility. ``evaluation``: evaluation.json + report.html;
    ``report``: the HTML report (rendered in the KFP UI); ``metrics``: the headline numbers."""
    from synthgate import stages
    from synthgate.kubeflow import io as kfp_io

    kfp_io.evaluation_out(evaluation, report, metrics, stages.evaluate(
        kfp_io.params(params_json), real=kfp_io.folder(real), synthetic=kfp_io.folder(synthetic),
        out=kfp_io.folder(evaluation), reporter=kfp_io.reporter()))
