"""What ``compare`` returns: per-seed runs, each model's test metrics as mean [95 % CI] over seeds, the verdicts
and the choice of the kept rung (on validation), for classes or a numeric target."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.evaluation import Verdict, mean_ci
from ..core.model import TransferModel
from .report import (
    Column,
    ResultTable,
    Tabulated,
    count,
    decimal_ci,
    duplicates_note,
    layout_note,
    percent_ci,
    seconds,
    significant_ci,
)

SCRATCH = "scratch"


@dataclass
class CompareResult(Tabulated):
    """Per-seed runs, mean and 95% CI per model, and a paired verdict of each strategy against scratch."""

    runs: list[dict[str, Any]]
    verdicts: dict[str, Verdict]
    best: str
    model: TransferModel | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    test: Any = field(default=None, repr=False)
    """The saved model's (test indices, test probabilities, or predicted values for a numeric target): the first
    seed's."""

    @property
    def saved(self) -> str:
        """What the saved model is: ``best``, or ``scratch`` when auto kept the control (``scratch_beats``)."""
        return SCRATCH if self.meta.get("control_choice", {}).get("kept") else self.best

    @property
    def task(self) -> str:
        return str(self.meta.get("task", "classification"))

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CompareResult:
        """The result as ``compare.json`` keeps it (no model)."""
        from dataclasses import fields

        names = [f.name for f in fields(Verdict)]
        verdicts = {k: Verdict(**{n: v[n] for n in names if n in v}) for k, v in record["verdicts"].items()}
        dropped = ("runs", "verdicts", "val_accuracy_mean", "val_r2_mean", "best")
        meta = {k: v for k, v in record.items() if k not in dropped}
        return cls(record["runs"], verdicts, record["best"], None, meta)

    def summary(self) -> list[dict[str, Any]]:
        """Per model: each test metric as (mean, low, high) over the seeds, clipped to its range; mean wall time."""
        rows = []
        for name in [*self.verdicts, SCRATCH]:
            runs = [r for r in self.runs if r["model"] == name]
            rows.append(
                {
                    "model": name,
                    **{k: _clip(mean_ci([r[k] for r in runs]), *bounds) for k, bounds in METRICS[self.task]},
                    "wall_s": sum(r["wall_s"] for r in runs) / len(runs),
                    "trainable_parameters": runs[0]["trainable_parameters"],
                }
            )
        return rows

    def result_table(self) -> ResultTable:
        """The test metrics as mean [95% CI] over the seeds, mean wall time, trainable parameters."""
        metric_columns = ((Column("MAE", significant_ci), Column("RMSE", significant_ci), Column("R^2", decimal_ci(3)),
                           Column("Spearman", decimal_ci(3))) if self.task == "regression" else
                          (Column("accuracy", percent_ci), Column("macro-F1", percent_ci)))
        table = ResultTable(
            f"{self.meta.get('data', '')}: {len(self.meta.get('seeds', []))} seeds, mean [95% CI]",
            (Column("model", text=True), *metric_columns, Column("wall time (mean)", seconds),
             Column("trainable params", count)),
        )
        for r in self.summary():
            table.add(r["model"], *(r[k] for k, _ in METRICS[self.task]), r["wall_s"], r["trainable_parameters"])
        return table

    def verdict_lines(self) -> list[str]:
        return [f"{name}: {v.text}" for name, v in self.verdicts.items()]

    def val_means(self) -> dict[str, float]:
        """Mean validation accuracy (R^2 for a numeric target) of each strategy over the seeds: what ``best`` is
        chosen by."""
        return _val_means(self.runs, list(self.verdicts), val_key(self.task))

    def choice_lines(self) -> list[str]:
        """Which model was kept and why (validation only), and every rung that ended worse than a cheaper one."""
        means = self.val_means()
        regression = self.task == "regression"
        what = "R^2" if regression else "accuracy"

        def shown(v: float) -> str:
            return f"{v:.3f}" if regression else f"{100 * v:.1f} %"

        if self.meta.get("chosen_by"):  # a default the data was too small to check (see plan_ladder)
            return [f"kept `{self.best}`: {self.meta['chosen_by']}; test labels played no part in the choice"]
        control = [self.meta["control_choice"]["text"]] if self.meta.get("control_choice") else []
        means = _checked(means)
        top = max(means, key=lambda k: means[k])
        se = one_se(means, int(self.meta.get("val_items", 0)), self.task)
        how = (f"the highest mean validation {what} ({shown(means[self.best])})" if self.best == top else
               f"the cheapest rung within one standard error ({shown(se)}, {self.meta.get('val_items')} validation "
               f"predictions) of the highest mean validation {what} ({shown(means[top])}, {top}): "
               f"{shown(means[self.best])}")
        lines = [
            f"kept `{self.best}`: {how} over {len(self.meta.get('seeds', []))} seeds; test labels played no part "
            "in the choice"
        ]
        names = list(means)
        for i, name in enumerate(names):
            cheaper = [c for c in names[:i] if means[c] > means[name]]
            if cheaper:
                c = max(cheaper, key=lambda k: means[k])
                lines.append(
                    f"{name} ended worse on validation than the cheaper {c} ({shown(means[name])} vs {shown(means[c])})"
                )
        return lines + control

    def data_notes(self) -> list[str]:
        """Which splits came with the data, and how many duplicates were left out."""
        given = self.meta.get("splits", {}).get("given", [])
        return layout_note(self.meta.get("layout", ""), given) + duplicates_note(self.meta.get("duplicates", 0))

    def scratch_line(self) -> str:
        """How the scratch control was budgeted and what it became."""
        runs = [r for r in self.runs if r["model"] == SCRATCH]
        kinds = ", ".join(sorted({r["description"] for r in runs}))
        works = [r["info"]["work_budget_flops"] for r in runs if r["info"].get("work_budget_flops") is not None]
        budgets = [r["info"]["time_budget_s"] for r in runs if r["info"].get("time_budget_s") is not None]
        cached = sum(r["info"].get("cache") == "hit" for r in runs)
        reuse = f"; {cached} of {len(runs)} seeds reused from the control cache" if cached else ""
        if works:
            epochs = ", ".join(str(r["info"]["cnn_epochs"]) for r in runs)
            return (
                f"scratch control ({kinds}): given the work of the costliest transfer run of each seed, "
                f"{', '.join(f'{w / 1e12:.2f}' for w in works)} TFLOP; CNN epochs that fit: {epochs}{reuse}"
            )
        if budgets:
            epochs = ", ".join(str(r["info"]["cnn_epochs"]) for r in runs)
            return (
                f"scratch control ({kinds}): budget-matched to the costliest transfer run of each seed, "
                f"{', '.join(f'{b:.0f}' for b in budgets)} s; CNN epochs fitted to it: {epochs}{reuse}"
            )
        if self.meta.get("modality") == "text":
            return f"scratch control ({kinds}): not iterative, trained to convergence{reuse}"
        return f"scratch control ({kinds}): its own fixed schedule{reuse}"


METRICS: dict[str, tuple[tuple[str, tuple[float, float]], ...]] = {
    "classification": (("accuracy", (0.0, 1.0)), ("macro_f1", (0.0, 1.0))),
    "regression": (("mae", (0.0, float("inf"))), ("rmse", (0.0, float("inf"))), ("r2", (float("-inf"), 1.0)),
                   ("spearman", (-1.0, 1.0))),
}
"""Each task's test metrics, in table order, with the range their interval is clipped to."""


def one_se(means: dict[str, float], val_items: int, task: str) -> float:
    """One standard error of the best mean validation accuracy over ``val_items`` validation predictions (0 for a
    numeric target, whose R^2 has no such simple error: the best is kept there)."""
    if task == "regression" or val_items <= 0:
        return 0.0
    p = max(means.values())
    return math.sqrt(p * (1 - p) / val_items)


def choose_rung(means: dict[str, float], val_items: int, task: str) -> str:
    """The cheapest rung (the first, in ladder order) whose mean validation score is within one standard error of
    the best (the one-standard-error rule): on a handful of validation items a costlier rung's lead is mostly
    noise, and the cheaper rung is then the safer choice."""
    means = _checked(means)
    top = max(means.values())
    return next(k for k, v in means.items() if v >= top - one_se(means, val_items, task))


def scratch_beats(means: dict[str, float], control: float, val_items: int) -> bool:
    """Whether the from-scratch control's mean validation accuracy is above every transfer rung's by more than one
    standard error (of the best of them all): the control must win clearly to replace transfer. Its score is its best
    epoch's, chosen on the same validation split, as a fine-tune's is."""
    means = _checked(means)
    if not means or not math.isfinite(control) or val_items <= 0:
        return False
    return control > max(means.values()) + one_se({**means, SCRATCH: control}, val_items, "classification")


def _checked(means: dict[str, float]) -> dict[str, float]:
    """The rungs that have a validation score (a rung trained on every label has none)."""
    return {k: v for k, v in means.items() if math.isfinite(v)}


def val_key(task: str) -> str:
    """The validation score a run is chosen by: accuracy, or R^2 for a numeric target."""
    return "val_r2" if task == "regression" else "val_accuracy"


def _val_means(runs: list[dict[str, Any]], labels: Sequence[str], key: str = "val_accuracy") -> dict[str, float]:
    """Each rung's mean validation score; NaN for a rung that has none (null in a record read back)."""
    return {name: float(np.mean([np.nan if r[key] is None else r[key] for r in runs if r["model"] == name]))
            for name in labels}


def _clip(ci: tuple[float, float, float], low: float = 0.0, high: float = 1.0) -> tuple[float, float, float]:
    """A t-interval shown within what the metric allows ([0, 1] for a proportion)."""
    return ci[0], max(low, ci[1]), min(high, ci[2])
