"""Heads trained on cached features: a linear probe (logistic regression) and the MLP of the seed recipe."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass
class HeadFit:
    """A trained head plus what was chosen on the validation split."""

    head: nn.Module
    chosen: dict[str, float] = field(default_factory=dict)
    val_accuracy: float = float("nan")
    val_logits: np.ndarray | None = None
    """The chosen head's validation logits before any refit on train + val: held-out, so a temperature may be fitted
    on them."""


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())


def linear_head(in_features: int, num_classes: int) -> nn.Linear:
    return nn.Linear(in_features, num_classes)


@contextmanager
def _threads_for(work: float) -> Iterator[None]:
    """One intra-op thread for small problems: their matmuls gain nothing from more, and on a busy machine the
    threads' spin-waits cost 10-30x (a 30-item probe took 11 s with 2 threads beside another job, 0.6 s with 1)."""
    before = torch.get_num_threads()
    if work < 5e7:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _logreg_path(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    c_values: tuple[float, ...],
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Multinomial logistic regression (sklearn's objective: C * sum CE + ||W||^2 / 2) for each C in order.

    Full-batch L-BFGS in float64 (scipy's L-BFGS-B), warm-started from the previous C's solution (ascending C
    converges fast).
    """
    with _threads_for(float(x.shape[0]) * x.shape[1] * num_classes):
        return _solve_path(x, y, num_classes, c_values, init)


def _solve_path(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    c_values: tuple[float, ...],
    init: tuple[torch.Tensor, torch.Tensor] | None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    # scipy's L-BFGS-B (as sklearn's lbfgs solver) on an analytic gradient: torch.optim would import torch._dynamo,
    # a second of start-up that a rerun on cached features otherwise does not pay.
    from scipy.optimize import minimize

    xt = torch.from_numpy(np.ascontiguousarray(x)).double()
    onehot = nn.functional.one_hot(torch.from_numpy(y).long(), num_classes).double()
    n, d = xt.shape
    theta = np.zeros((d + 1) * num_classes)
    if init is not None:
        theta = torch.cat([init[0].reshape(-1), init[1].reshape(-1)]).double().numpy().copy()
    out = []
    for c in c_values:
        lam = 1.0 / (c * n)

        def objective(t: np.ndarray, lam: float = lam) -> tuple[float, np.ndarray]:
            tt = torch.from_numpy(t)
            w, b = tt[: d * num_classes].view(d, num_classes), tt[d * num_classes :]
            logp = torch.log_softmax(xt @ w + b, dim=1)
            loss = -(onehot * logp).sum() / n + 0.5 * lam * float((w * w).sum())
            g = (logp.exp() - onehot) / n
            grad = torch.cat([(xt.T @ g + lam * w).reshape(-1), g.sum(0)])
            return float(loss), grad.numpy()

        res = minimize(
            objective, theta, jac=True, method="L-BFGS-B",
            options={"maxiter": 1000, "maxcor": 20, "gtol": 1e-5, "ftol": 1e-12},
        )
        theta = res.x
        tt = torch.from_numpy(theta.copy())
        out.append((tt[: d * num_classes].view(d, num_classes).clone(), tt[d * num_classes :].clone()))
    return out


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation, the latter floored relative to the features' own scale, so the
    probe treats features of any magnitude alike (a fixed floor would shrink tiny-valued features towards zero)."""
    std = x.std(0)
    scale = float(std.mean())
    return x.mean(0), std + 1e-6 * (scale if scale > 0 else 1.0)


def _with_mirror(x: np.ndarray, mirror: np.ndarray | None, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training rows, and their mirror images' rows after them when given (same labels)."""
    return (x, y) if mirror is None else (np.concatenate([x, mirror]), np.concatenate([y, y]))


def fit_linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    num_classes: int,
    c_grid: tuple[float, ...] = C_GRID,
    seed: int = 0,
    refit_on_val: bool = True,
    mirror: tuple[np.ndarray, np.ndarray] | None = None,
) -> HeadFit:
    """Multinomial logistic regression on standardised features; L2 strength C chosen on the validation split.

    The smallest C with the best validation accuracy wins; the final model is refit on train + val with it and
    folded into one ``nn.Linear`` (standardisation included), so prediction is ``backbone -> linear``.
    ``mirror``: the mirror images' features of (train, val): they train beside the originals, and each validation
    item is scored by its two images' mean logits (test-time augmentation). ``seed`` is unused: the problem is
    convex and solved deterministically.
    """
    grid = tuple(sorted(c_grid))
    m_train, m_val = mirror if mirror is not None else (None, None)
    xt, yt = _with_mirror(x_train, m_train, y_train)
    mean, std = _moments(xt)
    path = _logreg_path((xt - mean) / std, yt, num_classes, grid)
    views = [torch.from_numpy((v - mean) / std).double() for v in (x_val, m_val) if v is not None]
    logits = [(sum(xv @ w + b for xv in views) / len(views)).numpy() for w, b in path]
    accs = [_accuracy(lo, y_val) for lo in logits]
    best = int(np.argmax(accs))
    w, b = path[best]
    val_logits = logits[best]
    if refit_on_val:
        x_all, y_all = _with_mirror(np.concatenate([x_train, x_val]),
                                    None if m_train is None else np.concatenate([m_train, m_val]),
                                    np.concatenate([y_train, y_val]))
        mean, std = _moments(x_all)
        w, b = _logreg_path((x_all - mean) / std, y_all, num_classes, (grid[best],), init=(w, b))[0]
    head = linear_head(x_train.shape[1], num_classes)
    w_folded = w.T / torch.from_numpy(std).double()
    with torch.no_grad():
        head.weight.copy_(w_folded.float())
        head.bias.copy_((b - w_folded @ torch.from_numpy(mean).double()).float())
    return HeadFit(head, {"C": grid[best]}, accs[best], val_logits)


def fit_linear_probe_cv(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    c_grid: tuple[float, ...] = C_GRID,
    folds: int = 5,
    seed: int = 0,
    mirror: np.ndarray | None = None,
) -> HeadFit:
    """The linear probe with C chosen by stratified k-fold cross-validation over all of ``x`` (for few labels: no
    example is held out of the final fit), then fitted on all of it. ``val_accuracy`` is the mean out-of-fold
    accuracy of the chosen C; ``val_logits`` its out-of-fold logits for every row (held out, as for calibration).
    ``mirror``: the mirror images' features of ``x``'s rows, trained beside them (an image and its mirror are held
    out together) and averaged with them in the held-out logits."""
    grid = tuple(sorted(c_grid))
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):  # stratified: each class dealt round-robin over the folds in a seeded order
        members = np.flatnonzero(y == c)
        fold_of[rng.permutation(members)] = np.arange(len(members)) % folds
    oof = np.zeros((len(grid), len(y), num_classes))
    for f in range(folds):
        held = fold_of == f
        if not held.any() or held.all():
            continue
        xt, yt = _with_mirror(x[~held], None if mirror is None else mirror[~held], y[~held])
        mean, std = _moments(xt)
        path = _logreg_path((xt - mean) / std, yt, num_classes, grid)
        views = [torch.from_numpy((v[held] - mean) / std).double() for v in (x, mirror) if v is not None]
        for k, (w, b) in enumerate(path):
            oof[k, held] = (sum(xv @ w + b for xv in views) / len(views)).numpy()
    accs = [_accuracy(oof[k], y) for k in range(len(grid))]
    best = int(np.argmax(accs))
    xt, yt = _with_mirror(x, mirror, y)
    mean, std = _moments(xt)
    w, b = _logreg_path((xt - mean) / std, yt, num_classes, (grid[best],))[0]
    head = linear_head(x.shape[1], num_classes)
    w_folded = w.T / torch.from_numpy(std).double()
    with torch.no_grad():
        head.weight.copy_(w_folded.float())
        head.bias.copy_((b - w_folded @ torch.from_numpy(mean).double()).float())
    return HeadFit(head, {"C": grid[best], "folds": float(folds)}, accs[best], oof[best])


RIDGE_GRID = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4)
"""Ridge strengths tried, relative to the number of training rows (features and target standardised)."""


def fit_ridge(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    alphas: tuple[float, ...] = RIDGE_GRID,
    refit_on_val: bool = True,
) -> HeadFit:
    """Closed-form ridge regression on centred features (one shared scale) to a standardised target, the strength
    chosen by validation R^2 (the smallest of the best), then refit on train + val; folded into one
    ``nn.Linear(d, 1)`` that outputs the target in its own units. ``val_accuracy`` holds the validation R^2;
    ``val_logits`` the held-out validation predictions."""
    def solve(x: np.ndarray, y: np.ndarray, grid: tuple[float, ...]) -> tuple[list[np.ndarray], Any]:
        # one scale for every dimension: a dimension nearly constant in training, scaled up on its own, turned one
        # unusual test image into a prediction 50x off (R^2 -52 on rotated Fashion-MNIST); a shared scale did not
        mean = x.mean(0)
        std = np.full(x.shape[1], float(x.std(0).mean()) or 1.0)
        y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
        u, sv, vt = np.linalg.svd((x - mean) / std, full_matrices=False)
        uty = u.T @ ((y - y_mean) / y_std)
        ws = [vt.T @ (sv / (sv**2 + a * len(y)) * uty) for a in grid]
        return ws, (mean, std, y_mean, y_std)

    grid = tuple(sorted(alphas))
    ws, (mean, std, y_mean, y_std) = solve(x_train, y_train, grid)
    preds = [((x_val - mean) / std) @ w * y_std + y_mean for w in ws]
    scores = [r2_score(y_val, p) for p in preds]
    best = int(np.argmax(scores))
    val_pred = preds[best]
    w, stats = ws[best], (mean, std, y_mean, y_std)
    if refit_on_val:
        (w,), stats = solve(np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]), (grid[best],))
    mean, std, y_mean, y_std = stats
    head = nn.Linear(x_train.shape[1], 1)
    folded = w / std * y_std
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(folded[None, :]).float())
        head.bias.fill_(float(y_mean - folded @ mean))
    return HeadFit(head, {"alpha": grid[best]}, scores[best], val_pred[:, None])


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination: 1 - residual / total sum of squares."""
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64).reshape(-1)
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / total if total > 0 else 0.0


def fold_standardisation(first: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make ``first`` take raw inputs: it was trained on (x - mean) / std."""
    with torch.no_grad():
        w = first.weight / std
        first.bias.sub_(w @ mean)
        first.weight.copy_(w)


class MLPHead(nn.Sequential):
    """Dense(hidden, relu) -> dropout -> Dense(classes): the head of the widely copied Keras recipe."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 1024, dropout: float = 0.2) -> None:
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))


def fit_mlp_head(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    num_classes: int,
    hidden: int = 1024,
    lr: float = 1e-3,
    epochs: int = 100,
    batch_size: int = 128,
    patience: int = 10,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> HeadFit:
    """Adam on cached features with early stopping on validation accuracy; the best epoch's weights are kept."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean = torch.from_numpy(x_train.mean(0)).float()
    std = torch.from_numpy(x_train.std(0) + 1e-6).float()
    xt = (torch.from_numpy(x_train).float() - mean) / std
    xv = (torch.from_numpy(x_val).float() - mean) / std
    yt = torch.from_numpy(y_train).long()
    mlp = MLPHead(x_train.shape[1], num_classes, hidden)
    opt = torch.optim.Adam(mlp.parameters(), lr=lr, weight_decay=weight_decay)
    best = (-1.0, 0, {k: v.clone() for k, v in mlp.state_dict().items()})
    for epoch in range(epochs):
        mlp.train()
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            opt.zero_grad()
            nn.functional.cross_entropy(mlp(xt[idx]), yt[idx]).backward()
            opt.step()
        mlp.eval()
        with torch.no_grad():
            acc = _accuracy(mlp(xv).numpy(), y_val)
        if acc > best[0]:
            best = (acc, epoch, {k: v.clone() for k, v in mlp.state_dict().items()})
        elif epoch - best[1] >= patience:
            break
    mlp.load_state_dict(best[2])
    with torch.no_grad():
        val_logits = mlp.eval()(xv).numpy()
    fold_standardisation(mlp[0], mean, std)
    return HeadFit(mlp.eval(), {"epochs": float(best[1] + 1), "hidden": float(hidden)}, best[0], val_logits)
