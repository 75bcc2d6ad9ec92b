"""A model exported by ``transferkit export --onnx``, run with onnxruntime: numpy, PIL and ``tokenizers`` only (no
torch, no transformers), so it runs where they are not installed.

Beside ``model.onnx`` lie ``model.onnx.json`` (task, classes, inputs, preprocessing, the export's parity check) and,
for a text model, ``model.tokenizer.json`` (the tokenizer, with truncation and padding as the backbone used them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._images import load_image
from ._labels import label_indices, target_values
from .errors import DataError, TransferkitError

FORMAT = "transferkit-onnx"
FORMAT_VERSION = 1


def sidecar_path(onnx_path: str | Path) -> Path:
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def tokenizer_path(onnx_path: str | Path) -> Path:
    p = Path(onnx_path)
    return p.with_name(p.stem + ".tokenizer.json")


def resize_and_normalise(images: Sequence[Any], pre: dict[str, Any]) -> np.ndarray:
    """RGB PIL images -> float32 (N, 3, H, W) exactly as the backbone's eval transform (timm's squash or center
    crop, then /255 and the mean/std): PIL does the resizing in both."""
    from PIL import Image

    _, h, w = (int(v) for v in pre["input_size"])
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}.get(
        pre["interpolation"], Image.BICUBIC
    )
    out = []
    for im in images:
        if pre["crop_mode"] == "squash":
            im = im.resize((int(w / pre["crop_pct"]), int(h / pre["crop_pct"])), resample)
        else:  # center (a square input; export refuses others): shorter side to size / crop_pct, then the crop
            scale, (iw, ih) = int(h / pre["crop_pct"]), im.size
            nw, nh = (scale, int(scale * ih / iw)) if iw <= ih else (int(scale * iw / ih), scale)
            im = im.resize((nw, nh), resample)
        iw, ih = im.size
        top, left = int(round((ih - h) / 2.0)), int(round((iw - w) / 2.0))
        if (iw, ih) != (w, h):
            im = im.crop((left, top, left + w, top + h))
        out.append(np.asarray(im, dtype=np.uint8))
    x = np.stack(out).astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255)
    mean = np.asarray(pre["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(pre["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return ((x - mean) / std).astype(np.float32)


class OnnxModel:
    """``predict_proba`` / ``predict_values`` / ``predict`` of an exported model, like ``TransferModel``'s."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        meta_file = sidecar_path(self.path)
        if not self.path.is_file():
            raise TransferkitError(f"{self.path} does not exist (an ONNX file written by transferkit export).")
        if not meta_file.is_file():
            raise TransferkitError(f"{self.path} has no {meta_file.name} beside it: export it with transferkit "
                                   "export MODEL_DIR --onnx FILE.")
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError) as e:
            raise TransferkitError(f"{meta_file} is not readable JSON: {e}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise TransferkitError(f"{meta_file} is not a transferkit ONNX description.")
        if meta.get("format_version") != FORMAT_VERSION:
            raise TransferkitError(f"{meta_file} has format version {meta.get('format_version')!r}; this transferkit "
                                   f"reads {FORMAT_VERSION}.")
        self.meta = meta
        self.task: str = meta["task"]
        self.classes: list[str] = list(meta["classes"])
        self.modality: str = meta["modality"]
        try:
            import onnxruntime as ort
        except ImportError:
            raise TransferkitError("Running an ONNX model needs onnxruntime: pip install onnxruntime") from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = None
        if self.modality == "text":
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(tokenizer_path(self.path)))
            t = meta["text"]
            tok.enable_truncation(int(t["max_length"]))
            tok.enable_padding(pad_id=int(t["pad_id"]), pad_token=str(t["pad_token"]),
                               direction=str(t["padding_side"]))
            self.tokenizer = tok

    def label_indices(self, labels: Sequence[str], where: str = "data") -> np.ndarray:
        """Class indices of label strings; an unknown label is an error naming it."""
        return label_indices(self.classes, labels, where)

    def target_values(self, labels: Sequence[str], where: str = "data") -> np.ndarray:
        """True values of a regression model from label strings."""
        return target_values(labels, where)

    def inputs(self, items: Sequence[Any]) -> dict[str, np.ndarray]:
        """The graph's inputs for a batch of raw items."""
        if self.modality == "text":
            for i, it in enumerate(items):
                if not isinstance(it, str) or not it.strip():
                    raise DataError(f"Input {i} is not a non-empty text.")
            enc = self.tokenizer.encode_batch(list(items))  # type: ignore[union-attr]
            return {"input_ids": np.asarray([e.ids for e in enc], dtype=np.int64),
                    "attention_mask": np.asarray([e.attention_mask for e in enc], dtype=np.int64)}
        return {"pixels": resize_and_normalise([load_image(it) for it in items], self.meta["preprocess"])}

    def _outputs(self, inputs: Sequence[Any], batch_size: int) -> np.ndarray:
        if isinstance(inputs, str | Path):
            inputs = [inputs]
        items = list(inputs)
        if not items:
            raise DataError("predict got no inputs.")
        out = [self.session.run(None, self.inputs(items[i : i + batch_size]))[0]
               for i in range(0, len(items), batch_size)]
        return np.concatenate(out).astype(np.float64)

    def predict_proba(self, inputs: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N, C); the graph applies the model's temperature and test-time augmentation."""
        if self.task == "regression":
            raise TransferkitError("This model predicts a number, not classes: use predict_values.")
        return self._outputs(inputs, batch_size)

    def predict_values(self, inputs: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """The predicted number (N,) of a regression model."""
        if self.task != "regression":
            raise TransferkitError("This model predicts classes: use predict_proba or predict.")
        return self._outputs(inputs, batch_size).reshape(-1)

    def predict(self, inputs: Sequence[Any], batch_size: int = 64) -> list[dict[str, Any]]:
        """label, probability and every class's probability (a regression model: its value) per input."""
        if self.task == "regression":
            return [{"label": f"{v:.6g}", "value": float(v)} for v in self.predict_values(inputs, batch_size)]
        return [{"label": self.classes[int(p.argmax())], "probability": float(p.max()),
                 "probabilities": dict(zip(self.classes, p.tolist(), strict=True))}
                for p in self.predict_proba(inputs, batch_size)]
