"""Kubeflow Pipelines: compile and submit the pipelines; what a TrainJob node runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthgate.cli._app import app, console
from synthgate.kubeflow.cluster import SERVICE_ACCOUNT

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

