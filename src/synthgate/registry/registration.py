"""A version is registered whole or not at all, and a half-registered one is refused by name (#41).

``register`` creates the version with all its tags and its description in **one** request
(``create_model_version(tags=..., description=...)``: one transaction of MLflow's store), so an
interrupted register leaves no version at all, at most a run without one. The tags include
``registration`` = ``complete; N tags`` (the number of registration tags written with it) and
``registration.key``, the sha256 of what was registered (generator description, weights,
evaluation, gate record): re-running ``register`` on the same files finds that version and returns
it instead of adding a second one (:func:`existing_version`).

Versions written by an older synthgate (the version first, then its tags one request each, then the
description) can be half-written: a server killed in between left "3 of 24 tags". :func:`state`
tells them apart: no ``registration`` tag, and not every registration tag or no description. Such a
version is **incomplete**; :func:`require_complete` refuses it, naming it and the fix, wherever a
version is read (promote and the gatekeeper's signing through :func:`.verify.verify_version`,
``release_of`` for load, publish, the pyfunc model and the promotion guard; the gatekeeper's
dataset signing). Re-running ``register`` marks a half version of the same gate record
``superseded by version N`` (:func:`supersede`), which keeps it refused.

A user who may write tags (EDIT) can write ``registration`` too. That grants nothing: every check
that decides a release recomputes from the run's records and the weights (:mod:`.verify`,
:mod:`.gatekeeper_checks`), so a version made to look complete is released only if its records are
genuine and complete, as a version registered whole would be.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthgate.registry.verify import PromotionRefused

REGISTRATION_TAG = "registration"
KEY_TAG = "registration.key"
#: The tags every registration writes (besides the rules' ``gate.rule.*`` and the reader study's).
REQUIRED = ("gate.passed", "gate.sha256", "gate.policy_hash", "evaluation_hash", "lineage.real_content_hash",
            "lineage.synthetic_content_hash", "lineage.training_dataset_hash", "lineage.encoder_id",
            "lineage.code_version", "lineage.dvc_lock_sha256", "lineage.synthgate_version", "reader_study")
#: The first words of the description a registration writes (:func:`.registry.version_description`).
DESCRIBED = "## Release gate:"
FIX = "re-run `synthgate register` with the same model, evaluation and gate record: it registers the version whole " \
      "and marks this one superseded"


class IncompleteVersion(PromotionRefused):
    """A version whose registration was interrupted (or that was superseded): refused everywhere."""


def registered_keys(tags: dict[str, str]) -> list[str]:
    """The keys among ``tags`` that a registration writes (not the marker itself, nor what comes later:
    ``release.*``, ``override.*``, ``audit.*``)."""
    return sorted(k for k in tags if k == "evaluation_hash" or k.startswith(("gate.", "lineage.", "reader_study",
                                                                            "registration.")))


@dataclass(frozen=True)
class State:
    complete: bool
    detail: str  # "complete", or what is missing
    superseded_by: str | None = None
    registered: bool = True  # False: no registration tag at all (a version made outside `synthgate register`)

    @property
    def label(self) -> str:
        """For `synthgate models`: complete, INCOMPLETE (...), superseded by N."""
        if self.complete:
            return "complete"
        return f"superseded by {self.superseded_by}" if self.superseded_by else f"INCOMPLETE ({self.detail})"


def state(tags: dict[str, str] | None, description: str | None) -> State:
    """Whether a version's registration is whole (see the module docstring)."""
    tags = dict(tags or {})
    keys = registered_keys(tags)
    missing = [k for k in REQUIRED if k not in tags]
    marker = tags.get(REGISTRATION_TAG)
    if marker is not None:
        m = re.fullmatch(r"complete; (\d+) tags", marker.strip())
        if m is None:
            sup = re.match(r"superseded by version (\d+)", marker.strip())
            return State(False, f"registration tag {marker[:80]!r}", f"version {sup.group(1)}" if sup else None)
        if len(keys) < int(m.group(1)) or missing:
            return State(False, f"{len(keys)} of its {m.group(1)} registration tags" +
                         (f"; missing {', '.join(missing[:4])}" if missing else ""))
        return State(True, "complete")
    if not keys:
        return State(False, "no registration tags: not registered by `synthgate register`, or interrupted before "
                            "its first tag", registered=False)
    described = DESCRIBED in (description or "")
    if missing or not described:
        what = f"{len(keys)} registration tags" + (f", missing {', '.join(missing[:4])}" if missing else "")
        return State(False, f"{what}{'' if described else ', no description'}: its registration was interrupted")
    return State(True, "complete")  # registered whole by a synthgate older than the marker


def require_complete(mv: Any, where: str | None = None) -> None:
    """Refuse a version whose registration is not whole, by name, with the fix."""
    s = state(mv.tags, getattr(mv, "description", None))
    if s.complete:
        return
    where = where or f"{mv.name} version {mv.version}"
    if s.superseded_by:
        raise IncompleteVersion(f"{where} is incomplete and was superseded by {s.superseded_by} (a re-run of its "
                                "interrupted registration): it is never promoted, loaded or published",
                                hint=f"use {s.superseded_by}")
    raise IncompleteVersion(f"{where} is incomplete ({s.detail}): it is never promoted, loaded or published, "
                            "--force included", hint=FIX)


def key(info_file: Path, weights: Path, evaluation_hash: str, gate_sha256: str) -> str:
    """The identity of a registration: the generator's description and weights, the evaluation, the gate record."""
    from synthgate.utils import sha256_file

    parts = {"generator": sha256_file(info_file), "weights": sha256_file(weights),
             "evaluation_hash": evaluation_hash, "gate_sha256": gate_sha256}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _code_version() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip() or None
    except Exception:
        return None


def reader_tags(readers: dict[str, Any] | None) -> dict[str, str]:
    """The reader study's headline on the version (its whole record is in the logged evaluation.json)."""
    if not readers:
        return {"reader_study": "none"}
    a, w = readers["accuracy"], (readers["accuracy"].get("wilcoxon") or {})
    return {"reader_study": f"{readers['readers_finished']} readers, {readers['n_images']} images, study "
                            f"{str(readers['study_sha256'])[:16]}",
            "reader_study.accuracy_mean": f"{a['mean']:.4f}",
            "reader_study.accuracy_bounds_95": "[{lower:.4f}, {upper:.4f}]".format(
                **(readers.get("accuracy_bounds_95") or {"lower": float("nan"), "upper": float("nan")})),
            "reader_study.wilcoxon_p": f"{w['p']:.4g}" if "p" in w else "not tested (fewer than 5 readers away from 0.5)"}


def version_tags(gate: dict[str, Any], gate_sha256: str, evaluation: dict[str, Any], info: dict[str, Any],
                 decision: Any) -> dict[str, str]:
    """The version's tags: the gate result, every rule's value, the lineage hashes, the reader study."""
    from synthgate import __version__
    from synthgate.generators.sample import lineage_tags
    from synthgate.utils import sha256_file

    tags = {
        "gate.passed": str(bool(gate["passed"])).lower(),
        "gate.sha256": gate_sha256,
        "gate.policy_hash": gate.get("policy_hash", ""),
        "evaluation_hash": evaluation["evaluation_hash"],
        "lineage.real_content_hash": evaluation["real"]["content_hash"],
        "lineage.synthetic_content_hash": evaluation["synthetic"]["content_hash"],
        "lineage.training_dataset_hash": info.get("dataset_content_hash", ""),
        "lineage.encoder_id": str(evaluation.get("encoder", {}).get("encoder_id")),
        "lineage.code_version": _code_version() or "unknown",
        "lineage.dvc_lock_sha256": sha256_file(Path("dvc.lock")) if Path("dvc.lock").exists() else "none",
        "lineage.synthgate_version": __version__,
    }
    tags |= reader_tags(evaluation.get("readers")) | lineage_tags(evaluation["synthetic"].get("generator"))
    for r in decision.rules:
        tags[f"gate.rule.{r.rule}"] = f"{'pass' if r.passed else 'FAIL'}: {r.value} {r.comparison} {r.threshold}"
    return tags


def with_marker(tags: dict[str, str], registration_key: str) -> dict[str, str]:
    """``tags`` with ``registration.key`` and the ``registration`` marker that says they are all there."""
    out = {**tags, KEY_TAG: registration_key}
    return {**out, REGISTRATION_TAG: f"complete; {len(registered_keys(out))} tags"}


def existing_version(client: Any, name: str, registration_key: str, gate_sha256: str, evaluation_hash: str
                     ) -> Any | None:
    """The complete version of ``name`` registered from the same files (the oldest), else None. Its gate and
    evaluation tags must be ours too: a key copied onto another version by someone with EDIT can point a
    register only at a version that verifies against our records (and so holds our weights)."""
    from synthgate.registry.client import unless_missing, versions_of

    try:
        versions = versions_of(client, name)
    except Exception as e:
        unless_missing(e, client)
        return None
    ours = {KEY_TAG: registration_key, "gate.sha256": gate_sha256, "evaluation_hash": evaluation_hash}
    same = [mv for mv in versions if all((mv.tags or {}).get(k) == v for k, v in ours.items())
            and state(mv.tags, mv.description).complete]
    return min(same, key=lambda mv: int(mv.version)) if same else None


def create_version(client: Any, name: str, model_info: Any, tags: dict[str, str], description: str) -> Any:
    """The registered model (made if missing) and its new version with every tag and the description, in one
    request: MLflow's store writes the version and its tags in one transaction."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="synthgate generator; promote only through "
                                       "`synthgate promote`, which checks the version's gate record")
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    model_id = getattr(model_info, "model_id", None)
    return client.create_model_version(name, model_info.model_uri, tags=tags, description=description,
                                       model_id=model_id)


def supersede(client: Any, name: str, version: str, gate_sha256: str) -> list[str]:
    """Mark the incomplete versions of ``name`` registered from the same gate record ``superseded by version
    VERSION`` (they stay refused; the marker says where the whole one is); -> the versions marked."""
    import tempfile

    from synthgate.registry.client import versions_of
    from synthgate.registry.outage import raise_if_outage
    from synthgate.utils import sha256_file

    marked = []
    for mv in sorted(versions_of(client, name), key=lambda m: int(m.version)):
        s = state(mv.tags, mv.description)
        if str(mv.version) == str(version) or s.complete or s.superseded_by:
            continue
        same = (mv.tags or {}).get("gate.sha256") == gate_sha256
        if "gate.sha256" not in (mv.tags or {}) and mv.run_id:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    same = sha256_file(Path(client.download_artifacts(mv.run_id, "gate/gate.json", tmp))) == gate_sha256
            except Exception as e:  # no gate record in its run: not one of ours to supersede
                raise_if_outage(e)
                same = False
        if same:
            client.set_model_version_tag(name, str(mv.version), REGISTRATION_TAG,
                                         f"superseded by version {version}: its registration was interrupted")
            marked.append(str(mv.version))
    return marked
