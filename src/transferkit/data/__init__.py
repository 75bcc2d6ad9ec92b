"""Datasets: image folders, CSV/JSONL, arrays and built-ins, with seeded stratified splits."""

from .builtin import DATASETS, BuiltinDataset, load_builtin
from .dataset import Dataset, Splits, make_splits
from .sources import from_arrays, from_folder, from_table, load_data
from .spec import DataSpec, SplitSpec

__all__ = [
    "DATASETS",
    "BuiltinDataset",
    "DataSpec",
    "Dataset",
    "SplitSpec",
    "Splits",
    "from_arrays",
    "from_folder",
    "from_table",
    "load_builtin",
    "load_data",
    "make_splits",
]
