"""Predictions for inputs of any number: in chunks, each written as soon as it is made (to a CSV/JSONL file or to
the console), so neither the decoded inputs nor all the probabilities are held at once."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .._files import user_mode
from ..core.progress import progress_bar
from ..errors import TransferkitError

FORMATS = (".csv", ".jsonl", ".ndjson")
CHUNK = 256
"""Inputs decoded and predicted at a time."""


def check_output(output: str | Path, overwrite: bool = False) -> Path:
    """``output`` if predictions may be written there, before any work; else one sentence saying why not."""
    path = Path(output)
    if path.suffix.lower() not in FORMATS:
        raise TransferkitError(f"--output {path}: write predictions to a .csv or .jsonl file.")
    if path.is_dir():
        raise TransferkitError(f"--output {path} is a folder: name a .csv or .jsonl file.")
    if path.exists() and not overwrite:
        raise TransferkitError(f"--output {path} exists; pass --overwrite to replace it, or choose another name.")
    if not path.parent.is_dir():
        raise TransferkitError(f"--output {path}: its folder {path.parent} does not exist.")
    if not os.access(path.parent, os.W_OK):
        raise TransferkitError(f"--output {path}: its folder {path.parent} cannot be written.")
    return path


def predict_stream(
    model: Any,
    items: Sequence[Any],
    names: Sequence[str],
    truth: np.ndarray | None = None,
    output: Path | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict ``items`` chunk by chunk; each row (input, label, probability, every class's probability, and the
    true label where ``truth`` is given; for a regression model input, value and true value) goes to ``output`` (CSV
    or JSONL, written to a temp file renamed into place at the end) and to ``on_row``. Returns the count and, with
    ``truth``, the accuracy (regression: MAE and RMSE)."""
    if model.task == "regression":
        return _stream_values(model, items, names, truth, output, on_row, progress)
    classes = list(model.classes)
    tmp: Path | None = None
    handle: TextIO | None = None
    writer: Any = None
    if output is not None:
        fd, name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.tmp-")
        tmp = Path(name)
        handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
        if output.suffix.lower() == ".csv":
            writer = csv.writer(handle)
            writer.writerow(["input", "label", "probability", *(["true_label"] if truth is not None else []),
                             *(f"p({c})" for c in classes)])
    right = 0
    try:
        with progress_bar("predict", len(items), enabled=progress) as bar:
            for start in range(0, len(items), CHUNK):
                proba = np.asarray(model.predict_proba(list(items[start : start + CHUNK])))
                for k, p in enumerate(proba):
                    i = start + k
                    best = int(p.argmax())
                    row: dict[str, Any] = {"input": names[i], "label": classes[best], "probability": float(p[best])}
                    if truth is not None:
                        row["true_label"] = classes[int(truth[i])]
                        right += int(truth[i]) == best
                    row["probabilities"] = {c: float(v) for c, v in zip(classes, p, strict=True)}
                    if writer is not None:
                        writer.writerow([row["input"], row["label"], f"{row['probability']:.6f}",
                                         *([row["true_label"]] if truth is not None else []),
                                         *(f"{v:.6f}" for v in p)])
                    elif handle is not None:
                        handle.write(json.dumps(row) + "\n")
                    if on_row is not None:
                        on_row(row)
                bar.advance(len(proba))
        if handle is not None and tmp is not None and output is not None:
            handle.close()
            os.chmod(tmp, user_mode())
            os.replace(tmp, output)
    finally:
        if handle is not None and not handle.closed:
            handle.close()
        if tmp is not None and tmp.exists():
            tmp.unlink()
    summary: dict[str, Any] = {"rows": len(items)}
    if truth is not None:
        summary["accuracy"] = right / max(len(items), 1)
    return summary


def _stream_values(
    model: Any, items: Sequence[Any], names: Sequence[str], truth: np.ndarray | None, output: Path | None,
    on_row: Callable[[dict[str, Any]], None] | None, progress: bool,
) -> dict[str, Any]:
    """``predict_stream`` for a regression model: one value per input."""
    tmp: Path | None = None
    handle: TextIO | None = None
    writer: Any = None
    if output is not None:
        fd, name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.tmp-")
        tmp, handle = Path(name), os.fdopen(fd, "w", encoding="utf-8", newline="")
        if output.suffix.lower() == ".csv":
            writer = csv.writer(handle)
            writer.writerow(["input", "value", *(["true_value"] if truth is not None else [])])
    errors: list[float] = []
    try:
        with progress_bar("predict", len(items), enabled=progress) as bar:
            for start in range(0, len(items), CHUNK):
                values = model.predict_values(list(items[start : start + CHUNK]))
                for k, v in enumerate(values):
                    i = start + k
                    row: dict[str, Any] = {"input": names[i], "value": float(v)}
                    if truth is not None:
                        row["true_value"] = float(truth[i])
                        errors.append(float(v) - float(truth[i]))
                    if writer is not None:
                        writer.writerow([row["input"], f"{row['value']:.6g}",
                                         *([f"{row['true_value']:.6g}"] if truth is not None else [])])
                    elif handle is not None:
                        handle.write(json.dumps(row) + "\n")
                    if on_row is not None:
                        on_row(row)
                bar.advance(len(values))
        if handle is not None and tmp is not None and output is not None:
            handle.close()
            os.chmod(tmp, user_mode())
            os.replace(tmp, output)
    finally:
        if handle is not None and not handle.closed:
            handle.close()
        if tmp is not None and tmp.exists():
            tmp.unlink()
    summary: dict[str, Any] = {"rows": len(items)}
    if errors:
        e = np.asarray(errors)
        summary.update(mae=float(np.abs(e).mean()), rmse=float(np.sqrt((e**2).mean())))
    return summary
