"""``synthgate reader-study``: create a blinded study, add readers, serve it, analyze the answers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthgate.cli._app import app, console

reader_app = typer.Typer(help="Reader studies: can readers tell synthetic from real? (dumontschutte2021 S.8)",
                         no_args_is_help=True)
StudyArg = Annotated[Path, typer.Argument(help="the study folder")]


@reader_app.command("create")
def create(
    study: StudyArg,
    real: Annotated[Path, typer.Option(help="the real canonical dataset (its test split is shown)")] = Path(
        "data/validated"),
    synthetic: Annotated[Path, typer.Option(help="the synthetic canonical dataset (synthgate sample)")] = Path(
        "data/samples"),
    n: Annotated[int, typer.Option(help="images in the study")] = 100,
    real_fraction: Annotated[float, typer.Option(help="share of real images (readers are not told it)")] = 0.5,
    unbalanced: Annotated[bool, typer.Option(help="draw in proportion to the classes, not evenly")] = False,
    seed: Annotated[int, typer.Option(help="seed of the draw and of every reader's order (recorded)")] = 0,
    display_size: Annotated[int, typer.Option(help="pixels per side in the readers' browser")] = 256,
) -> None:
    """A blinded study: N images, half real (test split), half synthetic, shuffled, under opaque ids."""
    from synthgate.evaluation.readers.study import create_study

    s = create_study(real, synthetic, study, n=n, real_fraction=real_fraction, balanced=not unbalanced, seed=seed,
                     display_size=display_size)
    console.print(f"study {s.root}: {s.manifest['n']} images ({s.manifest['n_real']} real), seed {seed}; the key is "
                  f"in {s.root / 'key'} (0600, never served)", highlight=False)
    console.print("[yellow]it holds real patient images: keep it where the real data may be (README.txt)[/]")


@reader_app.command("add-reader")
def add_reader(study: StudyArg, name: Annotated[str, typer.Argument(help="the reader's name")],
               base_url: Annotated[str, typer.Option(help="where `serve` listens")] = "http://127.0.0.1:8090") -> None:
    """Add a reader and print their personal link (give it to them only)."""
    from synthgate.evaluation.readers.store import Answers
    from synthgate.evaluation.readers.study import load_study

    answers = Answers(load_study(study))
    try:
        r = answers.add_reader(name)
    finally:
        answers.close()
    console.print(f"{r.name}: {base_url}/r/{r.token}", highlight=False, soft_wrap=True)


@reader_app.command("links")
def links(study: StudyArg, base_url: Annotated[str, typer.Option(help="where `serve` listens")] = (
        "http://127.0.0.1:8090")) -> None:
    """Every reader's link and the admin page's."""
    from synthgate.evaluation.readers.app import links as _links
    from synthgate.evaluation.readers.study import load_study

    for name, url in _links(load_study(study), base_url).items():
        console.print(f"{name}: {url}", highlight=False, soft_wrap=True)


@reader_app.command("serve")
def serve(study: StudyArg, host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="port")] = 8090) -> None:
    """Serve the study to its readers (127.0.0.1 unless told otherwise) until Ctrl-C."""
    from synthgate.evaluation.readers.app import serve as _serve
    from synthgate.evaluation.readers.study import load_study

    s = load_study(study)
    console.print(f"reader study on http://{host}:{port}/ ; admin page: http://{host}:{port}/admin/"
                  f"{s.admin_token()}", highlight=False, soft_wrap=True)
    _serve(s, host, port)


@reader_app.command("analyze")
def analyze(study: StudyArg, out: Annotated[Path | None, typer.Option(help="result file (default: "
                                                                          "STUDY/reader_study.json)")] = None) -> None:
    """Per reader TR/FR/TS/FS and accuracy; mean, spread and the Wilcoxon test over the readers."""
    from synthgate.evaluation.readers.analyze import analyze_study

    r = analyze_study(study, out)
    for name, v in r["per_reader"].items():
        console.print(f"  {name:20s} TR {v['TR']:3d}  FR {v['FR']:3d}  TS {v['TS']:3d}  FS {v['FS']:3d}  "
                      f"accuracy {v['accuracy']:.3f}", highlight=False)
    a = r["accuracy"]
    spread = f" ± {a['std']:.3f}" if a.get("std") is not None else ""
    test = (f"; one-sided Wilcoxon (accuracy > 0.5) p = {a['wilcoxon']['p']:.3g}" if a.get("wilcoxon")
            else f"; {a['note']}")
    console.print(f"accuracy {a['mean']:.3f}{spread} over {a['readers']} reader(s){test}", highlight=False)
    if r["unfinished"]:
        console.print(f"not finished (not counted): {r['unfinished']}", highlight=False)


app.add_typer(reader_app, name="reader-study")
