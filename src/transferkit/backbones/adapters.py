"""Low-rank adapters (LoRA, through peft) injected into a backbone's own modules, and their weights."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import TransferkitError
from .base import Backbone

# attention projections to adapt, most specific first: (BERT/MPNet-style), (Llama/OPT), (DistilBERT), GPT-2, ViT
TARGET_CANDIDATES: list[tuple[str, ...]] = [
    ("query", "value"),
    ("q_proj", "v_proj"),
    ("q_lin", "v_lin"),
    ("c_attn",),
    ("qkv",),
    ("q", "v"),
]


def default_targets(backbone: Backbone) -> list[str]:
    """Attention projection names present in the backbone, or an error that lists its Linear layers."""
    leaves = {name.rsplit(".", 1)[-1] for name, m in backbone.named_modules() if _is_linear(m)}
    for names in TARGET_CANDIDATES:
        if set(names) <= leaves:
            return list(names)
    shown = ", ".join(sorted(leaves)[:12]) or "none"
    raise TransferkitError(
        f"lora: no attention projections found in {backbone.spec}; pass target_modules=[...] "
        f"(its Linear layers: {shown})."
    )


def _is_linear(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"  # transformers' GPT-2 projection


def inject_lora(backbone: Backbone, config: dict[str, Any]) -> None:
    """Add LoRA layers (r, alpha, dropout, target_modules) in place; the pretrained weights stay as they are."""
    from peft import LoraConfig, inject_adapter_in_model

    if backbone.adapter is not None:
        raise TransferkitError(f"{backbone.spec} already has adapters.")
    base = backbone.fingerprint()
    lora = LoraConfig(
        r=int(config["r"]),
        lora_alpha=int(config["alpha"]),
        lora_dropout=float(config["dropout"]),
        target_modules=list(config["target_modules"]),
        fan_in_fan_out=bool(config.get("fan_in_fan_out", False)),
    )
    try:
        inject_adapter_in_model(lora, backbone.model)
    except ValueError as e:
        raise TransferkitError(f"lora: {e}") from None
    backbone.adapter = dict(config)
    backbone.base_fingerprint = base
    backbone.mark_changed(full=False)


def adapter_parameters(backbone: Backbone) -> list[nn.Parameter]:
    return [p for n, p in backbone.named_parameters() if "lora_" in n]
