"""How the commands print the stages' results (rich tables)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from synthgate.cli._app import console


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
    n_ge_raw = sum(1 for c in result.checks if c.source == "great_expectations" and c.details.get("ge_success", c.passed))
    raw = f" ({n_ge_raw}/{n_ge} before the drop, as Great Expectations' own pages count)" if n_ge_raw != n_ge_ok else ""
    table.add_row("Great Expectations suite", "[green]pass" if n_ge == n_ge_ok else "[red]FAIL",
                  f"{n_ge_ok}/{n_ge} expectations met{raw}")
    console.print(table)
    if result.data_docs:
        console.print(f"  data docs  {result.data_docs}")
    console.print(f"  report     {result.report_dir / 'validation.json'}")


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

