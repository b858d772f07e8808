from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from components.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate(params_json: str, dataset: Input[Dataset], validated: Output[Dataset], report: Output[Artifact],
             data_docs: Output[HTML]):
    """Great Expectations suite, cross-split duplicates, DICOM PHI: the validated dataset, or the step fails
    with the failing checks. ``report``: validation.json, duplicates.csv, the data docs site."""
    from synthgate import stages
    from synthgate.kubeflow import io as kfp_io

    kfp_io.validation_out(validated, report, data_docs, stages.validate(
        kfp_io.params(params_json), dataset=kfp_io.folder(dataset), out=kfp_io.folder(validated),
        report_dir=kfp_io.folder(report), reporter=kfp_io.reporter()))
