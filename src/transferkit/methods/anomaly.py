"""Anomaly detectors fitted on normal examples only, on feature vectors (a backbone's, or the control's pixels /
TF-IDF): kNN distance, Mahalanobis distance with Ledoit-Wolf shrinkage, and pyod's detectors when pyod is installed.

Every detector's raw score (higher: more unusual) is standardised on held-out normal data (its median and
MAD-scaled spread), so a threshold means the same for every detector and backbone; the threshold is the
standardised score that the chosen share of held-out normal data exceeds (the target false-positive rate).
A fitted detector is plain arrays and JSON-able parameters: it saves to safetensors + JSON, never a pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TransferkitError

BUILTIN = ("knn", "mahalanobis")
"""The detectors that need nothing beyond the core dependencies; ``pyod:<Class>`` names one of pyod's."""

KNN_K = 2
"""Neighbours the kNN score averages over (see ``KNNDetector``)."""


def check_detector(name: str) -> str:
    """``name`` if it is a detector this installation can run; else one sentence saying what can."""
    if name in BUILTIN:
        return name
    if name.startswith("pyod:") and len(name) > 5:
        _pyod_class(name[5:])
        return name
    raise TransferkitError(
        f"Unknown detector {name!r}: use {', '.join(BUILTIN)}, or pyod:<Class> (e.g. pyod:ECOD, pyod:IForest) with "
        "pyod installed."
    )


def _pyod_class(cls: str) -> Any:
    import importlib

    try:
        module = importlib.import_module(f"pyod.models.{cls.lower()}")
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "pyod" and e.name in ("pyod", "pyod.models"):
            raise TransferkitError(
                f"pyod:{cls} needs pyod: pip install 'transferkit[detect]' (or pyod), or use {', '.join(BUILTIN)}."
            ) from None
        raise TransferkitError(f"pyod has no detector {cls!r} (pyod.models.{cls.lower()} does not exist).") from None
    if not hasattr(module, cls):
        raise TransferkitError(f"pyod.models.{cls.lower()} has no class {cls!r} (pyod's names are case-sensitive).")
    return getattr(module, cls)


@dataclass
class Detector:
    """A fitted detector: ``name``, JSON-able ``params``, its state as ``arrays``, and the standardisation and
    threshold set on held-out normal data (``calibrate``)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    center: float = 0.0
    scale: float = 1.0
    threshold: float = float("inf")
    _model: Any = field(default=None, repr=False)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Raw anomaly scores (higher: more unusual) of feature rows ``x``."""
        x = np.asarray(x, dtype=np.float32)
        if self.name == "knn":
            return _knn_scores(_unit(x), self.arrays["bank"], int(self.params["k"]))
        if self.name == "mahalanobis":
            d = x - self.arrays["mean"]
            return np.einsum("ij,jk,ik->i", d, self.arrays["precision"], d, optimize=True)
        if self._model is None:  # pyod: refit on the saved normal features, then checked against saved scores
            self._model = _fit_pyod(self.name, self.arrays["bank"], self.params)
            check = self.arrays.get("check_x")
            if check is not None:
                again = np.asarray(self._model.decision_function(check), dtype=np.float64)
                if not np.allclose(again, self.arrays["check_raw"], rtol=1e-4, atol=1e-6):
                    self._model = None
                    raise TransferkitError(
                        f"{self.name} refitted on the saved normal features scores differently from when it was "
                        "saved (a detector that is not deterministic, or another pyod version): refit it with detect."
                    )
        return np.asarray(self._model.decision_function(x), dtype=np.float64)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Standardised scores: 0 is a typical normal example, each unit one (robust) standard deviation of the
        normal scores."""
        return (self.raw(x) - self.center) / self.scale

    def calibrate(self, normal_scores_raw: np.ndarray, rate: float) -> None:
        """Standardise on held-out normal data's raw scores; threshold: the standardised score that a share
        ``rate`` of them exceeds."""
        s = np.asarray(normal_scores_raw, dtype=np.float64)
        self.center = float(np.median(s))
        mad = float(np.median(np.abs(s - self.center))) * 1.4826
        self.scale = mad if mad > 1e-12 else float(s.std()) or 1.0
        z = (s - self.center) / self.scale
        self.threshold = float(np.quantile(z, 1.0 - rate, method="higher")) if rate > 0 else float(z.max())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "center": self.center, "scale": self.scale,
                "threshold": self.threshold}


def fit_detector(name: str, x: np.ndarray, seed: int = 0, k: int = KNN_K) -> Detector:
    """``name`` fitted on the normal feature rows ``x`` (not yet calibrated)."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) < 2:
        raise TransferkitError(f"A detector needs at least 2 normal examples to fit on, got {len(x)}.")
    if name == "knn":
        k = max(1, min(int(k), len(x) - 1))
        return Detector("knn", {"k": k}, {"bank": _unit(x)})
    if name == "mahalanobis":
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf().fit(x.astype(np.float64))
        return Detector("mahalanobis", {"shrinkage": float(lw.shrinkage_)},
                        {"mean": lw.location_.astype(np.float32), "precision": lw.precision_.astype(np.float32)})
    params = {"random_state": seed}
    model = _fit_pyod(name, x, params)
    check = x[np.random.default_rng(seed).permutation(len(x))[:32]]  # saved with it: a refit must score these alike
    det = Detector(name, params, {"bank": x, "check_x": check,
                                  "check_raw": np.asarray(model.decision_function(check), dtype=np.float64)})
    det._model = model
    return det


def _fit_pyod(name: str, x: np.ndarray, params: dict[str, Any]) -> Any:
    import inspect

    cls = _pyod_class(name[5:])
    kwargs = {k: v for k, v in params.items() if k in inspect.signature(cls).parameters}
    try:
        return cls(**kwargs).fit(x)
    except (TypeError, ValueError) as e:  # e.g. too few items for its neighbours, or arguments it requires
        raise TransferkitError(f"{name} could not be fitted on {len(x)} normal examples ({type(e).__name__}: "
                               f"{e}).") from None


def check_state(name: str, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """Empty if ``params`` and ``arrays`` are what a fitted ``name`` holds (names, shapes, finite values, k within
    the bank); else what is wrong, in a few words."""
    want = {"knn": {"bank"}, "mahalanobis": {"mean", "precision"}}.get(name, {"bank", "check_x", "check_raw"})
    if set(arrays) != want:
        return f"arrays {sorted(arrays)} instead of {sorted(want)}"
    if not all(np.isfinite(a).all() for a in arrays.values()):
        return "arrays that are not finite"
    if name == "mahalanobis":
        d = arrays["mean"].shape
        ok = len(d) == 1 and arrays["precision"].shape == (d[0], d[0])
        return "" if ok and params.keys() <= {"shrinkage"} else "a mean and precision of mismatched shapes"
    bank = arrays["bank"]
    if bank.ndim != 2 or len(bank) < 2:
        return "a bank of normal features that is not a table of at least 2 rows"
    if name == "knn":
        k = params.get("k")
        ok = set(params) == {"k"} and isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= len(bank)
        return "" if ok else f"k={k!r} outside 1..{len(bank)}"
    seed = params.get("random_state")
    if set(params) != {"random_state"} or not isinstance(seed, int) or isinstance(seed, bool):
        return "parameters other than an integer random_state"
    if arrays["check_x"].ndim != 2 or arrays["check_x"].shape[1] != bank.shape[1] or arrays["check_raw"].shape != (
            len(arrays["check_x"]),):
        return "check rows of mismatched shapes"
    return ""


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (kNN compares directions: cosine distance)."""
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _knn_scores(q: np.ndarray, bank: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Mean cosine distance of each query row to its ``k`` nearest bank rows."""
    out = np.empty(len(q))
    for i in range(0, len(q), chunk):
        sim = q[i : i + chunk] @ bank.T
        top = np.partition(-sim, k - 1, axis=1)[:, :k]
        out[i : i + chunk] = 1.0 + top.mean(axis=1)  # 1 - mean similarity of the k nearest
    return out


def held_out_knn_ratio(x: np.ndarray, k: int = KNN_K, seed: int = 0) -> float:
    """A label-free score of how well a feature space suits kNN detection on this normal data (lower is better):
    the mean kNN distance of a held-out half of the normal rows to the other half, over the mean distance between
    random pairs of that half. Comparable across backbones (both distances are cosine in the same space); it reads
    no anomaly, so it can only say how tightly the normal data's neighbourhoods hold, not how far anomalies fall."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    a, b = _unit(np.asarray(x)[perm[: len(x) // 2]]), _unit(np.asarray(x)[perm[len(x) // 2 :]])
    if len(a) < 2 or len(b) < 2:
        raise TransferkitError(f"Scoring a backbone needs at least 4 normal examples, got {len(x)}.")
    i, j = rng.integers(0, len(a), 2000), rng.integers(0, len(a), 2000)
    keep = i != j
    spread = float(np.mean(1.0 - np.sum(a[i[keep]] * a[j[keep]], axis=1)))
    near = float(_knn_scores(b, a, max(1, min(k, len(a)))).mean())
    return near / max(spread, 1e-12)


def detection_metrics(scores: np.ndarray, is_anomaly: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC and average precision of ``scores`` for the anomalies, and the false-positive rate and recall of
    flagging scores above ``threshold``."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(is_anomaly, dtype=bool)
    if y.all() or not y.any():
        raise TransferkitError("The test set needs both normal and anomalous examples to be scored.")
    flagged = np.asarray(scores) > threshold
    return {
        "auroc": float(roc_auc_score(y, scores)),
        "average_precision": float(average_precision_score(y, scores)),
        "fpr": float(flagged[~y].mean()),
        "recall": float(flagged[y].mean()),
    }
