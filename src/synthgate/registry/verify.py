"""Verify a registered version before anything trusts it: the gate record and evaluation stored with
the version must hash to its tags, the verdict is recomputed from them (never read), the policy
must be the one the reviewers pinned, the records bundled in the served model must be the ones
verified, and an evaluation must be of the model it is attached to. :func:`approvable` is the
promotion guard's and publish's question: may this version hold a protected alias?
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from synthgate.errors import DataError, SynthgateError
from synthgate.evaluation.hashing import evaluation_hash
from synthgate.gates.decision import check_record
from synthgate.registry.client import unless_missing
from synthgate.registry.outage import raise_if_outage
from synthgate.utils import read_json, sha256_file

#: Registered-model tag holding the hash of the gate policy every version of the model must be gated with.
REQUIRED_POLICY_TAG = "gate.required_policy_hash"


class PromotionRefused(SynthgateError):
    exit_code = 1



#: The fields of a generator's identity that the sample manifest copies from ``synthgate_generator.json``
#: (``evaluation["synthetic"]["generator"]``), compared when the weights' sha256 is not recorded.
IDENTITY_FIELDS = ("name", "step", "dataset_content_hash")


def _evaluated_weights_sha256(evaluation: dict[str, Any]) -> str | None:
    """The sha256 of the weights that produced the evaluated samples, where it is recorded: in the
    evaluation's generator record, else in the sample manifest's inputs (``synthgate sample`` writes
    it there), read only when that manifest is at hand and describes the evaluated content."""
    syn = evaluation.get("synthetic") or {}
    gen = syn.get("generator") or {}
    for key in ("weights_sha256", "sha256"):
        if isinstance(gen, dict) and gen.get(key):
            return str(gen[key])
    manifest = Path(syn.get("path") or "-") / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        m = read_json(manifest)
    except Exception:
        return None
    if not isinstance(m, dict) or m.get("content_hash") != syn.get("content_hash"):
        return None
    for inp in m.get("inputs") or []:
        if isinstance(inp, dict) and inp.get("kind") == "generator" and inp.get("sha256"):
            return str(inp["sha256"])
    return None


def check_generator(model_dir: Path, info: dict[str, Any], evaluation: dict[str, Any], where: str) -> None:
    """Refuse to attach an evaluation to a model it was not made of: the evaluated generator's weights
    sha256 (where recorded) must equal that of the weights in ``model_dir``, and its name, step and
    training dataset hash must equal ``synthgate_generator.json``'s. An evaluation with no generator
    identity (a stand-in of real images, a set made outside ``synthgate sample``) is refused: register
    has no override, as nothing ties such an evaluation to any model."""
    from synthgate.generators.model import INFO, weights_path

    syn = evaluation.get("synthetic") or {}
    gen = syn.get("generator")
    hint = "evaluate samples of this model (`synthgate sample --model ...` then `synthgate evaluate`) and gate them"
    if not isinstance(gen, dict) or not any(gen.get(k) is not None for k in IDENTITY_FIELDS):
        what = (f"a stand-in ({syn['standin']}), not a generator's output" if syn.get("standin")
                else "a synthetic set that records no generator")
        raise DataError(f"{where}: the evaluation is of {what}; it cannot be registered as an evaluation of "
                        f"{model_dir}", hint=hint)
    weights = weights_path(Path(model_dir), str(info.get("type")))
    evaluated = _evaluated_weights_sha256(evaluation)
    if evaluated is not None:
        actual = sha256_file(weights)
        if evaluated != actual:
            raise DataError(f"{where}: the evaluated samples come from generator weights with sha256 "
                            f"{evaluated[:16]}..., but {weights} has sha256 {actual[:16]}...: the evaluation is "
                            "not of this model", hint=hint)
    for k in IDENTITY_FIELDS:
        if gen.get(k) != info.get(k):
            raise DataError(f"{where}: the evaluated generator's {k} is {gen.get(k)!r}, but {Path(model_dir) / INFO} "
                            f"says {info.get(k)!r}: the evaluation is not of this model", hint=hint)


def verify_version(client: Any, name: str, version: str, registry_pin: bool = True
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Download the version's gate record and evaluation; check them against the version's tags.
    ``registry_pin=False`` ignores the registry's pinned-policy tag (the gatekeeper applies its own pin:
    that tag is writable by anyone with EDIT)."""
    try:
        mv = client.get_model_version(name, version)
    except Exception as e:
        unless_missing(e, client)
        raise DataError(f"model {name!r} has no version {version!r}",
                        hint="list them with `synthgate models`") from None
    from synthgate.registry.registration import require_complete, state

    tags = mv.tags
    if "gate.sha256" not in tags or "evaluation_hash" not in tags:
        if state(tags, mv.description).registered:  # some of its registration, not all: interrupted
            require_complete(mv, f"{name} version {version}")
        raise PromotionRefused(f"{name} version {version} has no gate record (it was not registered by `synthgate "
                               "register`, or its registration was interrupted before its first tag)",
                               hint="register it with `synthgate register`, which attaches the gate and writes the "
                                    "version whole")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            gate_file = Path(client.download_artifacts(mv.run_id, "gate/gate.json", tmp))
            eval_file = Path(client.download_artifacts(mv.run_id, "evaluation/evaluation.json", tmp))
        except Exception as e:
            raise_if_outage(e, getattr(client, "_registry_uri", None))
            raise PromotionRefused(f"{name} version {version}: gate or evaluation record missing from run "
                                   f"{mv.run_id} ({e})") from None
        if sha256_file(gate_file) != tags["gate.sha256"]:
            raise PromotionRefused(f"{name} version {version}: the stored gate record does not match the hash "
                                   "registered with the version (modified after registration)")
        gate = json.loads(gate_file.read_text())
        evaluation = json.loads(eval_file.read_text())
        _check_bundled(client, mv, tags, Path(tmp) / "bundle")
    if not isinstance(gate, dict) or not isinstance(evaluation, dict):
        raise PromotionRefused(f"{name} version {version}: its gate record or evaluation is not a JSON object")
    recomputed = evaluation_hash(evaluation)
    if recomputed != tags["evaluation_hash"] or gate.get("evaluation_hash") != tags["evaluation_hash"]:
        raise PromotionRefused(
            f"{name} version {version}: the stored evaluation hashes to {recomputed[:16]}, but the version was "
            f"gated on {tags['evaluation_hash'][:16]}: the evaluation changed after gating",
            hint="re-evaluate, re-gate and register a new version")
    try:  # the verdict is recomputed, never trusted: gate.json's "passed" could have been edited
        decision = check_record(gate, evaluation, f"{name} version {version}: gate.json")
    except DataError as e:
        raise PromotionRefused(e.message, hint="re-gate the evaluation and register a new version") from None
    required = (client.get_registered_model(name).tags or {}).get(REQUIRED_POLICY_TAG) if registry_pin else None
    if required and decision.policy_hash != required:
        raise PromotionRefused(
            f"{name} version {version} was gated with policy {decision.policy_hash[:16]}, but the reviewers require "
            f"policy {required[:16]} for {name} (registered-model tag {REQUIRED_POLICY_TAG})",
            hint="re-gate the evaluation with the required gates.yaml and register a new version")
    tagged = tags.get("gate.passed")
    if tagged is not None and tagged != str(decision.passed).lower():
        raise PromotionRefused(f"{name} version {version}: its gate.passed tag says {tagged}, but the decision "
                               f"recomputed from its evaluation and policy says {str(decision.passed).lower()}",
                               hint="re-gate the evaluation and register a new version")
    require_complete(mv, f"{name} version {version}")  # its records verify, but its registration is not whole
    return gate, evaluation


def _check_bundled(client: Any, mv: Any, tags: dict[str, str], tmp: Path) -> None:
    """The records bundled in the version's model (what loading it checks, :mod:`.pyfunc`) must be the
    ones registered with the version: otherwise the version served is not the version verified."""
    import mlflow.artifacts
    import yaml

    from synthgate.registry.pyfunc import EVALUATION, GATE

    where = f"{mv.name} version {mv.version}"
    source = str(mv.source or "")
    try:
        if source.startswith("models:/m-"):
            root = client.get_logged_model(source.removeprefix("models:/")).artifact_location
        else:
            root = source
        uris = {"tracking_uri": client.tracking_uri, "registry_uri": getattr(client, "_registry_uri", None)}
        mlmodel = yaml.safe_load(Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"{root}/MLmodel", dst_path=str(tmp / "mlmodel"), **uris)).read_text())
        paths = mlmodel["flavors"]["python_function"]["artifacts"]
        files = {k: Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/{paths[k]['path']}",
                                                             dst_path=str(tmp / k), **uris)) for k in (EVALUATION, GATE)}
    except Exception as e:
        raise_if_outage(e, getattr(client, "_registry_uri", None))
        raise PromotionRefused(f"{where}: the model's bundled gate record and evaluation cannot be read "
                               f"({type(e).__name__}: {' '.join(str(e).split())[:200]})",
                               hint="register it with `synthgate register`, which bundles them") from None
    if sha256_file(files[GATE]) != tags.get("gate.sha256"):
        raise PromotionRefused(f"{where}: the gate record bundled in the model is not the one registered with the "
                               "version: the model served is not the model verified")
    try:
        bundled = evaluation_hash(json.loads(files[EVALUATION].read_text()))
    except Exception:
        bundled = None
    if bundled != tags.get("evaluation_hash"):
        raise PromotionRefused(f"{where}: the evaluation bundled in the model is not the one registered with the "
                               "version: the model served is not the model verified")


def approvable(client: Any, name: str, version: str, policy_hash: str | None = None) -> tuple[bool, str]:
    """(may ``version`` hold a protected alias, why): it holds a release attestation signed by the
    gatekeeper (verified against the trust root, not revoked) and its records verify against the
    registry; with ``policy_hash``, the attestation must be under that policy. Fails closed: any
    error reading or checking the version means no."""
    from synthgate.registry.registry import release_of

    try:
        release = release_of(client, name, version)
        verify_version(client, name, version, registry_pin=False)
        if policy_hash and release.predicate.get("policy_hash") != policy_hash:
            return False, (f"was released under policy {str(release.predicate.get('policy_hash'))[:16]}, not the "
                           f"required {policy_hash[:16]}")
    except SynthgateError as e:
        return False, e.message
    except Exception as e:  # a malformed or unreadable version never holds a protected alias
        return False, f"cannot be verified ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
    verdict = release.predicate.get("verdict")
    return True, "signed release (gate passed)" if verdict == "passed" else "signed override"
