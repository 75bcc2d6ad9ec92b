"""What every workflow takes about its data: how to read it (``DataSpec``) and how to split it (``SplitSpec``).

Both are validated when built, before anything is loaded; the CLI generates one shared option group from their
fields (``help`` in each field's metadata), so every command accepts the same data options.
"""

from __future__ import annotations

import codecs
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import DataError
from .dataset import Dataset, Splits, infer_task, make_splits

TASKS = ("auto", "classification", "regression")


@dataclass(frozen=True)
class DataSpec:
    """How a CSV/JSONL file is read (folders, arrays and built-in datasets need none of it)."""

    text_column: str | None = field(default=None, metadata={"help": "Text column of a CSV/JSONL file."})
    label_column: str = field(default="label", metadata={"help": "Label column of a CSV/JSONL file."})
    image_column: str | None = field(default=None, metadata={"help": "Image-path column of a CSV/JSONL file."})
    encoding: str = field(default="utf-8", metadata={"help": "Text encoding of a CSV/JSONL file."})
    test: Any = field(default=None, metadata={
        "help": "Your own labelled test set (folder or CSV/JSONL, read like DATA): used as it is, nothing split off."})
    val: Any = field(default=None, metadata={
        "help": "Your own labelled validation set (folder or CSV/JSONL): every choice is made on it, nothing split "
        "off."})
    task: str = field(default="auto", metadata={
        "help": "classification, regression (numeric labels), or auto: regression when the labels are numbers that "
        "are not a few class codes."})

    def __post_init__(self) -> None:
        try:
            codecs.lookup(self.encoding)
        except (LookupError, TypeError):
            raise DataError(
                f"encoding={self.encoding!r} is not a text encoding Python knows (e.g. utf-8, latin-1)."
            ) from None
        if not isinstance(self.label_column, str) or not self.label_column:
            raise DataError("label_column must name a column.")
        if self.task not in TASKS:
            raise DataError(f"task={self.task!r} is not one of {', '.join(TASKS)}.")

    def load(self, data: Any) -> Dataset:
        """A Dataset from a Dataset, a built-in name, a folder, a CSV/JSONL file, a DataFrame, a Hugging Face
        dataset or ``(x, y)`` arrays; with ``test`` / ``val``, those parts joined to it as given."""
        from .builtin import declared_task
        from .sources import load_data

        spec = replace(self, task=declared_task(data)) if self.task == "auto" else self  # e.g. afinn: regression
        read = {k: v for k, v in asdict(spec).items() if k not in ("test", "val", "task")}
        return spec._as_task(spec._joined(load_data(data, **read), read))

    def _as_task(self, ds: Dataset) -> Dataset:
        """``ds`` as the task asks (or, with ``auto``, as its labels say; a Dataset made as a regression target stays
        one, whatever few values it has)."""
        task = self.task
        if task == "auto":
            task = "regression" if ds.task == "regression" else infer_task(ds.labels)
        if task == ds.task:
            return ds
        return Dataset(ds.items, ds.labels, ds.modality, name=ds.name, split=ds.split, groups=ds.groups,
                       conflicting=ds.conflicting, task=task, layout=ds.layout)  # type: ignore[arg-type]

    def _joined(self, ds: Dataset, read: dict[str, Any]) -> Dataset:
        from .sources import concat, load_data

        given = [(part, load_data(path, **read)) for part, path in (("val", self.val), ("test", self.test))
                 if path is not None]
        if not given:
            return ds
        marks = set(ds.split or [])
        for part, _ in given:
            if part in marks:
                raise DataError(
                    f"{ds.name} already has its own {part} split ({ds.layout or 'predefined'}); pass --{part} only "
                    "for data without one."
                )
        layout = ", ".join(f"--{part} {path}" for part, path in (("val", self.val), ("test", self.test)) if path)
        regression = self.task == "regression" or (self.task == "auto" and infer_task(ds.labels) == "regression")
        joined = concat([(ds, None), *((d, part) for part, d in given)], name=ds.name,
                        layout=", ".join(x for x in (ds.layout, layout) if x), classes=not regression)
        joined.conflicting = ds.conflicting
        return joined

    def kwargs(self) -> dict[str, Any]:
        """The keyword form every workflow takes."""
        return asdict(self)


@dataclass(frozen=True)
class SplitSpec:
    """How labelled data becomes train / validation / test (seeded, stratified)."""

    seed: int = field(
        default=0, metadata={"help": "Seed of the split and of training (with several seeds: the first)."}
    )
    val_size: float = field(default=0.2, metadata={"help": "Fraction of the labelled data used for validation."})
    test_size: float = field(default=0.2, metadata={"help": "Test fraction when the data has no test split."})
    per_class: int | None = field(
        default=None, metadata={"help": "Keep N labelled examples per class (train + validation; few-shot)."}
    )
    max_test: int | None = field(default=None, metadata={"help": "Cap the test set (stratified subsample)."})
    dedupe: bool = field(default=True, metadata={
        "help": "Use each distinct item once, so none is in two splits (the same item under two labels is an "
        "error); --no-dedupe uses the data as it is."})

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise DataError(f"seed must be a whole number of at least 0, got {self.seed!r}.")
        for name in ("val_size", "test_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1:
                raise DataError(f"{name} must be a fraction between 0 and 1 (exclusive), got {v!r}.")
        if self.val_size + self.test_size >= 1:
            raise DataError(
                f"val_size + test_size must leave data to train on; got {self.val_size} + {self.test_size}."
            )
        if self.per_class is not None and (
            isinstance(self.per_class, bool) or not isinstance(self.per_class, int) or self.per_class < 2
        ):
            raise DataError(
                f"per_class must be a whole number of at least 2 (one to train, one to validate), got "
                f"{self.per_class!r}."
            )
        if self.max_test is not None and (
            isinstance(self.max_test, bool) or not isinstance(self.max_test, int) or self.max_test < 1
        ):
            raise DataError(f"max_test must be a whole number of at least 1, got {self.max_test!r}.")

    def make(self, ds: Dataset, seed: int | None = None) -> Splits:
        """The splits of ``ds`` for this spec's seed, or for ``seed`` (each seed of a comparison has its own)."""
        s = self.seed if seed is None else seed
        return make_splits(ds, seed=s, val_size=self.val_size, test_size=self.test_size, per_class=self.per_class,
                           max_test=self.max_test, dedupe=self.dedupe)

    def with_seed(self, seed: int) -> SplitSpec:
        return replace(self, seed=seed)

    def kwargs(self) -> dict[str, Any]:
        """The keyword form every workflow takes."""
        return asdict(self)
