"""Training strategies, each registered by name (``linear-probe``; the control lives in ``scratch``)."""

from . import linear_probe  # noqa: F401  (registers the strategy)
from .base import STRATEGIES, RunContext, Strategy, StrategyResult, make_config, register_strategy

__all__ = ["STRATEGIES", "RunContext", "Strategy", "StrategyResult", "make_config", "register_strategy"]
