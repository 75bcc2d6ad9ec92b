"""One progress-bar helper so every long step looks the same (rich; silent when disabled)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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

from ..errors import TransferkitError

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


LOGGERS = ("none", "tensorboard")
"""What ``--log`` may name: where training scalars go besides the run record."""


def log_folder(log: str | None, folder: Path | None) -> Path | None:
    """Where training scalars go for ``log`` (None: not logged); fails before any work when ``log`` names no
    logger, one whose package is missing, or there is no folder to write to."""
    if log in (None, "none"):
        return None
    if log not in LOGGERS:
        raise TransferkitError(f"log={log!r} is not one of {', '.join(LOGGERS)}.")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise TransferkitError(
            "log=tensorboard needs the tensorboard package: pip install 'transferkit[tensorboard]'."
        ) from None
    if folder is None:
        raise TransferkitError("log=tensorboard writes into the run folder: give an output folder (out=...).")
    return folder


class TensorBoardLog:
    """Writes each epoch's losses, validation accuracy and learning rates as TensorBoard scalars to ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def __call__(self, rec: Any) -> None:
        self.writer.add_scalar("loss/train", rec.train_loss, rec.epoch)
        self.writer.add_scalar("loss/val", rec.val_loss, rec.epoch)
        self.writer.add_scalar("accuracy/val", rec.val_accuracy, rec.epoch)
        for group, lr in rec.lr.items():
            self.writer.add_scalar(f"lr/{group}", lr, rec.epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
