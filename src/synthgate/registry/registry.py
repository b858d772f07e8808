"""Register generator versions and promote them only through their gate.

MLflow's open-source registry has no approval step (mlflow/mlflow#6636, #2863); synthgate adds
one. ``register`` logs a run (params, evaluation metrics, report, evaluation and gate records) and
the generator as a pyfunc model version whose tags carry the gate result, every rule's value, and
the lineage hashes. It refuses a gate record whose verdict differs from the decision recomputed
from the evaluation and the recorded policy, and an evaluation that was not made of this model's
samples (:func:`check_generator`). ``promote`` re-reads the version's gate record and evaluation
from the run's artifacts, recomputes their hashes and the decision, and sets the alias only if they
match and the gate passed;
``--force --reason`` overrides and is recorded. Every promote, refusal and override is written to
the version's tags (``audit.N.*``), readable in the MLflow UI.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthgate import __version__
from synthgate.errors import DataError, SynthgateError
from synthgate.gates.decision import check_record, load_evaluation
from synthgate.registry.access import checked_access
from synthgate.registry.client import connect, tracking_uri, unless_missing, versions_of
from synthgate.registry.verify import (  # noqa: F401  (re-exported: the verification API of a version)
    IDENTITY_FIELDS,
    REQUIRED_POLICY_TAG,
    PromotionRefused,
    approvable,
    check_generator,
    verify_version,
)
from synthgate.utils import read_json, sha256_file, utc_now

log = logging.getLogger(__name__)

EXPERIMENT = "synthgate"
PIP_REQUIREMENTS = [f"synthgate=={__version__}"]


@dataclass
class Registered:
    name: str
    version: str
    run_id: str
    gate_passed: bool
    tracking_uri: str


def _who() -> str:
    """Who acts: the MLflow user when the server has authentication, else the OS user."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    return f"{user} (mlflow)" if user else getpass.getuser()


def _code_version() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip() or None
    except Exception:
        return None


def _sample_grid(synthetic: Path, out: Path, per_class: int = 8) -> Path | None:
    """A per-class grid of the synthetic images (one row per class), if the dataset is at hand."""
    import numpy as np

    from synthgate.data.canonical import load_dataset
    from synthgate.figures import make_grid, save_png

    if not (synthetic / "manifest.json").exists():
        return None
    ds = load_dataset(synthetic)
    labels = ds.labels()
    rows = [np.flatnonzero(labels == k)[:per_class] for k in range(len(ds.classes))]
    idx = np.concatenate([np.pad(r, (0, per_class - len(r)), constant_values=-1) for r in rows])
    images = np.zeros((len(idx), *ds.images.shape[1:]), np.uint8)
    images[idx >= 0] = np.asarray(ds.images[idx[idx >= 0]])
    return save_png(out, make_grid(images, per_class))


@contextlib.contextmanager
def _tracking_env(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for a block, without changing the process-wide
    setting (``mlflow.set_tracking_uri`` would leak into later runs of the same process)."""
    from synthgate.utils import environ

    with environ(dict.fromkeys(("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"), uri)):
        yield


def default_model_name(evaluation: dict[str, Any]) -> str:
    """Named after the dataset: the real dataset's source (MedNIST.tar.gz -> mednist-generator)."""
    real = Path(evaluation["real"]["path"])
    stem = real.name
    manifest = real / "manifest.json"
    if manifest.exists():
        desc = read_json(manifest).get("source_description") or ""
        stem = Path(desc).name or stem
    stem = re.sub(r"(\.tar\.gz|\.tgz|\.zip|\.npz|\.tar)$", "", stem, flags=re.I)
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") + "-generator"


def _reader_tags(readers: dict[str, Any] | None) -> dict[str, str]:
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


@checked_access
def register(model_dir: Path, evaluation_path: Path, gate_path: Path, uri: str | None = None,
             name: str | None = None) -> Registered:
    """Log a run and register the generator at ``model_dir`` as a new version."""
    import mlflow

    from synthgate.generators.model import read_generator_info
    from synthgate.generators.sample import lineage_tags
    from synthgate.registry.pyfunc import EVALUATION, GATE, MODEL_DIR, GeneratorModel, signature

    info = read_generator_info(Path(model_dir))
    evaluation = load_evaluation(Path(evaluation_path))
    gate = read_json(Path(gate_path))
    if gate.get("evaluation_hash") != evaluation["evaluation_hash"]:
        raise DataError(f"{gate_path}: gate record belongs to evaluation {str(gate.get('evaluation_hash'))[:16]}, "
                        f"not {evaluation['evaluation_hash'][:16]}", hint="re-run `synthgate gate` on this evaluation")
    decision = check_record(gate, evaluation, str(gate_path))  # the page and tags show this, not gate.json's text
    check_generator(Path(model_dir), info, evaluation, str(evaluation_path))
    client = connect(uri)
    uri = tracking_uri(uri)
    name = name or default_model_name(evaluation)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(EXPERIMENT)
    gate_sha = sha256_file(Path(gate_path))
    summary = evaluation.get("summary", {})
    with _tracking_env(uri), mlflow.start_run(experiment_id=exp_id, run_name=f"{info['name']}") as run:
        mlflow.log_params({f"generator.{k}": v for k, v in info.get("generator", {}).items()})
        mlflow.log_params({"resolution": info["resolution"], "channels": info["channels"],
                           "classes": ",".join(info["classes"]), "train_step": info.get("step")})
        mlflow.log_metrics({k: float(v) for k, v in summary.items()
                            if isinstance(v, int | float) and not isinstance(v, bool)})
        mlflow.log_artifact(str(evaluation_path), "evaluation")
        from synthgate.evaluation.evaluate import PUBLIC_REPORT
        from synthgate.evaluation.report import PUBLIC_MARK
        from synthgate.gates.decision import gated_report

        # the public report (no real image, no training file name) with this gate's verdict on top, as
        # evaluation/report.html: the registry is read by consumers, so the full report stays with the real data
        report = gated_report(Path(gate_path), public=True)
        if not (report.exists() and f"evaluation {str(evaluation['evaluation_hash'])[:16]}" in report.read_text()):
            report = Path(evaluation_path).with_name(PUBLIC_REPORT)
        reported = report.exists() and PUBLIC_MARK in report.read_text()
        if reported:
            staged = Path(tempfile.mkdtemp()) / "report.html"
            shutil.copyfile(report, staged)
            mlflow.log_artifact(str(staged), "evaluation")
        else:
            log.warning("%s: no public report beside the evaluation: the registry gets no report (the full one shows "
                        "real images and stays with the real data)", evaluation_path)
        mlflow.log_artifact(str(gate_path), "gate")
        grid = _sample_grid(Path(evaluation["synthetic"].get("path") or "-"), Path(tempfile.mkdtemp()) / "samples.png")
        if grid is not None:
            mlflow.log_artifact(str(grid), "samples")
        with warnings.catch_warnings():  # MLflow's notes on type hints and cloudpickle: known, not actionable
            warnings.simplefilter("ignore", UserWarning)
            # the model carries its proof: load_context recomputes the gate from these records
            model_info = mlflow.pyfunc.log_model(
                name="generator", python_model=GeneratorModel(),
                artifacts={MODEL_DIR: str(model_dir), EVALUATION: str(evaluation_path), GATE: str(gate_path)},
                signature=signature(info["resolution"], info["channels"]), pip_requirements=PIP_REQUIREMENTS)
        run_id = run.info.run_id
    with _tracking_env(uri):
        mv = mlflow.register_model(model_info.model_uri, name)
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, "synthgate generator; promote only through `synthgate promote`, "
                                             "which checks the version's gate record")
    tags = {
        "gate.passed": str(bool(gate["passed"])).lower(),
        "gate.sha256": gate_sha,
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
    tags |= _reader_tags(evaluation.get("readers")) | lineage_tags(evaluation["synthetic"].get("generator"))
    for r in decision.rules:
        tags[f"gate.rule.{r.rule}"] = f"{'pass' if r.passed else 'FAIL'}: {r.value} {r.comparison} {r.threshold}"
    for k, v in tags.items():
        client.set_model_version_tag(name, mv.version, k, v)
    client.update_model_version(name, mv.version, description=version_description(decision, run_id, reported))
    return Registered(name, str(mv.version), run_id, bool(gate["passed"]), uri)


def _md(value: Any) -> str:
    """``value`` as plain text in a markdown table cell: markdown and HTML metacharacters escaped."""
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    text = " ".join(text.split())
    # MLflow renders descriptions with showdown, which shows a backslash before < and >: entities for those
    return "".join({"<": "&lt;", ">": "&gt;", "&": "&amp;"}.get(c) or (f"\\{c}" if c in "\\`*_[]()!#|{}" else c) for c in text)


def version_description(decision: Any, run_id: str, reported: bool) -> str:
    """The markdown a reviewer sees on the version's page in the MLflow UI, written from the decision
    recomputed at registration (never from ``gate.json``'s own text): the verdict, each rule with its
    value and threshold (failing rules first), and where the report and records are."""
    from dataclasses import asdict

    from synthgate.gates.explain import fmt, guide, threshold_text
    from synthgate.gates.page import verdict_words

    rules = sorted(decision.rules, key=lambda r: r.passed)
    failing = [r for r in rules if not r.passed]
    lines = [f"## Release gate: {'PASSED' if decision.passed else 'FAILED'}", "",
             _md(verdict_words({"passed": decision.passed, "rules": [asdict(r) for r in decision.rules]})), ""]
    if failing:
        lines += ["Failing rules: " + ", ".join(_md(r.rule) for r in failing), ""]
    lines += ["| rule | result | value | threshold | kind of value | what it protects |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in rules:
        g = guide(r.rule)
        lines.append(f"| {_md(r.rule)} | {'pass' if r.passed else '**FAIL**'} | {_md(fmt(r.rule, r.value))} | "
                     f"{_md(threshold_text(r.rule, r.comparison, r.threshold))} | {_md(g.kind)} | {_md(g.protects)} |")
    if failing:
        lines += ["", "Why each failing rule failed:", ""] + [f"- {_md(r.rule)}: {_md(r.reason)}" for r in failing]
    where = ("the public report (no real image) is the run's artifact `evaluation/report.html`; "
             if reported else "no public report was registered; ")
    lines += ["", f"Policy {_md(decision.policy_hash[:16])}, evaluation {_md(decision.evaluation_hash[:16])}, "
                  f"run {_md(run_id)}: {where}the gate record is `gate/gate.json`; each published dataset "
                  "carries its data card.", "",
              "Promote only with `synthgate promote NAME VERSION`, which re-verifies the gate record. "
              "Loading the pyfunc model recomputes the bundled gate record and refuses a failed version."]
    return "\n".join(lines)


OVERRIDE_MARK = "<!-- synthgate:override -->"


def with_override(description: str, user: str, when: str, reason: str) -> str:
    """The version description with the override stated first (an earlier statement replaced), so that the
    page that shows FAILED beside @approved says why."""
    body = description.split(OVERRIDE_MARK)[-1].lstrip()
    return (f"## Released by OVERRIDE: the release gate FAILED\n\nThe owner {_md(user)} released this version on "
            f"{_md(when)} although its gate failed, giving the reason: {_md(reason)}. The gatekeeper signed the "
            f"override, and every published copy of its data shows it.\n\n{OVERRIDE_MARK}\n\n{body}")


def write_record(r: Registered, path: Path) -> None:
    """``registered.json``: what was registered where (a DVC output; publish reads it)."""
    from dataclasses import asdict

    from synthgate.utils import write_json_atomic

    write_json_atomic(Path(path), {**asdict(r), "registered": utc_now(),
                                   "ui": f"{r.tracking_uri}/#/models/{r.name}/versions/{r.version}"})


def read_record(path: Path, hint: str = "run `synthgate register` first, or name the registered model"
                ) -> tuple[str, str]:
    """(model name, version) from a ``registered.json`` that :func:`write_record` wrote."""

    from synthgate.errors import DataError

    try:
        data = json.loads(Path(path).read_text())
        return str(data["name"]), str(data["version"])
    except FileNotFoundError:
        raise DataError(f"{path}: no registered.json", hint=hint) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a registered.json ({type(e).__name__})", hint=hint) from None


def _audit(client: Any, name: str, version: str, action: str, detail: str) -> None:
    """Append a hash-chained entry to the version's audit trail (:mod:`synthgate.registry.audit`)."""
    from synthgate.registry.audit import append

    append(client, name, version, action, _who(), utc_now(), detail)


def pin_policy(name: str, policy: Path | None, uri: str | None = None, gatekeeper: str | None = None) -> str:
    """Pin ``policy`` (``gates.yaml``; None: the defaults) for every version of ``name``, through the
    gatekeeper (owners only; signed, logged and shown as the registered-model tag ``gate.pinned_policy``).
    The gatekeeper decides every later release of ``name`` under it; a tag edited in MLflow changes nothing."""
    from synthgate.gates.policy import load_policy
    from synthgate.registry.gatekeeper_app import call

    path = Path(policy) if policy is not None else None
    digest = load_policy(path).policy_hash()
    text = path.read_text() if path is not None else ""
    call("/v1/pins", {"model": name, "policy": text}, gatekeeper)
    return f"{name}: the gatekeeper now releases its versions only under policy {digest[:16]} ({policy or 'the defaults'})"


def promote(name: str, version: str, alias: str = "approved", uri: str | None = None, force: bool = False,
            reason: str | None = None, gatekeeper: str | None = None) -> str:
    """Ask the gatekeeper to release ``name`` version ``version``: it recomputes the verdict under the
    pinned policy, signs a release attestation and moves ``alias``. ``force`` with a reason asks for an
    override, which the gatekeeper grants to owners only. Fails closed when the gatekeeper is down."""
    from synthgate.registry.gatekeeper import GatekeeperRefused
    from synthgate.registry.gatekeeper_app import call
    from synthgate.trust.attest import envelope_digest

    if force and not (reason and reason.strip()):
        raise SynthgateError("--force needs --reason \"...\": an override must say why",
                             hint="e.g. --reason \"approved by the data access committee, ticket 123\"")
    try:
        env = call("/v1/releases", {"model": name, "version": str(version), "alias": alias,
                                    "override_reason": reason if force else None}, gatekeeper)
    except GatekeeperRefused as e:
        raise PromotionRefused(f"{name} version {version} not promoted to @{alias}: {e.message}", hint=e.hint) from None
    how = "by OVERRIDE (" + str(reason) + ")" if force else "(gate passed)"
    return (f"{name} version {version} is now @{alias} {how}; release attestation {envelope_digest(env)[:16]} "
            "signed by the gatekeeper")


def release_of(client: Any, name: str, version: str, weights_sha256: str | None = None) -> Any:
    """The verified release attestation of ``name`` version ``version`` (:mod:`synthgate.trust.attest`):
    signed by a key of the trust root, for this model, version (and weights), not revoked."""
    from synthgate.registry.gatekeeper import RELEASE_TAG, REVOCATION_TAG
    from synthgate.registry.gatekeeper_app import revocations
    from synthgate.trust.attest import check_revocations, release_subject, verify_release
    from synthgate.trust.keys import load_trust_root
    from synthgate.trust.seen import remember_revocations, seen_revocations

    trust = load_trust_root()
    tags = client.get_model_version(name, version).tags or {}
    v = verify_release(tags.get(RELEASE_TAG), trust, name, str(version), weights_sha256)
    known = [tags[REVOCATION_TAG]] if tags.get(REVOCATION_TAG) else []
    online = revocations()
    remember_revocations(online)  # a later check that cannot reach the gatekeeper still sees them
    check_revocations(known + (online or []) + seen_revocations(), trust, release_subject(name, str(version)),
                      f"{name} version {version}")
    return v


def load_model(name: str, alias: str = "approved", uri: str | None = None) -> Any:
    """The pyfunc model at ``name@alias``, loaded only when the version holds a release attestation
    signed by the gatekeeper (verified against the trust root, never the registry) and its records
    verify; the model's own ``load_context`` then checks that its weights are the signed ones. The
    alias only names a version: a version the gatekeeper did not release is refused wherever the
    alias points."""
    import mlflow.pyfunc

    from synthgate.registry.pyfunc import verified_release

    client = connect(uri)
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except Exception as e:
        unless_missing(e, client)
        raise DataError(f"model {name!r} has no version @{alias}",
                        hint=f"promote one with `synthgate promote {name} VERSION --alias {alias}`") from None
    release = release_of(client, name, str(mv.version))
    verify_version(client, name, str(mv.version), registry_pin=False)
    with _tracking_env(tracking_uri(uri)), verified_release(release):
        return mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}")


@checked_access
def audit_trail(name: str, version: str | None = None, uri: str | None = None
                ) -> list[tuple[str, list[Any], str | None]]:
    """(version, its checked audit entries, a note when the gatekeeper's record could not be consulted) for one
    version or every version of ``name``: the chain and signatures (:func:`synthgate.registry.audit.verify`), and
    the gatekeeper's signed record of the entries it wrote (:func:`gatekeeper_record`), which shows a removed
    newest entry."""
    from synthgate.registry.audit import check_record, verify

    client = connect(uri)
    try:
        versions = ([client.get_model_version(name, version)] if version else
                    versions_of(client, name))
    except Exception as e:
        unless_missing(e, client)
        raise DataError(f"model {name!r} has no version {version!r}" if version else f"no model {name!r}",
                        hint="list them with `synthgate models`") from None
    out: list[tuple[str, list[Any], str | None]] = []
    for mv in sorted(versions, key=lambda m: int(m.version)):
        checked = verify(name, str(mv.version), mv.tags or {})
        record, note = gatekeeper_record(name, str(mv.version))
        out.append((str(mv.version), check_record(checked, record) if record is not None else checked, note))
    return out


def gatekeeper_record(name: str, version: str) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(the entries the gatekeeper signed on the version, None) from its signed record, verified against the
    trust root with a fresh nonce; or (None, why it could not be consulted). Never raises: the trail's own
    checks stand without it, and the note says what they cannot show."""
    import secrets

    from synthgate.errors import SynthgateError
    from synthgate.registry.audit import AUDIT_RECORD
    from synthgate.registry.gatekeeper_app import call
    from synthgate.trust.attest import open_envelope, release_subject
    from synthgate.trust.keys import load_trust_root

    gap = "a removed newest entry would not show"
    nonce = secrets.token_hex(16)
    try:
        trust = load_trust_root()
        env = call("/v1/audit-records", {"model": name, "version": version, "nonce": nonce}, timeout=30)
        v = open_envelope(env, trust, AUDIT_RECORD, f"the gatekeeper's audit record of {name} version {version}")
    except SynthgateError as e:
        return None, f"the gatekeeper's record was not consulted ({e.message.splitlines()[0]}): {gap}"
    if v.subject.get("name") != release_subject(name, version) or v.predicate.get("nonce") != nonce:
        return None, f"the gatekeeper's record is for another version or a replayed answer: {gap}"
    return list(v.predicate.get("entries") or []), None


def list_versions(name: str | None = None, uri: str | None = None) -> list[dict[str, Any]]:
    client = connect(uri)
    names = [name] if name else [m.name for m in client.search_registered_models()]
    rows = []
    for n in names:
        try:
            model = client.get_registered_model(n)
        except Exception as e:
            unless_missing(e, client)
            raise DataError(f"no registered model {n!r}", hint="list them with `synthgate models`") from None
        aliases: dict[str, list[str]] = {}
        for a, v in (model.aliases or {}).items():
            aliases.setdefault(str(v), []).append(a)
        for mv in versions_of(client, n):
            rows.append({"name": n, "version": str(mv.version), "gate": mv.tags.get("gate.passed", "none"),
                         "aliases": aliases.get(str(mv.version), []), "override": mv.tags.get("override.reason"),
                         "evaluation_hash": mv.tags.get("evaluation_hash", "")[:16]})
    return sorted(rows, key=lambda r: (r["name"], int(r["version"])))
