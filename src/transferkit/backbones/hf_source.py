"""Text backbones through transformers: ``hf:<repo-or-local-folder>[?pooling=mean|cls|last&max_length=N]``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BackboneUnavailableError, DataError, TransferkitError
from .base import Backbone, TextPreprocess
from .registry import BackboneInfo, SourceInfo, hub_note, hub_reachable, parse_bool, register_source

_DECODER_TYPES = {
    "gpt2",
    "gpt_neo",
    "gpt_neox",
    "gptj",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "phi",
    "phi3",
    "opt",
    "bloom",
    "falcon",
    "gemma",
    "gemma2",
    "smollm3",
    "olmo",
}


class HFTextBackbone(Backbone):
    """A transformers model whose token states are pooled (mean, CLS or last token) into one vector."""

    def __init__(
        self, spec: str, model: nn.Module, tokenizer: Any, preprocess: TextPreprocess, pretrained: bool = True
    ) -> None:
        super().__init__(spec, "text", int(model.config.hidden_size), preprocess, pretrained)
        self.model = model
        self.tokenizer = tokenizer

    def prepare(
        self, items: Sequence[Any], augment: bool = False, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Tokenize (padding to the batch's longest text); texts get no augmentation."""
        texts = []
        for it in items:
            if not isinstance(it, str):
                raise DataError(f"Text backbones take strings, got {type(it).__name__}.")
            texts.append(it)
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.preprocess.max_length, return_tensors="pt"
        )
        return {k: enc[k] for k in ("input_ids", "attention_mask")}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        h = out.last_hidden_state
        mask = batch["attention_mask"].to(h.dtype)
        pooling = self.preprocess.pooling
        if pooling == "mean":
            feats = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        elif pooling == "cls":
            feats = h[:, 0]
        elif self.tokenizer.padding_side == "left":
            feats = h[:, -1]
        else:
            last = batch["attention_mask"].sum(1).clamp(min=1) - 1
            feats = h[torch.arange(h.shape[0], device=h.device), last]
        if self.preprocess.normalize:
            feats = nn.functional.normalize(feats, dim=-1)
        return feats

    def unused_modules(self) -> list[nn.Module]:
        pooler = getattr(self.model, "pooler", None)  # BERT's pooler is not used by our pooling
        return [pooler] if isinstance(pooler, nn.Module) else []

    def _layer_list(self) -> tuple[Any, str, nn.ModuleList] | None:
        """(parent module, attribute name, the ModuleList of transformer layers), when found."""
        for attr in ("encoder.layer", "layers", "h", "transformer.h", "decoder.layers"):
            parent: Any = self.model
            *path, last = attr.split(".")
            for part in path:
                parent = getattr(parent, part, None)
            obj = getattr(parent, last, None) if parent is not None else None
            if isinstance(obj, nn.ModuleList):
                return parent, last, obj
        return None

    def blocks(self) -> list[nn.Module]:
        found = self._layer_list()
        return list(found[2]) if found else list(self.model.children())

    def fresh_state(self, seed: int) -> dict[str, torch.Tensor] | None:
        """transformers' own initialisation of this configuration (e.g. N(0, 0.02) for BERT), with our names."""
        from transformers import AutoModel

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = AutoModel.from_config(self.model.config)
        return {f"model.{k}": v for k, v in fresh.state_dict().items()}

    def truncate(self, n: int) -> None:
        """Pool the token states after the first ``n`` transformer layers."""
        found = self._layer_list()
        if found is None:
            raise TransferkitError(f"{self.spec}: no list of transformer layers found to cut after (layer=).")
        parent, name, layers = found
        if not 1 <= n <= len(layers):
            raise TransferkitError(
                f"{self.spec}: layer={n} is out of range; it has {len(layers)} layers (1..{len(layers)})."
            )
        setattr(parent, name, nn.ModuleList(list(layers)[:n]))
        self.model.config.num_hidden_layers = n
        self.depth = n
        self._fingerprint = None


def tokenizer_id(tokenizer: Any) -> str:
    """Class name + a hash of the vocabulary and special tokens: a changed tokenizer is a changed backbone."""
    import hashlib

    vocab = sorted(tokenizer.get_vocab().items())
    h = hashlib.sha256(json.dumps([vocab, sorted(tokenizer.special_tokens_map.items())], default=str).encode())
    return f"{type(tokenizer).__name__}:{h.hexdigest()[:16]}"


def _sentence_transformers_defaults(folder: Path) -> dict[str, Any]:
    """Pooling/normalize/max_length from a sentence-transformers folder, when it is one."""
    out: dict[str, Any] = {}
    modules = folder / "modules.json"
    if modules.is_file():
        mods = json.loads(modules.read_text())
        out["normalize"] = any(m.get("type", "").endswith("Normalize") for m in mods)
        for m in mods:
            if m.get("type", "").endswith("Pooling"):
                cfg = json.loads((folder / m["path"] / "config.json").read_text())
                if cfg.get("pooling_mode_cls_token"):
                    out["pooling"] = "cls"
                elif cfg.get("pooling_mode_lasttoken"):
                    out["pooling"] = "last"
                else:
                    out["pooling"] = "mean"
    sbert = folder / "sentence_bert_config.json"
    if sbert.is_file():
        out["max_length"] = int(json.loads(sbert.read_text()).get("max_seq_length", 256))
    return out


def create_hf_backbone(name: str, options: dict[str, str], spec: str | None = None) -> HFTextBackbone:
    """Load tokenizer + model from a local folder or (when reachable) the hub; choose pooling by architecture."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    spec = spec or f"hf:{name}"
    local = Path(name).expanduser()
    is_local = local.is_dir()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # offline: only the local Hugging Face cache, instead of minutes of retries
    local_only = is_local or not hub_reachable()
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=local_only)
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
        model = AutoModel.from_pretrained(name, local_files_only=local_only)
    except (OSError, ValueError) as e:  # transformers 5 raises ValueError for a folder it does not recognise
        if is_local:
            raise BackboneUnavailableError(f"{name} is not a usable transformers folder: {e}") from None
        raise BackboneUnavailableError(
            f"hf:{name} is not a local folder and could not be fetched from the Hugging Face hub "
            f"({'not reachable here, and not in the local cache' if local_only else 'unknown repo?'}). "
            "Download it where you are online and pass the folder (hf:/path/to/model)."
        ) from None
    defaults: dict[str, Any] = _sentence_transformers_defaults(local) if is_local else {}
    is_decoder = (
        bool(getattr(config, "is_decoder", False))
        or config.model_type in _DECODER_TYPES
        or any(a.endswith("ForCausalLM") for a in (config.architectures or []))
    )
    pooling = options.pop("pooling", defaults.get("pooling", "last" if is_decoder else "mean"))
    if pooling not in ("mean", "cls", "last"):
        raise TransferkitError(f"pooling={pooling!r} is not one of mean, cls, last.")
    limit = min(
        getattr(tokenizer, "model_max_length", 512) or 512, getattr(config, "max_position_embeddings", 512) or 512
    )
    raw_max = options.pop("max_length", defaults.get("max_length", min(256, limit)))
    try:
        max_length = int(raw_max)
    except ValueError:
        raise TransferkitError(f"max_length must be a whole number of tokens, got {raw_max!r}.") from None
    if max_length < 1:
        raise TransferkitError(f"max_length must be at least 1, got {max_length}.")
    normalize = parse_bool(options.pop("normalize", str(defaults.get("normalize", False))), "normalize")
    if options:
        raise TransferkitError(
            f"Unknown option(s) for {spec}: {', '.join(options)}. Known: pooling, max_length, normalize."
        )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise BackboneUnavailableError(f"{spec}: the tokenizer has neither a pad nor an eos token.")
        tokenizer.pad_token = tokenizer.eos_token
    pre = TextPreprocess(tokenizer=tokenizer_id(tokenizer), max_length=max_length, pooling=pooling, normalize=normalize)
    model.eval()
    return HFTextBackbone(spec, model, tokenizer, pre)


def _rows() -> list[BackboneInfo]:
    return [BackboneInfo("hf:<repo-or-folder>", "text", True, f"transformers encoders/decoders; {hub_note()[1]}")]


@register_source(  # any other folder is read as a transformers one: the catch-all, offered folders last
    "hf", SourceInfo(rows=_rows, from_folder=lambda p: create_hf_backbone(str(p.resolve()), {}), folder_order=100,
               list_order=20)
)
def _hf_source(name: str, options: dict[str, str]) -> HFTextBackbone:
    spec = f"hf:{name}" + ("?" + "&".join(f"{k}={v}" for k, v in sorted(options.items())) if options else "")
    return create_hf_backbone(name, dict(options), spec=spec)
