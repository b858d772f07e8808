"""The generator as an MLflow pyfunc model: ``mlflow.pyfunc.load_model("models:/NAME@approved")``
gives a model whose ``predict`` samples images, **after checking its own release gate**.

The model carries its proof: its artifacts are the generator folder, the evaluation and the gate
record it was registered with. ``load_context`` recomputes the decision from those records (the
verdict in ``gate.json`` is never trusted), checks that the evaluation is of these weights, and
refuses a generator that failed its gate, naming the failing rules. A failed version loads only
through :func:`synthgate.registry.registry.load_model`, and only with the override that
``synthgate promote --force --reason`` recorded on the version: that function hands the override
to ``load_context`` in-process (:data:`_OVERRIDE`, a context variable), never through MLflow's
``model_config``, which the environment (``MLFLOW_PYFUNC_INFERENCE_CONFIG``) or an edited
``MLmodel`` file could set. The model runs in the caller's process, so a caller who edits code
can still bypass it: this check stops the accident of loading a rejected generator through the
documented path; the registry's permissions and the promotion guard (issue #17) are what will
stop the deliberate.

Input: a DataFrame with columns ``class`` (a class name) and ``count`` (images of that class);
optional columns ``sampler``, ``steps``, ``guidance_scale``, ``seed`` (first row's value is used).
Output: uint8 array (N, H, W, C), rows in the order of the input (:func:`signature`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Any

import mlflow.pyfunc
import numpy as np

log = logging.getLogger(__name__)

#: The pyfunc model's artifacts (names in ``context.artifacts``).
MODEL_DIR, EVALUATION, GATE = "model_dir", "evaluation", "gate"
#: The release attestation ``load_model`` verified on the registry, for the ``load_context`` it calls.
_RELEASE: contextvars.ContextVar[Any] = contextvars.ContextVar("synthgate_release", default=None)


@contextlib.contextmanager
def verified_release(release: Any) -> Iterator[None]:
    """Hand ``release`` (a verified :class:`synthgate.trust.attest.Verified`) to ``load_context``."""
    token = _RELEASE.set(release)
    try:
        yield
    finally:
        _RELEASE.reset(token)


def signature(resolution: int, channels: int) -> Any:
    """The pyfunc's MLflow signature: (class, count[, sampler, steps, guidance_scale, seed]) -> uint8
    images (N, resolution, resolution, channels)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    inputs = Schema([ColSpec("string", "class"), ColSpec("long", "count"),
                     ColSpec("string", "sampler", required=False), ColSpec("long", "steps", required=False),
                     ColSpec("double", "guidance_scale", required=False), ColSpec("long", "seed", required=False)])
    outputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, int(resolution), int(resolution), int(channels)))])
    return ModelSignature(inputs=inputs, outputs=outputs)


def verify_bundle(artifacts: dict[str, str], release: Any = None) -> Any:
    """Recompute the gate decision of the generator in ``artifacts`` from its bundled evaluation and
    gate record, check the weights, and require a release attestation signed by the gatekeeper for
    exactly these weights (``release``, or the one found on this model's registered versions); a
    failed gate loads only under a signed override. -> the decision."""
    from pathlib import Path

    from synthgate.errors import DataError
    from synthgate.gates.decision import check_record, load_evaluation
    from synthgate.generators.model import read_generator_info, weights_path
    from synthgate.registry.verify import PromotionRefused, check_generator
    from synthgate.utils import read_json, sha256_file

    hint = "register the generator with `synthgate register` (which bundles its evaluation and gate record)"
    missing = [k for k in (EVALUATION, GATE) if k not in artifacts]
    if missing:
        raise PromotionRefused(f"this generator model carries no {' and no '.join(missing)} record, so its release "
                               "gate cannot be checked: it was logged without them (an older synthgate, or by hand)",
                               hint=hint)
    model_dir = Path(artifacts[MODEL_DIR])
    try:
        evaluation = load_evaluation(Path(artifacts[EVALUATION]))
        decision = check_record(read_json(Path(artifacts[GATE])), evaluation, "the model's gate record")
        info = read_generator_info(model_dir)
        for name, digest in (info.get("files") or {}).items():  # the weights are the ones the folder describes
            if sha256_file(model_dir / name) != digest:
                raise DataError(f"{model_dir / name}: its sha256 differs from the one recorded in the model's "
                                "description: the weights were replaced after training")
        # the evaluation's own record of the weights (never a path it names: that resolves wherever the loader runs)
        local = {**evaluation, "synthetic": {k: v for k, v in (evaluation.get("synthetic") or {}).items()
                                             if k != "path"}}
        check_generator(model_dir, info, local, "the model's evaluation")
        weights = sha256_file(weights_path(model_dir, str(info.get("type"))))
    except DataError as e:
        raise PromotionRefused(e.message, hint=e.hint or hint) from None
    release = _check_release(release, weights, model_dir)
    if decision.passed:
        return decision
    failing = [f"{r.rule} ({r.reason})" for r in decision.rules if not r.passed]
    if release.predicate.get("verdict") == "override":
        o = release.predicate.get("override") or {}
        log.warning("loading a generator that FAILED its release gate, by a signed override (%s, by %s): %s",
                    o.get("reason"), o.get("user") or "?", "; ".join(failing))
        return decision
    raise PromotionRefused(
        "this generator failed its release gate and its release attestation is no override; it is not loaded. "
        "Failing rules:\n  " + "\n  ".join(failing), hint="load released versions only")


def _check_release(release: Any, weights: str, model_dir: Any) -> Any:
    """``release`` checked against these weights, or the attestation of a registered version of this
    model's run that verifies for them (a plain ``mlflow.pyfunc.load_model``)."""
    from synthgate.registry.verify import PromotionRefused

    if release is not None:
        signed = (release.subject.get("digest") or {}).get("sha256")
        if signed != weights:
            raise PromotionRefused(f"the weights hash to {weights[:16]}..., but the release attestation signed "
                                   f"{str(signed)[:16]}... (the weights were swapped after signing); not loaded")
        return release
    found, why = _find_release(weights, model_dir)
    if found is None:
        raise PromotionRefused(f"no release attestation signed by the gatekeeper verifies for these weights "
                               f"({weights[:16]}...): {why}; not loaded",
                               hint="load versions the gatekeeper released (`synthgate promote`); set "
                                    "SYNTHGATE_TRUST_ROOT to the gatekeeper's trust.json")
    return found


def _find_release(weights: str, model_dir: Any) -> tuple[Any, str]:
    """Search the registry for a version of this model's run whose release attestation verifies for
    ``weights``; -> (the verified release or None, why not)."""
    from pathlib import Path

    import yaml

    from synthgate.errors import SynthgateError
    from synthgate.registry.registry import release_of

    mlmodel = next((p / "MLmodel" for p in Path(model_dir).parents if (p / "MLmodel").is_file()), None)
    run_id = (yaml.safe_load(mlmodel.read_text()) or {}).get("run_id") if mlmodel else None
    if not run_id:
        return None, "the model names no run to find its registered versions by"
    try:
        client = mlflow.MlflowClient()
        from synthgate.registry.client import equals_filter

        versions = client.search_model_versions(equals_filter("run_id", str(run_id)))
    except Exception as e:
        return None, f"the registry cannot be searched ({type(e).__name__})"
    reasons = []
    for mv in versions:
        try:
            return release_of(client, mv.name, str(mv.version), weights), ""
        except SynthgateError as e:
            reasons.append(e.message)
    return None, "; ".join(reasons) or f"no registered version of run {run_id}"


class GeneratorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):  # noqa: ANN001 (MLflow inspects the signature)
        from synthgate.generators.model import load_generator

        self.decision = verify_bundle(dict(context.artifacts), _RELEASE.get())
        self.generator = load_generator(context.artifacts[MODEL_DIR], "auto")

    def predict(self, context, model_input, params=None):  # noqa: ANN001 (untyped: MLflow reads hints)
        import pandas as pd

        from synthgate.errors import ConfigError
        from synthgate.generators.config import SampleConfig

        df = pd.DataFrame(model_input)
        missing = {"class", "count"} - set(df.columns)
        if missing:
            raise ConfigError(f"predict input lacks column(s) {sorted(missing)}; expected class, count")
        classes = self.generator.classes
        unknown = sorted(set(df["class"]) - set(classes))
        if unknown:
            raise ConfigError(f"unknown class(es) {unknown}; the model has {classes}")
        labels = np.concatenate([np.full(int(n), classes.index(c)) for c, n in zip(df["class"], df["count"], strict=True)])
        first = df.iloc[0]
        opts = {k: first[k].item() if hasattr(first[k], "item") else first[k]
                for k in ("sampler", "steps", "guidance_scale", "seed") if k in df.columns and pd.notna(first[k])}
        cfg = SampleConfig(per_class=1, device=str(self.generator.device.type), **opts)
        return self.generator.sample(labels, cfg)
