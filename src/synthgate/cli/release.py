"""The release commands: register, promote, pin-policy, models, audit, publish, pull, datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from synthgate.cli._app import (
    GatekeeperOpt,
    ParamsOpt,
    StoreOpt,
    UriOpt,
    _params,
    _reporter,
    app,
    console,
    err_console,
)
from synthgate.errors import SynthgateError


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

    r = stages.register(model=model, evaluation=evaluation, gate=gate_record, record=record, name=name,
                        tracking_uri=tracking_uri)
    console.print(("already registered: " if r.existing else "registered ") + f"{r.name} version {r.version} (run "
                  f"{r.run_id}); gate " + ("[green]passed" if r.gate_passed else "[red]failed"))
    if r.existing:
        console.print("  the same model, evaluation and gate record: nothing new was written")
    if r.superseded:
        console.print(f"  version(s) {', '.join(r.superseded)}: half-registered (an interrupted register of this gate "
                      f"record), now marked superseded by version {r.version}; they stay refused")
    console.print(f"  MLflow UI  {r.tracking_uri}/#/models/{r.name}/versions/{r.version}")


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str, typer.Argument(help="model version")],
    alias: Annotated[str, typer.Option(help="alias to set")] = "approved",
    force: Annotated[bool, typer.Option(help="override a failed gate (needs --reason; recorded)")] = False,
    reason: Annotated[str | None, typer.Option(help="why the override")] = None,
    tracking_uri: UriOpt = None,
    gatekeeper: GatekeeperOpt = None,
) -> None:
    """Ask the gatekeeper to release a model version: signed (and the alias set) only if its gate passes
    under the pinned policy, or by an owner's override."""
    from synthgate import stages

    console.print(stages.promote(name, version, alias=alias, tracking_uri=tracking_uri, force=force, reason=reason,
                                 gatekeeper=gatekeeper))


@app.command("pin-policy")
def pin_policy(
    name: Annotated[str, typer.Argument(help="registered model name")],
    policy: Annotated[Path | None, typer.Option(help="gates.yaml every version must be gated with "
                                                     "(default: the built-in defaults)")] = None,
    tracking_uri: UriOpt = None,
    gatekeeper: GatekeeperOpt = None,
) -> None:
    """Owners: pin the policy the gatekeeper releases every version of a model under (signed)."""
    from synthgate import stages

    console.print(stages.pin_policy(name, policy=policy, tracking_uri=tracking_uri, gatekeeper=gatekeeper))


@app.command()
def models(
    name: Annotated[str | None, typer.Argument(help="one registered model (default: all)")] = None,
    tracking_uri: UriOpt = None,
) -> None:
    """List registered generator versions with their gate status and aliases."""
    from synthgate.registry.registry import list_versions

    table = Table(title="registered generators", title_justify="left")
    for col in ("model", "version", "gate", "aliases", "override", "evaluation", "registration"):
        table.add_column(col, overflow="fold", no_wrap=col in ("model", "registration"))
    for r in list_versions(name, tracking_uri):
        gate = {"true": "[green]passed", "false": "[red]failed"}.get(r["gate"], r["gate"])
        whole = r["registration"] == "complete"
        table.add_row(r["name"], r["version"], gate, ", ".join(r["aliases"]), r["override"] or "", r["evaluation_hash"],
                      Text(r["registration"], style="" if whole else "red"))
    # piped or logged (no terminal: Rich assumes 80 columns): one line per version, names and states unbroken
    console.print(table, width=None if console.is_terminal else max(console.width, 160))


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
        # the action and the chain's status are never cut, however narrow the terminal: the detail folds instead
        table.add_column(col, min_width=15 if col == "action" else None, no_wrap=col in ("#", "action", "chain"),
                         overflow="fold")
    broken, notes = [], []
    for v, checked, note in audit_trail(name, version, tracking_uri):
        if note:
            notes.append(f"version {v}: {note}")
        for c in checked:
            f = c.fields
            # the recorded text as text, whole (an entry's detail may quote what a caller wrote: never markup)
            table.add_row(*(Text(str(x)) for x in (v, c.n, f.get("time", ""), f.get("user", ""), f.get("action", ""),
                                                    f.get("detail", ""))),
                          Text(c.status, style="" if c.status == "ok" else ("yellow" if c.ok else "red")))
            if not c.ok:
                broken.append(f"version {v} entry {c.n} {c.status}")
    console.print(table)
    for n in notes:
        console.print(Text(n, style="yellow"))
    if broken:
        raise SynthgateError("the audit trail does not verify:\n  " + "\n  ".join(broken),
                             hint="the version's audit.N tags were edited in MLflow; compare with the guard's and "
                                  "MLflow's logs")


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
    gatekeeper: GatekeeperOpt = None,
) -> None:
    """Publish the released version's synthetic dataset: shards, PNGs, manifest signed by the gatekeeper,
    data card, report."""
    from synthgate import stages
    from synthgate.publish.package import NothingApproved, not_published_record
    from synthgate.utils import write_json_atomic

    p = _params(params, {})
    if model is None:
        from synthgate.registry.registry import read_record

        model = read_record(stages.DEFAULT_REGISTERED, hint="name the registered model: `synthgate publish NAME` "
                                                            "(see `synthgate models`)")[0]
    try:
        r = stages.publish(p, model=model, store=store, alias=alias,
                           samples=samples if samples and samples.exists() else None,
                           evaluation=evaluation if evaluation and evaluation.exists() else None, name=name,
                           tracking_uri=tracking_uri, reporter=_reporter(), version=dataset_version,
                           gatekeeper=gatekeeper)
    except NothingApproved as e:
        if not if_approved:
            raise
        write_json_atomic(record, not_published_record(e.message))
        err_console.print(f"[yellow]not published:[/] {e.message}", highlight=False)
        if e.hint:
            err_console.print(f"[yellow]hint:[/] {e.hint}", highlight=False)
        return
    write_json_atomic(record, r.record())
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
    allow_revoked: Annotated[bool, typer.Option(help="pull even if a signed revocation withdrew it "
                                                     "(recorded in pull.json)")] = False,
    allow_rollback: Annotated[bool, typer.Option(help="take a version older than the newest signed one this machine "
                                                      "has seen")] = False,
    trust_root: Annotated[Path | None, typer.Option(help="the gatekeeper's trust.json (default "
                                                         "$SYNTHGATE_TRUST_ROOT)")] = None,
    verify_images: Annotated[bool, typer.Option(help="also decode every image and check the images' content hash "
                                                     "against the signed one")] = False,
    params: ParamsOpt = Path("params.yaml"),
    tracking_uri: UriOpt = None,
) -> None:
    """Download a published dataset: the gatekeeper's signature, every file's sha256 and the images checked;
    refused when revoked, rolled back or signed for another model."""
    from synthgate import stages

    p = _params(params, {})
    r = stages.pull(ref, to=to, store=store or p.publish.store, tracking_uri=tracking_uri,
                    allow_revoked=allow_revoked, allow_rollback=allow_rollback, trust_root=trust_root,
                    verify_images=verify_images, reporter=_reporter())
    for note in r.notes:
        err_console.print(f"[bold yellow]warning:[/] {note}")
    console.print(f"pulled [bold]{r.name}:{r.version}[/] into {r.path}: {r.num_files} files verified (sha256, signed)"
                  + (f", {r.skipped} already in place" if r.skipped else "")
                  + (f", {r.resumed} resumed" if r.resumed else "")
                  + f"; {r.bytes / 1e6:.1f} MB in {r.seconds:.1f} s; model status: {r.status}")


@app.command()
def datasets(
    store: StoreOpt = None,
    check: Annotated[bool, typer.Option(help="verify each dataset's gatekeeper signature (trust root)")] = False,
    params: ParamsOpt = Path("params.yaml"),
    tracking_uri: UriOpt = None,
) -> None:
    """List the published datasets in a store."""
    from synthgate.publish.pull import list_datasets, verified_manifest
    from synthgate.stores import open_store

    p = _params(params, {})
    table = Table(title=f"published datasets in {store or p.publish.store}", title_justify="left")
    for col in ("dataset", "version", "images", "model", "gate", "created") + (("status",) if check else ()):
        table.add_column(col)
    for d in list_datasets(store or p.publish.store):
        row = [d["name"], d["version"], str(d["num_images"]), f"{d['model']} @{d['alias']}",
               "[green]passed" if d["gate_passed"] else "[red]override", d["created"]]
        if check:
            from synthgate.errors import SynthgateError
            from synthgate.trust.keys import load_trust_root

            try:
                verified_manifest(open_store(store or p.publish.store), d["name"], d["version"], load_trust_root())
                row.append("[green]signed")
            except SynthgateError as e:
                row.append(f"[red]not valid[/]: {e.message}")
        table.add_row(*row)
    console.print(table)

