"""The ``synthgate`` command: one sub-command per stage. It parses, calls :mod:`synthgate.stages`
and prints; it holds no logic of its own. Heavy imports stay inside the commands so that
``synthgate --help`` is instant.

The commands live in one module per group (``steps``, ``release``, ``demo``, ``server``, ``readers``,
``kubeflow``); importing them registers them on :data:`app`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from synthgate import __version__
from synthgate.cli._app import _setup, app, console, err_console
from synthgate.errors import SynthgateError

# isort: off
# importing a group registers its commands; the order is the order of `synthgate --help`
from synthgate.cli import steps, release, demo, server, gatekeeper, readers  # noqa: E402, F401
# isort: on

__all__ = ["app", "main", "_setup"]


@app.command()
def version() -> None:
    """Print the synthgate version."""
    console.print(__version__)


def _print_version(value: bool) -> None:
    if value:
        console.print(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(show_version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_print_version,
                                            help="print the synthgate version and exit")) -> None:
    """Train, gate, register and publish synthetic medical image datasets."""


def main(argv: list[str] | None = None) -> None:
    import time

    _setup()
    started = time.monotonic()
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
        from synthgate.registry.outage import outage

        down = outage(e, elapsed=time.monotonic() - started, mlflow_only=True)  # one that no stage translated
        if down is not None:
            err_console.print(f"[bold red]error:[/] {down.message}", highlight=False)
            err_console.print(f"[yellow]hint:[/] {down.hint}", highlight=False)
            sys.exit(down.exit_code)
        known = _os_refusal(e)
        if known is not None:
            err_console.print(f"[bold red]error:[/] {known[0]}", highlight=False)
            err_console.print(f"[yellow]hint:[/] {known[1]}", highlight=False)
            sys.exit(1)
        err_console.print(f"[bold red]unexpected error:[/] {type(e).__name__}: {e}", highlight=False)
        err_console.print("[yellow]hint:[/] set SYNTHGATE_DEBUG=1 for the traceback and report it")
        sys.exit(1)


def _os_refusal(e: BaseException) -> tuple[str, str] | None:
    """(message, hint) for what the machine refused rather than synthgate: a path that cannot be written or read,
    a full disk, memory that cannot be had; None for anything else (a bug: reported as unexpected)."""
    import errno

    if isinstance(e, PermissionError):
        return (f"permission denied: {e.filename or e}", "choose a folder you may write to (--out, --workdir, "
                "--dest) or fix its permissions")
    said = str(e.args[0]) if isinstance(e, OSError) and e.args else ""  # str(e) changes once a filename is set
    short_write = isinstance(e, OSError) and e.errno is None and " requested and " in said and "written" in said
    if isinstance(e, OSError) and (e.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT) or short_write):
        what = ("no space left on the device (a write was cut short: " + said + ")" if short_write else
                {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on the device",
                 errno.EDQUOT: "disk quota exceeded"}[int(e.errno or 0)])
        where = Path(e.filename) if isinstance(e.filename, str) else Path.cwd()
        return (f"{what}: {e.filename or 'writing the output'}{_free_space(where)}",
                "free space there or write to another folder (--out, --to); nothing half-written was kept")

    if isinstance(e, MemoryError):
        return (f"out of memory ({e or 'the allocation failed'})", "lower the resolution, the batch size or "
                "max_per_class, or run on a machine with more memory")
    return None


def _free_space(path: Path) -> str:
    """"; N MiB free of M on the file system of PATH" (empty when it cannot be read)."""
    import shutil

    for p in (path, *path.parents):
        if p.exists():
            try:
                u = shutil.disk_usage(p)
            except OSError:
                return ""
            return f"; {u.free / 2**20:,.0f} MiB free of {u.total / 2**20:,.0f} MiB on the file system of {p}"
    return ""


from synthgate.cli import kubeflow  # noqa: E402, F401  (pipeline and trainjob: after `version`, as before)

if __name__ == "__main__":  # pragma: no cover
    main()
