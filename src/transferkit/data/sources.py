"""Adapters from a user's files or arrays to a Dataset: image folders, CSV/JSONL tables, in-memory arrays."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .dataset import Dataset

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val",
               "test": "test", "testing": "test"}
"""Split names users' folders and ``split`` columns use, and the part each stands for."""


def split_layout(root: Path) -> dict[str, Path] | None:
    """``{"train": root/train, "val": root/valid, "test": root/test}`` when ``root`` is laid out as train/ val/ test/
    folders (ImageFolder / Keras ``image_dataset_from_directory`` style: each holds class subfolders), else None."""
    subs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    parts = {SPLIT_NAMES.get(p.name.lower()): p for p in subs}
    if not subs or None in parts or "train" not in parts or len(parts) != len(subs):
        return None
    if not all(any(c.is_dir() for c in p.iterdir()) for p in parts.values()):
        return None  # class folders named like splits, holding images directly
    return {part: parts[part] for part in ("train", "val", "test") if part in parts}


def from_folder(root: str | Path) -> Dataset:
    """An image folder with one subfolder per class (``root/<class>/<image>``), or train/ val/ test/ folders of
    such class subfolders (used as given: nothing is split off for a part that is there)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder.")
    layout = split_layout(root)
    if layout is not None:
        parts = [(_class_folders(path), part) for part, path in layout.items()]
        return concat(parts, name=str(root), layout=f"{', '.join(p.name + '/' for p in layout.values())} folders")
    return _class_folders(root)


def _class_folders(root: Path) -> Dataset:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        hint = " It has images but no class subfolders;" if loose else ""
        raise DataError(f"{root} has no class subfolders.{hint} Put each class's images in root/<class>/.")
    items: list[str] = []
    labels: list[str] = []
    for d in class_dirs:
        files = sorted(
            p
            for p in d.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if not files:
            raise DataError(
                f"Class folder {d} has no images (expected files ending in {', '.join(sorted(IMAGE_EXTENSIONS))})."
            )
        items += [str(p) for p in files]
        labels += [d.name] * len(files)
    return Dataset(items, labels, "image", name=str(root))


def concat(
    parts: Sequence[tuple[Dataset, str | None]], name: str, layout: str = "", classes: bool = True
) -> Dataset:
    """One Dataset of ``parts``, each item marked with its part ("train", "val", "test"; None: the marks the part
    already has, "train" where it has none); with ``classes``, every other part's classes must be among the training
    part's (not for numeric targets)."""
    train = [d for d, part in parts if part in ("train", None)]
    known = set().union(*(d.classes for d in train)) if train else set()
    modality = parts[0][0].modality
    items: list[Any] = []
    labels: list[str] = []
    split: list[str] = []
    for d, part in parts:
        if d.modality != modality:
            raise DataError(f"{d.name} holds {d.modality}s; {parts[0][0].name} holds {modality}s.")
        unknown = sorted(set(d.classes) - known) if classes and part not in ("train", None) else []
        if unknown:
            raise DataError(
                f"{d.name} ({part}) has class(es) {', '.join(map(repr, unknown[:3]))} that the training data does "
                "not have; a model cannot learn a class it never sees."
            )
        items += list(d.items)
        labels += list(d.labels)
        split += list(d.split) if part is None and d.split is not None else [part or "train"] * len(d)
    return Dataset(items, labels, modality, name=name, split=split, layout=layout)


def _decode(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding  # Excel's BOM
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: bytes that are not valid {encoding} (byte {e.start}). "
            f"Re-save the file as UTF-8 or pass its encoding (e.g. --encoding latin-1)."
        ) from None


def _read_rows(path: Path, encoding: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """(columns, [(line number, row)]) from a CSV or JSONL file."""
    text = _decode(path, encoding)
    rows: list[tuple[int, dict[str, Any]]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        columns: list[str] = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {n}: not valid JSON ({e.msg}).") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {n}: expected a JSON object per line.")
            columns += [k for k in row if k not in columns]
            rows.append((n, row))
        return columns, rows
    csv.field_size_limit(2**31 - 1)  # the default 128 KiB refuses a long document (an email with attachments)
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey=_EXTRA)
    columns = list(reader.fieldnames or [])
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise DataError(f"{path}: the header names the column(s) {', '.join(map(repr, twice))} more than once.")
    for row in reader:
        if _EXTRA in row:
            raise DataError(
                f"{path}, line {reader.line_num}: {len(row[_EXTRA])} more field(s) than the header's {len(columns)} "
                "columns (an unquoted comma?)."
            )
        rows.append((reader.line_num, row))
    return columns, rows


_EXTRA = "\x00extra"  # where csv puts fields beyond the header: an error, not silently dropped


@dataclass
class Table:
    """Inputs, labels (None when the table has none) and ``split`` marks (None without a ``split`` column)."""

    items: list[Any]
    labels: list[str] | None
    modality: str
    split: list[str] | None = None


def read_table_file(
    path: str | Path,
    text_column: str | None = None,
    label_column: str | None = "label",
    image_column: str | None = None,
    encoding: str = "utf-8",
    require_labels: bool = True,
) -> Table:
    """The rows of a CSV/JSONL file as a ``Table``, every row checked; image paths are relative to the file's folder.
    Without ``require_labels``, a file with no label column gives ``labels=None`` (inputs to predict)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist.")
    columns, rows = _read_rows(path, encoding)
    return table_rows(columns, rows, str(path), "line", path.parent, text_column, label_column, image_column,
                      require_labels)


def table_rows(
    columns: list[str],
    rows: Sequence[tuple[int, dict[str, Any]]],
    where: str,
    unit: str,
    base: Path,
    text_column: str | None = None,
    label_column: str | None = "label",
    image_column: str | None = None,
    require_labels: bool = True,
) -> Table:
    """Check every row of a table (a file's, a DataFrame's, a Hugging Face dataset's) and read its inputs, labels
    and, with a ``split`` column, each row's part; ``where``/``unit`` name a row in messages ("x.csv, line 3")."""
    if not rows:
        raise DataError(f"{where} has no data rows.")
    if text_column is None and image_column is None:
        guess = [c for c in ("text", "review", "sentence", "content") if c in columns]
        guess_img = [c for c in ("image", "path", "file", "filename", "img") if c in columns]
        if guess:
            text_column = guess[0]
        elif guess_img:
            image_column = guess_img[0]
        else:
            raise DataError(
                f"{where}: say which column holds the inputs (--text-column or --image-column); "
                f"columns are {', '.join(map(str, columns))}."
            )
    column = text_column or image_column
    if label_column not in columns and not require_labels:
        label_column = None
    for role, col in (("input", column), ("label", label_column)):
        if col is not None and col not in columns:
            raise DataError(f"{where} has no {role} column {col!r}; its columns are {', '.join(map(str, columns))}.")
    split_column = "split" if "split" in columns and require_labels else None
    items: list[Any] = []
    labels: list[str] = []
    split: list[str] = []
    for line, row in rows:
        at = f"{where}, {unit} {line}"
        value = _missing_as_none(row.get(column))
        if _is_image(value):  # an in-memory image (a Hugging Face image column)
            items.append(value)
        elif value is None or not str(value).strip():
            raise DataError(f"{at}: column {column!r} is empty.")
        elif image_column:
            if str(value).strip().lower().startswith(("http://", "https://", "ftp://")):
                raise DataError(
                    f"{at}: image {str(value).strip()[:80]} is a URL; transferkit reads local files only (and runs "
                    "offline): download the images and list their paths."
                )
            p = Path(str(value))
            p = p if p.is_absolute() else base / p
            if not p.is_file():
                raise DataError(f"{at}: image file {p} does not exist.")
            items.append(str(p))
        else:
            items.append(str(value))
        if label_column is not None:
            label = _missing_as_none(row.get(label_column))
            if label is None or not str(label).strip():
                raise DataError(f"{at}: label column {label_column!r} is empty.")
            labels.append(str(label).strip())
        if split_column is not None:
            mark = SPLIT_NAMES.get(str(row.get(split_column, "")).strip().lower())
            if mark is None:
                raise DataError(
                    f"{at}: split {row.get(split_column)!r} is not one of train, val (valid, validation), test."
                )
            split.append(mark)
    modality = "image" if image_column or (items and _is_image(items[0])) else "text"
    return Table(items, labels if label_column is not None else None, modality, split or None)


def _missing_as_none(value: Any) -> Any:
    """A DataFrame's empty cell (NaN, None, pandas' NA) as None."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return None if type(value).__name__ in ("NAType", "NaTType") else value


def _is_image(value: Any) -> bool:
    return hasattr(value, "getpixel") and hasattr(value, "size")  # a PIL image, without importing PIL


def from_table(
    path: str | Path,
    text_column: str | None = None,
    label_column: str = "label",
    image_column: str | None = None,
    encoding: str = "utf-8",
) -> Dataset:
    """A CSV or JSONL file with a text (or image path) column and a label column; a ``split`` column (train, val,
    test) gives the splits as they are."""
    t = read_table_file(path, text_column, label_column, image_column, encoding)
    return _table_dataset(t, str(path), f"the 'split' column of {Path(path).name}")


def _table_dataset(t: Table, name: str, layout: str) -> Dataset:
    if t.split is not None and "train" not in t.split:
        raise DataError(f"{name}: its split column marks no row 'train'; there is nothing to train on.")
    return Dataset(t.items, t.labels or [], t.modality, name=name, split=t.split, layout=layout if t.split else "")


def from_arrays(x: Sequence[Any] | np.ndarray, y: Sequence[Any], name: str = "arrays") -> Dataset:
    """Images as a uint8 array (N, H, W[, C]) or a list of texts, with their labels."""
    if isinstance(x, np.ndarray) and x.dtype != object:
        if x.ndim not in (3, 4):
            raise DataError(f"Image arrays must have shape (N, H, W) or (N, H, W, C), got {x.shape}.")
        if x.dtype != np.uint8:
            raise DataError(f"Image arrays must be uint8 (0-255), got dtype {x.dtype}; scale and cast first.")
        return Dataset(x, list(y), "image", name=name)
    items = list(x)
    for i, it in enumerate(items):
        if not isinstance(it, str):
            raise DataError(f"Item {i} is a {type(it).__name__}; pass texts as str or images as a uint8 array.")
        if not it.strip():
            raise DataError(f"Item {i}: the text is empty.")
    return Dataset(items, list(y), "text", name=name)


def load_data(
    data: Any,
    text_column: str | None = None,
    label_column: str = "label",
    image_column: str | None = None,
    encoding: str = "utf-8",
) -> Dataset:
    """A Dataset from whatever the user passed: a Dataset, a built-in name, a folder, a CSV/JSONL file, a pandas
    DataFrame, a Hugging Face ``datasets.Dataset`` / ``DatasetDict`` (its splits used as given) or ``(x, y)`` arrays.
    pandas and datasets are never imported: the objects are read through their own methods."""
    from .builtin import DATASETS, load_builtin

    if isinstance(data, Dataset):
        return data
    columns = dict(text_column=text_column, label_column=label_column, image_column=image_column)
    if isinstance(data, tuple) and len(data) == 2:
        return from_arrays(*data)
    if _is_dataframe(data):
        rows = list(enumerate(data.to_dict("records"), start=1))
        t = table_rows([str(c) for c in data.columns], rows, "the DataFrame", "row", Path.cwd(), **columns)
        return _table_dataset(t, "DataFrame", "its 'split' column")
    if _is_hf_dataset(data):
        return _from_hf(data, "the Hugging Face dataset", columns)
    if _is_hf_dict(data):
        parts = []
        for split_name, part in data.items():
            mark = SPLIT_NAMES.get(str(split_name).lower())
            if mark is None:
                raise DataError(f"The DatasetDict's split {split_name!r} is not train, validation or test.")
            parts.append((_from_hf(part, f"its {split_name!r} split", columns), mark))
        if not any(mark == "train" for _, mark in parts):
            raise DataError("The DatasetDict has no 'train' split: there is nothing to train on.")
        return concat(parts, name="DatasetDict", layout=f"the DatasetDict's {', '.join(map(str, data))} splits")
    if isinstance(data, str) and data in DATASETS:
        return load_builtin(data)
    path = Path(data)
    if path.is_dir():
        return from_folder(path)
    if path.is_file():
        if path.suffix.lower() not in (".csv", ".jsonl", ".ndjson"):
            raise DataError(f"{path}: expected a folder of class subfolders or a .csv/.jsonl file.")
        return from_table(path, text_column, label_column, image_column, encoding)
    known = ", ".join(DATASETS)
    raise DataError(f"{data} is neither an existing folder/file nor a built-in dataset ({known}).")


def _is_dataframe(data: Any) -> bool:
    return hasattr(data, "columns") and hasattr(data, "to_dict") and hasattr(data, "iloc")


def _is_hf_dataset(data: Any) -> bool:
    return hasattr(data, "column_names") and hasattr(data, "features") and not hasattr(data, "keys")


def _is_hf_dict(data: Any) -> bool:
    return hasattr(data, "keys") and hasattr(data, "column_names") and all(_is_hf_dataset(v) for v in data.values())


def _from_hf(data: Any, where: str, columns: dict[str, Any]) -> Dataset:
    """A Hugging Face ``datasets.Dataset``: class-label columns (integers with names) read as their names."""
    names = list(data.column_names)
    label = columns["label_column"]
    class_names = getattr(data.features.get(label), "names", None) if label in names else None
    rows = []
    for n, row in enumerate(data, start=1):
        if class_names is not None and isinstance(row.get(label), int) and 0 <= row[label] < len(class_names):
            row = {**row, label: class_names[row[label]]}
        rows.append((n, row))
    t = table_rows(names, rows, where, "row", Path.cwd(), **columns)
    return _table_dataset(t, "Hugging Face dataset", "its 'split' column")


def load_unlabelled(
    data: Any, modality: str, column: str | None = None, encoding: str = "utf-8"
) -> list[Any]:
    """Inputs without labels: a Dataset or built-in name (labels ignored), a list of texts/images, a folder of
    images (searched recursively) or a CSV/JSONL file (``column`` holds the texts or image paths)."""
    from .builtin import DATASETS, load_builtin

    if isinstance(data, Dataset):
        items = list(data.items)
    elif isinstance(data, str) and data in DATASETS:
        items = list(load_builtin(data).items)
    elif isinstance(data, list | tuple | np.ndarray):
        items = list(data)
    else:
        path = Path(data)
        if path.is_dir():
            if modality != "image":
                raise DataError(f"{path} is a folder; unlabelled texts come as a CSV/JSONL file (one text per row).")
            items = sorted(str(f) for f in path.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            key = "text_column" if modality == "text" else "image_column"
            items = read_table_file(path, label_column=None, encoding=encoding, require_labels=False,
                                    **{key: column}).items
            items = list(items)
        else:
            raise DataError(f"Unlabelled data {data} is neither an existing folder/file nor a built-in dataset.")
    if not items:
        raise DataError(f"Unlabelled data {data} holds no {modality}s.")
    return items


def unlabelled_dataset(items: list[Any], like: Dataset, name: str) -> Dataset:
    """``items`` as a Dataset of ``like``'s modality, for feature extraction. Its labels are placeholders cycling
    through ``like``'s classes: the feature cache keys on them, nothing else reads them."""
    labels = [like.classes[i % len(like.classes)] for i in range(len(items))]
    return Dataset(items, labels, like.modality, name=name)
