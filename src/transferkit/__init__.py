"""transferkit: transfer learning on your own images and texts, compared honestly with training from scratch."""

__version__ = "0.1.0"

from .api import FitResult, fit  # noqa: E402
from .backbones import create_backbone, list_backbones  # noqa: E402
from .compare import CompareResult, compare  # noqa: E402
from .data import DATASETS as datasets  # noqa: E402
from .data import Dataset, from_arrays, from_folder, from_table, load_builtin  # noqa: E402
from .distillation import DistillResult, distill  # noqa: E402
from .domain import AdaptResult, adapt  # noqa: E402
from .errors import BackboneUnavailableError, DataError, TransferkitError  # noqa: E402
from .export import load  # noqa: E402
from .model import Prediction, TransferModel  # noqa: E402
from .ranking import RankResult, rank  # noqa: E402

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
