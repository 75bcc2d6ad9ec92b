"""Metrics and confidence intervals over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 (every class counts, present in the test set or not)."""
    from sklearn.metrics import f1_score

    return {
        "accuracy": float((np.asarray(y_true) == np.asarray(y_pred)).mean()),
        "macro_f1": float(f1_score(y_true, y_pred, labels=list(range(num_classes)), average="macro", zero_division=0)),
    }


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean over seeds; a single value has a zero-width interval."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    from scipy import stats

    half = float(stats.t.ppf((1 + confidence) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half
