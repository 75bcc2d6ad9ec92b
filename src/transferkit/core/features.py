"""Feature extraction (eval mode, no gradients, batched, with progress) and the on-disk feature cache."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import default_cache_dir, user_mode
from ..backbones.base import Backbone
from ..data.dataset import Dataset
from .progress import progress_bar

CACHE_VERSION = "1"


def default_device() -> torch.device:
    """The GPU when one is present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cache_key(backbone: Backbone, ds: Dataset, indices: Sequence[int], mirror: bool = False) -> str:
    """Backbone (spec + weights + preprocessing) x data content (items + order), and whether the images were
    mirrored."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    h.update(backbone.fingerprint().encode())
    h.update(json.dumps(backbone.preprocess.to_dict(), sort_keys=True).encode())
    h.update(ds.content_hash(indices).encode())
    if mirror:  # only then, so the plain features keep their keys
        h.update(b"mirror")
    return h.hexdigest()[:32]


def _read_cache(path: Path, n: int, dim: int) -> tuple[np.ndarray, dict[str, str]] | None:
    from safetensors import SafetensorError, safe_open

    try:  # safe_open validates the header against the file size before reading anything
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            feats = f.get_tensor("features")
    except (OSError, ValueError, KeyError, SafetensorError):
        return None
    if feats.shape != (n, dim) or _sha256(feats) != meta.get("sha256"):
        return None
    return feats, meta


def _sha256(a: np.ndarray) -> str:
    """Hash of the array's bytes without copying them."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(a)).cast("B")).hexdigest()


def _write_cache(path: Path, feats: np.ndarray, meta: dict[str, str]) -> None:
    """Atomic write of a safetensors file (a temp file in the same folder, then rename), streaming the array's
    own buffer to disk: the features are never held twice."""
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    header = {
        "__metadata__": {**meta, "sha256": _sha256(feats)},
        "features": {"dtype": "F32", "shape": list(feats.shape), "data_offsets": [0, feats.nbytes]},
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format allows space padding; it keeps the data 8-byte aligned
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".safetensors")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            f.write(memoryview(feats).cast("B"))
        os.chmod(tmp, user_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def default_batch_size(modality: str, device: torch.device) -> int:
    """Extraction batch size: small image batches on a CPU, whose activations then stay in cache (EfficientNet-Lite0
    on 2 EPYC cores: ~50 img/s at 32 vs ~65-80 at 8, see BENCHMARKS.md); larger ones on a GPU; 64 texts (sorted
    by length, so padding stays small)."""
    if modality == "image":
        return 8 if device.type == "cpu" else 64
    return 64


def _batches(backbone: Backbone, items: list, batch_size: int) -> list[np.ndarray]:
    """Index batches; texts sorted by length so a batch pads only to its own longest text."""
    order = np.arange(len(items))
    if backbone.modality == "text":
        order = np.argsort([len(t) for t in items], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def extract_features(
    backbone: Backbone,
    ds: Dataset,
    indices: Sequence[int],
    *,
    batch_size: int | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    description: str = "features",
    stats: dict[str, Any] | None = None,
    compile: str | None = None,
    mirror: bool = False,
) -> tuple[np.ndarray, bool]:
    """Features (N, D) float32 for ``ds`` items at ``indices``; returns (features, came_from_cache).

    ``stats``, when given, accumulates ``extract_s`` (seconds the extraction took, or took when the cached copy was
    made) and ``saved_s`` (the part of it a cache hit saved): budget matching charges a cached run its cold cost;
    ``engine`` says how the backbone ran. ``batch_size`` defaults to ``default_batch_size``. ``compile``: auto
    (default, or ``$TRANSFERKIT_COMPILE``) compiles the
    backbone when that pays for this job on this machine (see ``transferkit.core.fastpath``); always; never.
    ``mirror``: the features of each image's mirror image (left-right flipped after preprocessing).
    """
    from .fastpath import Runner, compile_mode

    compile = compile_mode(compile)
    stats = stats if stats is not None else {}
    if backbone.modality != ds.modality:
        from ..errors import TransferkitError

        raise TransferkitError(
            f"Backbone {backbone.spec} takes {backbone.modality}s but {ds.name} holds {ds.modality}s."
        )
    if mirror and backbone.modality != "image":
        from ..errors import TransferkitError

        raise TransferkitError("mirror (left-right flipped features) is for images only.")
    indices = [int(i) for i in indices]
    root = cache_dir or default_cache_dir()
    path = None
    if use_cache:
        key = cache_key(backbone, ds, indices, mirror)
        path = root / "features" / f"{key}.safetensors"
        cached = _read_cache(path, len(indices), backbone.feature_dim) if path.exists() else None
        if cached is not None:
            spent = float(cached[1].get("extract_s", 0.0))
            stats["extract_s"] = stats.get("extract_s", 0.0) + spent
            stats["saved_s"] = stats.get("saved_s", 0.0) + spent
            return cached[0], True
    t0 = time.perf_counter()
    items = ds.take(indices)
    feats = np.empty((len(items), backbone.feature_dim), dtype=np.float32)
    device = default_device()
    backbone.eval().to(device)
    batch_size = batch_size or default_batch_size(backbone.modality, device)
    runner = Runner(backbone, len(items), batch_size, device, compile, root / "tuning.json" if use_cache else None)
    with progress_bar(f"{description} ({backbone.spec})", len(items), enabled=progress) as bar, torch.inference_mode():
        for batch in _batches(backbone, items, batch_size):
            inputs = backbone.to_device(backbone.prepare([items[i] for i in batch]), device)
            if mirror:
                inputs = inputs.flip(-1)
            feats[batch] = runner(inputs, len(batch)).float().cpu().numpy()
            bar.advance(len(batch))
    stats["engine"] = runner.finish()
    spent = time.perf_counter() - t0
    stats["extract_s"] = stats.get("extract_s", 0.0) + spent
    if path is not None:
        meta = {"backbone": backbone.spec, "dataset": ds.name, "n": str(len(items)), "extract_s": f"{spent:.3f}",
                "mirror": str(mirror).lower()}
        _write_cache(path, feats, meta)
    return feats, False
