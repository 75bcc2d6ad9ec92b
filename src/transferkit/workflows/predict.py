"""Predictions for inputs of any number: in chunks, each written as soon as it is made (to a CSV/JSONL file or to
the console), so neither the decoded inputs nor all the probabilities are held at once."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def collect_inputs(
    model: Any, inputs: list[str], file: Path | None, text_column: str | None, label_column: str, encoding: str
) -> tuple[list[Any], list[str], list[str] | None]:
    """(items, display names, labels or None) from arguments or a CSV/JSONL file."""
    from ..data.sources import IMAGE_EXTENSIONS, read_table_file

    if file is not None:
        column = {"text_column": text_column} if model.modality == "text" else {"image_column": text_column}
        table = read_table_file(file, label_column=label_column, encoding=encoding, require_labels=False, **column)
        return list(table.items), [str(i) for i in table.items], table.labels
    if model.modality == "text":
        return list(inputs), list(inputs), None
    items: list[Any] = []
    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            items += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            items.append(arg)
    return items, items, None


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
    regression = model.task == "regression"
    kind = _score_rows if model.task == "detection" else _value_rows if regression else _class_rows
    header, rows = kind(model, truth is not None)
    scored: list[float] = []  # per row with a truth: 1/0 right (classes) or the error (values)
    with _sink(output, header) as write, progress_bar("predict", len(items), enabled=progress) as bar:
        for start in range(0, len(items), CHUNK):
            chunk = list(items[start : start + CHUNK])
            known = truth[start : start + len(chunk)] if truth is not None else None
            for row, cells, score in rows(chunk, names[start : start + len(chunk)], known):
                write(row, cells)
                if score is not None:
                    scored.append(score)
                if on_row is not None:
                    on_row(row)
            bar.advance(len(chunk))
    summary: dict[str, Any] = {"rows": len(items)}
    if scored and regression:
        e = np.asarray(scored)
        summary.update(mae=float(np.abs(e).mean()), rmse=float(np.sqrt((e**2).mean())))
    elif truth is not None:
        summary["accuracy"] = float(np.mean(scored)) if scored else 0.0
    return summary


Rows = Callable[[list[Any], Sequence[str], "np.ndarray | None"], Iterator[tuple[dict[str, Any], list[str], Any]]]


def _class_rows(model: Any, has_truth: bool) -> tuple[list[str], Rows]:
    """The CSV header and the rows of a classifier: label, its probability, every class's probability."""
    classes = list(model.classes)
    header = ["input", "label", "probability", *(["true_label"] if has_truth else []), *(f"p({c})" for c in classes)]

    def rows(chunk: list[Any], names: Sequence[str], truth: np.ndarray | None) -> Iterator[Any]:
        for k, p in enumerate(np.asarray(model.predict_proba(chunk))):
            best = int(p.argmax())
            row: dict[str, Any] = {"input": names[k], "label": classes[best], "probability": float(p[best])}
            score = None
            if truth is not None:
                row["true_label"] = classes[int(truth[k])]
                score = float(int(truth[k]) == best)
            row["probabilities"] = {c: float(v) for c, v in zip(classes, p, strict=True)}
            cells = [row["input"], row["label"], f"{row['probability']:.6f}",
                     *([row["true_label"]] if truth is not None else []), *(f"{v:.6f}" for v in p)]
            yield row, cells, score

    return header, rows


def _value_rows(model: Any, has_truth: bool) -> tuple[list[str], Rows]:
    """The CSV header and the rows of a regression model: the value (and the true value)."""
    header = ["input", "value", *(["true_value"] if has_truth else [])]

    def rows(chunk: list[Any], names: Sequence[str], truth: np.ndarray | None) -> Iterator[Any]:
        for k, v in enumerate(model.predict_values(chunk)):
            row: dict[str, Any] = {"input": names[k], "value": float(v)}
            score = None
            if truth is not None:
                row["true_value"] = float(truth[k])
                score = float(v) - float(truth[k])
            cells = [row["input"], f"{row['value']:.6g}", *([f"{row['true_value']:.6g}"] if truth is not None else [])]
            yield row, cells, score

    return header, rows


def _score_rows(model: Any, has_truth: bool) -> tuple[list[str], Rows]:
    """The CSV header and the rows of an anomaly detector: standardised score and verdict."""

    def rows(chunk: list[Any], names: Sequence[str], truth: np.ndarray | None) -> Iterator[Any]:
        for k, p in enumerate(model.predict(chunk)):
            row = {"input": names[k], "score": p.score, "verdict": p.verdict}
            yield row, [row["input"], f"{p.score:.6g}", p.verdict], None

    return ["input", "score", "verdict"], rows


@contextmanager
def _sink(output: Path | None, header: list[str]) -> Iterator[Callable[[dict[str, Any], list[str]], None]]:
    """A writer of rows to ``output`` (CSV cells or JSONL objects) through a temp file renamed into place when the
    block ends cleanly, removed when it does not; with no ``output``, a writer that writes nothing."""
    if output is None:
        yield lambda row, cells: None
        return
    fd, name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.tmp-")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            if output.suffix.lower() == ".csv":
                writer = csv.writer(handle)
                writer.writerow(header)
                yield lambda row, cells: writer.writerow(cells)
            else:
                yield lambda row, cells: handle.write(json.dumps(row) + "\n")
        os.chmod(tmp, user_mode())
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
