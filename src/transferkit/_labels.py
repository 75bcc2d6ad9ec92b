"""Labels read against a model: class names to indices, and numeric targets (no torch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import DataError


def target_values(labels: Sequence[str], where: str = "data") -> np.ndarray:
    """A regression model's true values from label strings; one that is not a number is an error naming it."""
    out = np.empty(len(labels))
    for i, lab in enumerate(labels):
        try:
            out[i] = float(lab)
        except ValueError:
            raise DataError(f"{where}: target {lab!r} (row {i + 1}) is not a number.") from None
    return out


def label_indices(classes: Sequence[str], labels: Sequence[str], where: str = "data") -> np.ndarray:
    """Map label strings to class indices; a label unknown to the model is an error naming it."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(lab) for lab in labels} - set(index))
    if unknown:
        raise DataError(
            f"{where} has label(s) {', '.join(map(repr, unknown[:5]))} that the model was not trained on; "
            f"it knows {', '.join(map(repr, classes))}."
        )
    return np.array([index[str(lab)] for lab in labels])
