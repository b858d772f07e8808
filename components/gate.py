from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Output

from components.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def gate(gate_policy_yaml: str, evaluation: Input[Artifact], gate: Output[Artifact], metrics: Output[Metrics],
         report: Output[HTML]) -> bool:
    """The release policy (gates.yaml content; empty = the built-in defaults) applied to the evaluation:
    ``gate`` holds gate.json (pass/fail with value, threshold and reason per rule); ``report``: the
    evaluation report with the verdict and the failing rules at the top (rendered in the KFP UI). Returns
    whether it passed; a failed gate does not fail the step (the version is registered for the record;
    promote refuses it)."""
    from synthgate import stages
    from synthgate.kubeflow import io as kfp_io

    return kfp_io.gate_out(gate, metrics, report, stages.gate(
        evaluation=kfp_io.evaluation_json(evaluation), policy=kfp_io.text_file(gate_policy_yaml, "gates.yaml"),
        out=kfp_io.gate_json(gate)))
