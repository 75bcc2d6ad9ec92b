"""One result-table model for every workflow, with a markdown renderer (``report.md``), a rich one (console) and
an HTML one (``report.html``).

A table is built once, from raw values and typed columns; every renderer shows the same cells, so a number reads the
same in the report, on screen and on the page (where each number cell also carries its raw value, ``data-value``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Format = Callable[[Any], str]


def percent(v: float) -> str:
    """A fraction as a percentage with one decimal: 0.8333 -> ``83.3 %``."""
    return f"{100 * v:.1f} %"


def percent_ci(v: Sequence[float]) -> str:
    """(mean, low, high) fractions as ``83.3 [81.0, 85.6] %``."""
    m, lo, hi = v
    return f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] %"


def significant_ci(v: Sequence[float]) -> str:
    """(mean, low, high) in the target's own units, four significant digits each: ``12.35 [11.08, 13.61]``."""
    return "{} [{}, {}]".format(*(significant(x) for x in v))


def decimal_ci(places: int) -> Format:
    """(mean, low, high) as plain numbers with ``places`` decimals: ``0.812 [0.790, 0.834]``."""
    return lambda v: "{} [{}, {}]".format(*(f"{x:.{places}f}" for x in v))


def seconds(v: float) -> str:
    return f"{v:.1f} s"


def count(v: float) -> str:
    return f"{v:,.0f}"


def significant(v: float) -> str:
    """A value in the target's own units, four significant digits: ``0.01234``, ``12.35``, ``1.235e+04``."""
    return f"{v:.4g}"


def decimal(places: int) -> Format:
    """A plain number with ``places`` decimals."""
    return lambda v: f"{v:.{places}f}"


@dataclass(frozen=True)
class Column:
    """A column: its title and how a raw value of it is written; text columns align left."""

    title: str
    fmt: Format = str
    text: bool = False


@dataclass
class ResultTable:
    """Rows of raw values under typed columns; ``None`` is written ``n/a``, a ``str`` as itself."""

    title: str
    columns: Sequence[Column]
    rows: list[Sequence[Any]] = field(default_factory=list)

    def add(self, *values: Any) -> None:
        if len(values) != len(self.columns):
            raise ValueError(f"{len(values)} values for {len(self.columns)} columns")
        self.rows.append(values)

    def cells(self) -> list[list[str]]:
        """Every row as the strings both renderers show."""
        return [[_cell(c, v) for c, v in zip(self.columns, row, strict=True)] for row in self.rows]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(c.title for c in self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.cells()]
        return "\n".join(lines)

    def html(self) -> str:
        """An HTML ``<table>`` of the same cells; a number cell keeps its raw value in ``data-value``."""
        from html import escape

        head = "".join(f'<th class="{"text" if c.text else "num"}">{escape(c.title)}</th>' for c in self.columns)
        body = []
        for row, cells in zip(self.rows, self.cells(), strict=True):
            tds = []
            for c, v, cell in zip(self.columns, row, cells, strict=True):
                raw = v[0] if isinstance(v, tuple | list) and v else v
                number = isinstance(raw, int | float) and not isinstance(raw, bool)
                value = f' data-value="{float(raw)!r}"' if number else ""
                tds.append(f'<td class="{"text" if c.text else "num"}"{value}>{escape(cell)}</td>')
            body.append("<tr>" + "".join(tds) + "</tr>")
        return (f"<table><caption>{escape(self.title)}</caption><thead><tr>{head}</tr></thead><tbody>"
                + "".join(body) + "</tbody></table>")

    def rich(self) -> Any:
        """A ``rich.table.Table`` of the same cells."""
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=escape(self.title))
        for c in self.columns:
            table.add_column(escape(c.title), justify="left" if c.text else "right")
        for row in self.cells():
            table.add_row(*(escape(cell) for cell in row))
        return table


class Tabulated:
    """A workflow's result: it builds its ``result_table()`` once; ``table()`` is that table as markdown."""

    def result_table(self) -> ResultTable:  # pragma: no cover - every result defines it
        raise NotImplementedError

    def table(self) -> str:
        """The result table as markdown (``report.md``)."""
        return self.result_table().markdown()


def environment() -> dict[str, Any]:
    """transferkit, interpreter, torch, machine and thread count: where the numbers of a record came from."""
    import platform
    import time

    import torch

    from .._version import __version__

    return {
        "transferkit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def layout_note(layout: str, given: list[str] | tuple[str, ...]) -> list[str]:
    """The sentence that says which splits came with the data (none when transferkit split it all)."""
    if not given:
        return []
    parts = " and ".join({"val": "validation", "test": "test"}[g] for g in given)
    where = f" ({layout})" if layout else ""
    return [f"Splits as given{where}: the {parts} data used as it is, nothing split off for it."]


def duplicates_note(n: int) -> list[str]:
    """The sentence every report and console adds when deduplication left items out (none when nothing was)."""
    if not n:
        return []
    return [f"{n} duplicate item(s) were left out before splitting, so that no item is in two splits "
            "(--no-dedupe keeps them)."]


def _cell(column: Column, value: Any) -> str:
    return "n/a" if value is None else value if isinstance(value, str) else column.fmt(value)
