"""Progress reporting that stage functions can use without knowing about the terminal.

Stage functions take a :class:`Reporter`; the CLI passes :class:`RichReporter` (Rich progress
bars), tests and pipelines pass nothing and get the silent default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

Advance = Callable[[int], None]


class Reporter(Protocol):
    def task(self, description: str, total: int | None) -> contextlib.AbstractContextManager[Advance]: ...

    def info(self, message: str) -> None: ...


class NullReporter:
    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        yield lambda n=1: None

    def info(self, message: str) -> None:
        pass


class RichReporter:
    def __init__(self, console: object | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        if total is None:  # no count to show: a spinner, then a tick with the time taken
            import time

            start = time.perf_counter()
            with self.console.status(f"[bold]{description}"):  # type: ignore[attr-defined]
                yield lambda n=1: None
            self.console.print(f"[green]✓[/] {description} ({time.perf_counter() - start:.1f} s)")  # type: ignore[attr-defined]
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        ) as progress:
            tid = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(tid, n)

    def info(self, message: str) -> None:
        self.console.print(message)
