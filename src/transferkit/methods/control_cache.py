"""The control's cache: one folder per data x split x seed x settings, its results and a resumable state."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .._files import atomic_write
from ..data.dataset import Dataset, Splits

CONTROL_VERSION = "4"


def control_key(ds: Dataset, splits: Splits, seed: int, settings: dict[str, Any]) -> str:
    """Data (train/val items with labels, test items without) x split x seed x control settings."""
    h = hashlib.sha256(f"control:{CONTROL_VERSION}:{ds.modality}:{seed}".encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(json.dumps(ds.classes).encode())
    h.update(ds.content_hash(splits.train).encode())
    h.update(ds.content_hash(splits.val).encode())
    for i in splits.test:  # the test labels play no part in the control: they stay out of its key
        h.update(ds.item_hash(int(i)).encode())
    return h.hexdigest()[:32]


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ControlCache:
    """One folder per key: ``record.json`` (results, per-epoch curve, checksum of the state) and ``state.pt``
    (CNN weights, optimizer and RNG state to continue training, and the CNN's weights at each new best validation
    epoch under ``best``; loaded with ``weights_only=True``)."""

    def __init__(self, root: Path | None, key: str) -> None:
        self.dir = root / "control" / key if root is not None else None

    def read(self) -> dict[str, Any] | None:
        if self.dir is None or not (self.dir / "record.json").is_file():
            return None
        try:
            record = json.loads((self.dir / "record.json").read_text())
            state = self.dir / "state.pt"
            if record.get("version") != CONTROL_VERSION:
                return None
            if record.get("state_sha256") and (not state.is_file() or _sha256_file(state) != record["state_sha256"]):
                return None
            return record
        except (OSError, ValueError, KeyError):
            return None

    def state(self) -> dict[str, Any]:
        assert self.dir is not None
        return torch.load(self.dir / "state.pt", map_location="cpu", weights_only=True)

    def write(self, record: dict[str, Any], state: dict[str, Any] | None) -> None:
        if self.dir is None:
            return
        record = {**record, "version": CONTROL_VERSION}
        if state is not None:
            def save(path: Path) -> None:
                with open(path, "wb") as f:
                    torch.save(state, f)

            atomic_write(self.dir / "state.pt", save)
            record["state_sha256"] = _sha256_file(self.dir / "state.pt")
        atomic_write(self.dir / "record.json", lambda p: p.write_text(json.dumps(record)))
