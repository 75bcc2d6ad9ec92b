"""transferkit: transfer learning on your own images and texts, compared honestly with training from scratch."""

from ._version import __version__
from .api import FitResult, fit
from .backbones import create_backbone, list_backbones
from .compare import CompareResult, compare
from .data import DATASETS as datasets
from .data import Dataset, from_arrays, from_folder, from_table, load_builtin
from .distillation import DistillResult, distill
from .domain import AdaptResult, adapt
from .errors import BackboneUnavailableError, DataError, TransferkitError
from .export import load
from .model import Prediction, TransferModel
from .ranking import RankResult, rank

__all__ = [
    "AdaptResult",
    "BackboneUnavailableError",
    "CompareResult",
    "DataError",
    "Dataset",
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
    "distill",
    "fit",
    "from_arrays",
    "from_folder",
    "from_table",
    "list_backbones",
    "load",
    "load_builtin",
    "rank",
]
