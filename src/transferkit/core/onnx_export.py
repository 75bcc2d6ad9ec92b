"""``transferkit export --onnx``: a saved model as one ONNX graph (backbone and head, LoRA adapters merged, the
temperature and test-time augmentation inside), checked against PyTorch on real inputs before it is written."""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._files import json_text
from .._version import __version__
from ..errors import TransferkitError
from ..onnx_runtime import FORMAT, FORMAT_VERSION, OnnxModel, sidecar_path, tokenizer_path
from .model import TransferModel

TOLERANCE = 1e-4
"""Largest absolute difference of a probability (or of a regression value, relative to its scale) allowed."""

CHECK_TEXTS = (
    "The flight was delayed for three hours and nobody told us why.",
    "Great service, friendly crew, on time.",
    "ok",
    "I have been waiting on hold for forty minutes; this is the worst customer service I have ever had, and I "
    "will not fly with you again unless something changes, because my bags are still missing after two days.",
    "Free entry! Win a brand new phone, text WIN to 80085 now.",
    "Are we still on for lunch tomorrow?",
    "The plot was thin but the acting carried it.",
    "Terrible.",
    "Thanks for the quick refund, much appreciated!",
    "Can someone explain why my seat was given away?",
    " ".join(["A very long review that goes on and on about every detail of the trip."] * 40),
    "Meh",
)
"""Texts of every length (one far past any max_length, so truncation is checked too)."""


@dataclass(frozen=True)
class OnnxExport:
    """What ``export_onnx`` wrote and how closely onnxruntime reproduced PyTorch."""

    path: Path
    files: list[Path]
    max_abs_diff: float
    checked: int
    tolerance: float
    task: str = "classification"

    def sentence(self) -> str:
        """One line for the user: how many inputs were compared and the largest difference found."""
        what = ("value difference (relative to the values' spread)" if self.task == "regression"
                else "probability difference")
        return (f"ONNX parity on {self.checked} real inputs: largest {what} from PyTorch "
                f"{self.max_abs_diff:.2e} (at most {self.tolerance:.0e} allowed)")


class _Graph(nn.Module):
    """What the ONNX graph computes: the model's probabilities (or values) from preprocessed inputs."""

    def __init__(self, model: TransferModel) -> None:
        super().__init__()
        self.model = model
        self.text = model.modality == "text"
        self.regression = model.task == "regression"
        self.tta = bool(model.tta) and not self.regression and not self.text
        self.temperature = float(model.temperature)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        batch: Any = {"input_ids": inputs[0], "attention_mask": inputs[1]} if self.text else inputs[0]
        out = self.model(batch)
        if self.tta:
            out = (out + self.model(batch.flip(-1))) / 2
        if self.regression:
            return out[:, 0]
        return torch.softmax(out / self.temperature, dim=-1)


def merge_adapters(model: nn.Module) -> int:
    """Fold every LoRA adapter into its base weight, in place; returns how many were merged."""
    if not any("lora_" in n for n, _ in model.named_parameters()):
        return 0
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.merge()
    return len(layers)


def default_check_inputs(model: TransferModel) -> list[Any]:
    """Real inputs to compare the two runtimes on: built-in texts, or embedded Fashion-MNIST photos (some cropped
    to other aspect ratios and sizes)."""
    if model.modality == "text":
        return list(CHECK_TEXTS)
    from ..data import load_builtin

    ds = load_builtin("fashion-mnist-small")
    images = [np.asarray(ds.items[i]) for i in range(0, 160, 10)]
    return images[:12] + [images[12][:, 3:], images[13][5:, :], np.kron(images[14], np.ones((9, 9), np.uint8))]


def export_onnx(
    model: TransferModel, path: str | Path, *, check_inputs: Sequence[Any] | None = None, overwrite: bool = False,
    tolerance: float = TOLERANCE,
) -> OnnxExport:
    """Write ``path`` (the graph), ``path.json`` (task, classes, preprocessing, parity) and, for texts,
    ``<stem>.tokenizer.json``; refused, with nothing written, when onnxruntime differs from PyTorch by more than
    ``tolerance`` on ``check_inputs`` (default: ``default_check_inputs``)."""
    for module, pip in (("onnx", "onnx"), ("onnxruntime", "onnxruntime")):
        import importlib.util

        if importlib.util.find_spec(module) is None:
            raise TransferkitError(f"ONNX export needs {module}: pip install 'transferkit[onnx]' (or {pip}).")
    if model.task not in ("classification", "regression"):
        raise TransferkitError(f"ONNX export takes classifiers and regressors, not a {model.task} model.")
    path = Path(path)
    if path.suffix != ".onnx":
        raise TransferkitError(f"{path}: the ONNX file's name must end in .onnx.")
    text = model.modality == "text"
    targets = [path, sidecar_path(path)] + ([tokenizer_path(path)] if text else [])
    taken = [p for p in targets if p.exists()]
    if taken and not overwrite:
        raise TransferkitError(f"{taken[0]} exists; pass --overwrite to replace it.")
    if not path.parent.is_dir():
        raise TransferkitError(f"Cannot write {path.name} into {path.parent}: that folder does not exist (create it "
                               "first).")
    if not os.access(path.parent, os.W_OK):
        raise TransferkitError(f"Cannot write into {path.parent}: it is not a writable folder.")
    pre = model.backbone.preprocess.to_dict()
    if not text and (pre["crop_mode"] not in ("squash", "center") or
                     (pre["crop_mode"] == "center" and pre["input_size"][1] != pre["input_size"][2])):
        raise TransferkitError(f"ONNX export: the image preprocessing {pre['crop_mode']!r} at {pre['input_size']} "
                               "is not one the ONNX runner reproduces (squash, or center on a square input).")
    graph = _Graph(copy.deepcopy(model).cpu().eval()).eval()
    merged = merge_adapters(graph.model.backbone)
    meta: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "transferkit": __version__, "task": model.task,
        "classes": list(model.classes), "modality": model.modality, "backbone": model.backbone.spec,
        "output": "value" if model.task == "regression" else "probabilities", "temperature": graph.temperature,
        "tta": graph.tta, "lora_layers_merged": merged,
    }
    if text:
        tok = model.backbone.tokenizer
        if not hasattr(tok, "backend_tokenizer"):
            raise TransferkitError("ONNX export of a text model needs a fast (Rust) tokenizer; this one is "
                                   f"{type(tok).__name__}.")
        enc = model.backbone.prepare(["ok", "a longer text, so that the traced batch holds padding"])
        example: tuple[torch.Tensor, ...] = (enc["input_ids"], enc["attention_mask"])
        names = ["input_ids", "attention_mask"]
        axes = {n: {0: "batch", 1: "sequence"} for n in names}
        meta["inputs"] = names
        meta["text"] = {"max_length": model.backbone.preprocess.max_length, "pad_id": int(tok.pad_token_id),
                        "pad_token": str(tok.pad_token), "padding_side": str(tok.padding_side),
                        "tokenizer": tokenizer_path(path).name}
    else:
        example = (torch.zeros(2, *pre["input_size"]),)
        names = ["pixels"]
        axes = {"pixels": {0: "batch"}}
        meta["inputs"] = names
        meta["preprocess"] = pre
    out_name = meta["output"]
    axes[out_name] = {0: "batch"}
    work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        tmp = work / path.name
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            _export(graph, example, tmp, names, out_name, axes)
        if text:
            model.backbone.tokenizer.backend_tokenizer.save(str(tokenizer_path(tmp)))
        sidecar_path(tmp).write_text(json_text(meta))
        items = list(check_inputs) if check_inputs is not None else default_check_inputs(model)
        diff = parity(model, OnnxModel(tmp), items)
        if not diff <= tolerance:
            raise TransferkitError(f"ONNX export refused: onnxruntime differs from PyTorch by {diff:.2e} on "
                                   f"{len(items)} inputs (at most {tolerance:.0e} allowed); nothing was written.")
        meta["parity"] = {"inputs": len(items), "max_abs_diff": diff, "tolerance": tolerance,
                          "checked_with": "default" if check_inputs is None else "given"}
        sidecar_path(tmp).write_text(json_text(meta))
        for target in targets:
            os.replace(work / target.name, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return OnnxExport(path, targets, diff, len(items), tolerance, model.task)


def _export(graph: nn.Module, example: tuple[torch.Tensor, ...], out: Path, names: list[str], output: str,
            axes: dict[str, dict[int, str]]) -> None:
    """The TorchScript-based exporter (seconds); the torch.export-based one where that is missing."""
    try:
        torch.onnx.export(graph, example, str(out), input_names=names, output_names=[output], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
        return
    except TypeError:  # a torch without the dynamo= switch or without the TorchScript exporter
        pass
    dims = {i: torch.export.Dim(n) for i, n in axes[names[0]].items()}
    torch.onnx.export(graph, example, str(out), input_names=names, output_names=[output],
                      dynamic_shapes=tuple(dims for _ in names), dynamo=True)


def parity(model: TransferModel, onnx_model: OnnxModel, items: Sequence[Any]) -> float:
    """Largest absolute difference between PyTorch's and onnxruntime's outputs on the same raw inputs (a
    regression model's values divided by their spread, so that the tolerance means the same at any scale)."""
    if not items:
        raise TransferkitError("The ONNX parity check needs at least one input.")
    if model.task == "regression":
        ours, theirs = model.predict_values(items, batch_size=8), onnx_model.predict_values(items, batch_size=8)
        scale = max(float(np.std(ours)), float(np.abs(ours).mean()), 1e-12)
        return float(np.abs(ours - theirs).max() / scale)
    ours, theirs = model.predict_proba(items, batch_size=8), onnx_model.predict_proba(items, batch_size=8)
    return float(np.abs(ours - theirs).max())


def describe(path: str | Path) -> dict[str, Any]:
    """The JSON description beside an exported ONNX file."""
    return json.loads(sidecar_path(path).read_text())
