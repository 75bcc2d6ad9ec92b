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


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, R^2 and Spearman's rank correlation of predicted against true values."""
    from scipy.stats import spearmanr

    from .heads import r2_score

    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    err = p - t
    rho = float(spearmanr(t, p).statistic) if np.ptp(p) > 0 and np.ptp(t) > 0 else 0.0
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean())), "r2": r2_score(t, p),
            "spearman": rho}


def per_class_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, list[float]]:
    """Precision, recall, F1 and support of every class, and the confusion matrix (rows: true, columns: predicted)."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (t, p), 1)
    tp = np.diag(confusion).astype(float)
    support, predicted = confusion.sum(1).astype(float), confusion.sum(0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros(num_classes), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(num_classes), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(num_classes), where=denom > 0)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": support.astype(int).tolist(), "confusion": confusion.tolist()}


def calibration(y_true: np.ndarray, proba: np.ndarray, bins: int = 15) -> dict[str, object]:
    """Expected calibration error (top-label, ``bins`` equal-width confidence bins) and the reliability diagram's
    bins: items, mean confidence and accuracy of each non-empty bin."""
    proba = np.asarray(proba, dtype=np.float64)
    conf, correct = proba.max(1), (proba.argmax(1) == np.asarray(y_true)).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            c, a = float(conf[members].mean()), float(correct[members].mean())
            ece += members.mean() * abs(a - c)
            rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "items": int(members.sum()),
                         "confidence": c, "accuracy": a})
    return {"ece": float(ece), "bins": rows}


def fit_temperature(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The temperature T that minimises the negative log-likelihood of ``softmax(log(proba) / T)`` (temperature
    scaling, Guo et al. 2017), searched on a log grid then refined; fitted on validation data."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1.0))
    y = np.asarray(y_true, dtype=np.int64)

    def nll(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z = z - z.max(1, keepdims=True)
        return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean())

    res = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return float(math.exp(res.x))


def scale_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(proba) / T)``: the probabilities a temperature-scaled model gives."""
    z = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1.0)) / temperature
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


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
    metric: str = "accuracy"
    """What was compared (accuracy; R^2 for a regression target), in points (x 100)."""

    @property
    def text(self) -> str:
        """The sentence about transfer against scratch."""
        return self.sentence()

    def phrase(self, what: str, baseline: str) -> str:
        """The sentence about ``what`` against ``baseline`` (e.g. "distillation", "hard labels alone")."""
        return self.sentence(what, baseline)

    def sentence(self, what: str = "transfer", baseline: str = "scratch") -> str:
        """The one verdict sentence every report prints: ``what`` against ``baseline``, the mean paired difference in
        points and its interval; with one seed, the difference on that seed and no interval."""
        if self.seeds == 1:
            word = "higher" if self.diff >= 0 else "lower"
            return (
                f"{what.capitalize()} {self.metric} is {abs(self.diff):.1f} points {word} than {baseline} on this seed "
                "(single seed: no confidence interval)."
            )
        low, high = self.low, self.high
        if self.metric in ("accuracy", "AUROC"):  # a difference of proportions lies in [-100, +100]; of R^2s, not
            low, high = max(low, -100.0), min(high, 100.0)
        few = " - too few seeds for a useful interval" if high - low > 50 else ""
        diff, span, n = f"{self.diff:+.1f} points", f"[{low:+.1f}, {high:+.1f}]", f"({self.seeds} seeds{few})"
        plain = (what, baseline) == ("transfer", "scratch")  # the words the transfer literature uses
        if self.kind == "helps":
            return f"{what} helps: {diff} {span} over {baseline} {n}"
        if self.kind == "negative transfer":
            if plain:
                return f"negative transfer: {baseline} is better by {-self.diff:.1f} points {span} {n}"
            return f"{what} hurts: {diff} {span} against {baseline} {n}"
        if plain:
            return f"no clear difference: {diff} {span} {n}"
        return f"{what}: no clear difference from {baseline}, {diff} {span} {n}"


def verdict(
    transfer: Sequence[float], scratch: Sequence[float], confidence: float = 0.95, metric: str = "accuracy"
) -> Verdict:
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
    return Verdict(kind, m, lo, hi, len(diffs), metric)
