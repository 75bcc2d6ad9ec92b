"""``lora``: low-rank adapters on the attention projections plus a new head; the pretrained weights stay frozen.

The saved model holds the head and the adapters (a few hundred kB), and reloads onto the same pretrained backbone.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..backbones.adapters import adapter_parameters, default_targets, inject_lora
from ..backbones.base import Backbone
from ..data.dataset import Dataset, Splits
from ..errors import TransferkitError
from ..features import default_device
from ..heads import linear_head
from ..model import TransferModel
from ..training import ParamGroup, TrainConfig, Trainer
from .base import RunContext, StrategyResult, register_strategy


@dataclass
class LoraStrategyConfig(TrainConfig):
    """Options of the lora strategy (plus those of the training loop)."""

    r: int = 8
    """Rank of each adapter."""
    alpha: int = 16
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.1
    """Dropout on the adapters' input."""
    target_modules: tuple[str, ...] | None = None
    """Module names to adapt (default: the attention query/value projections found in the backbone)."""
    lr: float = 1e-3
    """Peak learning rate of the head and the adapters."""


class Lora:
    name = "lora"
    Config = LoraStrategyConfig

    def run(
        self, backbone: Backbone, ds: Dataset, splits: Splits, config: LoraStrategyConfig, ctx: RunContext
    ) -> StrategyResult:
        if config.r < 1 or config.alpha < 1:
            raise TransferkitError(f"lora: r and alpha must be positive (got r={config.r}, alpha={config.alpha}).")
        targets = list(config.target_modules) if config.target_modules else default_targets(backbone)
        fan_in_fan_out = "c_attn" in targets  # GPT-2's Conv1D stores weights transposed
        torch.manual_seed(ctx.seed)
        inject_lora(
            backbone,
            {
                "r": config.r,
                "alpha": config.alpha,
                "dropout": config.dropout,
                "target_modules": targets,
                "fan_in_fan_out": fan_in_fan_out,
            },
        )
        for p in backbone.parameters():
            p.requires_grad_(False)
        adapters = adapter_parameters(backbone)
        for p in adapters:
            p.requires_grad_(True)
        head = linear_head(backbone.feature_dim, len(ds.classes))
        model = TransferModel(backbone, head, ds.classes)
        groups = [ParamGroup("head", list(head.parameters()), config.lr), ParamGroup("lora", adapters, config.lr)]
        train_cfg = TrainConfig(**{k: v for k, v in asdict(config).items() if k in TrainConfig.__dataclass_fields__})

        def batcher(items: list[Any], train: bool, gen: torch.Generator) -> Any:
            return backbone.prepare(items, augment=False, generator=gen)

        t0 = time.perf_counter()
        trainer = Trainer(
            model,
            groups,
            batcher,
            train_cfg,
            seed=ctx.seed,
            checkpoint_dir=ctx.checkpoint_dir,
            progress=ctx.progress,
            device=default_device(),
        )
        y = ds.targets
        result = trainer.fit(
            ds.take(splits.train),
            y[splits.train],
            ds.take(splits.val),
            y[splits.val],
            len(ds.classes),
            resume=ctx.resume,
            stop_after=ctx.stop_after,
        )
        backbone.mark_changed(full=False)
        model.eval()
        t1 = time.perf_counter()
        test_pred = model.predict_proba(ds.take(splits.test)).argmax(1)
        return StrategyResult(
            model=model,
            test_pred=np.asarray(test_pred),
            info={
                "target_modules": targets,
                "best_epoch": result.best_epoch + 1,
                "val_accuracy": result.best_val_accuracy,
                "epochs_run": len(result.history),
                "resumed_from_epoch": result.resumed_from,
                "learning_curve": [asdict(r) for r in result.history],
                "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "adapter_parameters": sum(p.numel() for p in adapters),
            },
            timings={"train_s": t1 - t0, "predict_test_s": time.perf_counter() - t1},
        )


register_strategy(Lora())
