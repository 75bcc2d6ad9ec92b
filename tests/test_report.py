"""The one result-table model: the same cells in markdown and on the console; the one verdict sentence."""

from __future__ import annotations

import pytest
from rich.console import Console

from transferkit.core.evaluation import verdict
from transferkit.workflows.report import Column, ResultTable, count, percent, percent_ci, seconds


def _table() -> ResultTable:
    t = ResultTable("data: 3 seeds", (Column("model", text=True), Column("accuracy", percent_ci),
                                      Column("macro-F1", percent), Column("wall", seconds), Column("params", count)))
    t.add("linear-probe", (0.8333, 0.81, 0.856), 0.8266, 0.54, 12810)
    t.add("a|b [x]", (0.5, 0.4, 0.6), None, 1.0, 5)
    return t


def test_markdown_and_rich_show_the_same_cells():
    t = _table()
    assert t.cells()[0] == ["linear-probe", "83.3 [81.0, 85.6] %", "82.7 %", "0.5 s", "12,810"]
    assert t.cells()[1][2] == "n/a"
    md = t.markdown().splitlines()
    assert md[0] == "| model | accuracy | macro-F1 | wall | params |" and md[1] == "|---|---|---|---|---|"
    assert md[3].startswith("| a\\|b [x] |")  # a pipe in a cell cannot break the markdown row
    console = Console(width=200, record=True)
    console.print(t.rich())
    shown = console.export_text()
    for row in t.cells():
        for cell in row:
            assert cell in shown  # rich markup in a cell ("[x]") is printed, not interpreted


def test_a_row_must_fill_every_column():
    with pytest.raises(ValueError, match="2 values for 5 columns"):
        _table().add("x", 1.0)


def test_one_verdict_sentence_for_every_comparison():
    helps = verdict([0.9, 0.92, 0.91], [0.8, 0.81, 0.8])
    assert helps.sentence() == helps.text and helps.text.startswith("transfer helps: +10.7 points [")
    assert helps.sentence("dann", "source-only").startswith("dann helps: +10.7 points [")
    assert helps.sentence("dann", "source-only").endswith("over source-only (3 seeds)")
    one = verdict([0.8], [0.9])
    assert one.sentence() == (
        "Transfer accuracy is 10.0 points lower than scratch on this seed (single seed: no confidence interval)."
    )
    assert one.sentence("distillation", "hard labels").startswith("Distillation accuracy is 10.0 points lower")


def test_an_interval_is_clipped_to_what_accuracy_allows_and_says_when_seeds_are_too_few():
    v = verdict([0.9, 0.1], [0.2, 0.55])
    text = v.sentence()
    assert text == "no clear difference: +12.5 points [-100.0, +100.0] (2 seeds - too few seeds for a useful interval)"
    assert "too few seeds for a useful interval" in text
    assert "too few" not in verdict([0.9, 0.91, 0.92], [0.8, 0.8, 0.81]).sentence()
