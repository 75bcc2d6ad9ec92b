"""Backbones from spec strings: ``pack:...``, ``timm:...``, ``hf:...`` or a local folder."""

from .base import Backbone, ImagePreprocess, TextPreprocess, load_image
from .registry import BackboneInfo, create_backbone, list_backbones, parse_spec, register_source

__all__ = [
    "Backbone",
    "BackboneInfo",
    "ImagePreprocess",
    "TextPreprocess",
    "create_backbone",
    "list_backbones",
    "load_image",
    "parse_spec",
    "register_source",
]
