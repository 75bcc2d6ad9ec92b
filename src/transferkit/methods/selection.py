"""Label-free model selection for domain adaptation: criteria that score a checkpoint without any target label.

- ``dev``: Deep Embedded Validation (You et al., ICML 2019): the source-validation loss weighted by the density ratio
  p(target | x) / p(source | x) of a domain classifier, with its control variate (``importance_weights``,
  ``dev_risk``); lower risk is better.
- ``im``: information maximisation on the unlabelled target (Shi & Sha 2012; Liang et al. 2020).
- ``source-val``: plain source-validation accuracy.

Reverse validation, which needs the adapter's own head, lives with the methods (``adaptation.reverse_accuracy``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import TransferkitError
from .shift import domain_classifier

SELECTIONS = ("dev", "im", "source-val")


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(-1)


def information_maximisation(probs: np.ndarray) -> float:
    """H(mean prediction) - mean H(prediction), divided by log(classes): high when predictions are confident and
    spread over the classes."""
    c = probs.shape[1]
    return float((_entropy(probs.mean(0)) - _entropy(probs).mean()) / math.log(c))


def effective_sample_size(w: np.ndarray) -> float:
    """(sum w)^2 / sum w^2: how many equally weighted rows the weights are worth."""
    return float(w.sum() ** 2 / max(float((w * w).sum()), 1e-300))


def importance_weights(
    xs_train: np.ndarray, xt: np.ndarray, xs_val: np.ndarray, seed: int = 0, min_ess: float = 0.2
) -> np.ndarray:
    """Weights for the source-validation rows towards the target: (p(target | x) / p(source | x))^tau from a linear
    domain classifier trained with the domains weighted equally (so the odds estimate the density ratio, as in
    DEV), clipped at 20.

    When the domains are almost separable the raw ratios put all the weight on a handful of rows; the exponent tau
    (flattened importance weighting, Shimodaira 2000) is the largest of 1, 1/2, 1/4, ... that keeps the effective
    sample size at ``min_ess`` of the rows or more (tau = 0: plain source validation).
    """
    clf = domain_classifier(xs_train, xt, seed, c=0.1)
    p = np.clip(clf.predict_proba(xs_val.astype(np.float64))[:, 1], 1e-6, 1 - 1e-6)
    log_ratio = np.log(p) - np.log1p(-p)
    for tau in (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0):
        w = np.minimum(np.exp(np.minimum(tau * log_ratio, 50.0)), 20.0)
        if effective_sample_size(w) >= min_ess * len(w):
            return w
    return np.ones(len(p))


def dev_risk(losses: np.ndarray, weights: np.ndarray) -> float:
    """Deep Embedded Validation: mean(w l) + eta mean(w) - eta, eta = -Cov(w l, w) / Var(w) (lower is better)."""
    wl = weights * losses
    var = float(np.var(weights, ddof=1)) if len(weights) > 1 else 0.0
    eta = -float(np.cov(wl, weights)[0, 1]) / var if var > 1e-12 else 0.0
    return float(wl.mean() + eta * weights.mean() - eta)


class Selector:
    """Scores a checkpoint without target labels; higher is better (DEV's risk is negated)."""

    def __init__(self, kind: str, xv: torch.Tensor, yv: torch.Tensor, xt: torch.Tensor,
                 weights: np.ndarray | None = None) -> None:
        if kind not in SELECTIONS:
            raise TransferkitError(f"select={kind!r} is not one of {', '.join(SELECTIONS)}.")
        if kind == "dev" and weights is None:
            raise ValueError("dev selection needs importance weights")
        self.kind, self.xv, self.yv, self.xt, self.weights = kind, xv, yv, xt, weights

    def score(self, net: nn.Module) -> tuple[float, float]:
        """(criterion, source-validation accuracy) of ``net`` in eval mode."""
        with torch.no_grad():
            logits = net(self.xv)
            acc = float((logits.argmax(1) == self.yv).float().mean())
            if self.kind == "source-val":
                return acc, acc
            if self.kind == "dev":
                losses = nn.functional.cross_entropy(logits, self.yv, reduction="none").numpy()
                assert self.weights is not None
                return -dev_risk(losses, self.weights), acc
            probs = torch.softmax(net(self.xt), 1).numpy()
        return information_maximisation(probs), acc
