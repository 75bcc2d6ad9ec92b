"""Domain adaptation on a frozen backbone's features: a labelled source, an unlabelled target.

Every method trains the same adapter, shaped like ``heads.MLPHead`` (Linear(d, h) -> ReLU -> Dropout ->
Linear(h, classes)); the ReLU output is the adapted feature that the methods align:

- ``source-only``: cross-entropy on the source; the baseline every method is compared with.
- ``dann``: Ganin et al., "Domain-Adversarial Training of Neural Networks" (JMLR 2016). A domain classifier on the
  adapted features trains through a gradient-reversal layer whose factor follows 2 / (1 + exp(-10 p)) - 1 over
  training progress p, times ``weight``. Assumes a representation exists where the domains look alike and the
  source classifier still works (it fails when the label proportions differ a lot between domains).
- ``coral``: Sun & Saenko, "Deep CORAL" (ECCV workshops 2016). ``weight`` x ||C_s - C_t||_F^2 / (4 h^2) between
  the batch covariances of the adapted features. Assumes second-order statistics carry the shift.
- ``adabn``: the adapter trains as source-only, but target inputs are standardised with the target's own feature
  moments instead of the source's: AdaBN (Li et al., "Revisiting Batch Normalization for Practical Domain
  Adaptation", 2016) applied to the frozen features. Assumes the shift is mostly per-feature location and scale and
  the class proportions are similar (a label shift moves the target moments for a legitimate reason).
  Selection cannot tell it from source-only on source data (``dev``, ``source-val``): only ``im`` looks at it.
- ``label-shift``: the adapter trains as source-only; then EM on its target predictions estimates the target's
  class proportions and the logits move by log(target prior / source prior) (Saerens, Latinne & Decaestecker,
  "Adjusting the Outputs of a Classifier to New a Priori Probabilities", Neural Computation 2002). Assumes the
  shift is in the class proportions only (p(x | y) unchanged) and reasonably calibrated source probabilities.
  No selection criterion here sees the correction (it is applied after the checkpoint is chosen).
- ``self-training``: pseudo-labelling rounds (Lee, "Pseudo-Label", ICML workshops 2013). The previous round's model
  labels the target; predictions at or above one global confidence ``threshold`` join the source as labelled data
  for a fresh model (no per-class balancing, so easy or frequent classes gather more pseudo-labels). Assumes the
  source model's confident target predictions are mostly right.

The backbone does not train: its features are extracted once (and cached), so every method, hyperparameter and
seed trains in seconds on a CPU. The adapter is saved as an ``MLPHead`` (standardisation folded in), so
``predict`` needs nothing new.

Model selection never sees a target label. ``select="dev"`` (default) is Deep Embedded Validation (You et al.,
ICML 2019): the source-validation loss weighted by p(target | x) / p(source | x) from a domain classifier on the
backbone features, with its control variate, lower is better (the paper fits the classifier on each candidate's
own features; here it is one classifier on the frozen features, shared by every candidate; the weights are
flattened when they would rest on a handful of rows, see ``importance_weights``). ``"im"`` is the
information-maximisation score on the unlabelled target, H(mean prediction) - mean H(prediction) (Shi & Sha 2012;
Liang et al. 2020), higher is better; ``"source-val"`` is plain source-validation accuracy. The criterion picks the
epoch, the hyperparameter from each method's small grid and, in ``adapt`` with ``recommend="criterion"``, the
recommended method among those the criterion can see (``BLIND``: adabn and label-shift change only the target
side, after or outside what DEV and source validation measure).

Every chosen checkpoint also gets a reverse-validation accuracy (``reverse_accuracy``), which does see every
method; ``adapt`` recommends the method to use by it by default (``workflows.adapt.AdaptResult.recommended``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.heads import MLPHead, _moments, fold_standardisation
from ..errors import TransferkitError
from .adaptation_methods import ADAPTATION_METHODS, ADAPTING, GRIDS, METHODS, AdaptMethod
from .selection import SELECTIONS, Selector, importance_weights

__all__ = ["ADAPTATION_METHODS", "ADAPTING", "BLIND", "GRIDS", "METHODS", "AdaptMethod"]


BLIND: dict[str, frozenset[str]] = {
    s: frozenset(m for m in METHODS if s in ADAPTATION_METHODS.get(m).blind_to) for s in SELECTIONS
}
"""Methods a selection criterion cannot score: its value for them is the source-only model's."""


@dataclass
class AdaptSettings:
    """Options of the adapter and its training."""

    hidden: int = 256
    """Width of the adapted feature."""
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    """Source rows per step; DANN and CORAL draw as many target rows."""
    epochs: int = 30
    """Passes over the source (plus pseudo-labels); every epoch is a candidate checkpoint."""
    rounds: int = 3
    """Self-training rounds."""
    grids: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """Hyperparameter values to try per method (a method not named here uses ``GRIDS``)."""


@dataclass
class Trial:
    """The checkpoint a method chose: its hyperparameters, epoch, criterion value and weights."""

    method: str
    params: dict[str, float]
    epoch: int
    criterion: float
    source_val_accuracy: float
    state: dict[str, torch.Tensor] = field(repr=False)
    mean: np.ndarray | None = field(default=None, repr=False)
    """Source-training moments the state expects its inputs standardised with."""
    std: np.ndarray | None = field(default=None, repr=False)
    target_mean: np.ndarray | None = field(default=None, repr=False)
    """Moments target inputs are standardised with, when not the source's (adabn)."""
    target_std: np.ndarray | None = field(default=None, repr=False)
    target_prior: np.ndarray | None = field(default=None, repr=False)
    """label-shift: the target class proportions EM estimated (the logits move by log(target / source prior))."""
    source_prior: np.ndarray | None = field(default=None, repr=False)
    reverse_accuracy: float | None = None
    """Reverse validation (``reverse_accuracy``): source-validation accuracy of a classifier trained on the target
    with this model's predictions as labels."""

    def describe(self) -> dict[str, Any]:
        out = {"method": self.method, **self.params, "epoch": self.epoch, "criterion": self.criterion,
               "source_val_accuracy": self.source_val_accuracy, "reverse_accuracy": self.reverse_accuracy}
        if self.target_prior is not None:
            out["target_prior"] = [round(float(p), 4) for p in self.target_prior]
        return out


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float) -> torch.Tensor:
    """Identity forward; the gradient times -lam backward."""
    return _GradReverse.apply(x, lam)


def coral_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """||C_s - C_t||_F^2 / (4 d^2) between the (unbiased) feature covariances of two batches."""
    d = fs.shape[1]

    def cov(x: torch.Tensor) -> torch.Tensor:
        xc = x - x.mean(0, keepdim=True)
        return xc.T @ xc / max(len(x) - 1, 1)

    return ((cov(fs) - cov(ft)) ** 2).sum() / (4 * d * d)


def _train(
    xs: torch.Tensor,
    ys: torch.Tensor,
    xt: torch.Tensor,
    method: str,
    weight: float,
    settings: AdaptSettings,
    selector: Selector,
    num_classes: int,
    seed: int,
) -> Trial:
    """Train one adapter; every epoch is scored by ``selector`` and the best is kept."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = MLPHead(xs.shape[1], num_classes, settings.hidden, settings.dropout)
    params = list(net.parameters())
    disc = None
    if method == "dann":
        disc = nn.Sequential(nn.Linear(settings.hidden, 256), nn.ReLU(), nn.Linear(256, 1))
        params += list(disc.parameters())
    opt = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    bs = settings.batch_size
    steps = math.ceil(len(xs) / bs)
    total = settings.epochs * steps
    best: Trial | None = None
    for epoch in range(settings.epochs):
        net.train()
        for b, idx in enumerate(torch.randperm(len(xs), generator=gen).split(bs)):
            fs = net[1](net[0](xs[idx]))
            loss = nn.functional.cross_entropy(net[3](net[2](fs)), ys[idx])
            if method in ("dann", "coral") and len(idx) >= max(2, bs // 2):  # no alignment on a scrap batch
                ft = net[1](net[0](xt[torch.randint(len(xt), (bs,), generator=gen)]))
                if method == "coral":
                    loss = loss + weight * coral_loss(fs, ft)
                else:
                    assert disc is not None
                    p = (epoch * steps + b) / total
                    lam = weight * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)
                    d_out = disc(grad_reverse(torch.cat([fs, ft]), lam)).squeeze(1)
                    d_y = torch.cat([torch.zeros(len(fs)), torch.ones(len(ft))])
                    loss = loss + nn.functional.binary_cross_entropy_with_logits(d_out, d_y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        crit, acc = selector.score(net)
        if best is None or crit > best.criterion:
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best = Trial(method, {}, epoch + 1, crit, acc, state)
    assert best is not None
    return best


def _net(state: dict[str, torch.Tensor], d: int, num_classes: int, settings: AdaptSettings) -> MLPHead:
    net = MLPHead(d, num_classes, settings.hidden, settings.dropout)
    net.load_state_dict(state)
    return net.eval()


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside: an adapter's matmuls are too small to gain from more, and on a shared
    machine waiting threads cost far more than they save."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@one_thread()
def train_method(
    method: str,
    xs: np.ndarray,
    ys: np.ndarray,
    xv: np.ndarray,
    yv: np.ndarray,
    xt: np.ndarray,
    num_classes: int,
    *,
    select: str = "dev",
    settings: AdaptSettings | None = None,
    seed: int = 0,
    weights: np.ndarray | None = None,
    source_only: Trial | None = None,
    reverse: bool = True,
) -> Trial:
    """The checkpoint ``method`` reaches on source train (xs, ys) and unlabelled target xt, chosen by ``select``
    over its grid and epochs (and self-training rounds), with no target label anywhere.

    Inputs are raw backbone features; they are standardised with the source-training moments inside, and the
    returned state expects standardised inputs (``to_head`` folds it). ``weights``: DEV importance weights of the
    validation rows (computed when None). ``source_only``: the baseline checkpoint; self-training starts from it,
    and a method the criterion cannot see (``BLIND``) reuses it instead of training the same adapter again.
    ``reverse``: also score the chosen checkpoint by reverse validation (``reverse_accuracy``; seconds on wide
    features).
    """
    spec = ADAPTATION_METHODS.get(method)
    settings = settings or AdaptSettings()
    if select == "dev" and weights is None:
        weights = importance_weights(xs, xt, xv, seed)
    mean, std = _moments(xs)
    t_mean, t_std = _moments(xt) if method == "adabn" else (mean, std)

    def tensor(x: np.ndarray, m: np.ndarray = mean, s: np.ndarray = std) -> torch.Tensor:
        return torch.from_numpy(((x - m) / s).astype(np.float32))

    ts, tv, tt = tensor(xs), tensor(xv), tensor(xt, t_mean, t_std)
    ys_t, yv_t = torch.from_numpy(ys).long(), torch.from_numpy(yv).long()
    selector = Selector(select, tv, yv_t, tt, weights)
    grid = settings.grids.get(method) or GRIDS[method]
    trials: list[Trial] = []
    if source_only is not None and method in BLIND[select]:
        # the criterion cannot tell this method's training from source-only's: the same checkpoint, not trained twice
        trials.append(Trial(method, {}, source_only.epoch, source_only.criterion, source_only.source_val_accuracy,
                            source_only.state))
    elif method != "self-training":
        for value in grid:
            trial = _train(ts, ys_t, tt, method, value, settings, selector, num_classes, seed)
            trial.params = {spec.param: value} if spec.param else {}
            trials.append(trial)
    else:
        base = source_only or train_method("source-only", xs, ys, xv, yv, xt, num_classes, select=select,
                                           settings=settings, seed=seed, weights=weights, reverse=False)
        for threshold in grid:
            teacher = base
            for r in range(1, settings.rounds + 1):
                with torch.no_grad():
                    probs = torch.softmax(_net(teacher.state, xs.shape[1], num_classes, settings)(tt), 1)
                conf, pseudo = probs.max(1)
                keep = torch.nonzero(conf >= threshold).squeeze(1)
                if len(keep) == 0:
                    break
                x_aug, y_aug = torch.cat([ts, tt[keep]]), torch.cat([ys_t, pseudo[keep]])
                trial = _train(x_aug, y_aug, tt, "self-training", 0.0, settings, selector, num_classes, seed + r)
                trial.params = {"threshold": threshold, "round": float(r), "pseudo_labels": float(len(keep))}
                trials.append(trial)
                teacher = trial
        if not trials:  # nothing reached the threshold: self-training leaves the source-only model
            trials.append(Trial("self-training", {"threshold": grid[-1], "round": 0.0, "pseudo_labels": 0.0},
                                base.epoch, base.criterion, base.source_val_accuracy, base.state))
    best = max(trials, key=lambda t: t.criterion)
    best.method, best.mean, best.std = method, mean, std
    if method == "adabn":
        best.target_mean, best.target_std = t_mean, t_std
    source_prior = np.bincount(ys, minlength=num_classes) / len(ys)
    if method == "label-shift":
        with torch.no_grad():
            probs = torch.softmax(_net(best.state, xs.shape[1], num_classes, settings)(tt), 1).double().numpy()
        best.source_prior = source_prior
        best.target_prior = em_target_prior(probs, source_prior)
    if reverse:
        best.reverse_accuracy = reverse_accuracy(best, xt, xv, yv, source_prior, settings)
    return best


def reverse_accuracy(trial: Trial, xt: np.ndarray, xv: np.ndarray, yv: np.ndarray, source_prior: np.ndarray,
                     settings: AdaptSettings | None = None, c: float = 0.1) -> float:
    """Reverse validation (Zhong et al., "Cross Validation Framework to Choose amongst Models and Datasets for
    Transfer Learning", ECML PKDD 2010; Ganin et al. 2016 choose DANN's hyperparameters with it): the trial labels
    the unlabelled target, a linear classifier (L2 logistic regression, strength ``c``) learns those labels from the
    target's features, and its accuracy on the labelled source-validation rows is the score. Higher is better.
    The classifier is solved to convergence (about 10 s on 2,000 x 1,280 features, one thread): stopping L-BFGS
    at 200 iterations changed the scores under a large shift by up to 52 points.

    Every trial's reverse classifier sees the same inputs (raw features standardised with the source-training
    moments, for adabn too), so what differs between methods is only the labels they give the target. Its logits
    then move from the pseudo-labels' class proportions to ``source_prior`` (known: the source is labelled), so a
    method is not penalised for predicting the target's own class proportions (label-shift's correction).
    Assumes the reverse shift (target to source) is otherwise the same for every trial. A trial that puts the whole
    target in one class scores that class's share of the validation rows.
    """
    from ..core.heads import _logreg_path

    if trial.mean is None or trial.std is None:
        raise ValueError("the trial has no standardisation moments")
    num_classes = trial.state["3.weight"].shape[0]
    pseudo = predict_logits(to_head(trial, settings, domain="target"), xt).argmax(1)
    if len(np.unique(pseudo)) == 1:
        return float((yv == pseudo[0]).mean())
    w, b = _logreg_path((xt - trial.mean) / trial.std, pseudo, num_classes, (c,))[0]
    counts = np.bincount(pseudo, minlength=num_classes)
    # classes the target labels never used get no correction: the classifier never saw them
    shift = np.where(counts > 0, np.log(np.maximum(source_prior, 1e-3)) - np.log(np.maximum(counts, 1) / len(pseudo)),
                     0.0)
    logits = torch.from_numpy((xv - trial.mean) / trial.std).double() @ w + b + torch.from_numpy(shift)
    return float((logits.argmax(1).numpy() == yv).mean())


def em_target_prior(probs: np.ndarray, source_prior: np.ndarray, iters: int = 200, tol: float = 1e-7) -> np.ndarray:
    """Target class proportions by EM (Saerens et al. 2002) from a source classifier's target probabilities."""
    prior = source_prior.astype(np.float64).copy()
    base = np.maximum(source_prior, 1e-12)
    for _ in range(iters):
        q = probs * (prior / base)
        q /= q.sum(1, keepdims=True)
        new = q.mean(0)
        if np.abs(new - prior).max() < tol:
            prior = new
            break
        prior = new
    # a floor: an over-confident source model can drive a class towards 0, and log(0) would erase it for good
    prior = np.maximum(prior, 1e-3)
    return prior / prior.sum()


def to_head(trial: Trial, settings: AdaptSettings | None = None, domain: str = "target") -> MLPHead:
    """The trial's adapter as an ``MLPHead`` on raw backbone features of ``domain`` (its standardisation folded
    in: the target's own moments for adabn, the source's otherwise; label-shift's prior correction on the target)."""
    settings = settings or AdaptSettings()
    mean, std = trial.mean, trial.std
    if domain == "target" and trial.target_mean is not None:
        mean, std = trial.target_mean, trial.target_std
    if mean is None or std is None:
        raise ValueError("the trial has no standardisation moments")
    head = _net(trial.state, len(mean), trial.state["3.weight"].shape[0], settings)
    fold_standardisation(head[0], torch.from_numpy(mean).float(), torch.from_numpy(std).float())
    if domain == "target" and trial.target_prior is not None and trial.source_prior is not None:
        shift = np.log(np.maximum(trial.target_prior, 1e-12)) - np.log(np.maximum(trial.source_prior, 1e-12))
        with torch.no_grad():
            head[3].bias.add_(torch.from_numpy(shift).float())
    return head


def predict_logits(head: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head.eval()(torch.from_numpy(x.astype(np.float32))).numpy()


def check_methods(methods: Sequence[str]) -> list[str]:
    """The requested adaptation methods, validated (source-only is always run as the baseline)."""
    out = []
    for m in methods:
        m = m.strip()
        if m not in ADAPTING:
            close = difflib.get_close_matches(m, ADAPTING, n=1)
            raise TransferkitError(
                f"Unknown adaptation method {m!r}; choose from {', '.join(ADAPTING)} (source-only always runs)."
                + (f" Did you mean {close[0]!r}?" if close else "")
            )
        if m not in out:
            out.append(m)
    if not out:
        raise TransferkitError(f"Name at least one adaptation method: {', '.join(ADAPTING)}.")
    return out
