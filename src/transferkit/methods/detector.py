"""A saved anomaly detector: a frozen pretrained backbone's features scored by a detector fitted on normal data.

The folder holds ``detector.json`` (backbone spec and fingerprint, preprocessing, the detector's parameters,
standardisation and threshold) and ``detector.safetensors`` (its arrays); nothing is unpickled on load.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..backbones.base import Backbone
from ..errors import TransferkitError
from .anomaly import Detector, check_detector, check_state

DETECTOR_CONFIG = "detector.json"
DETECTOR_FILES = frozenset({DETECTOR_CONFIG, "detector.safetensors", "backbone.safetensors"})


@dataclass
class Scored:
    """One input's standardised anomaly score and verdict."""

    score: float
    anomaly: bool

    @property
    def verdict(self) -> str:
        return "anomaly" if self.anomaly else "normal"


class AnomalyDetector:
    """``backbone`` features of an input, scored by ``detector``: above ``detector.threshold`` is an anomaly."""

    task = "detection"

    def __init__(self, backbone: Backbone, detector: Detector, rate: dict[str, float] | None = None) -> None:
        self.backbone = backbone
        self.detector = detector
        self.rate = rate or {}
        """How the threshold was set: {"fpr": p} or {"contamination": p}."""

    @property
    def modality(self) -> str:
        return self.backbone.modality

    def features(self, inputs: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """Backbone features (N, D) of raw inputs (texts, image paths or arrays)."""
        from PIL import Image

        from ..core.model import _is_one_image_array
        from ..errors import DataError

        one = isinstance(inputs, str | Path | Image.Image) or _is_one_image_array(inputs)
        items = [inputs] if one else list(inputs)
        if not items:
            raise DataError("detect got no inputs to score.")
        if self.modality == "text" and not all(isinstance(t, str) and t.strip() for t in items):
            raise DataError("Every input to a text detector must be a non-empty text.")
        return np.concatenate([self.backbone.embed(items[i : i + batch_size]).cpu().numpy()
                               for i in range(0, len(items), batch_size)])

    def score(self, inputs: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """Standardised anomaly scores (0: a typical normal input; higher: more unusual)."""
        return self.detector.score(self.features(inputs, batch_size))

    def predict(self, inputs: Sequence[Any], batch_size: int = 64) -> list[Scored]:
        """Score and verdict (normal / anomaly) for each input."""
        return [Scored(float(s), bool(s > self.detector.threshold)) for s in self.score(inputs, batch_size)]

    def save(self, path: str | Path) -> Path:
        """Write ``detector.json`` + ``detector.safetensors`` (and a backbone that is not pretrained, its weights)
        into folder ``path``, atomically (a temp folder renamed into place)."""
        from safetensors.numpy import save_file
        from safetensors.torch import save_file as save_tensors

        from .._files import atomic_folder, check_replaceable

        path = Path(path)
        check_replaceable(path, DETECTOR_FILES, "detector")
        path.parent.mkdir(parents=True, exist_ok=True)
        bb = self.backbone
        cfg = {
            "format_version": 1,
            "transferkit_version": __version__,
            "kind": "anomaly-detector",
            "backbone": {"spec": bb.spec, "modality": bb.modality, "feature_dim": bb.feature_dim,
                         "fingerprint": bb.fingerprint(), "weights_saved": not bb.pretrained},
            "preprocess": bb.preprocess.to_dict(),
            "detector": self.detector.to_dict(),
            "threshold_from": self.rate,
        }
        def write(tmp: Path) -> None:
            save_file({k: np.ascontiguousarray(v) for k, v in self.detector.arrays.items()},
                      str(tmp / "detector.safetensors"))
            if not bb.pretrained:  # random weights: what the features came from must travel with the detector
                save_tensors({k: v.detach().cpu().contiguous() for k, v in bb.state_dict().items()},
                             str(tmp / "backbone.safetensors"))
            (tmp / DETECTOR_CONFIG).write_text(json.dumps(cfg, indent=2))

        atomic_folder(path, write)
        return path


def is_detector(path: str | Path) -> bool:
    """Whether ``path`` is a saved detector folder (rather than a model)."""
    return (Path(path) / DETECTOR_CONFIG).is_file()


def load_detector(path: str | Path) -> AnomalyDetector:
    """A detector saved by ``AnomalyDetector.save``, checked: the backbone installed here must have the weights and
    preprocessing it was fitted with; any problem is one sentence naming the file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from ..backbones import create_backbone
    from ..backbones.base import preprocess_from_dict

    path = Path(path)
    file = path / DETECTOR_CONFIG
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
        if cfg.get("kind") != "anomaly-detector" or cfg.get("format_version") != 1:
            raise TransferkitError(f"{file} is not a detector this transferkit reads (kind {cfg.get('kind')!r}, "
                                   f"format {cfg.get('format_version')!r}, saved by {cfg.get('transferkit_version')}).")
        b, d = cfg["backbone"], cfg["detector"]
        name, params = check_detector(d["name"]), dict(d["params"])
        center, scale, threshold = (float(d[k]) for k in ("center", "scale", "threshold"))
        spec, fingerprint, pre = str(b["spec"]), str(b["fingerprint"]), preprocess_from_dict(cfg["preprocess"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise TransferkitError(f"{file} is not a readable detector ({type(e).__name__}: {e}); it is damaged.") from None
    if not all(math.isfinite(v) for v in (center, scale, threshold)) or scale <= 0:
        raise TransferkitError(f"{file}: its standardisation or threshold is not finite (or its scale not positive); "
                               "it is damaged.")
    try:
        arrays = load_file(str(path / "detector.safetensors"))
    except (OSError, SafetensorError) as e:
        raise TransferkitError(f"{path / 'detector.safetensors'} is missing or unreadable ({e}).") from None
    wrong = check_state(name, params, arrays)
    if wrong:
        raise TransferkitError(f"{path}: the {name} detector has {wrong}; it is damaged.")
    backbone = create_backbone(spec)
    if b.get("weights_saved"):
        from ..core.export import _tensors

        backbone.load_state_dict(_tensors(path / "backbone.safetensors", backbone.state_dict()))
        backbone.mark_changed()  # weights replaced: hashed anew
    dim = (arrays["bank"] if "bank" in arrays else arrays["mean"]).shape[-1]
    if dim != backbone.feature_dim:
        raise TransferkitError(f"{path}: the detector takes {dim} features but {spec} gives {backbone.feature_dim}.")
    if pre != backbone.preprocess:
        raise TransferkitError(f"{path}: the preprocessing of {spec} here differs from the one the detector was "
                               "fitted with; scores would be silently wrong.")
    if backbone.fingerprint() != fingerprint:
        raise TransferkitError(f"{path}: the weights of {spec} installed here differ from those the detector was "
                               "fitted with (a different pack or model version); refit it.")
    backbone.freeze()
    det = Detector(name, params, arrays, center, scale, threshold)
    return AnomalyDetector(backbone, det, dict(cfg.get("threshold_from") or {}))
