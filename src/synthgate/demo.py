"""The demo flow: every stage in order on the default data, with a local registry and store.

``synthgate demo`` parses its options, calls :func:`run_demo` and prints what the observer is told
and what it returns; the flow itself, its caps and its registry policy (which server, when the
override is recorded, where the store is) live here, beside :mod:`synthgate.stages`, which it
calls in the same order as ``dvc.yaml`` and the Kubeflow pipeline.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from synthgate.errors import SynthgateError
from synthgate.progress import NullReporter, Reporter

if TYPE_CHECKING:  # `synthgate --help` stays light: the stages load when the demo runs
    from synthgate.config import Params
    from synthgate.data.canonical import CanonicalDataset
    from synthgate.data.validate import ValidationResult
    from synthgate.evaluation.evaluate import EvaluationResult
    from synthgate.gates.decision import GateDecision
    from synthgate.generators.train import TrainResult
    from synthgate.publish.package import PublishResult
    from synthgate.publish.pull import PullResult
    from synthgate.registry.registry import Registered

# What fits in 10 minutes on 2 CPU cores (the README gives the measured time): at most this many
# images per class, training steps and sampler steps, below the params file's own values.
MAX_PER_CLASS = 1000
MAX_STEPS = 400
MAX_SAMPLE_STEPS = 10
#: Step budget of each downstream classifier of the utility evaluation (25 of them: 5 settings x 5 seeds). A
#: grouped split's validation images are other scans, so early stopping waits longer than on a leaky random
#: split (measured in the demo, 2026-12-07: 277 s of classifiers, some running 1,700 steps, against 115-148 s).
MAX_UTILITY_STEPS = 1000
OVERRIDE_REASON = ("synthgate demo: the release gate refused this tiny CPU model trained for minutes; overridden "
                   "only to show publish and pull; not for release")
STAGES = 9


class DemoObserver(Protocol):
    """What a shell is told while the demo runs (the CLI prints it)."""

    def stage(self, n: int, title: str) -> None:
        """Stage ``n`` of :data:`STAGES` starts."""

    def done(self, stage: str, result: Any) -> None:
        """``stage`` returned ``result`` (the stage function's typed result)."""

    def note(self, message: str, level: str = "info") -> None:
        """Something the user should read (``level``: info, warning or error)."""


class _Silent:
    def stage(self, n: int, title: str) -> None:
        pass

    def done(self, stage: str, result: Any) -> None:
        pass

    def note(self, message: str, level: str = "info") -> None:
        pass


@dataclass
class Promotion:
    """How the version got (or did not get) its alias."""

    alias: str
    status: str  # what promote said last
    refused: str | None = None  # the gate's refusal, when it failed
    override_reason: str | None = None  # set when the alias was set by a recorded override


@dataclass
class DemoResult:
    dataset: CanonicalDataset
    validation: ValidationResult
    training: TrainResult
    samples: CanonicalDataset
    evaluation: EvaluationResult
    decision: GateDecision
    gate_path: Path
    registered: Registered
    promotion: Promotion
    published: PublishResult
    pulled: PullResult
    ui: str  # the model version's page in the MLflow UI
    server_running: bool  # the local MLflow server is still up (for its UI)


def demo_caps(params: Params, max_per_class: int = MAX_PER_CLASS, max_steps: int = MAX_STEPS,
              max_sample_steps: int = MAX_SAMPLE_STEPS, max_utility_steps: int = MAX_UTILITY_STEPS) -> dict[str, Any]:
    """The overrides that cap the params file's images per class, training steps, sampler steps and the utility
    classifiers' step budget (0: no cap)."""
    caps: dict[str, Any] = {}
    if max_per_class and (params.prepare.max_per_class is None or params.prepare.max_per_class > max_per_class):
        caps["prepare.max_per_class"] = max_per_class
    if max_steps and params.train.steps > max_steps:
        caps["train.steps"] = max_steps
    if max_sample_steps and params.sample.steps > max_sample_steps:
        caps["sample.steps"] = max_sample_steps
    if max_utility_steps and params.evaluate.utility.max_steps > max_utility_steps:
        caps["evaluate.utility.max_steps"] = max_utility_steps
    return caps


def run_demo(params: Params, workdir: Path, *, policy: Path | None = Path("gates.yaml"), keep_server: bool = True,
             override: bool = True, observer: DemoObserver | None = None,
             reporter: Reporter | None = None) -> DemoResult:
    """prepare -> validate -> train -> sample -> evaluate -> gate -> register -> promote -> publish -> pull,
    with the stages' default paths under ``workdir``.

    The registry is ``$MLFLOW_TRACKING_URI`` or a local server under ``workdir/mlruns`` (started
    with authentication if none runs there). A version that passes the gate is released as it is (the
    params file prepares MedNIST split by inferred acquisition groups, so that the memorization gate's
    held-out null holds other scans: ``prepare.infer_groups``). Only when the gate fails and ``override``
    is set is the version promoted by a recorded override, so that publish and pull can be shown; the
    data card and the audit trail say so. ``policy``: the release policy (None or a missing file: the built-in
    defaults)."""
    from synthgate import stages

    obs = observer or _Silent()
    rep = reporter or NullReporter()
    p = params
    obs.stage(1, "prepare")
    ds = stages.prepare(p, out=workdir / stages.DEFAULT_PREPARED, reporter=rep)
    obs.done("prepare", ds)
    obs.stage(2, "validate")
    validation = stages.validate(p, dataset=ds.root, out=workdir / stages.DEFAULT_VALIDATED,
                                 report_dir=workdir / stages.DEFAULT_VALIDATION_REPORT, reporter=rep)
    obs.done("validate", validation)
    if validation.dataset is None:  # stages.validate raises when a check fails; never None here
        raise SynthgateError("validation wrote no dataset", hint="see the validation report")
    real = validation.dataset.root
    obs.stage(3, f"train ({p.generator.type}, size {p.generator.size}, {p.train.steps} steps)")
    tr = stages.train(p, dataset=real, out=workdir / stages.DEFAULT_GENERATOR, reporter=rep, resume=False)
    obs.done("train", tr)
    obs.stage(4, "sample")
    syn = stages.sample(p, model=tr.model_dir, out=workdir / stages.DEFAULT_SAMPLES, real=real, reporter=rep)
    obs.done("sample", syn)
    obs.stage(5, "evaluate")
    ev = stages.evaluate(p, real=real, synthetic=syn.root, out=workdir / stages.DEFAULT_EVALUATION, reporter=rep)
    obs.done("evaluate", ev)
    obs.stage(6, f"gate ({policy if policy is not None and policy.exists() else 'built-in defaults'})")
    gate_path = workdir / stages.DEFAULT_GATE
    decision = stages.gate(evaluation=ev.path, out=gate_path,
                           policy=policy if policy is not None and policy.exists() else None)
    obs.done("gate", decision)
    obs.stage(7, "register and promote (MLflow)")
    root = workdir / "mlruns"
    uri, started = _registry(root, obs)
    _gatekeeper(root, uri, policy, obs)
    try:
        reg = stages.register(model=tr.model_dir, evaluation=ev.path, gate=gate_path,
                              record=workdir / stages.DEFAULT_REGISTERED, tracking_uri=uri)
        obs.done("register", reg)
        promotion = _promote(reg, uri, override, obs)
        obs.done("promote", promotion)
        obs.stage(8, f"publish ({p.publish.store})")
        store = p.publish.store if "://" in p.publish.store else str(workdir / p.publish.store)
        pub = stages.publish(p, model=reg.name, store=store, alias=promotion.alias, samples=syn.root,
                             evaluation=ev.path.parent, tracking_uri=uri, reporter=rep, version=f"v{reg.version}")
        obs.done("publish", pub)
        obs.stage(9, "pull and verify")
        target = workdir / "data" / "pulled" / f"{pub.name}-{pub.version}"
        if target.exists():
            shutil.rmtree(target)
        pulled = stages.pull(f"{pub.name}:{pub.version}", to=target, store=store, tracking_uri=uri, reporter=rep)
        obs.done("pull", pulled)
    finally:
        if started and not keep_server:
            from synthgate.registry import server as srv

            srv.stop_server(root)
    return DemoResult(ds, validation, tr, syn, ev, decision, gate_path, reg, promotion, pub, pulled,
                      f"{uri}/#/models/{reg.name}/versions/{reg.version}", not started or keep_server)


def _registry(root: Path, obs: DemoObserver) -> tuple[str, bool]:
    """$MLFLOW_TRACKING_URI, a server already running under ``root``, or one started there (with
    authentication); -> (URI, whether this call started it)."""
    from synthgate.registry import server as srv

    given = os.environ.get("MLFLOW_TRACKING_URI")
    uri = given or srv.running_server(root)
    started = uri is None
    if uri is None:
        uri, _ = srv.start_server(root, detach=True)
    if not given and (root / srv.CREDENTIALS).exists():
        creds = srv.use_credentials(root)
        obs.note(f"MLflow at {uri} with authentication: admin '{creds.username}', password in {creds.path} "
                 "(mode 0600)")
    return uri, started


def _gatekeeper(root: Path, uri: str, policy: Path | None, obs: DemoObserver) -> None:
    """The gatekeeper consumers trust: with ``$MLFLOW_TRACKING_URI`` given, ``$SYNTHGATE_GATEKEEPER_URL`` with
    ``$SYNTHGATE_TRUST_ROOT``; else a local one beside the local server (its key under ``root/gatekeeper``, made once), whose trust root
    this process then verifies with."""
    from synthgate.registry import server as srv
    from synthgate.registry.gatekeeper_app import URL_ENV
    from synthgate.trust.keys import TRUST_ENV, TRUST_FILE

    if os.environ.get("MLFLOW_TRACKING_URI") and os.environ.get(URL_ENV) and os.environ.get(TRUST_ENV):
        return  # a given registry with its given gatekeeper; a local server gets its own local gatekeeper
    if not (root / srv.CREDENTIALS).exists():
        raise SynthgateError(f"the local gatekeeper needs the local server's admin ({root / srv.CREDENTIALS}); "
                             f"with $MLFLOW_TRACKING_URI set, also set {URL_ENV} and {TRUST_ENV}")
    url = srv.start_gatekeeper(root, uri, policy if policy is not None and policy.exists() else None)
    os.environ[URL_ENV] = url
    os.environ[TRUST_ENV] = str((root / "gatekeeper" / TRUST_FILE).resolve())
    obs.note(f"gatekeeper at {url} signs releases; consumers verify with {os.environ[TRUST_ENV]}")


def _promote(reg: Registered, uri: str, override: bool, obs: DemoObserver) -> Promotion:
    """Promote to ``approved``; when the gate refuses, by a recorded override if ``override``."""
    from synthgate import stages

    alias = "approved"
    try:
        return Promotion(alias, stages.promote(reg.name, reg.version, alias=alias, tracking_uri=uri))
    except SynthgateError as e:
        refused = " ".join(line.strip() for line in e.message.splitlines())
        obs.note(f"promote refused: {e.message}", "error")
        if not override:
            raise SynthgateError("the gate failed, so nothing can be published (demo run with --no-override)",
                                 hint="improve the generator (params.yaml train/generator) and run again") from None
    status = stages.promote(reg.name, reg.version, alias=alias, tracking_uri=uri, force=True, reason=OVERRIDE_REASON)
    obs.note(f"demo override recorded in MLflow: {OVERRIDE_REASON}", "warning")
    return Promotion(alias, status, refused, OVERRIDE_REASON)
