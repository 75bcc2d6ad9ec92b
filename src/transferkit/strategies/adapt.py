"""``adapt``: the backbone stays frozen; an adapter head trains on its features with a labelled source (the run's
data) and an unlabelled target, by DANN, Deep CORAL, AdaBN-style standardisation, label-shift correction or
self-training (see ``transferkit.methods.adaptation``). The test split is the source's; the saved model is for the
target. The epoch and the method's hyperparameter are chosen without target labels. ``transferkit.adapt`` runs
every method with the source-only baseline over seeds; this strategy trains one of them inside ``fit``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..backbones.base import Backbone
from ..core.config import validate_config
from ..core.model import TransferModel
from ..data.dataset import Dataset, Splits
from ..errors import TransferkitError
from ..methods.adaptation import AdaptSettings, predict_logits, to_head, train_method
from .base import RunContext, StrategyResult, register_strategy, split_features


@dataclass
class AdaptConfig:
    """Options of the adapt strategy."""

    target: Any = field(default=None, metadata={
        "nonempty": True,
        "message": "adapt needs unlabelled target data: a folder, CSV/JSONL file or list (got target={value!r})",
    })
    """Unlabelled target inputs: a folder, CSV/JSONL file, built-in name, Dataset (labels ignored) or list."""
    target_column: str | None = None
    """Text (or image-path) column of a target CSV/JSONL file."""
    method: Literal["source-only", "dann", "coral", "adabn", "label-shift", "self-training"] = field(
        default="dann", metadata={"message": "Unknown adaptation method {value!r}; choose from {choices}"}
    )
    """dann, coral, adabn, label-shift, self-training or source-only (``methods.adaptation.METHODS``)."""
    select: Literal["dev", "im", "source-val"] = "dev"
    """Label-free checkpoint selection: dev, im or source-val (``methods.adaptation.SELECTIONS``)."""
    epochs: int = field(default=30, metadata={"min": 1})
    """Adapter epochs (each one a candidate checkpoint)."""
    hidden: int = field(default=256, metadata={"min": 1})
    """Width of the adapted feature."""
    lr: float = field(default=1e-3, metadata={"gt": 0})
    """Adam learning rate of the adapter."""

    def __post_init__(self) -> None:
        validate_config(self, "adapt")


class Adapt:
    name = "adapt"
    Config = AdaptConfig

    def run(
        self, backbone: Backbone, ds: Dataset, splits: Splits, config: AdaptConfig, ctx: RunContext
    ) -> StrategyResult:
        from ..core.features import extract_features
        from ..data.sources import load_unlabelled, unlabelled_dataset

        items = load_unlabelled(config.target, ds.modality, config.target_column)
        if len(items) < 10:
            raise TransferkitError(f"The unlabelled target holds {len(items)} inputs; adaptation needs at least 10.")
        backbone.freeze()
        t0 = time.perf_counter()
        stats: dict[str, Any] = {}
        x, _ = split_features(backbone, ds, splits, ctx, stats=stats)
        pool = unlabelled_dataset(items, ds, f"{ds.name} (target)")
        xt, _ = extract_features(backbone, pool, range(len(pool)), description="target features",
                                 cache_dir=ctx.cache_dir, use_cache=ctx.use_cache, progress=ctx.progress, stats=stats)
        t1 = time.perf_counter()
        y = ds.targets
        settings = AdaptSettings(hidden=config.hidden, lr=config.lr, epochs=config.epochs)
        base = None
        if config.method == "self-training":
            base = train_method("source-only", x["train"], y[splits.train], x["val"], y[splits.val], xt,
                                len(ds.classes), select=config.select, settings=settings, seed=ctx.seed,
                                reverse=False)
        trial = train_method(config.method, x["train"], y[splits.train], x["val"], y[splits.val], xt,
                             len(ds.classes), select=config.select, settings=settings, seed=ctx.seed, source_only=base,
                             reverse=False)
        head = to_head(trial, settings)  # the model is for the target; the test split is the source's
        logits = predict_logits(to_head(trial, settings, domain="source"), x["test"])
        test_proba = np.exp(logits - logits.max(1, keepdims=True))
        test_proba /= test_proba.sum(1, keepdims=True)
        info = {**trial.describe(), "select": config.select, "val_accuracy": trial.source_val_accuracy,
                "target_items": len(items), "test_split": "source (the saved model is for the target)",
                "trainable_parameters": sum(p.numel() for p in head.parameters()),
                "cache_saved_s": stats.get("saved_s", 0.0),
                "work": {"forward": sum(len(getattr(splits, p)) for p in ("train", "val", "test")) + len(pool),
                         "train": 0}}
        timings = {"features_s": t1 - t0, "train_s": time.perf_counter() - t1}
        return StrategyResult(TransferModel(backbone, head, ds.classes), test_proba, info, timings)


register_strategy(Adapt())
