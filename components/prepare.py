from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare(params_json: str, source_uri: str, dvc_repo: str, dvc_rev: str, resolution: int,
            dataset: Output[Dataset]):
    """Raw images -> canonical dataset (a folder). ``source_uri``: a path in the pod, ``s3://`` (downloaded
    with boto3), or with ``dvc_repo`` the path inside that DVC repository at ``dvc_rev``; empty = the
    params' ``data.source.path``. ``resolution`` 0 = from the params."""
    from synthgate import stages
    from synthgate.kubeflow import io as kfp_io

    kfp_io.dataset_out(dataset, stages.prepare(
        kfp_io.source_params(params_json, source_uri, dvc_repo, dvc_rev, {"prepare.resolution": resolution}),
        out=kfp_io.folder(dataset), reporter=kfp_io.reporter()))
