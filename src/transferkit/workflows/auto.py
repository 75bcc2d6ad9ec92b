"""``--strategy auto``: choose the rungs of the transfer ladder that fit the data and a time budget."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from ..backbones.base import Backbone
from ..data.dataset import Dataset
from ..errors import TransferkitError


def parse_budget(text: str) -> float:
    """'90s', '10m', '1.5h' or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise TransferkitError(f"Budget {text!r} is not a duration like 90s, 10m or 1.5h.")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


@dataclass(frozen=True)
class Plan:
    """The strategies chosen, their options, and the estimates that led there."""

    strategies: list[str]
    options: dict[str, dict[str, Any]]
    estimate_s: float
    notes: list[str]


def plan_ladder(backbone: Backbone, ds: Dataset, n_train: int, n_eval: int, seeds: int, budget_s: float) -> Plan:
    """Linear probe always; LP-FT on the last two blocks when the budget allows at least 2 epochs for every seed;
    LoRA on top for backbones with attention when there is room for that as well.

    Costs come from timing one small batch of this backbone on this data (forward ~ 1 unit, training step ~ 3).
    """
    from ..backbones.adapters import default_targets

    sample = ds.take(range(min(16, len(ds))))
    backbone.embed(sample[:2])  # warm-up
    t0 = time.perf_counter()
    backbone.embed(sample)
    per_item = (time.perf_counter() - t0) / len(sample)
    probe = (n_train + n_eval) * per_item
    epoch = 3 * n_train * per_item + n_eval * per_item / 2
    notes = [f"{per_item * 1000:.1f} ms per item forward; probe ~{probe:.0f} s, one fine-tuning epoch ~{epoch:.0f} s"]
    strategies, options = ["linear-probe"], {}
    spent = seeds * probe
    left = budget_s - spent
    epochs = int(min(10, left / max(seeds * epoch, 1e-9)))
    if epochs >= 2:
        strategies.append("finetune")
        options["finetune"] = {"unfreeze": "last:2", "lp_ft": True, "epochs": epochs}
        spent += seeds * epochs * epoch
        notes.append(f"finetune: LP-FT on the last 2 blocks, {epochs} epochs")
    else:
        notes.append("finetune skipped: the budget does not allow 2 epochs per seed")
    try:
        default_targets(backbone)
        has_attention = True
    except TransferkitError:
        has_attention = False
    lora_epochs = int(min(10, (budget_s - spent) / max(seeds * epoch, 1e-9)))
    if has_attention and lora_epochs >= 2:
        strategies.append("lora")
        options["lora"] = {"epochs": lora_epochs}
        spent += seeds * lora_epochs * epoch
        notes.append(f"lora: {lora_epochs} epochs")
    return Plan(strategies, options, spent, notes)
