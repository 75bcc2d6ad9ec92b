"""transferkit: transfer learning on your own images and texts, compared honestly with training from scratch."""

from ._version import __version__
from .backbones import create_backbone, list_backbones
from .core.export import load
from .core.model import Prediction, TransferModel
from .data import DATASETS as datasets
from .data import Dataset, from_arrays, from_folder, from_table, load_builtin
from .errors import BackboneUnavailableError, DataError, TransferkitError
from .methods.detector import AnomalyDetector, load_detector
from .workflows.adapt import AdaptResult, adapt
from .workflows.compare import CompareResult, compare
from .workflows.detect import DetectResult, detect
from .workflows.distill import DistillResult, distill
from .workflows.fit import FitResult, fit
from .workflows.rank import RankResult, rank

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
