"""Transferability scores: how well a pretrained model's features (or its own classifier) fit a new labelled task,
from one forward pass and no training. Higher is better for every score here.

All four work on arrays that ``features.extract_features`` caches, and compute in float64.
"""

from __future__ import annotations

import numpy as np

from ..errors import TransferkitError


def _check(n: int, labels: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise TransferkitError(f"{what}: labels must be a 1-d array of {n} entries, one per sample (got {y.shape}).")
    if not np.issubdtype(y.dtype, np.integer):
        raise TransferkitError(f"{what}: labels must be integer class indices, got dtype {y.dtype}.")
    if n < 2:
        raise TransferkitError(f"{what} needs at least 2 samples, got {n}.")
    if len(np.unique(y)) < 2:
        raise TransferkitError(f"{what} needs at least 2 classes among the labels, got only one.")
    return y


def _features(features: np.ndarray, what: str) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] < 1:
        raise TransferkitError(f"{what}: features must be a 2-d array (samples x dimensions), got {f.shape}.")
    if not np.isfinite(f).all():
        raise TransferkitError(f"{what}: features contain NaN or infinite values.")
    return f


def logme_evidence(
    features: np.ndarray, target: np.ndarray, max_iter: int = 100, tol: float = 1e-7
) -> tuple[float, float, float]:
    """Maximised log evidence per sample of Bayesian linear regression ``target ~ N(F w, 1/beta)``,
    ``w ~ N(0, 1/alpha)``, with (alpha, beta) found by MacKay's fixed-point iteration; returns
    (evidence / n, alpha, beta)."""
    f = _features(features, "LogME")
    y = np.asarray(target, dtype=np.float64)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    return _evidence(u.T @ y, s**2, float(y @ y), n, d, max_iter, tol)


def _evidence(
    x: np.ndarray, sigma: np.ndarray, yy: float, n: int, d: int, max_iter: int, tol: float
) -> tuple[float, float, float]:
    """The evidence from the SVD projection ``x = U^T y`` and the squared singular values ``sigma``."""
    x2 = x**2
    rest = max(yy - float(x2.sum()), 0.0)  # the part of y outside the span of the features
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        m2 = float((sigma * x2 / (sigma + t) ** 2).sum())
        res2 = float((x2 * (t / (sigma + t)) ** 2).sum()) + rest
        alpha = gamma / max(m2, 1e-12)
        beta = max(n - gamma, 1e-12) / max(res2, 1e-12)
        if abs(alpha / beta - t) <= tol * t:
            break
    t = alpha / beta
    m2 = float((sigma * x2 / (sigma + t) ** 2).sum())
    res2 = float((x2 * (t / (sigma + t)) ** 2).sum()) + rest
    logdet = float(np.log(alpha + beta * sigma).sum()) + (d - len(sigma)) * np.log(alpha)
    evidence = (
        0.5 * d * np.log(alpha)
        + 0.5 * n * np.log(beta)
        - 0.5 * n * np.log(2 * np.pi)
        - 0.5 * beta * res2
        - 0.5 * alpha * m2
        - 0.5 * logdet
    )
    return float(evidence) / n, alpha, beta


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME (You, Liu, Wang & Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
    ICML 2021): the maximised marginal likelihood (evidence) per sample of a Bayesian linear model from the
    features to each one-hot label column, averaged over classes.

    Assumes a linear head on fixed features is representative of how well the model transfers. Needs no source
    classifier and no hyperparameter; invariant to label permutation and to scaling the features (the prior's
    precision absorbs the scale).
    """
    f = _features(features, "LogME")
    y = _check(len(f), labels, "LogME")
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s**2
    scores = []
    for c in np.unique(y):
        onehot = (y == c).astype(np.float64)
        scores.append(_evidence(u.T @ onehot, sigma, float(onehot.sum()), n, d, 100, 1e-7)[0])
    return float(np.mean(scores))


def _joint(source: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Empirical joint P(y, z) from per-sample source distributions (n, Z) and target labels."""
    classes = np.unique(y)
    joint = np.stack([source[y == c].sum(0) for c in classes]) / len(y)
    return joint


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP (Nguyen, Hassner, Seeger & Archambeau, "LEEP: A New Measure to Evaluate Transferability of Learned
    Representations", ICML 2020): the average log-likelihood of the target labels under the "expected empirical
    predictor" that maps the source model's class probabilities through the empirical P(target | source class).

    Needs the source model's own classifier (e.g. an ImageNet head); assumes its predictions are informative about
    the target classes. Invariant to permuting target or source classes. Always <= 0.
    """
    p = _features(source_probs, "LEEP")
    y = _check(len(p), labels, "LEEP")
    if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise TransferkitError("LEEP: source_probs must be probabilities (non-negative rows that sum to 1).")
    joint = _joint(p, y)  # (C, Z)
    pz = joint.sum(0)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z)
    _, yi = np.unique(y, return_inverse=True)
    eep = (p * cond[yi]).sum(1)  # probability the predictor gives each sample's own label
    return float(np.log(np.maximum(eep, 1e-300)).mean())


def nce(source_labels: np.ndarray, labels: np.ndarray) -> float:
    """NCE, negative conditional entropy -H(Y | Z) (Tran, Nguyen & Hassner, "Transferability and Hardness of
    Supervised Classification Tasks", ICCV 2019), with Z the source classifier's hard predictions (pseudo-labels).

    Needs a source classifier; assumes its arg-max labels carry the information that transfers. Invariant to
    permuting target or source classes. Always <= 0; 0 means the source label determines the target label.
    """
    z = np.asarray(source_labels)
    y = _check(len(z), labels, "NCE")
    if z.ndim != 1 or not np.issubdtype(z.dtype, np.integer):
        raise TransferkitError("NCE: source_labels must be a 1-d array of integer source-class predictions.")
    _, zi = np.unique(z, return_inverse=True)
    onehot = np.zeros((len(z), zi.max() + 1))
    onehot[np.arange(len(z)), zi] = 1.0
    joint = _joint(onehot, y)  # (C, Z)
    pz = joint.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / pz), 0.0)
    return float(terms.sum())


def h_score(features: np.ndarray, labels: np.ndarray, shrinkage: bool = True) -> float:
    """H-score (Bao, Li, Huang, Zhang, Chen & Zheng, "An Information-Theoretic Approach to Transferability in
    Task Transfer Learning", ICIP 2019): ``tr(cov(f)^-1 cov(E[f | y]))``, how well the classes separate relative
    to the features' total spread.

    With ``shrinkage`` the feature covariance is the Ledoit-Wolf estimate (Ibrahim, Ponomareva & Mazumder,
    "Newer is not always better: Rethinking transferability metrics, their peculiarities, stability and
    performance", ECML-PKDD 2022), which keeps the inverse stable when dimensions approach or exceed samples.
    Assumes Gaussian-like class clusters. Invariant to label permutation and to scaling the features (and,
    without shrinkage, to any invertible linear map of them).
    """
    f = _features(features, "H-score")
    y = _check(len(f), labels, "H-score")
    f = f - f.mean(0)
    n = len(f)
    if shrinkage:
        from sklearn.covariance import ledoit_wolf

        cov_f = ledoit_wolf(f, assume_centered=True)[0]
    else:
        cov_f = f.T @ f / n
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(0)
    cov_g = g.T @ g / n
    return float(np.trace(np.linalg.pinv(cov_f, hermitian=True) @ cov_g))


METRICS = ("logme", "leep", "nce", "hscore")
"""Every score ``rank`` computes, in table order."""
NEEDS_SOURCE_HEAD = ("leep", "nce")
