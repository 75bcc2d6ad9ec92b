"""Output folders: transferkit writes only where it may, and never removes what it did not write.

A run folder is one transferkit wrote: it holds a run record (``run.json``, ``compare.json``, ...). Another
folder that is not empty is the user's and is never written into; an existing run folder is replaced only with
``overwrite`` (or continued with ``resume``); a default folder that exists gives way to a fresh name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import TransferkitError

RUN_RECORDS = ("run.json", "compare.json", "distill.json", "adapt.json", "rank.json", "detect.json")
"""Files only transferkit writes at the top of a run folder: their presence makes a folder a run."""


def is_run_folder(path: Path) -> bool:
    """A folder transferkit wrote: a finished run (its record) or an interrupted one (its checkpoint)."""
    return path.is_dir() and (any((path / name).is_file() for name in RUN_RECORDS) or (path / "checkpoint").is_dir())


def check_out(out: str | Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """``out`` if transferkit may write its run there, before any work is done; else one sentence saying why not
    and what to do."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TransferkitError(f"--out {out} is a file, not a folder: choose a folder for the run.")
    if out.is_dir() and any(out.iterdir()):
        if not is_run_folder(out):
            raise TransferkitError(
                f"--out {out} holds files that transferkit did not write (no run record in it); they are left "
                "alone: choose an empty or new folder."
            )
        if not (overwrite or resume):
            raise TransferkitError(
                f"--out {out} holds an earlier run; pass --overwrite to replace it (or --resume to continue an "
                "interrupted fit), or choose another folder."
            )
    _check_writable(out)
    return out


def fresh_out(default: Path) -> Path:
    """``default``, or ``default-2``, ``default-3``, ... when it is taken: where a run goes that named no folder."""
    if not default.exists() or (default.is_dir() and not any(default.iterdir())):
        return default
    n = 2
    while (candidate := default.with_name(f"{default.name}-{n}")).exists():
        n += 1
    return candidate


def _check_writable(out: Path) -> None:
    """Fail now, not after training, when ``out`` cannot be created or written."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise TransferkitError(f"--out {out} lies under {probe}, which is a file: choose another folder.")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".transferkit-write-test-")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise TransferkitError(f"--out {out} cannot be written ({probe}: {e.strerror or e}).") from None
