"""The Typer application, its consoles and the options every command group shares."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

app = typer.Typer(
    name="synthgate",
    help="Train, gate, register and publish synthetic medical image datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # sub-commands inherit it
)


console = Console()


err_console = Console(stderr=True)


ParamsOpt = Annotated[
    Path, typer.Option("--params", "-p", help="params.yaml with the experiment settings (read by DVC too)")
]


GatekeeperOpt = Annotated[str | None, typer.Option("--gatekeeper", help="the gatekeeper's URL (default "
                                                   "$SYNTHGATE_GATEKEEPER_URL, or the local one's)")]
UriOpt = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow server (default $MLFLOW_TRACKING_URI "
                                                                 "or http://127.0.0.1:5000)")]


StoreOpt = Annotated[str | None, typer.Option("--store", help="a folder, file:///PATH or s3://BUCKET/PREFIX (default "
                                                       "params.yaml publish.store; S3 endpoint from AWS_ENDPOINT_URL)")]


def _setup() -> None:
    for var, val in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("DVC_NO_ANALYTICS", "1"),
                     ("GX_ANALYTICS_ENABLED", "false"), ("HF_HUB_OFFLINE", "1"),
                     ("MLFLOW_LOGGING_LEVEL", "ERROR"), ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
                     ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")):
        os.environ.setdefault(var, val)
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed escaped, never a crash
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(Exception):
                reconfigure(errors="backslashreplace")
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

