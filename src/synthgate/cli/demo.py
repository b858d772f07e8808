"""`synthgate demo`: the flow end to end on the default data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from synthgate.cli._app import ParamsOpt, _params, _reporter, app, console
from synthgate.cli._print import (
    _print_checks,
    _print_dataset,
    _print_evaluation,
    _print_gate,
    _print_training,
)
from synthgate.demo import (
    MAX_PER_CLASS,
    MAX_SAMPLE_STEPS,
    MAX_STEPS,
    MAX_UTILITY_STEPS,
    STAGES,
    demo_caps,
    run_demo,
)
from synthgate.errors import SynthgateError


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
                    "set), so that the demo fits in 10 minutes on 2 CPU cores; 0: the params file's value")] = (
        MAX_PER_CLASS),
    max_steps: Annotated[int, typer.Option(
        min=0, help="train at most this many steps (below the params file's train.steps), for the same "
                    "reason; 0: the params file's value")] = MAX_STEPS,
    max_sample_steps: Annotated[int, typer.Option(
        min=0, help="sample with at most this many sampler steps (below the params file's sample.steps), for "
                    "the same reason; 0: the params file's value")] = MAX_SAMPLE_STEPS,
    max_utility_steps: Annotated[int, typer.Option(
        min=0, help="each utility classifier trains at most this many steps (below the params file's "
                    "evaluate.utility.max_steps), for the same reason; 0: the params file's value")] = MAX_UTILITY_STEPS,
) -> None:
    """Run the flow end to end on the default data (MedNIST): prepare -> validate -> train -> sample ->
    evaluate -> gate -> register -> promote -> publish -> pull (a verified dataset on disk)."""
    p = _params(params, {})
    caps = demo_caps(p, max_per_class, max_steps, max_sample_steps, max_utility_steps)
    if caps:
        p = _params(params, caps)
        console.print(f"demo: at most {p.prepare.max_per_class} images per class, {p.train.steps} training steps, "
                      f"{p.sample.steps} sampler steps and {p.evaluate.utility.max_steps} steps per utility classifier "
                      "(--max-per-class, --max-steps, --max-sample-steps, --max-utility-steps; 0 takes the params "
                      "file's value), to fit in 10 minutes on 2 CPU cores")
    r = run_demo(p, workdir, keep_server=keep_server, override=override,
                 observer=_Printer(workdir, str(p.data.source.path)),
                 reporter=_reporter())
    console.rule("[bold green]done")
    v = r.validation.dataset
    if v is None:  # run_demo stops at a failed validation; a passed one always wrote its dataset
        raise SynthgateError("validation wrote no dataset", hint="see the validation report")
    console.print(f"canonical dataset   {r.dataset.root}")
    console.print(f"validated dataset   {v.root}  ({v.manifest['num_images']} images)")
    console.print(f"metadata            {v.root / 'metadata.parquet'}")
    console.print(f"validation report   {r.validation.report_dir / 'validation.json'}")
    console.print(f"data docs (HTML)    {r.validation.data_docs}")
    console.print(f"generator           {r.training.model_dir}")
    console.print(f"synthetic dataset   {r.samples.root}")
    console.print(f"evaluation          {r.evaluation.path}")
    console.print(f"evaluation report   {r.evaluation.report_html}")
    d = r.decision
    verdict = "[green]PASSED" if d.passed else f"[red]FAILED[/] ({', '.join(x.rule for x in d.failures)})"
    console.print(f"gate                {r.gate_path}: {verdict}")
    pr = r.promotion
    promoted = (f"[green]{pr.status}" if pr.refused is None
                else f"[red]not promoted[/]: {pr.refused} -> [yellow]{pr.status}")
    console.print(f"model version       {r.registered.name} version {r.registered.version}: {promoted}")
    console.print(f"published dataset   {r.published.uri} ({r.published.num_images} images, "
                  f"{len(r.published.manifest['files'])} files)")
    console.print(f"pulled and verified {r.pulled.path} ({r.pulled.num_files} files, sha256 checked; "
                  f"model {r.pulled.status})")
    console.print(f"MLflow UI           {r.ui}" + ("" if r.server_running else " (server stopped)"))
    if r.server_running and keep_server:
        console.print(f"[dim]the demo's MLflow server keeps running; stop it with `synthgate mlflow-stop --root "
                      f"{workdir / 'mlruns'}`")


class _Printer:
    """Prints each stage of the demo as the stage commands do."""

    def __init__(self, workdir: Path, source: str) -> None:
        self.workdir, self.source = workdir, source

    def stage(self, n: int, title: str) -> None:
        console.rule(f"[bold]{n}/{STAGES} {title}")

    def note(self, message: str, level: str = "info") -> None:
        style = {"warning": "[yellow]", "error": "[red]"}.get(level, "")
        console.print(f"{style}{message}", highlight=False)

    def done(self, stage: str, result: Any) -> None:
        if stage == "prepare":
            _print_dataset(f"prepared {result.manifest['num_images']} images from {self.source}", result)
        elif stage == "validate":
            from synthgate.cli.steps import _print_leakage

            _print_checks(result)
            _print_leakage(result, result.report_dir)
            if result.dropped:
                console.print(f"  dropped    {result.dropped}")
        elif stage == "train":
            _print_training(result)
        elif stage == "sample":
            _print_dataset(f"sampled {result.manifest['num_images']} synthetic images", result)
        elif stage == "evaluate":
            _print_evaluation(result)
        elif stage == "gate":
            from synthgate.stages import DEFAULT_GATE

            _print_gate(result, self.workdir / DEFAULT_GATE)
        elif stage == "register":
            console.print(f"registered {result.name} version {result.version}; gate "
                          + ("[green]passed" if result.gate_passed else "[red]failed"))
        elif stage == "publish":
            console.print(("already published " if result.already_published else "published ")
                          + f"[bold]{result.name}:{result.version}[/] at {result.uri}")
        elif stage == "pull":
            console.print(f"pulled {result.num_files} files into {result.path}: every sha256 matches the manifest; "
                          f"model version {result.status}")
