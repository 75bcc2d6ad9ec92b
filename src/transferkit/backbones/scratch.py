"""Small networks trained from random init: the control run (and, later, distillation students)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import TransferkitError
from .base import Backbone, BatchImageTransform, ImagePreprocess, prepare_images
from .registry import BackboneInfo, SourceInfo, register_source


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three conv stages (32-64-128 channels), global average pooling, dropout, linear classifier."""

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 32, dropout: float = 0.3) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv(in_chans, w),
            _conv(w, w),
            nn.MaxPool2d(2),
            _conv(w, 2 * w),
            _conv(2 * w, 2 * w),
            nn.MaxPool2d(2),
            _conv(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.num_features = 4 * w
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * w, num_classes))

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.head(self.features(x))


class _SquashedImages(Backbone):
    """A small image network from zero: images squashed to ``size`` x ``size`` (bilinear), then ``(x - mean) / std``
    per channel."""

    def __init__(self, spec: str, size: int, feature_dim: int, mean: float, std: float) -> None:
        pre = ImagePreprocess(input_size=(3, size, size), mean=(mean,) * 3, std=(std,) * 3, interpolation="bilinear",
                              crop_pct=1.0, crop_mode="squash")
        super().__init__(spec, "image", feature_dim, pre, pretrained=False)
        self._transform = BatchImageTransform(pre.transform())

    def prepare(
        self, items: Sequence[Any], augment: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return prepare_images(self._transform, items, augment, generator, scale=(0.8, 1.0)).contiguous()


class ScratchCNNBackbone(_SquashedImages):
    """``scratch:cnn[?size=32&width=32]``: ``SmallCNN``'s convolutional features from a seeded random init, as a
    backbone, so that a small model trained from zero (a distillation student) saves, loads and predicts like any
    other; ``size`` is the input side in pixels."""

    def __init__(self, spec: str, size: int, width: int) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = SmallCNN(num_classes=1, width=width, dropout=0.0)
        super().__init__(spec, size, net.num_features, 0.5, 0.5)
        self.features = net.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def blocks(self) -> list[nn.Module]:
        return [m for m in self.features if any(True for _ in m.parameters())]


class PixelPCABackbone(_SquashedImages):
    """``scratch:pixels?size=32&components=K``: an image's raw pixels (``size`` px, in [0, 1]) projected on K
    principal directions, as the pixel model of the from-scratch control fits them; the mean and the directions
    are weights (zero until a saved model or the control fills them), so the control saves and predicts like any
    other model."""

    def __init__(self, spec: str, size: int, components: int) -> None:
        super().__init__(spec, size, components, 0.0, 1.0)
        dim = 3 * size * size
        self.mean = nn.Parameter(torch.zeros(dim), requires_grad=False)
        self.proj = nn.Parameter(torch.zeros(components, dim), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.mean) @ self.proj.T

    def blocks(self) -> list[nn.Module]:
        return []


@register_source(
    "scratch",
    SourceInfo(rows=lambda: [BackboneInfo("scratch:cnn?size=32", "image", True, "small CNN from random init")],
               list_order=30),
)
def create_scratch_backbone(name: str, options: dict[str, str]) -> Backbone:
    """``scratch:cnn[?size=32|64&width=N]``: a small CNN from random init (students, controls);
    ``scratch:pixels?size=N&components=K``: the control's pixel model's projection (see ``PixelPCABackbone``)."""
    if name == "pixels":
        return _pixels(options)
    if name != "cnn":
        raise TransferkitError(f"Unknown scratch network {name!r}; known: cnn, pixels.")
    size, width = _int_options("cnn", options, {"size": 32, "width": 32})
    if not 8 <= size <= 512 or not 4 <= width <= 256:
        raise TransferkitError(f"scratch:cnn: size must be 8-512 pixels and width 4-256 (got {size}, {width}).")
    spec = f"scratch:cnn?size={size}&width={width}"
    return ScratchCNNBackbone(spec, size, width)


def _pixels(options: dict[str, str]) -> Backbone:
    size, components = _int_options("pixels", options, {"size": 32, "components": 32})
    if not 8 <= size <= 512 or not 1 <= components <= 3 * size * size:
        raise TransferkitError(f"scratch:pixels: size must be 8-512 pixels and components 1-{3 * size * size} "
                               f"(got {size}, {components}).")
    return PixelPCABackbone(f"scratch:pixels?size={size}&components={components}", size, components)


def _int_options(name: str, options: dict[str, str], defaults: dict[str, int]) -> list[int]:
    """``scratch:<name>``'s whole-number options, in ``defaults``' order; unknown or non-numeric ones are errors."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TransferkitError(f"Unknown option(s) for scratch:{name}: {', '.join(unknown)}. "
                               f"Known: {', '.join(defaults)}.")
    try:
        return [int(options.get(k, d)) for k, d in defaults.items()]
    except ValueError:
        raise TransferkitError(f"scratch:{name} options {' and '.join(defaults)} must be whole numbers.") from None
