from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.images import CUDA_IMAGE


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def sample(params_json: str, samples_per_class: int, generator: Input[Model], real: Input[Dataset],
           synthetic: Output[Dataset]):
    """Synthetic canonical dataset: ``samples_per_class`` images per class (0 = from the params)."""
    from synthgate import stages
    from synthgate.kubeflow import io as kfp_io

    kfp_io.dataset_out(synthetic, stages.sample(
        kfp_io.params(params_json, {"sample.per_class": samples_per_class}), model=kfp_io.folder(generator),
        out=kfp_io.folder(synthetic), real=kfp_io.folder(real), reporter=kfp_io.reporter()))
