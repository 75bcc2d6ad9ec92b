"""The Strategy protocol and registry: what trains, on what, and what the result is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..backbones.base import Backbone
from ..data.dataset import Dataset, Splits
from ..errors import TransferkitError
from ..model import TransferModel
from ..registry import Registry


@dataclass
class RunContext:
    """What every strategy gets besides its own config."""

    seed: int = 0
    cache_dir: Path | None = None
    use_cache: bool = True
    progress: bool = True
    checkpoint_dir: Path | None = None
    """Where a training strategy checkpoints every epoch (None: no checkpoints)."""
    resume: bool = False
    """Continue from the checkpoint in checkpoint_dir when there is one."""
    stop_after: int | None = None
    """End training after this many epochs of this call (tests use it to simulate a kill)."""


@dataclass
class StrategyResult:
    """A trained model plus its test-set predictions and what the strategy chose."""

    model: TransferModel
    test_pred: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class Strategy(Protocol):
    """``run(backbone, data, splits, config, ctx) -> StrategyResult``; ``Config`` is its dataclass."""

    name: str
    Config: type

    def run(self, backbone: Backbone, ds: Dataset, splits: Splits, config: Any, ctx: RunContext) -> StrategyResult: ...


STRATEGIES: Registry[Strategy] = Registry("strategy")


def register_strategy(strategy: Strategy) -> Strategy:
    """Register a strategy object under its ``name``."""
    return STRATEGIES.register(strategy.name)(strategy)


def make_config(strategy: Strategy, options: dict[str, Any]) -> Any:
    """The strategy's config dataclass from keyword options; an unknown option names the known ones."""
    known = {f.name for f in fields(strategy.Config)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TransferkitError(
            f"Strategy {strategy.name!r} has no option(s) {', '.join(unknown)}; its options are "
            f"{', '.join(sorted(known))}."
        )
    return strategy.Config(**options)


def config_dict(config: Any) -> dict[str, Any]:
    return asdict(config)


StrategyFactory = Callable[[], Strategy]
