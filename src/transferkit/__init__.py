"""transferkit: transfer learning on your own images and texts, compared honestly with training from scratch.

The names below load on first use (PEP 562), so that ``import transferkit.onnx_runtime`` (an exported model run with
onnxruntime) imports neither torch nor transformers."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

_WHERE = {
    "create_backbone": "backbones", "list_backbones": "backbones",
    "load": "core.export", "Prediction": "core.model", "TransferModel": "core.model",
    "Dataset": "data", "from_arrays": "data", "from_folder": "data", "from_table": "data", "load_builtin": "data",
    "BackboneUnavailableError": "errors", "DataError": "errors", "TransferkitError": "errors",
    "AnomalyDetector": "methods.detector", "load_detector": "methods.detector",
    "AdaptResult": "workflows.adapt", "adapt": "workflows.adapt",
    "CompareResult": "workflows.compare", "compare": "workflows.compare",
    "DetectResult": "workflows.detect", "detect": "workflows.detect",
    "DistillResult": "workflows.distill", "distill": "workflows.distill",
    "FitResult": "workflows.fit", "fit": "workflows.fit",
    "RankResult": "workflows.rank", "rank": "workflows.rank",
    "OnnxModel": "onnx_runtime",
}

if TYPE_CHECKING:
    from .backbones import create_backbone, list_backbones
    from .core.export import load
    from .core.model import Prediction, TransferModel
    from .data import DATASETS as datasets
    from .data import Dataset, from_arrays, from_folder, from_table, load_builtin
    from .errors import BackboneUnavailableError, DataError, TransferkitError
    from .methods.detector import AnomalyDetector, load_detector
    from .onnx_runtime import OnnxModel
    from .workflows.adapt import AdaptResult, adapt
    from .workflows.compare import CompareResult, compare
    from .workflows.detect import DetectResult, detect
    from .workflows.distill import DistillResult, distill
    from .workflows.fit import FitResult, fit
    from .workflows.rank import RankResult, rank


def __getattr__(name: str) -> Any:
    if name == "datasets":
        value = import_module(".data", __name__).DATASETS
    elif name in _WHERE:
        value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'transferkit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE, "datasets"])


__all__ = [
    "AdaptResult",
    "AnomalyDetector",
    "BackboneUnavailableError",
    "CompareResult",
    "DataError",
    "Dataset",
    "DetectResult",
    "DistillResult",
    "FitResult",
    "OnnxModel",
    "Prediction",
    "RankResult",
    "TransferModel",
    "TransferkitError",
    "__version__",
    "adapt",
    "compare",
    "create_backbone",
    "datasets",
    "detect",
    "distill",
    "fit",
    "from_arrays",
    "from_folder",
    "from_table",
    "list_backbones",
    "load",
    "load_builtin",
    "load_detector",
    "rank",
]
