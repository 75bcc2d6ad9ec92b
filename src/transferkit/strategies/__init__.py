"""Training strategies, each registered by name (``linear-probe``, ``finetune``; the control lives in ``scratch``)."""

from . import finetune, linear_probe  # noqa: F401  (registers the strategies)
from .base import STRATEGIES, RunContext, Strategy, StrategyResult, make_config, register_strategy

__all__ = ["STRATEGIES", "RunContext", "Strategy", "StrategyResult", "make_config", "register_strategy"]
