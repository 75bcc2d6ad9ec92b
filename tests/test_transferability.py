"""Transferability scores against hand-computed values, brute force, invariances and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transferkit.errors import TransferkitError
from transferkit.methods.transferability import _evidence, h_score, leep, logme, logme_evidence, nce


def test_nce_hand_computed() -> None:
    # P(y,z): (0,0)=1/2, (0,1)=1/4, (1,1)=1/4; P(z)=1/2 each -> 1/2 log 1 + 2 * 1/4 log(1/2)
    assert nce(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])) == pytest.approx(0.5 * math.log(0.5))
    # the source label determines the target label: no uncertainty left
    assert nce(np.array([5, 5, 7, 7]), np.array([1, 1, 0, 0])) == pytest.approx(0.0)


def test_leep_hand_computed() -> None:
    hard = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    y = np.array([0, 0, 0, 1])
    # P(y|z0) = (1, 0), P(y|z1) = (1/2, 1/2): two samples predicted with probability 1, two with 1/2
    assert leep(hard, y) == pytest.approx(0.5 * math.log(0.5))
    # an uninformative source gives every sample the class prior
    flat = np.full((4, 2), 0.5)
    assert leep(flat, y) == pytest.approx((3 * math.log(0.75) + math.log(0.25)) / 4)


def test_h_score_hand_computed() -> None:
    y = np.array([0, 0, 1, 1])
    # 1-d: var(class means) / var(f)
    assert h_score(np.array([[0.0], [0.0], [2.0], [2.0]]), y, shrinkage=False) == pytest.approx(1.0)
    assert h_score(np.array([[0.0], [1.0], [2.0], [3.0]]), y, shrinkage=False) == pytest.approx(1.0 / 1.25)


def _direct_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, F F^T / alpha + I / beta) per sample: the evidence written out without any algebra."""
    from scipy.stats import multivariate_normal

    cov = f @ f.T / alpha + np.eye(len(y)) / beta
    return float(multivariate_normal(mean=np.zeros(len(y)), cov=cov).logpdf(y)) / len(y)


@pytest.mark.parametrize("n,d", [(40, 6), (12, 30)])
def test_logme_evidence_is_the_maximised_marginal_likelihood(n: int, d: int) -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(n, d))
    y = (f[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(float)
    ev, alpha, beta = logme_evidence(f, y)
    assert ev == pytest.approx(_direct_evidence(f, y, alpha, beta), rel=1e-6, abs=1e-8)
    for a, b in [(2 * alpha, beta), (alpha / 2, beta), (alpha, 2 * beta), (alpha, beta / 2)]:
        assert ev >= _direct_evidence(f, y, a, b) - 1e-9


def test_logme_averages_one_vs_rest_evidence() -> None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=(30, 5))
    y = rng.integers(0, 3, size=30)
    expected = np.mean([logme_evidence(f, (y == c).astype(float))[0] for c in range(3)])
    assert logme(f, y) == pytest.approx(expected, rel=1e-9)


def _blobs(separation: float, seed: int = 0, n: int = 90, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    centres = rng.normal(size=(3, d)) * separation
    return centres[y] + rng.normal(size=(n, d)), y


def test_scores_prefer_features_that_separate_the_classes() -> None:
    good, y = _blobs(3.0)
    noise = np.random.default_rng(5).normal(size=good.shape)
    assert logme(good, y) > logme(noise, y)
    assert h_score(good, y) > h_score(noise, y)


def test_label_permutation_invariance() -> None:
    f, y = _blobs(1.0)
    perm = np.array([2, 0, 1])[y]
    probs = np.random.default_rng(2).dirichlet(np.ones(5), size=len(y))
    assert logme(f, perm) == pytest.approx(logme(f, y), rel=1e-9)
    assert h_score(f, perm) == pytest.approx(h_score(f, y), rel=1e-9)
    assert leep(probs, perm) == pytest.approx(leep(probs, y), rel=1e-9)
    assert nce(probs.argmax(1), perm) == pytest.approx(nce(probs.argmax(1), y), rel=1e-9)
    # permuting the source classes changes nothing either
    assert leep(probs[:, ::-1], y) == pytest.approx(leep(probs, y), rel=1e-9)


def test_feature_scaling_invariance() -> None:
    f, y = _blobs(1.0)
    # LogME: N(y; 0, c^2 F F^T / alpha + I / beta) is the unscaled model at alpha / c^2, so the maximum is the same
    assert logme(37.0 * f, y) == pytest.approx(logme(f, y), abs=1e-6)
    assert logme(0.01 * f, y) == pytest.approx(logme(f, y), abs=1e-6)
    assert h_score(37.0 * f, y) == pytest.approx(h_score(f, y), rel=1e-6)
    mix = np.random.default_rng(3).normal(size=(f.shape[1], f.shape[1]))  # invertible linear map
    assert h_score(f @ mix, y, shrinkage=False) == pytest.approx(h_score(f, y, shrinkage=False), rel=1e-6)


def test_evidence_handles_features_outside_the_label_span() -> None:
    # all variance in directions the label does not touch: finite, and lower than an aligned feature
    x = np.zeros(3)
    ev, alpha, beta = _evidence(x, np.array([4.0, 1.0, 0.5]), 2.0, 10, 3, 100, 1e-7)
    assert np.isfinite(ev) and alpha > 0 and beta > 0


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: logme(np.ones((4, 2)), np.array([0, 1, 0])), "1-d array of 4 entries"),
        (lambda: logme(np.ones((4, 2)), np.zeros(4, dtype=int)), "at least 2 classes"),
        (lambda: logme(np.full((4, 2), np.nan), np.array([0, 1, 0, 1])), "NaN or infinite"),
        (lambda: h_score(np.ones(4), np.array([0, 1, 0, 1])), "2-d array"),
        (lambda: leep(np.ones((4, 3)), np.array([0, 1, 0, 1])), "rows that sum to 1"),
        (lambda: nce(np.array([0.5, 1, 0, 1]), np.array([0, 1, 0, 1])), "integer source-class predictions"),
        (lambda: logme(np.ones((4, 2)), np.array([0.0, 1.0, 0.0, 1.0])), "integer class indices"),
    ],
)
def test_bad_input_messages(call, message: str) -> None:
    with pytest.raises(TransferkitError, match=message):
        call()
