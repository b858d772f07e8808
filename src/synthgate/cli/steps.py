"""The stage commands: ingest, prepare, validate, train, sample, evaluate, gate, and the dataset helpers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from synthgate.cli._app import ParamsOpt, _params, _reporter, app, console, err_console
from synthgate.cli._print import (
    _print_checks,
    _print_dataset,
    _print_evaluation,
    _print_gate,
    _print_training,
)


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
    rec = stages.ingest(p, out=out)
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
    infer_groups: Annotated[bool | None, typer.Option(
        "--infer-groups/--no-infer-groups",
        help="source without patient ids: infer acquisition groups (same scan, same patient) from the pixels and "
             "split by them")] = None,
    regroup: Annotated[bool | None, typer.Option(
        "--regroup/--keep-source-split",
        help="with --infer-groups and a source split: move the images whose group straddles splits (listed in "
             "the manifest), or keep the source's split")] = None,
    infer_pattern: Annotated[str | None, typer.Option(
        help="with --infer-groups: regular expression over each file's path; equal captures are linked too")] = None,
    out: Annotated[Path, typer.Option(help="where to write the canonical dataset")] = Path("data/prepared"),
) -> None:
    """Read a raw source and write the canonical dataset (images, metadata, manifest)."""
    from synthgate import stages

    p = _params(params, {"data.source.path": str(source) if source else None, "data.source.type": source_type,
                         "data.source.labels": str(labels) if labels else None, "prepare.resolution": resolution,
                         "data.source.group_pattern": group_pattern,
                         "prepare.channels": channels, "prepare.max_per_class": max_per_class,
                         "prepare.infer_groups.enabled": infer_groups,
                         "prepare.infer_groups.source_split": None if regroup is None else
                         ("regroup" if regroup else "keep"),
                         "prepare.infer_groups.pattern": infer_pattern})
    ds = stages.prepare(p, out=out, reporter=_reporter())
    _print_dataset(f"prepared {ds.manifest['num_images']} images from {p.data.source.path}", ds)
    groups = ds.manifest.get("groups") or {}
    if groups.get("method"):
        console.print(f"  groups     {groups['groups']} inferred ({groups['singletons']} single images; largest "
                      f"{groups['largest']}; sizes {groups['histogram']})"
                      + (f"; {groups['moved']} image(s) moved to keep each group in one split" if "moved" in groups
                         else ""))


@app.command()
def validate(
    params: ParamsOpt = Path("params.yaml"),
    dataset: Annotated[Path, typer.Option(help="canonical dataset to validate")] = Path("data/prepared"),
    out: Annotated[Path, typer.Option(help="where to write the validated dataset")] = Path("data/validated"),
    report: Annotated[Path | None, typer.Option(
        help="folder for validation.json and the data docs [default: reports/validation, or OUT-validation "
             "beside a non-default --out]")] = None,
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
    leakage: Annotated[bool | None, typer.Option(
        "--leakage/--no-leakage", help="diagnose held-out images that likely share a patient with training")] = None,
) -> None:
    """Check a canonical dataset (Great Expectations, cross-split duplicates, DICOM PHI, leakage diagnosis)."""
    from synthgate import stages
    from synthgate.data.validate import ValidationResult
    from synthgate.errors import ValidationFailed

    report = report or validation_report_dir(out)
    p = _params(params, {"validate.drop_duplicates": drop_duplicates, "validate.drop_empty": drop_empty,
                         "validate.deidentify": deidentify, "validate.min_images_per_class": min_images_per_class,
                         "validate.leakage.enabled": leakage})
    try:
        result = stages.validate(p, dataset=dataset, out=out, report_dir=report, reporter=_reporter())
    except ValidationFailed as e:
        if isinstance(e.result, ValidationResult):
            _print_checks(e.result)
            _print_leakage(e.result, report)
        raise
    _print_checks(result)
    _print_leakage(result, report)
    if result.dropped:
        console.print(f"  dropped    {result.dropped}")
    _print_dataset("validated dataset", result.dataset)
    console.print(f"  report     {report / 'validation.json'}")


def validation_report_dir(out: Path) -> Path:
    """Where `validate` writes its report when --report is not given: reports/validation for the default
    output (as dvc.yaml has it), else beside the output, so that two validations never overwrite one report."""
    return Path("reports/validation") if out == Path("data/validated") else out.parent / f"{out.name}-validation"


def _print_leakage(result: object, report: Path) -> None:
    leak = getattr(result, "leakage", None)
    if leak is not None:
        style = "yellow" if leak.leaks else "green"
        console.print(f"  [{style}]leakage[/{style}]    {leak.verdict}")
        if leak.figure:
            console.print(f"             closest pairs: {report / leak.figure}; all: {report / 'leakage.csv'}")
        rep = leak.representative
        if rep is not None:
            style = "green" if rep.verdict.startswith("representative") else "yellow"
            console.print(f"  [{style}]null[/{style}]       {rep.verdict}")


@app.command()
def train(
    params: ParamsOpt = Path("params.yaml"),
    dataset: Annotated[Path, typer.Option(help="canonical dataset to train on (its train split)")] = Path(
        "data/validated"
    ),
    out: Annotated[Path, typer.Option(help="run folder: checkpoints/, grids/, model/")] = Path("models/generator"),
    model_type: Annotated[str | None, typer.Option("--type", help="diffusion | gan | latent | stylegan2")] = None,
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
    """Train a class-conditional generator (diffusion, cpD-GAN, latent diffusion, StyleGAN2-ADA); resumes after a kill."""
    from synthgate import stages

    p = _params(params, {"generator.type": model_type, "generator.size": size, "train.steps": steps,
                         "train.batch_size": batch_size, "train.device": device, "train.compile": compile_})
    result = stages.train(p, dataset=dataset, out=out, reporter=_reporter(), resume=resume,
                          checkpoint_uri=checkpoint_uri)
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
    sampler: Annotated[str | None, typer.Option(
        help="ddpm | ddim | dpmsolver++ (ddpm models); euler | heun (rectified-flow models)")] = None,
    steps: Annotated[int | None, typer.Option(help="sampler steps")] = None,
    guidance_scale: Annotated[float | None, typer.Option(help="classifier-free guidance scale")] = None,
    truncation_psi: Annotated[float | None, typer.Option(
        help="StyleGAN2: pull w toward its class's mean w, in (0, 1]; 1: no truncation")] = None,
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
                         "sample.guidance_scale": guidance_scale, "sample.truncation_psi": truncation_psi,
                         "sample.device": device})
    ds = stages.sample(p, model=model, out=out, real=real if real.exists() else None, reporter=_reporter())
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
    reader_study: Annotated[Path | None, typer.Option(help="a finished reader study of these datasets (its "
                                                             "readers' accuracy goes in the evaluation)")] = None,
) -> None:
    """Fidelity, variety, complexity, memorization/privacy and utility of a synthetic dataset."""
    from synthgate import stages

    p = _params(params, {"evaluate.device": device, "evaluate.reader_study": reader_study})
    _print_evaluation(stages.evaluate(p, real=real, synthetic=synthetic, out=out, reporter=_reporter(),
                                      retrain_encoder=retrain_encoder))


@app.command()
def gate(
    evaluation: Annotated[Path, typer.Option(help="evaluation.json to judge")] = Path(
        "reports/evaluation/evaluation.json"
    ),
    policy: Annotated[Path, typer.Option(help="the release policy")] = Path("gates.yaml"),
    out: Annotated[Path, typer.Option(help="where to write gate.json")] = Path("reports/gate/gate.json"),
    strict: Annotated[bool, typer.Option(
        "--strict/--report-only",
        help="exit 1 when the gate fails (so `gate && register && publish` stops); --report-only writes "
             "gate.json and exits 0 either way, for pipelines that register failed versions as failed")] = True,
) -> None:
    """Apply the release policy (gates.yaml) to an evaluation; write gate.json.

    Exit status: 0 passed, 1 failed (unless --report-only), 2 the evaluation or the policy is unusable."""
    from synthgate import stages

    d = stages.gate(evaluation=evaluation, out=out,
                    policy=policy if policy.exists() or str(policy) != "gates.yaml" else None)
    _print_gate(d, out)
    if strict and not d.passed:
        err_console.print(f"[bold red]gate failed:[/] {len(d.failures)} rule(s): "
                          + ", ".join(r.rule for r in d.failures)
                          + " (exit 1; --report-only writes gate.json and exits 0)")
        raise typer.Exit(1)


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

    r, s = stages.standin(real, out_real=out_real, out_synthetic=out_synthetic, seed=seed)
    console.print(f"real {r}\nstand-in synthetic {s}")


@app.command()
def info(dataset: Annotated[Path, typer.Argument(help="a canonical dataset folder")]) -> None:
    """Show a canonical dataset's classes, splits and lineage."""
    from synthgate.data.canonical import load_dataset

    ds = load_dataset(dataset)
    _print_dataset(f"{dataset} ({ds.manifest.get('stage')}, {ds.manifest.get('created')})", ds)
    for inp in ds.manifest.get("inputs", []):
        console.print(f"  input    {inp}")

