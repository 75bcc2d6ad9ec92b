"""Every input is checked once, up front: a bad image is found before any training, with all the others at once."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

from .._files import atomic_write, default_cache_dir, read_json_dict
from ..backbones.base import load_image
from ..data.dataset import Dataset
from ..errors import DataError
from .progress import progress_bar

VERIFIED = "verified.json"
"""In the cache folder: content hashes of image files that decoded, so a rerun does not decode them again."""


def check_images(
    ds: Dataset,
    indices: Sequence[int],
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> list[str]:
    """Decode every image file among ``indices`` of ``ds`` (arrays and PIL images are already decoded); one
    ``DataError`` lists every file that does not decode, or is too large to decode safely. Returns the content
    hashes newly found good, for ``remember_images`` once the run has succeeded (a failed run leaves the cache as
    it was)."""
    if ds.modality != "image":
        return []
    files = sorted({int(i) for i in indices if isinstance(ds.items[int(i)], str | Path)})
    if not files:
        return []
    known = read_json_dict(_store(cache_dir)) if use_cache else {}
    todo = [i for i in files if ds.item_hash(i) not in known]
    bad: list[str] = []
    with progress_bar("checking images", len(todo), enabled=progress and len(todo) > 200) as bar:
        for i in todo:
            try:
                load_image(ds.items[i])
            except DataError as e:
                bad.append(str(e))
            bar.advance(1)
    if bad:
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise DataError(
            f"{len(bad)} of {len(files)} images cannot be used{more}; nothing was trained: " + " | ".join(bad[:10])
        )
    return [ds.item_hash(i) for i in todo]


def remember_images(hashes: list[str], cache_dir: str | Path | None = None, use_cache: bool = True) -> None:
    """Record image files that decoded (``check_images``), so a rerun does not decode them again."""
    if not hashes or not use_cache:
        return
    store = _store(cache_dir)
    known = {**read_json_dict(store), **dict.fromkeys(hashes, 1)}
    with contextlib.suppress(OSError):  # an unkept record only means the next run checks again
        atomic_write(store, lambda p: p.write_text(json.dumps(known)))


def _store(cache_dir: str | Path | None) -> Path:
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / VERIFIED
