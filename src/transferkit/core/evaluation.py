"""Metrics and confidence intervals over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 (every class counts, present in the test set or not; a class with no true and no
    predicted example scores 0, as scikit-learn's ``zero_division=0``). Plain numpy: importing scikit-learn's
    metrics costs about a second, a large share of a warm run."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    tp = np.bincount(t[t == p], minlength=num_classes)[:num_classes].astype(float)
    support = np.bincount(t, minlength=num_classes)[:num_classes].astype(float)
    predicted = np.bincount(p, minlength=num_classes)[:num_classes].astype(float)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(num_classes), where=denom > 0)
    return {"accuracy": float((t == p).mean()), "macro_f1": float(f1.mean())}


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean over seeds; a single value has a zero-width interval."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    from scipy import stats

    half = float(stats.t.ppf((1 + confidence) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


@dataclass(frozen=True)
class Verdict:
    """Transfer minus scratch accuracy over paired seeds, in points, with its interval and one sentence."""

    kind: str  # "helps" | "no clear difference" | "negative transfer"
    diff: float
    low: float
    high: float
    seeds: int

    @property
    def text(self) -> str:
        span = f"[{self.low:+.1f}, {self.high:+.1f}]"
        if self.kind == "helps":
            return f"transfer helps: {self.diff:+.1f} points {span} over scratch ({self.seeds} seeds)"
        if self.kind == "negative transfer":
            return f"negative transfer: scratch is better by {-self.diff:.1f} points {span} ({self.seeds} seeds)"
        return f"no clear difference: {self.diff:+.1f} points {span} ({self.seeds} seeds)"

    def phrase(self, what: str, baseline: str) -> str:
        """The verdict as one sentence about ``what`` against ``baseline`` (e.g. "distillation", "hard labels")."""
        span = f"[{self.low:+.1f}, {self.high:+.1f}]"
        if self.kind == "helps":
            return f"{what} helps: {self.diff:+.1f} points {span} over {baseline} ({self.seeds} seeds)"
        if self.kind == "negative transfer":
            return f"{what} hurts: {self.diff:+.1f} points {span} against {baseline} ({self.seeds} seeds)"
        return f"{what}: no clear difference from {baseline}, {self.diff:+.1f} points {span} ({self.seeds} seeds)"


def verdict(transfer: Sequence[float], scratch: Sequence[float], confidence: float = 0.95) -> Verdict:
    """Paired comparison of accuracies on the same seeds (same splits): the 95% interval of the mean difference
    decides; with one seed nothing can be decided."""
    if len(transfer) != len(scratch) or not transfer:
        raise ValueError("transfer and scratch need the same, non-zero number of seeds")
    diffs = 100 * (np.asarray(transfer, dtype=float) - np.asarray(scratch, dtype=float))
    m, lo, hi = mean_ci(diffs, confidence)
    if len(diffs) < 2:
        kind = "no clear difference"
    elif lo > 0:
        kind = "helps"
    elif hi < 0:
        kind = "negative transfer"
    else:
        kind = "no clear difference"
    return Verdict(kind, m, lo, hi, len(diffs))
