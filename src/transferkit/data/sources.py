"""Adapters from a user's files or arrays to a Dataset: image folders, CSV/JSONL tables, in-memory arrays."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .dataset import Dataset

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def from_folder(root: str | Path) -> Dataset:
    """An image folder with one subfolder per class (``root/<class>/<image>``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder.")
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


def read_table(
    path: str | Path,
    text_column: str | None = None,
    label_column: str | None = "label",
    image_column: str | None = None,
    encoding: str = "utf-8",
    require_labels: bool = True,
) -> tuple[list[str], list[str] | None, str]:
    """(inputs, labels or None, modality) from a CSV/JSONL file, every row checked.

    Without ``require_labels``, a file with no label column gives ``labels=None`` (inputs to predict).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist.")
    columns, rows = _read_rows(path, encoding)
    if not rows:
        raise DataError(f"{path} has no data rows.")
    if text_column is None and image_column is None:
        guess = [c for c in ("text", "review", "sentence", "content") if c in columns]
        guess_img = [c for c in ("image", "path", "file", "filename") if c in columns]
        if guess:
            text_column = guess[0]
        elif guess_img:
            image_column = guess_img[0]
        else:
            raise DataError(
                f"{path}: say which column holds the inputs (--text-column or --image-column); "
                f"columns are {', '.join(columns)}."
            )
    column = text_column or image_column
    if label_column not in columns and not require_labels:
        label_column = None
    for role, col in (("input", column), ("label", label_column)):
        if col is not None and col not in columns:
            raise DataError(f"{path} has no {role} column {col!r}; its columns are {', '.join(columns)}.")
    items: list[str] = []
    labels: list[str] = []
    for line, row in rows:
        value = row.get(column)
        if value is None or not str(value).strip():
            raise DataError(f"{path}, line {line}: column {column!r} is empty.")
        if label_column is not None:
            label = row.get(label_column)
            if label is None or not str(label).strip():
                raise DataError(f"{path}, line {line}: label column {label_column!r} is empty.")
            labels.append(str(label).strip())
        if image_column:
            p = Path(str(value))
            p = p if p.is_absolute() else path.parent / p
            if not p.is_file():
                raise DataError(f"{path}, line {line}: image file {p} does not exist.")
            items.append(str(p))
        else:
            items.append(str(value))
    return items, (labels if label_column is not None else None), "text" if text_column else "image"


def from_table(
    path: str | Path,
    text_column: str | None = None,
    label_column: str = "label",
    image_column: str | None = None,
    encoding: str = "utf-8",
) -> Dataset:
    """A CSV or JSONL file with a text (or image path) column and a label column."""
    items, labels, modality = read_table(path, text_column, label_column, image_column, encoding)
    return Dataset(items, labels or [], modality, name=str(path))


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
    """A Dataset from whatever the user passed: a Dataset, a built-in name, a folder or a CSV/JSONL file."""
    from .builtin import DATASETS, load_builtin

    if isinstance(data, Dataset):
        return data
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
            items, _, _ = read_table(path, label_column=None, encoding=encoding, require_labels=False, **{key: column})
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
