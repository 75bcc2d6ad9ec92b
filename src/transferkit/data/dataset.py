"""The in-memory dataset (items + labels + modality) and seeded stratified splits."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import DataError

Modality = Literal["image", "text"]


@dataclass
class Dataset:
    """Items (image paths/arrays or texts) with string labels.

    ``split`` optionally marks a predefined ``"test"`` part (e.g. Fashion-MNIST's official test set);
    ``groups`` optionally names a sub-source per item (e.g. SpamAssassin's dated folders).
    """

    items: Sequence[Any]
    labels: Sequence[str]
    modality: Modality
    name: str = "data"
    split: Sequence[str] | None = None
    groups: Sequence[str] | None = None
    task: Literal["classification", "regression"] = "classification"
    """Classification (labels are class names) or regression (labels are numbers; ``targets`` are their values)."""
    layout: str = ""
    """How the data came split (e.g. "train/, valid/, test/ folders"); empty when transferkit splits it."""
    conflicting: Literal["refuse", "drop"] = "refuse"
    """The same content under two labels: refuse it (the user's data: they fix the labels) or leave every copy out
    (a built-in corpus known to hold such items)."""
    _hashes: list[str] | None = field(default=None, init=False, repr=False)
    _values: np.ndarray = field(default_factory=lambda: np.empty(0), init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.items) != len(self.labels):
            raise DataError(f"{self.name}: {len(self.items)} items but {len(self.labels)} labels.")
        self.labels = [str(lab) for lab in self.labels]
        if self.task == "regression":
            self._values = _numbers(self.labels, self.name)
            if len(set(self._values.tolist())) < 2:
                raise DataError(f"{self.name}: every target is {self._values[0]:g}; regression needs varied targets.")
            return
        counts = Counter(self.labels)
        if len(counts) < 2:
            only = next(iter(counts), None)
            raise DataError(
                f"{self.name} has a single class ({only!r}); transfer learning here is classification and "
                "needs at least two classes."
            )

    def __len__(self) -> int:
        return len(self.items)

    @property
    def classes(self) -> list[str]:
        """Class names, sorted (none for regression)."""
        return [] if self.task == "regression" else sorted(set(self.labels))

    @property
    def targets(self) -> np.ndarray:
        """Class indices into ``classes`` (int64), or, for regression, the target values (float64)."""
        if self.task == "regression":
            return self._values
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[lab] for lab in self.labels], dtype=np.int64)

    def item_hash(self, i: int) -> str:
        """Content hash of item ``i`` (file bytes, array bytes or UTF-8 text)."""
        if self._hashes is None:
            self._hashes = [""] * len(self.items)
        if not self._hashes[i]:
            self._hashes[i] = _hash_item(self.items[i], self.modality)
        return self._hashes[i]

    def content_hash(self, indices: Sequence[int] | None = None) -> str:
        """Hash of the items (in order) and their labels."""
        idx = range(len(self)) if indices is None else indices
        h = hashlib.sha256(self.modality.encode())
        for i in idx:
            h.update(self.item_hash(int(i)).encode())
            h.update(self.labels[int(i)].encode())
        return h.hexdigest()[:24]

    def take(self, indices: Sequence[int]) -> list[Any]:
        return [self.items[int(i)] for i in indices]


def _numbers(labels: Sequence[str], name: str) -> np.ndarray:
    """The labels as finite numbers, or one sentence naming the first that is not."""
    out = np.empty(len(labels))
    for i, lab in enumerate(labels):
        try:
            out[i] = float(lab)
        except ValueError:
            raise DataError(f"{name}: target {lab!r} (item {i}) is not a number; regression needs numeric "
                            "targets.") from None
        if not np.isfinite(out[i]):
            raise DataError(f"{name}: target {lab!r} (item {i}) is not a finite number.")
    return out


def infer_task(labels: Sequence[str]) -> str:
    """"regression" for numeric labels that are not a handful of class codes (any non-integer, or more than 20
    distinct integers); else "classification" (``0``-``9`` digit labels stay classes)."""
    try:
        values = [float(x) for x in labels]
    except (TypeError, ValueError):
        return "classification"
    if not all(np.isfinite(values)):
        return "classification"
    return "regression" if any(v != int(v) for v in values) or len(set(values)) > 20 else "classification"


def _hash_item(item: Any, modality: str) -> str:
    h = hashlib.sha256()
    if modality == "text":
        h.update(b"text:" + item.encode("utf-8"))
    elif isinstance(item, np.ndarray):
        h.update(f"array:{item.shape}:{item.dtype}".encode())
        h.update(np.ascontiguousarray(item).tobytes())
    elif isinstance(item, str | Path):
        try:
            h.update(b"file:" + Path(item).read_bytes())
        except OSError as e:
            raise DataError(f"Cannot read {item}: {e.strerror or e}.") from None
    else:  # PIL image
        arr = np.asarray(item)
        h.update(f"pil:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Splits:
    """Indices into one Dataset: train (fits weights), val (chooses hyperparameters), test (reports)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    duplicates: int = 0
    """Items left out because the same content came earlier (or is in the test split): never in two splits."""
    given: tuple[str, ...] = ()
    """The parts used as the data gave them ("val", "test"): nothing was split off for them."""

    def to_dict(self) -> dict[str, Any]:
        sizes: dict[str, Any] = {"train": len(self.train), "val": len(self.val), "test": len(self.test)}
        return {**sizes, "given": list(self.given)} if self.given else sizes


def _stratified_take(
    idx: np.ndarray, y: np.ndarray, frac: float, rng: np.random.Generator, what: str, classes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (taken, rest), taking ``frac`` of each class (at least one, leaving at least one)."""
    taken, rest = [], []
    for c in np.unique(y[idx]):
        members = idx[y[idx] == c]
        members = members[rng.permutation(len(members))]
        k = max(1, round(frac * len(members)))
        if len(members) - k < 1:
            raise DataError(
                f"Class {classes[c]!r} has only {len(members)} example(s): too few for a {what} split. "
                "Add examples or lower the split size."
            )
        taken.append(members[:k])
        rest.append(members[k:])
    return np.sort(np.concatenate(taken)), np.sort(np.concatenate(rest))


def _stratified_subsample(idx: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``n`` of ``idx`` (n < len(idx)), each class in proportion (largest remainders), at least one each."""
    cls, counts = np.unique(y[idx], return_counts=True)
    if n < len(cls):
        raise DataError(f"max_test={n} is smaller than the number of classes ({len(cls)}).")
    exact = counts * n / counts.sum()
    k = np.maximum(1, np.floor(exact).astype(int))
    for j in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if k.sum() >= n:
            break
        if k[j] < counts[j]:
            k[j] += 1
    while k.sum() > n:  # the at-least-one rule overshot: take back from the largest shares
        k[np.argmax(k)] -= 1
    taken = [rng.choice(idx[y[idx] == c], size=int(kc), replace=False) for c, kc in zip(cls, k, strict=True)]
    return np.sort(np.concatenate(taken))


SPLIT_RANK = {"test": 2, "val": 1}
"""Which copy of a duplicated item is kept: the one in a given test part, then in a given validation part (a copy in
training would leak it)."""


def unique_items(ds: Dataset) -> np.ndarray:
    """Indices of ``ds`` with each content once: the first occurrence, or the one in the predefined test split (a
    copy outside it would leak the test item into training). The same content under two labels is an error naming
    it (or, for a dataset marked ``conflicting="drop"``, every copy is left out)."""
    first: dict[str, int] = {}
    labels: dict[str, set[str]] = {}
    rank = [SPLIT_RANK.get(s, 0) for s in ds.split] if ds.split is not None else [0] * len(ds)
    for i in range(len(ds)):
        h = ds.item_hash(i)
        labels.setdefault(h, set()).add(ds.labels[i])
        if h not in first or rank[i] > rank[first[h]]:
            first[h] = i
    conflicts = [h for h, labs in labels.items() if len(labs) > 1]
    if conflicts and ds.conflicting == "drop":
        ambiguous = set(conflicts)
        return np.array(sorted(i for h, i in first.items() if h not in ambiguous), dtype=np.int64)
    if conflicts:
        i = first[conflicts[0]]
        shown = ds.items[i] if ds.modality == "text" or isinstance(ds.items[i], str | Path) else f"item {i}"
        raise DataError(
            f"{ds.name}: {len(conflicts)} item(s) appear with two or more labels, e.g. {str(shown)[:80]!r} as "
            f"{', '.join(map(repr, sorted(labels[conflicts[0]])))}; fix the labels, or pass --no-dedupe to use the "
            "data as it is."
        )
    return np.array(sorted(first.values()), dtype=np.int64)


def _strata(ds: Dataset) -> tuple[np.ndarray, list[str]]:
    """What splits are stratified on: the class of each item, or for regression its quintile of the target."""
    if ds.task != "regression":
        return ds.targets, ds.classes
    values = ds.targets
    edges = np.quantile(values, [0.2, 0.4, 0.6, 0.8])
    bins = np.searchsorted(edges, values, side="right")
    names = [f"target quintile {k + 1}" for k in range(5)]
    _, bins = np.unique(bins, return_inverse=True)  # empty quintiles (many equal targets) merge away
    return bins.astype(np.int64), names[: int(bins.max()) + 1]


def make_splits(
    ds: Dataset,
    seed: int = 0,
    val_size: float = 0.2,
    test_size: float = 0.2,
    per_class: int | None = None,
    max_test: int | None = None,
    dedupe: bool = True,
) -> Splits:
    """Seeded stratified train/val/test split.

    The test part is the dataset's predefined test split when it has one (``split`` marks "test"), else
    ``test_size`` of each class; likewise items marked "val" are the validation split as given, else ``val_size`` of
    each class of the rest. ``per_class`` keeps N labelled examples per class (train + val; train alone when the
    validation split is given) for few-shot runs; ``max_test`` caps the
    test set with a stratified subsample. With ``dedupe`` (default) each content is used once (``unique_items``),
    so no item is in two splits; without it, every item is used as it is.
    """
    if not 0 < val_size < 1 or not 0 < test_size < 1:
        raise DataError("val_size and test_size must be fractions between 0 and 1.")
    y, classes = _strata(ds)
    if per_class is not None and ds.task == "regression":
        raise DataError("per_class applies to classes; for a regression target use the data you want to train on.")
    rng = np.random.default_rng(seed)
    all_idx = unique_items(ds) if dedupe else np.arange(len(ds))
    duplicates = len(ds) - len(all_idx)
    marks = np.array([ds.split[int(i)] for i in all_idx]) if ds.split is not None else np.full(len(all_idx), "")
    given = tuple(part for part in ("val", "test") if (marks == part).any())
    given_val = all_idx[marks == "val"]
    if "test" in given:
        test, pool = all_idx[marks == "test"], all_idx[(marks != "test") & (marks != "val")]
    else:
        test, pool = _stratified_take(all_idx[marks != "val"], y, test_size, rng, "test", classes)
    if max_test is not None and len(test) > max_test:
        test = _stratified_subsample(test, y, max_test, rng)
    if per_class is not None:
        if per_class < 2:
            raise DataError(f"per_class must be at least 2 (one to train, one to validate), got {per_class}.")
        keep = []
        for c in range(len(classes)):
            members = pool[y[pool] == c]
            if len(members) < per_class:
                raise DataError(
                    f"per_class={per_class} but class {classes[c]!r} has only {len(members)} labelled "
                    "example(s) outside the test split."
                )
            keep.append(rng.choice(members, size=per_class, replace=False))
        pool = np.sort(np.concatenate(keep))
    if "val" in given:
        val, train = given_val, pool
    else:
        val, train = _stratified_take(pool, y, val_size, rng, "validation", classes)
    regression = ds.task == "regression"  # its strata are target quintiles: none must be in every part
    unseen = [] if regression else sorted(set(range(len(classes))) - set(y[train].tolist()))
    if unseen:
        raise DataError(f"Class {classes[unseen[0]]!r} has no training example (it is only in the given "
                        "validation or test data); add training examples of it.")
    missing = [] if regression else sorted(set(range(len(classes))) - set(y[test].tolist()))
    if missing:
        raise DataError(f"Class {classes[missing[0]]!r} has no example in the test split; add examples.")
    return Splits(train=train, val=val, test=test, duplicates=duplicates, given=given)
