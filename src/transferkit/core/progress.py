"""One progress-bar helper so every long step looks the same (rich; silent when disabled)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
# tables go to stdout, wide enough that spec strings and install commands are not cut
out_console = Console(width=max(140, shutil.get_terminal_size((140, 24)).columns))


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass


class _Bar:
    def __init__(self, progress: Progress, task: Any) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def set_total(self, total: int) -> None:
        self._progress.update(self._task, total=total)


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[_Bar | _Silent]:
    """A context manager yielding an object with ``advance(n)`` and ``set_total(n)``."""
    if not enabled:
        yield _Silent()
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        yield _Bar(progress, progress.add_task(description, total=total))
