"""What the saved model did on the test set, kept in the run record for the report: per-class scores, confusion
matrix, calibration, and examples (the most confident mistakes and a sample of correct predictions).

Computed once, after every choice is made; the HTML report is rebuilt from the record alone, so image examples are
written as small thumbnails beside it (``examples/``) and text examples as excerpts in the record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.evaluation import calibration, fit_temperature, per_class_metrics, scale_temperature
from ..data.dataset import Dataset

EXAMPLES = 8
"""Examples of each kind (mistakes, correct) the report shows."""
THUMBNAIL = 96
"""Longest side of an image example, in pixels."""
EXCERPT = 240
"""Characters of a text example."""


def calibrate(model: Any, ds: Dataset, val: np.ndarray, val_proba: np.ndarray | None = None) -> float:
    """Fit the model's temperature on the validation split (``val_proba``: its probabilities there, when the
    strategy already has them) and set it; returns it."""
    proba = val_proba if val_proba is not None else model.predict_proba(ds.take(val))
    model.temperature = fit_temperature(ds.targets[val], proba)
    return float(model.temperature)


def test_evidence(
    ds: Dataset, test: np.ndarray, proba: np.ndarray, out: Path | None, seed: int = 0,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Per-class metrics, calibration and examples of ``proba`` (the saved model's test probabilities, before any
    temperature scaling); with ``temperature`` (fitted on validation) also the calibration after it; with ``out``,
    image examples' thumbnails are written to ``out/examples``."""
    proba = np.asarray(proba, dtype=np.float64)
    y = ds.targets[test]
    pred = proba.argmax(1)
    conf = proba.max(1)
    wrong = np.flatnonzero(pred != y)
    mistakes = wrong[np.argsort(-conf[wrong], kind="stable")][:EXAMPLES]
    right = np.flatnonzero(pred == y)
    rng = np.random.default_rng(seed)
    correct = np.sort(rng.choice(right, size=min(EXAMPLES, len(right)), replace=False)) if len(right) else right
    examples = []
    for kind, rows in (("mistake", mistakes), ("correct", correct)):
        for r in rows:
            i = int(test[r])
            ex: dict[str, Any] = {
                "kind": kind, "index": i, "label": ds.classes[int(y[r])], "predicted": ds.classes[int(pred[r])],
                "probability": float(conf[r]), "label_probability": float(proba[r, y[r]]),
            }
            _attach_item(ds, i, ex, out)
            examples.append(ex)
    evidence = {
        "classes": ds.classes,
        "items": len(test),
        **per_class_metrics(y, pred, len(ds.classes)),
        "calibration": calibration(y, proba),
        "examples": examples,
    }
    if temperature is not None:
        evidence["calibrated"] = {"temperature": temperature, **calibration(y, scale_temperature(proba, temperature))}
    return evidence


POINTS = 1000
"""At most this many (true, predicted) pairs of a regression test set are kept for the report's scatter."""


def regression_evidence(ds: Dataset, test: np.ndarray, values: np.ndarray, out: Path | None) -> dict[str, Any]:
    """Predicted against true values (a seeded sample of at most ``POINTS``), residual summary and examples (the
    largest errors and a sample of the rest) of a regression model on the test set."""
    y = ds.targets[test]
    values = np.asarray(values, dtype=np.float64)
    err = values - y
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(y), size=min(POINTS, len(y)), replace=False))
    worst = np.argsort(-np.abs(err), kind="stable")[:EXAMPLES]
    rest = np.setdiff1d(np.arange(len(y)), worst)
    sample = np.sort(rng.choice(rest, size=min(EXAMPLES, len(rest)), replace=False)) if len(rest) else rest
    examples = []
    for kind, rows in (("mistake", worst), ("correct", sample)):
        for r in rows:
            i = int(test[r])
            ex: dict[str, Any] = {"kind": kind, "index": i, "value": float(y[r]), "predicted": float(values[r])}
            _attach_item(ds, i, ex, out)
            examples.append(ex)
    return {"task": "regression", "items": len(test), "points": [[float(y[k]), float(values[k])] for k in keep],
            "residual_mean": float(err.mean()), "residual_std": float(err.std()), "examples": examples}


def _attach_item(ds: Dataset, i: int, ex: dict[str, Any], out: Path | None) -> None:
    """A text example's excerpt, or an image example's source path and (with ``out``) thumbnail."""
    item = ds.items[i]
    if ds.modality == "text":
        text = str(item)
        ex["text"] = text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"
        return
    if isinstance(item, str | Path):
        ex["source"] = str(item)
    if out is not None:
        ex["thumbnail"] = _thumbnail(item, out / "examples" / f"test-{i}.png")


def _thumbnail(item: Any, path: Path) -> str:
    """A PNG of ``item`` at most THUMBNAIL pixels on its longest side; its path relative to the run folder."""
    from ..backbones.base import load_image

    image = load_image(item)
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return f"examples/{path.name}"
