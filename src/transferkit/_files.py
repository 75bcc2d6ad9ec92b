"""Small file helpers shared by the caches: where the cache lives, atomic replacement and a JSON file of records
merged by key."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    """``$TRANSFERKIT_CACHE`` or ``~/.cache/transferkit``."""
    return Path(os.environ.get("TRANSFERKIT_CACHE", Path.home() / ".cache" / "transferkit"))


def user_mode(directory: bool = False) -> int:
    """The permission bits a new file (or folder) gets under the user's umask: temp files and folders are created
    0600 / 0700, and renaming them into place would keep that."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def remove_stale_temps(target: Path) -> None:
    """Remove the temp folders/files an interrupted write of ``target`` left beside it (``.<name>.tmp-*``, and
    ``.<name>.old`` once ``target`` exists: with no ``target`` it is the last good copy, see ``recover``); only
    transferkit makes names like these, and only one run writes a folder at a time."""
    import shutil

    parent = target.parent
    if not parent.is_dir():
        return
    for p in parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    old = parent / f".{target.name}.old"
    if old.is_dir() and target.exists():
        shutil.rmtree(old, ignore_errors=True)


def recover(target: Path) -> None:
    """Put back the last good copy of ``target`` when a run was killed between moving it aside and moving the new
    one in."""
    old = target.parent / f".{target.name}.old"
    if not target.exists() and old.is_dir():
        os.replace(old, target)


def check_replaceable(path: Path, ours: frozenset[str], what: str) -> None:
    """Refuse to save ``what`` over ``path`` when it holds anything but the files ``ours`` names (a folder
    transferkit did not write, or a file)."""
    from .errors import TransferkitError

    if not path.exists():
        return
    foreign = sorted(p.name for p in path.iterdir() if p.name not in ours) if path.is_dir() else [path.name]
    if foreign:
        raise TransferkitError(f"{path} holds {', '.join(foreign[:3])}, which transferkit did not write: the {what} "
                               "is not saved over it; choose another folder.")


def atomic_folder(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` the files of folder ``path`` into a temp folder beside it, then put it in ``path``'s place (with the
    permissions the user's umask gives); an interrupted write leaves only a temp folder, removed next time."""
    import shutil

    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    os.chmod(tmp, user_mode(directory=True))  # mkdtemp makes it 0700
    try:
        write(tmp)
        for f in tmp.iterdir():  # safetensors writes its files 0600
            os.chmod(f, user_mode())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` a temp file in ``path``'s folder, then rename it over ``path``: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, user_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json_dict(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or {} when it is missing or unreadable (a cache starts over)."""
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def merge_json(path: Path, key: str, value: Any, indent: int | None = None) -> None:
    """Set ``key`` in the JSON object in ``path`` (atomic replace; a lost race only loses one record)."""
    data = {**read_json_dict(path), key: value}
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=indent)))


def json_text(data: Any) -> str:
    """Indented standard JSON: a score that does not exist (NaN, infinite) written as null, anything else unknown
    as its string."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(data), indent=2, default=lambda o: clean(o.tolist()) if hasattr(o, "tolist") else str(o))
