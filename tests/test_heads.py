"""Heads on cached features: the linear probe (logistic regression folded into one Linear) and the MLP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.core.heads import MLPHead, fit_linear_probe, fit_mlp_head


def _blobs(n_per_class: int, num_classes: int, dim: int = 12, sep: float = 4.0, seed: int = 0):
    """Gaussian blobs with very different scales per feature (so standardisation matters)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, sep, (num_classes, dim))
    x = np.concatenate([c + rng.normal(0, 1, (n_per_class, dim)) for c in centres])
    y = np.repeat(np.arange(num_classes), n_per_class)
    scale = np.logspace(-2, 2, dim)
    x = (x * scale + 7.0).astype(np.float32)
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


def _split(x, y):
    n = len(y)
    a, b = int(0.6 * n), int(0.8 * n)
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


def _predict(head: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(head(torch.from_numpy(x)), -1).numpy()


def test_linear_probe_learns_a_separable_problem():
    (xt, yt), (xv, yv), (xs, ys) = _split(*_blobs(40, 3))
    fit = fit_linear_probe(xt, yt, xv, yv, num_classes=3)
    assert isinstance(fit.head, torch.nn.Linear) and fit.head.out_features == 3
    assert fit.chosen["C"] in (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
    assert fit.val_accuracy > 0.9
    assert (_predict(fit.head, xs).argmax(1) == ys).mean() > 0.9


def test_linear_probe_picks_the_smallest_best_c():
    (xt, yt), (xv, yv), _ = _split(*_blobs(40, 2, sep=8.0))
    # perfectly separable: every C reaches 100% on val, so the strongest regularisation wins
    assert fit_linear_probe(xt, yt, xv, yv, 2, c_grid=(10.0, 0.01, 1.0)).chosen == {"C": 0.01}


@pytest.mark.parametrize("refit_on_val", [False, True])
def test_folded_linear_matches_sklearn_pipeline(refit_on_val):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (xt, yt), (xv, yv), (xs, _) = _split(*_blobs(40, 3, sep=1.0, seed=1))  # overlapping: C matters
    fit = fit_linear_probe(xt, yt, xv, yv, 3, c_grid=(0.1,), refit_on_val=refit_on_val)
    x_fit = np.concatenate([xt, xv]) if refit_on_val else xt
    y_fit = np.concatenate([yt, yv]) if refit_on_val else yt
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, tol=1e-8, max_iter=10_000))
    ref.fit(x_fit.astype(np.float64), y_fit)
    ours = _predict(fit.head, xs)
    theirs = ref.predict_proba(xs.astype(np.float64))
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))
    np.testing.assert_allclose(ours, theirs, atol=2e-3)


def test_folding_is_exact_standardise_then_linear():
    """The single Linear equals 'standardise with train stats, then the unfolded weights'."""
    (xt, yt), (xv, yv), (xs, _) = _split(*_blobs(30, 3, seed=2))
    fit = fit_linear_probe(xt, yt, xv, yv, 3, c_grid=(1.0,), refit_on_val=False)
    mean, std = xt.mean(0), xt.std(0) + 1e-6
    w_std = fit.head.weight.detach().double().numpy() * std  # undo the folding
    b_std = fit.head.bias.detach().double().numpy() + w_std @ (mean / std)
    logits = ((xs - mean) / std) @ w_std.T + b_std
    with torch.no_grad():
        np.testing.assert_allclose(fit.head(torch.from_numpy(xs)).numpy(), logits, rtol=1e-4, atol=1e-3)


def test_binary_linear_probe():
    (xt, yt), (xv, yv), (xs, ys) = _split(*_blobs(40, 2, seed=3))
    fit = fit_linear_probe(xt, yt, xv, yv, 2)
    assert fit.head.weight.shape == (2, xt.shape[1])
    proba = _predict(fit.head, xs)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert (proba.argmax(1) == ys).mean() > 0.9


def test_linear_probe_is_deterministic():
    (xt, yt), (xv, yv), _ = _split(*_blobs(20, 3, seed=4))
    a = fit_linear_probe(xt, yt, xv, yv, 3, c_grid=(0.1, 1.0), seed=0)
    b = fit_linear_probe(xt, yt, xv, yv, 3, c_grid=(0.1, 1.0), seed=1)
    torch.testing.assert_close(a.head.weight, b.head.weight, rtol=0, atol=0)


def test_mlp_head_learns_and_folds_standardisation():
    (xt, yt), (xv, yv), (xs, ys) = _split(*_blobs(40, 3, seed=5))
    fit = fit_mlp_head(xt, yt, xv, yv, 3, hidden=32, epochs=60, patience=15, seed=0)
    assert isinstance(fit.head, MLPHead) and fit.head[0].out_features == 32
    assert not fit.head.training
    assert fit.val_accuracy > 0.9 and 1 <= fit.chosen["epochs"] <= 60
    # raw (unstandardised) features go straight in: standardisation is folded into the first layer
    assert (_predict(fit.head, xs).argmax(1) == ys).mean() > 0.9


def test_mlp_head_is_seeded():
    (xt, yt), (xv, yv), _ = _split(*_blobs(20, 3, seed=6))
    a = fit_mlp_head(xt, yt, xv, yv, 3, hidden=16, epochs=5, seed=7)
    b = fit_mlp_head(xt, yt, xv, yv, 3, hidden=16, epochs=5, seed=7)
    c = fit_mlp_head(xt, yt, xv, yv, 3, hidden=16, epochs=5, seed=8)
    for (k, va), vb in zip(a.head.state_dict().items(), b.head.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
    assert not torch.equal(a.head[0].weight, c.head[0].weight)


def test_linear_probe_treats_tiny_features_like_any_others():
    # an untrained network's features can be ~1e-8 in size: the probe must not shrink them towards zero
    (xt, yt), (xv, yv), (xs, ys) = _split(*_blobs(40, 3))
    unit = fit_linear_probe(xt, yt, xv, yv, num_classes=3)
    tiny = fit_linear_probe(xt * 1e-9, yt, xv * 1e-9, yv, num_classes=3)
    assert tiny.chosen == unit.chosen and tiny.val_accuracy == unit.val_accuracy
    assert np.allclose(_predict(tiny.head, xs * 1e-9), _predict(unit.head, xs), atol=1e-4)
