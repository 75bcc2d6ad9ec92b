"""Training strategies, each registered by name; the scratch control lives in ``scratch``."""

from . import adapt, contrastive, distill, finetune, linear_probe, lora  # noqa: F401  (registration)
from .base import STRATEGIES, RunContext, Strategy, StrategyResult, make_config, register_strategy

__all__ = ["STRATEGIES", "RunContext", "Strategy", "StrategyResult", "make_config", "register_strategy"]
