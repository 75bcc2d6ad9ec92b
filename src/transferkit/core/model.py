"""The transferred model: a backbone, a head and a label map, with timm's forward_features/forward_head shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._labels import label_indices, target_values
from ..backbones.base import Backbone
from ..errors import DataError, TransferkitError
from .heads import MLPHead, linear_head


@dataclass(frozen=True)
class Prediction:
    """One prediction: the label, its probability, and every class's probability."""

    label: str
    probability: float
    probabilities: dict[str, float]
    value: float | None = None
    """A regression model's prediction (None for classes)."""


def head_config(head: nn.Module) -> dict[str, Any]:
    """JSON description of a head, enough to rebuild it before loading its weights."""
    if isinstance(head, MLPHead):
        return {
            "type": "mlp",
            "in_features": head[0].in_features,
            "hidden": head[0].out_features,
            "num_classes": head[-1].out_features,
        }
    if isinstance(head, nn.Linear):
        return {"type": "linear", "in_features": head.in_features, "num_classes": head.out_features}
    raise TypeError(f"Cannot describe head of type {type(head).__name__}")


def build_head(cfg: dict[str, Any]) -> nn.Module:
    if cfg["type"] == "mlp":
        return MLPHead(cfg["in_features"], cfg["num_classes"], cfg["hidden"])
    return linear_head(cfg["in_features"], cfg["num_classes"])


def _is_one_image_array(x: Any) -> bool:
    """A single HxW or HxWxC uint8 array (as opposed to a batch of images)."""
    return isinstance(x, np.ndarray) and (x.ndim == 2 or (x.ndim == 3 and x.shape[-1] in (1, 3, 4)))


class TransferModel(nn.Module):
    """``backbone -> head`` over a fixed label map; ``predict`` takes raw images or texts."""

    def __init__(
        self, backbone: Backbone, head: nn.Module, classes: Sequence[str], task: str = "classification"
    ) -> None:
        super().__init__()
        outputs = head_config(head)["num_classes"]
        if task == "regression" and (outputs != 1 or classes):
            raise ValueError("a regression model has one output and no classes")
        if task != "regression" and outputs != len(classes):
            raise ValueError("head outputs and number of classes differ")
        self.task = task
        """"classification" (``predict_proba``) or "regression" (``predict_values``: one number per input)."""
        self.backbone = backbone
        self.head = head
        self.classes = list(classes)
        self.temperature = 1.0
        """Logits are divided by it in ``predict_proba`` (temperature scaling; 1: none)."""
        self.tta = False
        """Test-time augmentation of an image classifier: each input's logits are averaged with its mirror image's
        in ``predict_proba`` (training and the training loop's validation do not use it)."""

    def forward_features(self, batch: Any) -> torch.Tensor:
        return self.backbone(batch)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return nn.Sequential(*list(self.head)[:-1])(features) if isinstance(self.head, MLPHead) else features
        return self.head(features)

    def forward(self, batch: Any) -> torch.Tensor:
        return self.forward_head(self.forward_features(batch))

    def reset_head(self, num_classes: int, classes: Sequence[str] | None = None) -> None:
        """Replace the head with a fresh linear layer for ``num_classes`` outputs."""
        self.head = linear_head(self.backbone.feature_dim, num_classes)
        self.classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]

    @property
    def modality(self) -> str:
        return self.backbone.modality

    @torch.inference_mode()
    def predict_values(self, inputs: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """The predicted number (N,) for each raw input, for a regression model."""
        if self.task != "regression":
            raise TransferkitError("This model predicts classes: use predict_proba or predict.")
        return self._outputs(inputs, batch_size)[:, 0].astype(np.float64)

    @torch.inference_mode()
    def predict_proba(self, inputs: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N, C) for raw inputs (image paths / arrays / PIL images, or texts)."""
        if self.task == "regression":
            raise TransferkitError("This model predicts a number, not classes: use predict_values.")
        logits = self._outputs(inputs, batch_size) / self.temperature
        z = np.exp(logits - logits.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    def _outputs(self, inputs: Sequence[Any], batch_size: int) -> np.ndarray:
        """The head's raw outputs (N, outputs) in float32, batch by batch."""
        if isinstance(inputs, str | Path) or _is_one_image_array(inputs):
            inputs = [inputs]
        items = list(inputs)
        if not items:
            raise DataError("predict got no inputs.")
        if self.modality == "text":
            for i, it in enumerate(items):
                if not isinstance(it, str) or not it.strip():
                    raise DataError(f"Input {i} is not a non-empty text.")
        self.eval()
        out = []
        device = next(self.parameters()).device
        for start in range(0, len(items), batch_size):
            batch = self.backbone.to_device(self.backbone.prepare(items[start : start + batch_size]), device)
            logits = self(batch).float()
            if self.tta and self.task != "regression" and isinstance(batch, torch.Tensor):
                logits = (logits + self(batch.flip(-1)).float()) / 2
            out.append(logits.detach().cpu().numpy())
        return np.concatenate(out)

    def predict(self, inputs: Sequence[Any], batch_size: int = 64) -> list[Prediction]:
        """The most likely label and its probability for each input (a regression model: the value, as its label
        and in ``value``)."""
        if self.task == "regression":
            return [Prediction(f"{v:.6g}", float("nan"), {}, float(v)) for v in self.predict_values(inputs, batch_size)]
        proba = self.predict_proba(inputs, batch_size)
        return [
            Prediction(self.classes[int(p.argmax())], float(p.max()), dict(zip(self.classes, p.tolist(), strict=True)))
            for p in proba
        ]

    def target_values(self, labels: Sequence[str], where: str = "data") -> np.ndarray:
        """A regression model's true values from label strings; one that is not a number is an error naming it."""
        return target_values(labels, where)

    def label_indices(self, labels: Sequence[str], where: str = "data") -> np.ndarray:
        """Map label strings to class indices; a label unknown to the model is an error naming it."""
        return label_indices(self.classes, labels, where)

    def to_onnx(
        self, path: str | Path, *, check_inputs: Sequence[Any] | None = None, overwrite: bool = False
    ) -> Any:
        """One ONNX graph of backbone + head (LoRA merged), with its description and tokenizer beside it, written
        only after onnxruntime matched PyTorch on real inputs (see ``transferkit.core.onnx_export``)."""
        from .onnx_export import export_onnx

        return export_onnx(self, path, check_inputs=check_inputs, overwrite=overwrite)

    def save(self, path: str | Path) -> Path:
        """Write safetensors + JSON to a folder (see ``transferkit.core.export``)."""
        from .export import save_model

        return save_model(self, path)
