"""The from-scratch control: a small model from random init on the same splits as the transfer run.

Images: the better on validation of ``SmallCNN`` (32 or 64 px, translation augmentation, best validation epoch kept)
and logistic regression on raw pixels (which, unlike a CNN, does not care whether pixels keep their neighbours).
Texts: TF-IDF (word 1-2 grams) + logistic regression with C chosen on validation, refit on train + val.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backbones.base import load_image
from ..backbones.scratch import SmallCNN
from ..data.dataset import Dataset, Splits
from ..progress import progress_bar


@dataclass
class ScratchConfig:
    """Options of the from-scratch control."""

    epochs: int = 40
    """CNN epochs (cosine schedule); the epoch with the best validation accuracy is kept."""
    patience: int | None = None
    """Stop after this many epochs without validation improvement (None: run every epoch; early stops on a
    200-image validation set cut the control short and flatter transfer)."""
    lr: float = 2e-3
    """AdamW learning rate of the CNN."""
    batch_size: int = 64
    """CNN batch size."""
    time_budget_s: float | None = None
    """Budget matching: the whole control (decoding, pixel model, CNN) gets this many seconds; the CNN's epoch
    count (cosine schedule included) is then fitted to what is left after timing its first epoch, up to
    ``max_epochs`` (None: the fixed ``epochs`` schedule)."""
    max_epochs: int = 100
    """Cap on CNN epochs under a time budget."""


@dataclass
class ControlResult:
    """Test predictions of the control plus what it was."""

    test_pred: np.ndarray
    description: str
    trainable_parameters: int
    wall_s: float
    info: dict[str, Any] = field(default_factory=dict)


def _image_tensor(ds: Dataset, indices: np.ndarray, size: int) -> torch.Tensor:
    from PIL import Image

    out = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
    for j, i in enumerate(indices):
        im = load_image(ds.items[int(i)]).resize((size, size), Image.BILINEAR)
        out[j] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
    return out


def _norm(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - 0.5) / 0.5


def _shift(x: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (reflect padding + random crop), per batch."""
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    return padded[..., dy : dy + h, dx : dx + w]


def _pick_size(ds: Dataset, indices: np.ndarray) -> int:
    sample = [load_image(ds.items[int(i)]).size for i in indices[:16]]
    return 32 if max(max(s) for s in sample) <= 40 else 64


def train_scratch_cnn(
    ds: Dataset, splits: Splits, xs: dict[str, torch.Tensor], seed: int, config: ScratchConfig, progress: bool = True
) -> ControlResult:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    size = xs["train"].shape[-1]
    y = torch.from_numpy(ds.targets)
    yt, yv = y[splits.train], y[splits.val]
    model = SmallCNN(len(ds.classes))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=5e-4)
    total = config.epochs  # under a time budget: refitted once the first epoch has been timed
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 * (1 + math.cos(math.pi * min(e, total) / total)))

    def predict(x: torch.Tensor) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return torch.cat([model(_norm(b)).argmax(1) for b in x.split(256)])

    best = (-1.0, 0, {k: v.clone() for k, v in model.state_dict().items()})
    epoch = 0
    with progress_bar("scratch CNN epochs", total, enabled=progress) as bar:
        while epoch < total:
            t_epoch = time.perf_counter()
            model.train()
            for idx in torch.randperm(len(yt), generator=gen).split(config.batch_size):
                opt.zero_grad()
                xb = _shift(_norm(xs["train"][idx]), gen, pad=max(2, size // 16))
                nn.functional.cross_entropy(model(xb), yt[idx]).backward()
                opt.step()
            acc = float((predict(xs["val"]) == yv).float().mean())
            if epoch == 0 and config.time_budget_s is not None:
                per_epoch = time.perf_counter() - t_epoch
                total = int(min(config.max_epochs, max(1, config.time_budget_s // max(per_epoch, 1e-9))))
                bar.set_total(total)
            sched.step()
            bar.advance()
            if acc > best[0]:
                best = (acc, epoch, {k: v.clone() for k, v in model.state_dict().items()})
            elif config.patience is not None and epoch - best[1] >= config.patience:
                epoch += 1
                break
            epoch += 1
    model.load_state_dict(best[2])
    return ControlResult(
        test_pred=predict(xs["test"]).numpy(),
        description=f"small CNN from random init ({size}px)",
        trainable_parameters=sum(p.numel() for p in model.parameters()),
        wall_s=time.perf_counter() - t0,
        info={"epochs": epoch, "best_epoch": best[1] + 1, "val_accuracy": best[0], "input_px": size},
    )


def train_scratch_text(ds: Dataset, splits: Splits, seed: int) -> ControlResult:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=100_000)
    x_train = vec.fit_transform(ds.take(splits.train))
    x_val = vec.transform(ds.take(splits.val))
    y = ds.targets
    best_c, best_acc = 1.0, -1.0
    for c in (0.1, 1.0, 10.0, 100.0):
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x_train, y[splits.train])
        acc = float(clf.score(x_val, y[splits.val]))
        if acc > best_acc:
            best_c, best_acc = c, acc
    # like the linear probe: refit on train + val with the chosen C
    pool = np.concatenate([splits.train, splits.val])
    x_pool = vec.fit_transform(ds.take(pool))
    clf = LogisticRegression(C=best_c, max_iter=2000, random_state=seed).fit(x_pool, y[pool])
    x_test = vec.transform(ds.take(splits.test))
    return ControlResult(
        test_pred=clf.predict(x_test),
        description="TF-IDF (1-2 grams) + logistic regression",
        trainable_parameters=int(clf.coef_.size + clf.intercept_.size),
        wall_s=time.perf_counter() - t0,
        info={"C": best_c, "val_accuracy": best_acc, "vocabulary": len(vec.vocabulary_)},
    )


def train_scratch_pixels(ds: Dataset, splits: Splits, xs: dict[str, torch.Tensor], seed: int) -> ControlResult:
    """Multinomial logistic regression on raw pixels (C chosen on validation, refit on train + val)."""
    from ..heads import fit_linear_probe

    t0 = time.perf_counter()
    flat = {p: x.reshape(len(x), -1).float().numpy() / 255.0 for p, x in xs.items()}
    y = ds.targets
    fit = fit_linear_probe(flat["train"], y[splits.train], flat["val"], y[splits.val], len(ds.classes), seed=seed)
    with torch.no_grad():
        pred = fit.head(torch.from_numpy(flat["test"])).argmax(1).numpy()
    size = xs["train"].shape[-1]
    return ControlResult(
        test_pred=pred,
        description=f"logistic regression on raw pixels ({size}px)",
        trainable_parameters=sum(p.numel() for p in fit.head.parameters()),
        wall_s=time.perf_counter() - t0,
        info={"C": fit.chosen["C"], "val_accuracy": fit.val_accuracy, "input_px": size},
    )


def run_scratch(
    ds: Dataset, splits: Splits, seed: int = 0, config: ScratchConfig | None = None, progress: bool = True
) -> ControlResult:
    """Train the control for this modality on ``splits`` and predict its test split."""
    config = config or ScratchConfig()
    budget = config.time_budget_s
    if ds.modality == "text":  # not iterative: TF-IDF + logistic regression has no budget to fill
        return train_scratch_text(ds, splits, seed)
    t0 = time.perf_counter()
    size = _pick_size(ds, splits.train)
    xs = {p: _image_tensor(ds, getattr(splits, p), size) for p in ("train", "val", "test")}
    pixels = train_scratch_pixels(ds, splits, xs, seed)
    if config.time_budget_s is not None:  # decoding and the pixel model count against the budget too
        config = replace(config, time_budget_s=max(0.0, config.time_budget_s - (time.perf_counter() - t0)))
    candidates = [pixels, train_scratch_cnn(ds, splits, xs, seed, config, progress)]
    best = max(candidates, key=lambda c: c.info["val_accuracy"])  # first (the simpler) wins ties
    best.wall_s = time.perf_counter() - t0
    best.info["candidates"] = {c.description: c.info["val_accuracy"] for c in candidates}
    best.info["cnn_epochs"] = candidates[1].info["epochs"]
    if config.time_budget_s is not None:
        best.info["time_budget_s"] = budget
    return best
