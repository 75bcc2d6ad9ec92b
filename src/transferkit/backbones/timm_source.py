"""Image backbones built from timm architectures: ``timm:<name>`` (hub weights) and local timm folders."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BackboneUnavailableError, TransferkitError
from .base import Backbone, BatchImageTransform, ImagePreprocess, prepare_images
from .registry import BackboneInfo, SourceInfo, hub_note, hub_reachable, parse_bool, register_source


class TimmBackbone(Backbone):
    """A timm model used up to its pre-logits features; its ImageNet classifier is kept for source scores."""

    _deferred = ("model", "_transform")

    def __init__(self, spec: str, model: nn.Module, pretrained: bool) -> None:
        from timm.data import resolve_data_config

        cfg = resolve_data_config(model=model)
        preprocess = ImagePreprocess(
            input_size=tuple(cfg["input_size"]),
            mean=tuple(float(m) for m in cfg["mean"]),
            std=tuple(float(s) for s in cfg["std"]),
            interpolation=str(cfg["interpolation"]),
            # Transfer sees the whole image: squash to the input size instead of a center crop, which cuts
            # off-centre subjects (the pack's chelsea photo is only right this way).
            crop_pct=1.0,
            crop_mode="squash",
        )
        super().__init__(spec, "image", int(model.num_features), preprocess, pretrained)
        # channels_last: same features (within 1e-6 relative), ~2.5x faster depthwise convs on CPU
        self.model = model.to(memory_format=torch.channels_last)
        self._transform = BatchImageTransform(preprocess.transform())

    def prepare(
        self, items: Sequence[Any], augment: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        x = prepare_images(self._transform, items, augment, generator)
        return x.contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def source_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the backbone's own (e.g. ImageNet) classifier."""
        return self.model(x)

    def blocks(self) -> list[nn.Module]:
        """The model's stage container, plus one last block for what follows it (e.g. conv_head + bn2)."""
        children = dict(self.model.named_children())
        for name in ("blocks", "stages", "layers", "features"):
            seq = children.get(name)
            if isinstance(seq, nn.Sequential | nn.ModuleList):
                after = list(children)[list(children).index(name) + 1 :]
                skip = {id(m) for m in self.unused_modules()}
                top = [
                    children[k]
                    for k in after
                    if id(children[k]) not in skip and any(True for _ in children[k].parameters())
                ]
                return list(seq) + ([nn.Sequential(*top)] if top else [])
        return [m for m in self.model.children() if any(True for _ in m.parameters())]

    def unused_modules(self) -> list[nn.Module]:
        clf = self.model.get_classifier()
        return [clf] if isinstance(clf, nn.Module) and any(True for _ in clf.parameters()) else []

    def source_head(self) -> nn.Module | None:
        clf = self.model.get_classifier()
        if isinstance(clf, nn.Linear) and clf.in_features == self.feature_dim and self.depth is None:
            return clf
        return None

    def fresh_state(self, seed: int) -> dict[str, torch.Tensor] | None:
        """timm's own initialisation of this architecture (e.g. EfficientNet's fan-out normal), with our names."""
        import timm

        arch = (getattr(self.model, "pretrained_cfg", None) or {}).get("architecture")
        if not arch or not timm.is_model(arch):
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = timm.create_model(arch, pretrained=False, num_classes=self.model.num_classes)
        return {f"model.{k}": v for k, v in fresh.state_dict().items()}

    def truncate(self, n: int) -> None:
        """Features after the first ``n`` stages of the stage container, globally average-pooled."""
        children = dict(self.model.named_children())
        names = [k for k in ("blocks", "stages", "layers", "features") if isinstance(children.get(k), nn.Sequential)]
        if not names:
            raise TransferkitError(f"{self.spec} has no blocks/stages container to cut after (layer=).")
        name = names[0]
        stages = children[name]
        if not 1 <= n <= len(stages):
            raise TransferkitError(
                f"{self.spec}: layer={n} is out of range; it has {len(stages)} stages (1..{len(stages)})."
            )
        setattr(self.model, name, stages[:n])
        after = list(children)[list(children).index(name) + 1 :]
        keep = {id(m) for m in self.unused_modules()}
        for k in after:  # e.g. conv_head + bn2 of an EfficientNet, the final norm of a ViT
            if id(children[k]) not in keep and any(True for _ in children[k].parameters()):
                setattr(self.model, k, nn.Identity())
        c, h, w = self.preprocess.input_size
        with torch.no_grad():
            self.feature_dim = int(self.eval()(torch.zeros(1, c, h, w)).shape[1])
        self.depth = n
        self._fingerprint = None


def _hub_error(name: str, err: Exception) -> BackboneUnavailableError:
    return BackboneUnavailableError(
        f"timm:{name} needs pretrained weights from the Hugging Face hub, which cannot be reached here "
        f"({err}). Use an offline pack (see `transferkit backbones`), a local folder saved with "
        f"timm, or run where the hub is reachable."
    )


def _cached_weights(name: str) -> str:
    """Weights of ``name`` already in the local Hugging Face cache, or an error saying the hub is unreachable."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename) if repo else None
        if isinstance(found, str):
            return found
    raise _hub_error(name, ConnectionError("offline, and not in the local Hugging Face cache"))


def _rows() -> list[BackboneInfo]:
    online, why = hub_note()
    return [
        BackboneInfo("timm:<name>", "image", online, f"any timm architecture; {why}"),
        BackboneInfo("timm:<name>?pretrained=false", "image", True, "random init (tests, controls)"),
    ]


@register_source(
    "timm",
    SourceInfo(rows=_rows, detect=lambda p: is_timm_folder(p), from_folder=lambda p: create_timm_from_folder(p),
               list_order=10),
)
def create_timm_backbone(name: str, options: dict[str, str]) -> TimmBackbone:
    """``timm:<name>[?pretrained=false]``: a timm architecture, pretrained from the hub unless told otherwise."""
    import timm

    pretrained = parse_bool(options.pop("pretrained", "true"), "pretrained")
    if options:
        raise TransferkitError(f"Unknown option(s) for timm:{name}: {', '.join(options)}. Known: pretrained.")
    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise TransferkitError(f"timm has no architecture named {name!r}.{hint}")
    spec = f"timm:{name}" + ("" if pretrained else "?pretrained=false")
    if not pretrained:
        return TimmBackbone(spec, timm.create_model(name, pretrained=False), pretrained=False)
    overlay = {} if hub_reachable() else {"file": _cached_weights(name)}  # offline: the local HF cache only
    try:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    except (OSError, RuntimeError, ValueError) as e:  # hub unreachable or weights missing
        raise _hub_error(name, e) from None
    return TimmBackbone(spec, model, pretrained=True)


def is_timm_folder(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return "architecture" in json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def create_timm_from_folder(path: Path) -> TimmBackbone:
    """A folder with timm's ``config.json`` + ``model.safetensors`` (as ``timm`` pushes to the hub)."""
    import timm
    from safetensors.torch import load_file

    cfg = json.loads((path / "config.json").read_text())
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise BackboneUnavailableError(f"{path} has a timm config.json but no model.safetensors next to it.")
    kwargs = {"num_classes": cfg.get("num_classes", 1000)}
    model = timm.create_model(
        cfg["architecture"], pretrained=False, pretrained_cfg_overlay=cfg.get("pretrained_cfg", {}), **kwargs
    )
    model.load_state_dict(load_file(str(weights)))
    return TimmBackbone(str(path.resolve()), model, pretrained=True)
