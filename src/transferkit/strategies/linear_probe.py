"""``linear-probe``: freeze the backbone, cache its features, train only a head on them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ..backbones.base import Backbone
from ..core.config import validate_config
from ..core.heads import C_GRID, fit_linear_probe, fit_linear_probe_cv, fit_mlp_head, fit_ridge
from ..core.model import TransferModel
from ..data.dataset import Dataset, Splits
from ..errors import TransferkitError
from .base import RunContext, StrategyResult, register_strategy, split_features


@dataclass
class LinearProbeConfig:
    """Options of the linear-probe strategy."""

    head: Literal["linear", "mlp"] = "linear"
    """linear: logistic regression with C chosen on val; mlp: Dense(1024, relu) + Dense(classes)."""
    c_grid: tuple[float, ...] = field(default=C_GRID, metadata={"gt": 0, "nonempty": True})
    """L2 strengths (inverse) tried for the linear head."""
    mlp_hidden: int = field(default=1024, metadata={"min": 1})
    """Hidden width of the MLP head."""
    batch_size: int | None = field(default=None, metadata={"min": 1})
    """Batch size for feature extraction (default: ``features.default_batch_size``, e.g. 8 images on a CPU)."""
    mirror: bool = False
    """Image classes, linear head: each image's mirror image trains beside it, and prediction averages an image's
    logits with its mirror's (test-time augmentation, saved with the model). Twice the feature extraction;
    benchmarks/dev_tta.py measured +1.1 and +1.2 points at 50 images per class (Fashion-MNIST, digits), +0.3 at 100
    (Fashion-MNIST)."""

    def __post_init__(self) -> None:
        validate_config(self, "linear-probe")


CV_BELOW = 50
"""With a given test set, no given validation set and fewer labelled examples than this in some class, C is chosen by
cross-validation over train + val instead of on the validation split."""


def cv_folds(y_pool: np.ndarray, splits: Splits) -> int:
    """Folds for choosing C by cross-validation (0: choose on the validation split): up to 5, when the test set was
    given, the validation set was not, and the labels are few."""
    if "test" not in splits.given or "val" in splits.given:
        return 0
    smallest = int(np.bincount(y_pool).min()) if len(y_pool) else 0
    return min(5, smallest) if 2 <= smallest < CV_BELOW else 0


class LinearProbe:
    name = "linear-probe"
    Config = LinearProbeConfig
    numeric_targets = True
    """Trains a regression head on a numeric target too."""
    defers_backbone = True
    """Uses the backbone only for features missing from the cache: it may get a deferred one."""

    def run(
        self, backbone: Backbone, ds: Dataset, splits: Splits, config: LinearProbeConfig, ctx: RunContext
    ) -> StrategyResult:
        if config.mirror and (ds.task == "regression" or backbone.modality != "image" or config.head != "linear"):
            raise TransferkitError("mirror (mirror-image training and test-time augmentation) is for image classes "
                                   "with the linear head.")
        backbone.freeze()
        t0 = time.perf_counter()
        stats: dict[str, Any] = {}  # seconds over all parts; engine: that of the last part run
        feats, all_cached = split_features(backbone, ds, splits, ctx, batch_size=config.batch_size, stats=stats)
        mirrored: dict[str, np.ndarray] = {}
        if config.mirror:
            mirrored, cached = split_features(backbone, ds, splits, ctx, batch_size=config.batch_size, stats=stats,
                                              label="mirror-image ", mirror=True)
            all_cached = all_cached and cached
        t1 = time.perf_counter()
        y = ds.targets
        if ds.task == "regression":
            return self._regression(backbone, ds, splits, config, feats, all_cached, stats, t0, t1)
        args = (feats["train"], y[splits.train], feats["val"], y[splits.val], len(ds.classes))
        folds = cv_folds(y[np.concatenate([splits.train, splits.val])], splits)
        val_proba = None
        if config.head == "linear" and folds:
            pool = np.concatenate([feats["train"], feats["val"]])
            fit = fit_linear_probe_cv(pool, y[np.concatenate([splits.train, splits.val])], len(ds.classes),
                                      c_grid=config.c_grid, folds=folds, seed=ctx.seed,
                                      mirror=np.concatenate([mirrored["train"], mirrored["val"]]) if mirrored
                                      else None)
            assert fit.val_logits is not None  # out of fold: the validation rows' held-out logits
            val_proba = torch.from_numpy(fit.val_logits[len(splits.train):]).softmax(1).numpy()
        elif config.head == "linear":
            fit = fit_linear_probe(*args, c_grid=config.c_grid, seed=ctx.seed,
                                   mirror=(mirrored["train"], mirrored["val"]) if mirrored else None)
        else:
            fit = fit_mlp_head(*args, hidden=config.mlp_hidden, seed=ctx.seed)
        t2 = time.perf_counter()
        with torch.no_grad():
            test_logits = fit.head(torch.from_numpy(feats["test"]))
            if mirrored:  # test-time augmentation, as the saved model's predict_proba does it
                test_logits = (test_logits + fit.head(torch.from_numpy(mirrored["test"]))) / 2
            test_proba = test_logits.softmax(1).numpy()
            if val_proba is None and fit.val_logits is not None:
                val_proba = torch.from_numpy(fit.val_logits).softmax(1).numpy()
        model = TransferModel(backbone, fit.head, ds.classes).eval()
        model.tta = config.mirror
        if backbone.is_built:  # a deferred backbone (all features cached) is built on the CPU when first used
            model.to(next(backbone.parameters()).device)
        return StrategyResult(
            model=model,
            test_proba=test_proba,
            info={
                "head": config.head,
                "chosen": fit.chosen,
                "selection": f"{folds}-fold cross-validation on train + val (a given test set, few labels)" if folds
                else "the validation split",
                "val_accuracy": fit.val_accuracy,
                "features_from_cache": all_cached,
                "cache_saved_s": stats.get("saved_s", 0.0),
                "extraction": stats.get("engine", "all from cache"),
                "trainable_parameters": sum(p.numel() for p in fit.head.parameters()),
                "mirror": config.mirror,
                "work": {"forward": (1 + config.mirror) * (len(splits.train) + len(splits.val) + len(splits.test)),
                         "train": 0},
            },
            timings={"features_s": t1 - t0, "head_s": t2 - t1},
            val_proba=val_proba,
        )


    def _regression(self, backbone: Backbone, ds: Dataset, splits: Splits, config: LinearProbeConfig,
                    feats: dict[str, np.ndarray], all_cached: bool, stats: dict[str, Any], t0: float,
                    t1: float) -> StrategyResult:
        """Ridge regression on the cached features, its strength chosen on validation R^2."""
        if config.head != "linear":
            raise TransferkitError("A regression target takes the linear head (ridge); head=mlp is for classes.")
        y = ds.targets
        fit = fit_ridge(feats["train"], y[splits.train], feats["val"], y[splits.val])
        t2 = time.perf_counter()
        with torch.no_grad():
            values = fit.head(torch.from_numpy(feats["test"])).numpy()[:, 0].astype(np.float64)
        model = TransferModel(backbone, fit.head, [], "regression").eval()
        if backbone.is_built:
            model.to(next(backbone.parameters()).device)
        return StrategyResult(
            model=model, test_proba=np.empty((len(values), 0)), test_values=values,
            info={"head": "ridge", "chosen": fit.chosen, "val_r2": fit.val_accuracy,
                  "selection": "the validation split (R^2)", "features_from_cache": all_cached,
                  "cache_saved_s": stats.get("saved_s", 0.0), "extraction": stats.get("engine", "all from cache"),
                  "trainable_parameters": sum(p.numel() for p in fit.head.parameters()),
                  "work": {"forward": len(splits.train) + len(splits.val) + len(splits.test), "train": 0}},
            timings={"features_s": t1 - t0, "head_s": t2 - t1},
        )


register_strategy(LinearProbe())
