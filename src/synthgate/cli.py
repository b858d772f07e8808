"""The ``synthgate`` command: one sub-command per stage. It parses, calls :mod:`synthgate.stages`
and prints; it holds no logic of its own. Heavy imports stay inside the commands so that
``synthgate --help`` is instant."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from synthgate import __version__
from synthgate.errors import SynthgateError
from synthgate.kubeflow.cluster import SERVICE_ACCOUNT

app = typer.Typer(
    name="synthgate",
    help="Train, gate, register and publish synthetic medical image datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

ParamsOpt = Annotated[
    Path, typer.Option("--params", "-p", help="params.yaml with the experiment settings (read by DVC too)")
]


def _setup() -> None:
    for var, val in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("DVC_NO_ANALYTICS", "1"),
                     ("GX_ANALYTICS_ENABLED", "false"), ("HF_HUB_OFFLINE", "1"),
                     ("MLFLOW_LOGGING_LEVEL", "ERROR"), ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
                     ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")):
        os.environ.setdefault(var, val)
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)])
    logging.getLogger("synthgate").setLevel(logging.INFO)
    for noisy in ("great_expectations", "dvc", "mlflow", "kfp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    port = os.environ.get("SYNTHGATE_METRICS_PORT")
    if port:  # a long-running process (training) is scraped on /metrics while it runs
        from synthgate.monitoring.push import serve_metrics

        serve_metrics(int(port), os.environ.get("SYNTHGATE_METRICS_ADDR", "127.0.0.1"))


def _params(path: Path, overrides: dict[str, Any]) -> Any:
    from synthgate.config import load_params

    return load_params(path if path.exists() or str(path) != "params.yaml" else None, overrides)


def _reporter() -> Any:
    from synthgate.progress import RichReporter

    return RichReporter(err_console)


def _print_dataset(title: str, ds: Any) -> None:
    counts = ds.counts()
    table = Table(title=title, title_justify="left")
    table.add_column("class")
    for split in counts:
        table.add_column(split, justify="right")
    for c in ds.classes:
        table.add_row(c, *(str(counts[s][c]) for s in counts))
    table.add_row("[bold]total", *(f"[bold]{sum(counts[s].values())}" for s in counts))
    console.print(table)
    console.print(f"  images   {ds.root / 'images.npy'}  {tuple(ds.images.shape)} uint8")
    console.print(f"  metadata {ds.root / 'metadata.parquet'}")
    console.print(f"  manifest {ds.root / 'manifest.json'}  content_hash {ds.content_hash[:16]}")
    if ds.manifest.get("split_method"):
        console.print(f"  split    {ds.manifest['split_method']}")
    if "group" in ds.meta:
        per = {sp: ds.meta.loc[ds.meta["split"] == sp, "group"].nunique() for sp in counts}
        console.print(f"  patients {ds.meta['group'].nunique()} groups ({(ds.manifest.get('groups') or {}).get('source')}): "
                      + ", ".join(f"{sp} {n}" for sp, n in per.items()))


def _print_checks(result: Any) -> None:
    table = Table(title="validation", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("details", overflow="fold")
    for c in result.checks:
        if c.passed and c.source == "great_expectations" and c.summary.endswith("ok"):
            continue
        table.add_row(c.name, "[green]pass" if c.passed else "[red]FAIL", c.summary)
    n_ge = sum(1 for c in result.checks if c.source == "great_expectations")
    n_ge_ok = sum(1 for c in result.checks if c.source == "great_expectations" and c.passed)
    table.add_row("Great Expectations suite", "[green]pass" if n_ge == n_ge_ok else "[red]FAIL",
                  f"{n_ge_ok}/{n_ge} expectations met")
    console.print(table)
    if result.data_docs:
        console.print(f"  data docs  {result.data_docs}")
    console.print(f"  report     {result.report_dir / 'validation.json'}")


@app.command()
def ingest(
    params: ParamsOpt = Path("params.yaml"),
    source: Annotated[Path | None, typer.Option(
        help="raw data: .npz, image folder/archive, DICOM folder, folder of NIfTI volumes")] = None,
    labels: Annotated[Path | None, typer.Option(
        help="label table, CSV: file,label and optional split and group/patient columns (DICOM and NIfTI: "
             "required; NIfTI: one row per volume)")] = None,
    out: Annotated[Path, typer.Option(help="DVC-tracked folder for the raw data")] = Path("data/raw"),
) -> None:
    """Copy the raw source into the project (data/raw) so that DVC versions it."""
    from synthgate import stages

    p = _params(params, {"data.source.path": str(source) if source else None,
                         "data.source.labels": str(labels) if labels else None})
    rec = stages.ingest(p, out)
    console.print(f"ingested {rec['original_path']} ({rec['type']}) -> {out / rec['path']}")


@app.command()
def prepare(
    params: ParamsOpt = Path("params.yaml"),
    source: Annotated[Path | None, typer.Option(
        help="raw data: .npz, image folder/archive, DICOM folder, folder of NIfTI volumes")] = None,
    source_type: Annotated[
        str | None, typer.Option("--source-type", help="auto | mednist | medmnist | folder | dicom | nifti "
                                                       "(with --source, default auto: detected from the path)")
    ] = None,
    labels: Annotated[Path | None, typer.Option(
        help="label table, CSV: file,label and optional split and group/patient columns (DICOM and NIfTI: "
             "required; NIfTI: one row per volume)")] = None,
    group_pattern: Annotated[str | None, typer.Option(
        help="regular expression over each file's path whose first capture group names its patient")] = None,
    resolution: Annotated[int | None, typer.Option(help="output size in pixels (multiple of 8)")] = None,
    channels: Annotated[int | None, typer.Option(help="1 (grayscale) or 3 (RGB)")] = None,
    max_per_class: Annotated[int | None, typer.Option(help="keep at most N images per class")] = None,
    out: Annotated[Path, typer.Option(help="where to write the canonical dataset")] = Path("data/prepared"),
) -> None:
    """Read a raw source and write the canonical dataset (images, metadata, manifest)."""
    from synthgate import stages

    p = _params(params, {"data.source.path": str(source) if source else None, "data.source.type": source_type,
                         "data.source.labels": str(labels) if labels else None, "prepare.resolution": resolution,
                         "data.source.group_pattern": group_pattern,
                         "prepare.channels": channels, "prepare.max_per_class": max_per_class})
    ds = stages.prepare(p, out, _reporter())
    _print_dataset(f"prepared {ds.manifest['num_images']} images from {p.data.source.path}", ds)


@app.command()
def validate(
    params: ParamsOpt = Path("params.yaml"),
    dataset: Annotated[Path, typer.Option(help="canonical dataset to validate")] = Path("data/prepared"),
    out: Annotated[Path, typer.Option(help="where to write the validated dataset")] = Path("data/validated"),
    report: Annotated[Path, typer.Option(help="folder for validation.json and the data docs")] = Path(
        "reports/validation"
    ),
    drop_duplicates: Annotated[
        bool | None, typer.Option("--drop-duplicates/--keep-duplicates",
                                  help="drop held-out images that duplicate an image of another split")
    ] = None,
    drop_empty: Annotated[
        bool | None, typer.Option("--drop-empty/--keep-empty", help="drop constant (empty) images")
    ] = None,
    deidentify: Annotated[
        bool | None, typer.Option("--deidentify/--no-deidentify", help="strip identifying DICOM tags")
    ] = None,
    min_images_per_class: Annotated[int | None, typer.Option(help="minimum training images per class")] = None,
) -> None:
    """Check a canonical dataset (Great Expectations, cross-split duplicates, DICOM PHI)."""
    from synthgate import stages
    from synthgate.errors import ValidationFailed

    p = _params(params, {"validate.drop_duplicates": drop_duplicates, "validate.drop_empty": drop_empty,
                         "validate.deidentify": deidentify, "validate.min_images_per_class": min_images_per_class})
    try:
        result = stages.validate(p, dataset, out, report, _reporter())
    except ValidationFailed as e:
        if getattr(e, "result", None) is not None:
            _print_checks(e.result)
        raise
    _print_checks(result)
    if result.dropped:
        console.print(f"  dropped    {result.dropped}")
    _print_dataset("validated dataset", result.dataset)


def _print_training(r: Any) -> None:
    console.print(f"trained {r.steps} steps (resumed from step {r.resumed_from}), final loss {r.final_loss:.4f}, "
                  f"{r.images_per_second:.1f} images/s")
    console.print(f"  model      {r.model_dir}")
    if r.fid:
        f = r.fid
        why = (f"stopped early at step {f['stopped_at']} (no improvement in {f['patience']} evaluations)"
               if f.get("stopped_at") is not None else "step budget reached")
        best = "none" if f.get("best_fid") is None else f"{f['best_fid']:.3f} at step {f['best_step']}"
        console.print(f"  FID        best {best}, {len(f['history'])} evaluations, {why}; "
                      f"the model holds the best step's weights (encoder {f.get('encoder_id', '?')})")
    if r.checkpoint:
        console.print(f"  checkpoint {r.checkpoint}")
    if r.mlflow_run_id:
        console.print(f"  mlflow run {r.mlflow_run_id}")


def _print_evaluation(result: Any) -> None:
    d = result.data
    s = d["summary"]
    table = Table(title=f"evaluation {d['evaluation_hash'][:16]}", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("context")

    def f(v: Any, digits: int = 4) -> str:
        return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))

    table.add_row("FID (encoder features)", f(s["fid"], 3), f"real test vs train: {f(s['fid_real_baseline'], 3)}")
    table.add_row("precision / recall", f"{f(s['precision'], 3)} / {f(s['recall'], 3)}", "")
    table.add_row("density / coverage", f"{f(s['density'], 3)} / {f(s['coverage'], 3)}", "")
    mem = d["memorization"]
    p_min = "–" if s["smallest_copy_p"] is None else f"{s['smallest_copy_p']:.2g}"
    table.add_row("copies flagged", f(s["flagged_copies"]),
                  f"{mem['flags']['correction'].upper()} at {mem['flags']['alpha']:g} over "
                  f"{mem['coverage']['synthetic_size']} images; smallest copy p-value {p_min}")
    table.add_row("planted copies found (weakest kind)", f(s["planted_min_detection"], 2),
                  f"{mem['coverage']['train_compared']} of {mem['coverage']['train_size']} training images searched, "
                  f"null of {mem['coverage']['held_out']} held-out images")
    table.add_row("membership AUC (descriptor / pixels)",
                  f"{f(s['membership_auc'], 3)} / {f(s['membership_auc_pixel'], 3)}", "0.5 = no leak")
    if "auc_gap" in s:
        table.add_row("AUROC real / synthetic", f"{f(s['auc_real'])} / {f(s['auc_synthetic'])}", "TRTR / TSTR")
        table.add_row("utility gap", f(s["auc_gap"]), "AUC_real - AUC_syn")
        table.add_row("Δsyn / augmentation gain", f"{f(s.get('delta_syn'))} / {f(s.get('augmented_gain'))}", "")
    console.print(table)
    if s.get("fidelity_utility_disagree"):
        console.print(f"[yellow]{s['fidelity_utility_note']}")
    console.print(f"  encoder    {d['encoder']['encoder_id']}")
    console.print(f"  timings    {', '.join(f'{k} {v:.1f}s' for k, v in d.get('timings', {}).items())}")
    console.print(f"  json       {result.path}")
    console.print(f"  report     {result.report_html}")


@app.command()
def train(
    params: ParamsOpt = Path("params.yaml"),
    dataset: Annotated[Path, typer.Option(help="canonical dataset to train on (its train split)")] = Path(
        "data/validated"
    ),
    out: Annotated[Path, typer.Option(help="run folder: checkpoints/, grids/, model/")] = Path("models/generator"),
    model_type: Annotated[str | None, typer.Option("--type", help="diffusion | gan")] = None,
    size: Annotated[str | None, typer.Option(help="tiny | small | base")] = None,
    steps: Annotated[int | None, typer.Option(help="training steps")] = None,
    batch_size: Annotated[int | None, typer.Option(help="images per step")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    compile_: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile (CUDA)")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume",
                                         help="continue from the latest checkpoint in --out")] = True,
    checkpoint_uri: Annotated[str | None, typer.Option(
        help="s3://BUCKET/PREFIX or a folder: mirror checkpoints there and resume from it (a restarted pod)")] = None,
) -> None:
    """Train a class-conditional generator (diffusion or cpD-GAN); resumes after a kill."""
    from synthgate import stages

    p = _params(params, {"generator.type": model_type, "generator.size": size, "train.steps": steps,
                         "train.batch_size": batch_size, "train.device": device, "train.compile": compile_})
    result = stages.train(p, dataset, out, _reporter(), resume, checkpoint_uri=checkpoint_uri)
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank returns; rank 0 speaks for the run
        _print_training(result)


@app.command()
def sample(
    params: ParamsOpt = Path("params.yaml"),
    model: Annotated[Path, typer.Option(help="a generator model folder")] = Path("models/generator/model"),
    out: Annotated[Path, typer.Option(help="where to write the synthetic canonical dataset")] = Path("data/samples"),
    real: Annotated[Path, typer.Option(help="real dataset (for --match-real)")] = Path("data/validated"),
    per_class: Annotated[int | None, typer.Option(help="images per class")] = None,
    match_real: Annotated[bool | None, typer.Option("--match-real/--per-class-only",
                                                    help="follow the real train split's class distribution")] = None,
    total: Annotated[int | None, typer.Option(help="how many images in all, in the real class mix "
                                                   "(implies --match-real)")] = None,
    sampler: Annotated[str | None, typer.Option(help="ddpm | ddim | dpmsolver++")] = None,
    steps: Annotated[int | None, typer.Option(help="sampler steps")] = None,
    guidance_scale: Annotated[float | None, typer.Option(help="classifier-free guidance scale")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
) -> None:
    """Sample a synthetic dataset (canonical format) from a trained generator."""
    from synthgate import stages
    from synthgate.config import CLEAR

    if total is not None and match_real is None and per_class is None:
        match_real = True  # --total N: N images in all, in the real class mix
    how_many: dict[str, Any] = {"sample.per_class": per_class, "sample.match_real": match_real, "sample.total": total}
    if match_real:  # the params file's per_class no longer applies
        how_many["sample.per_class"] = CLEAR if per_class is None else per_class
    elif match_real is False or per_class is not None:  # --per-class-only / --per-class N
        how_many["sample.match_real"] = False  # the params file's match_real and total no longer apply
        how_many["sample.total"] = CLEAR if total is None else total
    p = _params(params, {**how_many, "sample.sampler": sampler, "sample.steps": steps,
                         "sample.guidance_scale": guidance_scale, "sample.device": device})
    ds = stages.sample(p, model, out, real if real.exists() else None, _reporter())
    _print_dataset(f"sampled {ds.manifest['num_images']} synthetic images", ds)


@app.command()
def evaluate(
    params: ParamsOpt = Path("params.yaml"),
    real: Annotated[Path, typer.Option(help="real canonical dataset (with train/val/test)")] = Path("data/validated"),
    synthetic: Annotated[Path, typer.Option(help="synthetic canonical dataset")] = Path("data/samples"),
    out: Annotated[Path, typer.Option(help="folder for evaluation.json and report.html")] = Path(
        "reports/evaluation"
    ),
    retrain_encoder: Annotated[bool, typer.Option(help="train a new reference encoder")] = False,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
) -> None:
    """Fidelity, variety, complexity, memorization/privacy and utility of a synthetic dataset."""
    from synthgate import stages

    p = _params(params, {"evaluate.device": device})
    _print_evaluation(stages.evaluate(p, real, synthetic, out, _reporter(), retrain_encoder))


def _print_gate(d: Any, out: Path) -> None:
    table = Table(title=f"gate: {'[green]PASSED' if d.passed else '[red]FAILED'}", title_justify="left")
    table.add_column("rule", overflow="fold")
    table.add_column("result")
    table.add_column("reason", overflow="fold")
    for r in d.rules:
        table.add_row(r.rule, "[green]pass" if r.passed else "[red]FAIL", r.reason)
    console.print(table)
    if d.skipped:
        console.print(f"  not applied (null in the policy): {', '.join(d.skipped)}")
    statement = d.details.get("memorization", {}).get("statement")
    if statement:
        console.print(f"  memorization: {statement}")
    console.print(f"  evaluation {d.evaluation_hash[:16]}  policy {d.policy_hash[:16]}")
    console.print(f"  gate.json  {out}")


@app.command()
def gate(
    evaluation: Annotated[Path, typer.Option(help="evaluation.json to judge")] = Path(
        "reports/evaluation/evaluation.json"
    ),
    policy: Annotated[Path, typer.Option(help="the release policy")] = Path("gates.yaml"),
    out: Annotated[Path, typer.Option(help="where to write gate.json")] = Path("reports/gate/gate.json"),
    strict: Annotated[bool, typer.Option(help="exit non-zero when the gate fails")] = False,
) -> None:
    """Apply the release policy (gates.yaml) to an evaluation; write gate.json."""
    from synthgate import stages

    d = stages.gate(evaluation, policy if policy.exists() or str(policy) != "gates.yaml" else None, out)
    _print_gate(d, out)
    if strict and not d.passed:
        err_console.print(f"[bold red]gate failed:[/] {len(d.failures)} rule(s): "
                          + ", ".join(r.rule for r in d.failures))
        raise typer.Exit(1)


UriOpt = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow server (default $MLFLOW_TRACKING_URI "
                                                                 "or http://127.0.0.1:5000)")]


@app.command()
def register(
    model: Annotated[Path, typer.Option(help="generator model folder")] = Path("models/generator/model"),
    evaluation: Annotated[Path, typer.Option(help="its evaluation.json")] = Path("reports/evaluation/evaluation.json"),
    gate_record: Annotated[Path, typer.Option("--gate", help="its gate.json")] = Path("reports/gate/gate.json"),
    name: Annotated[str | None, typer.Option(help="registered model name (default: after the dataset)")] = None,
    record: Annotated[Path, typer.Option(help="where to write registered.json")] = Path(
        "reports/registry/registered.json"
    ),
    tracking_uri: UriOpt = None,
) -> None:
    """Register the generator as a new MLflow model version with its evaluation and gate record."""
    from synthgate import stages

    r = stages.register(model, evaluation, gate_record, record, name, tracking_uri)
    console.print(f"registered {r.name} version {r.version} (run {r.run_id}); gate "
                  + ("[green]passed" if r.gate_passed else "[red]failed"))
    console.print(f"  MLflow UI  {r.tracking_uri}/#/models/{r.name}/versions/{r.version}")


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str, typer.Argument(help="model version")],
    alias: Annotated[str, typer.Option(help="alias to set")] = "approved",
    force: Annotated[bool, typer.Option(help="override a failed gate (needs --reason; recorded)")] = False,
    reason: Annotated[str | None, typer.Option(help="why the override")] = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Set an alias on a model version, only if its verified gate passed."""
    from synthgate import stages

    console.print(stages.promote(name, version, alias, tracking_uri, force, reason))


@app.command("pin-policy")
def pin_policy(
    name: Annotated[str, typer.Argument(help="registered model name")],
    policy: Annotated[Path | None, typer.Option(help="gates.yaml every version must be gated with "
                                                     "(default: the built-in defaults)")] = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Reviewers: require a gate policy for every version of a model (promote, publish and load check it)."""
    from synthgate import stages

    console.print(stages.pin_policy(name, policy, tracking_uri))


@app.command()
def models(
    name: Annotated[str | None, typer.Argument(help="one registered model (default: all)")] = None,
    tracking_uri: UriOpt = None,
) -> None:
    """List registered generator versions with their gate status and aliases."""
    from synthgate.registry.registry import list_versions

    table = Table(title="registered generators", title_justify="left")
    for col in ("model", "version", "gate", "aliases", "override", "evaluation"):
        table.add_column(col)
    for r in list_versions(name, tracking_uri):
        gate = {"true": "[green]passed", "false": "[red]failed"}.get(r["gate"], r["gate"])
        table.add_row(r["name"], r["version"], gate, ", ".join(r["aliases"]), r["override"] or "", r["evaluation_hash"])
    console.print(table)


@app.command()
def audit(
    name: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str | None, typer.Option(help="one version (default: every version)")] = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Print a model's audit trail (promotions, refusals, overrides, guard actions) and verify its hash
    chain; exit 1 when an entry was changed, removed or replaced."""
    from synthgate.registry.registry import audit_trail

    table = Table(title=f"audit trail of {name}", title_justify="left")
    for col in ("version", "#", "time", "user", "action", "detail", "chain"):
        table.add_column(col)
    broken = []
    for v, checked in audit_trail(name, version, tracking_uri):
        for c in checked:
            f = c.fields
            table.add_row(v, str(c.n), f.get("time", ""), f.get("user", ""), f.get("action", ""),
                          (f.get("detail", "")[:90] + ("..." if len(f.get("detail", "")) > 90 else "")),
                          "ok" if c.status == "ok" else (f"[yellow]{c.status}" if c.ok else f"[red]{c.status}"))
            if not c.ok:
                broken.append(f"version {v} entry {c.n} {c.status}")
    console.print(table)
    if broken:
        raise SynthgateError("the audit trail does not verify:\n  " + "\n  ".join(broken),
                             hint="the version's audit.N tags were edited in MLflow; compare with the guard's and "
                                  "MLflow's logs")


StoreOpt = Annotated[str | None, typer.Option("--store", help="a folder, file:///PATH or s3://BUCKET/PREFIX (default "
                                                       "params.yaml publish.store; S3 endpoint from AWS_ENDPOINT_URL)")]


@app.command()
def publish(
    model: Annotated[str | None, typer.Argument(help="registered model name (see `synthgate models`; default: "
                                                     "the one in reports/registry/registered.json)")] = None,
    alias: Annotated[str | None, typer.Option(help="publish the version holding this alias "
                                                   "(default publish.alias: approved)")] = None,
    store: StoreOpt = None,
    samples: Annotated[Path | None, typer.Option(help="the evaluated sample set (used if the version was gated "
                                                      "on it; else the model is sampled afresh)")] = Path(
        "data/samples"),
    evaluation: Annotated[Path | None, typer.Option(help="the evaluation folder (report.html fallback)")] = Path(
        "reports/evaluation"),
    name: Annotated[str | None, typer.Option(help="dataset name (default: MODEL without -generator, "
                                                  "+ -synthetic)")] = None,
    dataset_version: Annotated[str | None, typer.Option("--version", help="dataset version (default "
                                                                          "v<model version>)")] = None,
    record: Annotated[Path, typer.Option(help="where to write published.json")] = Path(
        "reports/publish/published.json"),
    if_approved: Annotated[bool, typer.Option("--if-approved", help="when no version holds the alias yet, say so in "
                                              "published.json and exit 0 (for `dvc repro`); every other refusal "
                                              "still fails")] = False,
    params: ParamsOpt = Path("params.yaml"),
    tracking_uri: UriOpt = None,
) -> None:
    """Publish the approved version's synthetic dataset: shards, PNGs, manifest (sha256), data card, report."""
    from synthgate import stages
    from synthgate.publish.package import NothingApproved
    from synthgate.utils import utc_now, write_json_atomic

    p = _params(params, {})
    if model is None:
        registered = Path("reports/registry/registered.json")
        if not registered.exists():
            raise SynthgateError("publish: no MODEL given and no reports/registry/registered.json",
                                 hint="name the registered model: `synthgate publish NAME` (see `synthgate models`)")
        model = json.loads(registered.read_text())["name"]
    try:
        r = stages.publish(p, model, store, alias, samples if samples and samples.exists() else None,
                           evaluation if evaluation and evaluation.exists() else None, name, tracking_uri,
                           _reporter(), dataset_version)
    except NothingApproved as e:
        if not if_approved:
            raise
        write_json_atomic(record, {"published": False, "reason": e.message, "checked": utc_now()})
        err_console.print(f"[yellow]not published:[/] {e.message}", highlight=False)
        if e.hint:
            err_console.print(f"[yellow]hint:[/] {e.hint}", highlight=False)
        return
    write_json_atomic(record, {"published": True, "name": r.name, "version": r.version, "uri": r.uri, "num_images": r.num_images,
                               "model": r.manifest["model"], "bytes": r.bytes, "seconds": round(r.seconds, 3),
                               "already_published": r.already_published, "notes": r.notes})
    for note in r.notes:
        console.print(f"[yellow]note:[/] {note}")
    verb = "already published" if r.already_published else "published"
    console.print(f"{verb} [bold]{r.name}:{r.version}[/] ({r.num_images} images, {len(r.manifest['files'])} files"
                  + (f", {r.bytes / 1e6:.1f} MB in {r.seconds:.1f} s" if r.bytes else "") + f") at {r.uri}")
    m = r.manifest["model"]
    console.print(f"  from {m['name']} version {m['version']} @{m['alias']}; gate "
                  + ("[green]passed" if m["gate_passed"] else f"[red]failed[/] (override: {m['override']})"))
    console.print(f"  pull it with: synthgate pull {r.name}:{r.version} --store {store or p.publish.store} --to DIR")


@app.command()
def pull(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION (see `synthgate datasets`)")],
    to: Annotated[Path, typer.Option("--to", help="an empty (or new) folder; an interrupted pull into it resumes")],
    store: StoreOpt = None,
    allow_revoked: Annotated[bool, typer.Option(help="pull even if the model version lost its approval "
                                                     "(recorded in pull.json)")] = False,
    params: ParamsOpt = Path("params.yaml"),
    tracking_uri: UriOpt = None,
) -> None:
    """Download a published dataset, verify every file's sha256, refuse it if its model was revoked."""
    from synthgate import stages

    p = _params(params, {})
    r = stages.pull(ref, to, store or p.publish.store, tracking_uri, allow_revoked, _reporter())
    for note in r.notes:
        err_console.print(f"[bold yellow]warning:[/] {note}")
    console.print(f"pulled [bold]{r.name}:{r.version}[/] into {r.path}: {r.num_files} files verified (sha256)"
                  + (f", {r.skipped} already in place" if r.skipped else "")
                  + (f", {r.resumed} resumed" if r.resumed else "")
                  + f"; {r.bytes / 1e6:.1f} MB in {r.seconds:.1f} s; model status: {r.status}")


@app.command()
def datasets(
    store: StoreOpt = None,
    check: Annotated[bool, typer.Option(help="ask MLflow whether each dataset's model version is still approved")
                     ] = False,
    params: ParamsOpt = Path("params.yaml"),
    tracking_uri: UriOpt = None,
) -> None:
    """List the published datasets in a store."""
    from synthgate.publish.pull import list_datasets, revocation_status

    p = _params(params, {})
    table = Table(title=f"published datasets in {store or p.publish.store}", title_justify="left")
    for col in ("dataset", "version", "images", "model", "gate", "created") + (("status",) if check else ()):
        table.add_column(col)
    for d in list_datasets(store or p.publish.store):
        row = [d["name"], d["version"], str(d["num_images"]), f"{d['model']} @{d['alias']}",
               "[green]passed" if d["gate_passed"] else "[red]override", d["created"]]
        if check:
            ok, why = revocation_status(d["manifest"], tracking_uri)
            row.append("[green]approved" if ok else f"[red]revoked[/]: {why}")
        table.add_row(*row)
    console.print(table)


@app.command()
def standin(
    real: Annotated[Path, typer.Option(help="real canonical dataset")] = Path("data/validated"),
    out_real: Annotated[Path, typer.Option(help="real dataset with half of its test split")] = Path(
        "data/standin/real"
    ),
    out_synthetic: Annotated[Path, typer.Option(help="the other half, as a 'synthetic' dataset")] = Path(
        "data/standin/synthetic"
    ),
    seed: int = 0,
) -> None:
    """Make a stand-in 'synthetic' set from real held-out images (to test the evaluation)."""
    from synthgate import stages

    r, s = stages.standin(real, out_real, out_synthetic, seed)
    console.print(f"real {r}\nstand-in synthetic {s}")


@app.command()
def info(dataset: Annotated[Path, typer.Argument(help="a canonical dataset folder")]) -> None:
    """Show a canonical dataset's classes, splits and lineage."""
    from synthgate.data.canonical import load_dataset

    ds = load_dataset(dataset)
    _print_dataset(f"{dataset} ({ds.manifest.get('stage')}, {ds.manifest.get('created')})", ds)
    for inp in ds.manifest.get("inputs", []):
        console.print(f"  input    {inp}")


@app.command()
def demo(
    params: ParamsOpt = Path("params.yaml"),
    workdir: Annotated[Path, typer.Option(help="where data/, models/ and reports/ are written")] = Path("."),
    keep_server: Annotated[bool, typer.Option("--keep-server/--stop-server",
                                              help="leave the demo's MLflow server running for its UI")] = True,
    override: Annotated[bool, typer.Option("--override/--no-override",
                                           help="if the gate fails, promote by a recorded override so that "
                                                "publish and pull can be shown (the data card says so)")] = True,
    max_per_class: Annotated[int, typer.Option(
        min=0, help="at most this many images per class (below the params file's prepare.max_per_class, if "
                    "set), so that the demo fits in 10 minutes on 2 CPU cores; 0: the params file's value")] = 1500,
    max_steps: Annotated[int, typer.Option(
        min=0, help="train at most this many steps (below the params file's train.steps), for the same "
                    "reason; 0: the params file's value")] = 450,
) -> None:
    """Run the flow end to end on the default data (MedNIST): prepare -> validate -> train -> sample ->
    evaluate -> gate -> register -> promote -> publish -> pull (a verified dataset on disk)."""
    from synthgate import stages

    p = _params(params, {})
    caps: dict[str, Any] = {}
    if max_per_class and (p.prepare.max_per_class is None or p.prepare.max_per_class > max_per_class):
        caps["prepare.max_per_class"] = max_per_class
    if max_steps and p.train.steps > max_steps:
        caps["train.steps"] = max_steps
    if caps:
        p = _params(params, caps)
        console.print(f"demo: at most {p.prepare.max_per_class} images per class and {p.train.steps} training steps "
                      "(--max-per-class, --max-steps; 0 takes the params file's value), to fit in 10 minutes on 2 "
                      "CPU cores")
    console.rule("[bold]1/9 prepare")
    ds = stages.prepare(p, workdir / stages.DEFAULT_PREPARED, _reporter())
    _print_dataset(f"prepared {ds.manifest['num_images']} images from {p.data.source.path}", ds)
    console.rule("[bold]2/9 validate")
    result = stages.validate(p, ds.root, workdir / stages.DEFAULT_VALIDATED,
                             workdir / stages.DEFAULT_VALIDATION_REPORT, _reporter())
    _print_checks(result)
    if result.dropped:
        console.print(f"  dropped    {result.dropped}")
    console.rule(f"[bold]3/9 train ({p.generator.type}, size {p.generator.size}, {p.train.steps} steps)")
    tr = stages.train(p, result.dataset.root, workdir / stages.DEFAULT_GENERATOR, _reporter(), resume=False)
    _print_training(tr)
    console.rule("[bold]4/9 sample")
    syn = stages.sample(p, tr.model_dir, workdir / stages.DEFAULT_SAMPLES, result.dataset.root, _reporter())
    _print_dataset(f"sampled {syn.manifest['num_images']} synthetic images", syn)
    console.rule("[bold]5/9 evaluate")
    ev = stages.evaluate(p, result.dataset.root, syn.root, workdir / stages.DEFAULT_EVALUATION, _reporter())
    _print_evaluation(ev)
    console.rule("[bold]6/9 gate (gates.yaml)")
    policy = Path("gates.yaml")
    decision = stages.gate(ev.path, policy if policy.exists() else None, workdir / stages.DEFAULT_GATE)
    _print_gate(decision, workdir / stages.DEFAULT_GATE)
    console.rule("[bold]7/9 register and promote (MLflow)")
    reg, ui, promoted, pub, pulled = _demo_registry(p, workdir, tr.model_dir, ev.path, workdir / stages.DEFAULT_GATE,
                                                    syn.root, keep_server, override)
    console.rule("[bold green]done")
    console.print(f"canonical dataset   {ds.root}")
    console.print(f"validated dataset   {result.dataset.root}  ({result.dataset.manifest['num_images']} images)")
    console.print(f"metadata            {result.dataset.root / 'metadata.parquet'}")
    console.print(f"validation report   {result.report_dir / 'validation.json'}")
    console.print(f"data docs (HTML)    {result.data_docs}")
    console.print(f"generator           {tr.model_dir}")
    console.print(f"synthetic dataset   {syn.root}")
    console.print(f"evaluation          {ev.path}")
    console.print(f"evaluation report   {ev.report_html}")
    verdict = "[green]PASSED" if decision.passed else f"[red]FAILED[/] ({', '.join(r.rule for r in decision.failures)})"
    console.print(f"gate                {workdir / stages.DEFAULT_GATE}: {verdict}")
    console.print(f"model version       {reg.name} version {reg.version}: {promoted}")
    console.print(f"published dataset   {pub.uri} ({pub.num_images} images, {len(pub.manifest['files'])} files)")
    console.print(f"pulled and verified {pulled.path} ({pulled.num_files} files, sha256 checked; "
                  f"model {pulled.status})")
    console.print(f"MLflow UI           {ui}" + ("" if keep_server else " (server stopped)"))
    if keep_server:
        console.print(f"[dim]the demo's MLflow server keeps running; stop it with `synthgate mlflow-stop --root "
                      f"{workdir / 'mlruns'}`")


def _demo_registry(p: Any, workdir: Path, model_dir: Path, evaluation: Path, gate_path: Path, samples: Path,
                   keep_server: bool, override: bool) -> tuple[Any, str, str, Any, Any]:
    """Register in $MLFLOW_TRACKING_URI, or in a local server under workdir/mlruns; promote (by a recorded
    override if the gate failed and ``override``); publish to a local store; pull and verify."""
    import shutil

    from synthgate import stages
    from synthgate.registry import server as srv

    root = workdir / "mlruns"
    uri = os.environ.get("MLFLOW_TRACKING_URI") or srv.running_server(root)
    started = False
    if uri is None:
        uri, _ = srv.start_server(root, detach=True)
        started = True
    if not os.environ.get("MLFLOW_TRACKING_URI") and (root / srv.CREDENTIALS).exists():
        creds = srv.use_credentials(root)
        console.print(f"MLflow at {uri} with authentication: admin '{creds.username}', password in {creds.path} "
                      "(mode 0600)", highlight=False)
    try:
        reg = stages.register(model_dir, evaluation, gate_path, workdir / stages.DEFAULT_REGISTERED, None, uri)
        try:
            promoted = "[green]" + stages.promote(reg.name, reg.version, "approved", uri)
        except SynthgateError as e:
            promoted = "[red]not promoted[/]: " + " ".join(line.strip() for line in e.message.splitlines())
            console.print(f"[red]promote refused:[/] {e.message}", highlight=False)
            if not override:
                raise SynthgateError("the gate failed, so nothing can be published (demo run with --no-override)",
                                     hint="improve the generator (params.yaml train/generator) and run again") from None
            reason = ("synthgate demo: a tiny CPU model trained for minutes fails the release gate; overridden "
                      "only to show publish and pull; not for release")
            promoted += " -> [yellow]" + stages.promote(reg.name, reg.version, "approved", uri, True, reason)
            console.print(f"[yellow]demo override recorded in MLflow:[/] {reason}", highlight=False)
        ui = f"{uri}/#/models/{reg.name}/versions/{reg.version}"
        console.rule("[bold]8/9 publish (data/published)")
        store = str(workdir / p.publish.store) if "://" not in p.publish.store else p.publish.store
        pub = stages.publish(p, reg.name, store, "approved", samples, evaluation.parent, None, uri, _reporter(),
                             f"v{reg.version}")
        console.print(("already published " if pub.already_published else "published ")
                      + f"[bold]{pub.name}:{pub.version}[/] at {pub.uri}")
        console.rule("[bold]9/9 pull and verify")
        target = workdir / "data" / "pulled" / f"{pub.name}-{pub.version}"
        if target.exists():
            shutil.rmtree(target)
        pulled = stages.pull(f"{pub.name}:{pub.version}", target, store, uri, False, _reporter())
        console.print(f"pulled {pulled.num_files} files into {pulled.path}: every sha256 matches the manifest; "
                      f"model version {pulled.status}")
    finally:
        if started and not keep_server:
            srv.stop_server(root)
    return reg, ui, promoted, pub, pulled


@app.command("mlflow-stop")
def mlflow_stop(root: Annotated[Path, typer.Option(help="the demo's MLflow folder")] = Path("mlruns")) -> None:
    """Stop an MLflow server that `synthgate demo` left running."""
    from synthgate.registry.server import stop_server

    console.print("stopped" if stop_server(root) else f"no server recorded under {root}")


@app.command("mlflow-serve")
def mlflow_serve(
    root: Annotated[Path, typer.Option(help="folder of the stores and credentials")] = Path("mlruns"),
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="without authentication (anyone who reaches the port "
                                                             "may do anything)")] = False,
) -> None:
    """Run the local MLflow server in the foreground (`make mlflow`), with authentication unless --no-auth."""
    import time

    from synthgate.registry import server as srv

    uri, _ = srv.start_server(root, port, auth=not no_auth)
    if not no_auth:
        creds = srv.local_credentials(root, create=False)
        console.print(f"MLflow at {uri}; admin '{creds.username}', password in {creds.path} (mode 0600). "
                      f"For this shell: [bold]set -a; . {creds.path}; set +a[/]", highlight=False)
    else:
        console.print(f"MLflow at {uri} [red]without authentication[/]", highlight=False)
    try:
        while srv.running_server(root):
            time.sleep(2)
    finally:
        srv.stop_server(root)


access_app = typer.Typer(help="Registry users and roles (an MLflow server with authentication; admins and owners).",
                         no_args_is_help=True)


@access_app.command("add-user")
def access_add_user(
    user: Annotated[str, typer.Argument(help="user name")],
    password_file: Annotated[Path | None, typer.Option(help="read the password from this file (default: generate "
                                                            "one into USER.credentials.env, mode 0600)")] = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Create a registry user (admin only)."""
    import secrets

    from synthgate.registry import access
    from synthgate.registry.client import tracking_uri as _uri

    uri = _uri(tracking_uri)
    if password_file is not None:
        access.add_user(uri, user, password_file.read_text().strip())
        console.print(f"created user {user}")
        return
    out = Path(f"{user}.credentials.env")
    if out.exists():
        raise SynthgateError(f"{out} exists", hint="move it away, or pass --password-file")
    password = secrets.token_urlsafe(18)
    access.add_user(uri, user, password)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"MLFLOW_TRACKING_USERNAME={user}\nMLFLOW_TRACKING_PASSWORD={password}\n")
    console.print(f"created user {user}; credentials in {out} (mode 0600): hand them over, then delete the file")


@access_app.command("grant")
def access_grant(
    name: Annotated[str, typer.Argument(help="registered model name")],
    user: Annotated[str, typer.Option(help="user name")],
    role: Annotated[str, typer.Option(help="consumer (READ), reviewer or pipeline (EDIT), owner (MANAGE)")],
    tracking_uri: UriOpt = None,
) -> None:
    """Give a user a role on one registered model."""
    from synthgate.registry import access
    from synthgate.registry.client import tracking_uri as _uri

    console.print(f"{user} is {role} of {name} ({access.grant(_uri(tracking_uri), name, user, role)})")


@access_app.command("revoke")
def access_revoke(name: Annotated[str, typer.Argument(help="registered model name")],
                  user: Annotated[str, typer.Option(help="user name")], tracking_uri: UriOpt = None) -> None:
    """Remove a user's role on a registered model (the server's default permission applies again)."""
    from synthgate.registry import access
    from synthgate.registry.client import tracking_uri as _uri

    access.revoke(_uri(tracking_uri), name, user)
    console.print(f"revoked {user} on {name}")


@access_app.command("list")
def access_list(name: Annotated[str, typer.Argument(help="registered model name")], tracking_uri: UriOpt = None) -> None:
    """Who may do what on a registered model."""
    from rich.table import Table

    from synthgate.registry import access
    from synthgate.registry.client import tracking_uri as _uri

    table = Table("user", "role", "MLflow permission")
    for g in access.list_access(_uri(tracking_uri), name):
        table.add_row(g.user, g.role, g.permission)
    console.print(table)


app.add_typer(access_app, name="access")

guard_app = typer.Typer(help="The promotion guard: reverts a protected alias set on a version that failed its gate.",
                        no_args_is_help=True)
SecretOpt = Annotated[Path, typer.Option(help="file with the webhook's shared secret (at least 16 characters)")]
PolicyOpt = Annotated[Path | None, typer.Option(help="gates.yaml every holder of a protected alias must be gated with "
                                                     "(the guard's own copy; default: the registry's pin)")]


def _policy_hash(policy: Path | None) -> str | None:
    from synthgate.gates.policy import load_policy

    return load_policy(policy).policy_hash() if policy is not None else None


@guard_app.command("serve")
def guard_serve(
    secret_file: SecretOpt,
    tracking_uri: UriOpt = None,
    alias: Annotated[list[str] | None, typer.Option(help="protected alias (repeatable; default: approved)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8089,
    state: Annotated[Path, typer.Option(help="SQLite file: seen deliveries, last approved holders")] = Path(
        "guard.db"),
    sweep_every: Annotated[float, typer.Option(help="seconds between sweeps of every protected alias")] = 300.0,
    policy: PolicyOpt = None,
    webhook_name: Annotated[str, typer.Option(help="MLflow webhook checked at every sweep ('' : not checked)")] = (
        "synthgate-guard"),
) -> None:
    """Receive MLflow's registry webhooks (POST /webhook) and sweep the protected aliases."""
    from synthgate.registry import guard as g
    from synthgate.registry.client import tracking_uri as _uri

    gd = g.Guard(_uri(tracking_uri), g.read_secret(secret_file), state, tuple(alias or ("approved",)),
                 _policy_hash(policy), webhook_name or None)
    console.print(f"guard on http://{host}:{port}/webhook for {_uri(tracking_uri)}; protected: "
                  f"{', '.join(gd.aliases)}; sweeping every {sweep_every:.0f} s", highlight=False)
    g.serve(gd, host, port, sweep_every)


@guard_app.command("register-webhook")
def guard_register_webhook(
    url: Annotated[str, typer.Argument(help="the guard's webhook URL, e.g. http://synthgate-guard:8089/webhook")],
    secret_file: SecretOpt,
    tracking_uri: UriOpt = None,
) -> None:
    """Create (or replace) the MLflow webhook that delivers alias and tag events to the guard (admin)."""
    from synthgate.registry import guard as g
    from synthgate.registry.client import tracking_uri as _uri

    wid = g.register_webhook(_uri(tracking_uri), url, g.read_secret(secret_file))
    console.print(f"webhook {wid}: {', '.join(g.EVENTS)} -> {url}")


@guard_app.command("sweep")
def guard_sweep(tracking_uri: UriOpt = None,
                alias: Annotated[list[str] | None, typer.Option(help="protected alias (repeatable)")] = None,
                state: Annotated[Path, typer.Option(help="the guard's SQLite file")] = Path("guard.db"),
                policy: PolicyOpt = None) -> None:
    """Check every protected alias once (what the service does at start and every few minutes)."""
    from synthgate.registry import guard as g
    from synthgate.registry.client import tracking_uri as _uri

    done = g.Guard(_uri(tracking_uri), "", state, tuple(alias or ("approved",)),  # no deliveries: no secret
                   _policy_hash(policy)).sweep()
    console.print("\n".join(done) or "every protected alias holds a version that may hold it")


app.add_typer(guard_app, name="guard")


@app.command()
def version() -> None:
    """Print the synthgate version."""
    console.print(__version__)


pipeline_app = typer.Typer(help="Kubeflow Pipelines: compile the pipelines, submit a run.", no_args_is_help=True)


@pipeline_app.command("compile")
def pipeline_compile(
    check: Annotated[bool, typer.Option("--check", help="fail (exit 2) naming stale files; write nothing")] = False,
    cache_training: Annotated[bool, typer.Option("--cache-training",
                                                 help="let KFP cache the train step for equal inputs")] = False,
) -> None:
    """Compile pipelines/*.py to pipelines/compiled/*.yaml (upload them in the Kubeflow UI)."""
    from synthgate.kubeflow.submit import compile_pipelines

    written = compile_pipelines(check=check, cache_training=cache_training)
    console.print("compiled pipelines are up to date" if check else "\n".join(f"wrote {w}" for w in written))


@pipeline_app.command("submit")
def pipeline_submit(
    host: Annotated[str, typer.Option(help="KFP API endpoint, e.g. http://localhost:8080")],
    pipeline_file: Annotated[Path, typer.Option("--pipeline-file", help="compiled pipeline YAML")] = Path(
        "pipelines/compiled/synthesis.yaml"),
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="NAME=VALUE pipeline parameter (repeatable; VALUE @FILE reads a file)")] = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment")] = "synthgate",
    run_name: Annotated[str | None, typer.Option(help="run name (default: KFP's)")] = None,
    namespace: Annotated[str | None, typer.Option(help="Kubeflow namespace (multi-user installs)")] = None,
    service_account: Annotated[str, typer.Option(help="ServiceAccount of the run's pods")] = SERVICE_ACCOUNT,
) -> None:
    """Submit a compiled pipeline to Kubeflow Pipelines and print the run's URL."""
    from synthgate.kubeflow.submit import submit

    r = submit(host, pipeline_file, param or [], experiment, run_name, namespace, service_account)
    console.print(f"submitted {r.pipeline} run {r.run_id}")
    console.print(f"  run  {r.url}")


app.add_typer(pipeline_app, name="pipeline")


trainjob_app = typer.Typer(help="What a node of a Kubeflow TrainJob runs before and after torchrun.",
                           no_args_is_help=True)


@trainjob_app.command("fetch-dataset")
def trainjob_fetch_dataset(
    uri: Annotated[str, typer.Argument(metavar="URI", help="the dataset folder: s3://bucket/prefix or a folder")],
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="where to copy it (the node's scratch volume)")],
) -> None:
    """Copy a canonical dataset folder to DEST and print DEST."""
    from synthgate.kubeflow.trainjob import fetch_dataset

    typer.echo(fetch_dataset(uri, dest))


@trainjob_app.command("upload-model")
def trainjob_upload_model(
    model_dir: Annotated[Path, typer.Argument(metavar="DIR", help="the model folder rank 0 wrote (<--out>/model)")],
    uri: Annotated[str, typer.Argument(metavar="URI", help="where to put it: s3://bucket/prefix/ or a folder")],
) -> None:
    """Copy the trained model folder DIR to URI."""
    from synthgate.kubeflow.trainjob import upload_model

    typer.echo(f"uploaded {upload_model(model_dir, uri)} file(s) to {uri}")


app.add_typer(trainjob_app, name="trainjob", hidden=True)


def main(argv: list[str] | None = None) -> None:
    _setup()
    try:
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except SynthgateError as e:
        err_console.print(f"[bold red]error:[/] {e.message}", highlight=False)
        if e.hint:
            err_console.print(f"[yellow]hint:[/] {e.hint}", highlight=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors and unexpected failures
        import click

        # recent typer releases raise the exceptions of their own copy of click (typer._click), which
        # subclass typer.TyperException rather than click's
        if isinstance(e, click.exceptions.ClickException | typer.TyperException) and hasattr(e, "show"):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort | typer.Abort):
            sys.exit(1)
        from synthgate.registry.access import refusal

        denied = refusal(e)  # an MLflow 401/403 that no stage translated
        if denied is not None:
            err_console.print(f"[bold red]error:[/] {denied.message}", highlight=False)
            if denied.hint:
                err_console.print(f"[yellow]hint:[/] {denied.hint}", highlight=False)
            sys.exit(denied.exit_code)
        if os.environ.get("SYNTHGATE_DEBUG"):
            raise
        err_console.print(f"[bold red]unexpected error:[/] {type(e).__name__}: {e}", highlight=False)
        err_console.print("[yellow]hint:[/] set SYNTHGATE_DEBUG=1 for the traceback and report it")
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
