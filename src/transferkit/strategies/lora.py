"""``lora``: low-rank adapters on the attention projections plus a new head; the pretrained weights stay frozen.

The saved model holds the head and the adapters (a few hundred kB), and reloads onto the same pretrained backbone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..backbones.adapters import adapter_parameters, default_targets, inject_lora
from ..backbones.base import Backbone
from ..core.config import validate_config
from ..core.heads import linear_head
from ..core.model import TransferModel
from ..core.training import ParamGroup, TrainConfig
from ..data.dataset import Dataset, Splits
from .base import RunContext, StrategyResult, register_strategy, train_and_predict

_R_ALPHA_POSITIVE = "r and alpha must be positive, got {name}={value!r}"


@dataclass
class LoraStrategyConfig(TrainConfig):
    """Options of the lora strategy (plus those of the training loop)."""

    r: int = field(default=8, metadata={"min": 1, "message": _R_ALPHA_POSITIVE})
    """Rank of each adapter."""
    alpha: int = field(default=16, metadata={"min": 1, "message": _R_ALPHA_POSITIVE})
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = field(default=0.1, metadata={"min": 0, "lt": 1})
    """Dropout on the adapters' input."""
    target_modules: tuple[str, ...] | None = None
    """Module names to adapt (default: the attention query/value projections found in the backbone)."""
    lr: float = field(default=1e-3, metadata={"gt": 0})
    """Peak learning rate of the head and the adapters."""

    def __post_init__(self) -> None:
        validate_config(self, "lora")


class Lora:
    name = "lora"
    Config = LoraStrategyConfig
    numeric_targets = True
    """Trains a regression head on a numeric target too."""

    def run(
        self, backbone: Backbone, ds: Dataset, splits: Splits, config: LoraStrategyConfig, ctx: RunContext
    ) -> StrategyResult:
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
        backbone.freeze()
        adapters = adapter_parameters(backbone)
        for p in adapters:
            p.requires_grad_(True)
        regression = ds.task == "regression"  # the fresh head starts in standardised units (see train_and_predict)
        head = linear_head(backbone.feature_dim, 1 if regression else len(ds.classes))
        model = TransferModel(backbone, head, [] if regression else ds.classes, ds.task)
        groups = [ParamGroup("head", list(head.parameters()), config.lr), ParamGroup("lora", adapters, config.lr)]

        def batcher(items: list[Any], train: bool, gen: torch.Generator) -> Any:
            return backbone.prepare(items, augment=False, generator=gen)

        test_out, info, timings = train_and_predict(model, groups, batcher, config, ds, splits, ctx)
        backbone.mark_changed(full=False)
        info.update(target_modules=targets, adapter_parameters=sum(p.numel() for p in adapters))
        if regression:
            return StrategyResult(model=model, test_proba=np.empty((len(test_out), 0)), info=info, timings=timings,
                                  test_values=test_out)
        return StrategyResult(model=model, test_proba=test_out, info=info, timings=timings)


register_strategy(Lora())
