"""``fit``: data -> backbone -> strategy -> evaluation against a scratch control -> saved model + report."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import json_text
from .._version import __version__
from ..backbones import create_backbone
from ..core.evaluation import classification_metrics, regression_metrics, verdict
from ..core.features import default_cache_dir
from ..core.inputs import check_images, remember_images
from ..core.model import TransferModel
from ..core.outdir import check_out
from ..core.progress import log_folder
from ..core.progress import out_console as console
from ..core.training import is_main_process
from ..data.dataset import Dataset, Splits
from ..data.spec import DataSpec, SplitSpec
from ..errors import TransferkitError
from ..methods.control import SCRATCH_BUDGETS, ControlResult, budget_config, run_scratch
from ..strategies import STRATEGIES, RunContext, make_config
from ..strategies.base import cold_cost, work_flops
from .evidence import calibrate as calibrate_model
from .evidence import regression_evidence, test_evidence
from .html import write_html
from .report import (
    Column,
    ResultTable,
    Tabulated,
    count,
    decimal,
    duplicates_note,
    environment,
    layout_note,
    percent,
    seconds,
    significant,
)

DEFAULT_BACKBONES = {"image": "pack:efficientnet-lite0", "text": "pack:minilm-l6"}


@dataclass
class FitResult(Tabulated):
    """What ``fit`` returns: the trained model, test metrics of transfer and scratch, and the run record."""

    model: TransferModel
    metrics: dict[str, dict[str, float]]
    record: dict[str, Any]
    out: Path | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    compare: Any = None
    """With ``strategy="auto"``: the ``CompareResult`` of the ladder (every rung x seed against scratch)."""

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FitResult:
        """The result as its ``run.json`` keeps it (no model): what ``transferkit report`` rebuilds a page from."""
        from .compare import CompareResult

        compare = CompareResult.from_record(record["compare"]) if "compare" in record else None
        return cls(None, record["metrics"], record, None, record.get("results", []), compare)  # type: ignore[arg-type]

    def result_table(self) -> ResultTable:
        """The comparison on the test split: one row per model."""
        d = self.record["data"]
        title = f"{d['name']}: test set ({d['splits']['test']})"
        if d.get("task") == "regression":
            table = ResultTable(title, REGRESSION_COLUMNS)
            for r in self.rows:
                table.add(r["name"], r["mae"], r["rmse"], r["r2"], r["spearman"], r["wall_s"],
                          r["trainable_parameters"])
            return table
        table = ResultTable(title, MODEL_COLUMNS)
        for r in self.rows:
            table.add(r["name"], r["accuracy"], r["macro_f1"], r["wall_s"], r["trainable_parameters"])
        return table


REGRESSION_COLUMNS = (
    Column("model", text=True), Column("MAE", significant), Column("RMSE", significant), Column("R^2", decimal(3)),
    Column("Spearman", decimal(3)), Column("wall time", seconds), Column("trainable params", count),
)

MODEL_COLUMNS = (
    Column("model", text=True), Column("accuracy", percent), Column("macro-F1", percent),
    Column("wall time", seconds), Column("trainable params", count),
)


def fit(
    data: Any,
    backbone: str | None = None,
    strategy: str = "linear-probe",
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    seed: int = 0,
    per_class: int | None = None,
    val_size: float = 0.2,
    test_size: float = 0.2,
    max_test: int | None = None,
    dedupe: bool = True,
    text_column: str | None = None,
    label_column: str = "label",
    image_column: str | None = None,
    encoding: str = "utf-8",
    test: Any = None,
    val: Any = None,
    task: str = "auto",
    scratch: bool = True,
    scratch_budget: str = "work",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    resume: bool = False,
    top_k: int = 1,
    seeds: int = 3,
    budget: str | float = "10m",
    calibrate: bool = False,
    log: str | None = None,
    **strategy_options: Any,
) -> FitResult:
    """Train ``strategy`` on ``backbone`` over ``data`` and compare it with a from-scratch control.

    ``data`` is a built-in dataset name, an image folder, a CSV/JSONL file or a ``Dataset``. The backbone defaults
    to the offline pack for the data's modality. Extra keyword options go to the strategy's config dataclass
    (e.g. ``head="mlp"``, ``unfreeze="last:2"``). The scratch control gets as much work as the transfer run cost
    (``scratch_budget="work"``: FLOPs counted the same way on every machine, so the same seed gives the same
    numbers), its own fixed schedule (``"fixed"``) or the seconds the transfer run cost cold (``"matched"``: its
    epoch count then depends on this machine's speed). Its result is cached per data, split, seed and settings
    (beside the feature cache), so a rerun with another strategy or backbone trains it at most once more.
    ``strategy="auto"`` runs the ladder rungs that fit ``budget`` (see ``transferkit.workflows.auto``), each over
    ``seeds`` seeds from ``seed`` on, against the control, and keeps the rung with the best mean validation
    accuracy, or, for image classes, the control itself (``scratch:cnn`` or ``scratch:pixels``) when the control
    beats every rung on validation by more than one standard error; options go to every rung that has them (an
    option no rung has is an error).
    ``log="tensorboard"`` also writes each epoch's losses, validation accuracy and learning rates as TensorBoard
    scalars to ``out/tensorboard``.
    ``calibrate`` fits a softmax temperature on the validation split and saves it with the model (its
    probabilities then say how often it is right; its predicted classes are unchanged); the report shows the
    expected calibration error on the test set before and after.
    With ``out``, the model is saved to ``out/model`` and the report to ``out/``; training strategies checkpoint
    every epoch to ``out/checkpoint`` and ``resume=True`` continues from there after an interruption (the
    checkpoint is removed once the run has finished).

    ``backbone="auto"`` ranks the installed packs for the data's modality by LogME on the training split (see
    ``transferkit.rank``) and trains the best; with ``top_k`` > 1 it trains the ``top_k`` best and keeps the one with
    the highest validation accuracy (the test set plays no part in the choice).
    """
    if scratch_budget not in SCRATCH_BUDGETS:
        raise TransferkitError(f"scratch_budget={scratch_budget!r} is not one of {', '.join(SCRATCH_BUDGETS)}.")
    if out is not None:  # before any work: a folder transferkit may not write fails now
        check_out(out, overwrite=overwrite, resume=resume)
    logs = log_folder(log, Path(out) / "tensorboard" if out is not None else None)
    split = SplitSpec(seed, val_size, test_size, per_class, max_test, dedupe)
    if strategy != "auto":  # options checked before any data is read
        strat = STRATEGIES.get(strategy)
        config = make_config(strat, strategy_options)
    ds = DataSpec(text_column, label_column, image_column, encoding, test=test, val=val, task=task).load(data)
    if ds.task == "regression":
        check_numeric_target(ds.name, strategy, calibrate)
    if calibrate and strategy in ("contrastive", "auto") and ds.modality == "text" and ds.task != "regression":
        from ..strategies.linear_probe import cv_folds

        pool = split.make(ds)
        if cv_folds(ds.targets[np.concatenate([pool.train, pool.val])], pool):
            raise TransferkitError(
                "--calibrate fits a temperature on held-out validation texts, but with a given test set and few labels "
                f"{'auto keeps contrastive, which' if strategy == 'auto' else 'contrastive'} trains on every labelled "
                "text: give --val too, or leave out --calibrate."
            )
    if strategy == "auto":
        if resume:
            raise TransferkitError(
                "resume does not apply to strategy auto: rerun it (cached features and controls make that cheap) "
                "or resume one strategy."
            )
        if top_k != 1:
            raise TransferkitError(
                "top_k does not apply to strategy auto: with backbone='auto' it trains the top-ranked backbone."
            )
        if not scratch:
            raise TransferkitError("strategy auto always runs the scratch control: the ladder is judged against it.")
        if seeds < 1:
            raise TransferkitError(f"seeds must be at least 1, got {seeds}.")
        from .auto import fit_auto

        return fit_auto(
            ds, backbone, out=out, split=split, seeds=seeds, budget=budget, scratch_budget=scratch_budget,
            cache_dir=cache_dir, use_cache=use_cache, progress=progress, options=strategy_options,
            calibrate=calibrate, log=log, log_dir=logs,
        )
    splits = split.make(ds)
    used = np.concatenate([splits.train, splits.val, splits.test])
    verified = check_images(ds, used, cache_dir=cache_dir, use_cache=use_cache, progress=progress)
    if top_k < 1:
        raise TransferkitError(f"top_k must be at least 1, got {top_k}.")
    checkpoint = Path(out) / "checkpoint" if out is not None else None
    if resume and checkpoint is None:
        raise TransferkitError("resume needs the output folder of the interrupted run (out=...).")
    ranking = None
    if backbone == "auto":
        if resume:
            raise TransferkitError("resume needs the backbone the interrupted run used; pass it instead of auto.")
        from .rank import rank

        ranking = rank(
            ds, None, controls=False, **split.kwargs(), cache_dir=cache_dir, use_cache=use_cache, progress=progress
        )
        candidates = ranking.ordered(controls=False)[:top_k]
    else:
        if top_k != 1:
            raise TransferkitError("top_k applies only to backbone='auto'.")
        candidates = [backbone or DEFAULT_BACKBONES[ds.modality]]
    ctx = RunContext(
        seed=seed,
        cache_dir=Path(cache_dir) if cache_dir else None,
        use_cache=use_cache,
        progress=progress,
        checkpoint_dir=checkpoint,
        resume=resume,
        log_dir=logs,
    )
    defer_in = None  # a probe may get a deferred backbone: built only if some features are not cached
    if use_cache and getattr(strat, "defers_backbone", False):
        defer_in = Path(cache_dir) if cache_dir else default_cache_dir()
    tried: dict[str, float] = {}
    best = None
    t_all = time.perf_counter()
    work_all: float | None = 0.0
    for k, spec in enumerate(candidates, 1):
        if logs is not None and len(candidates) > 1:  # one TensorBoard run per candidate backbone
            ctx.log_dir = logs / f"candidate-{k}"
        t0 = time.perf_counter()
        bb = create_backbone(spec, defer_in=defer_in)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = strat.run(bb, ds, splits, config, ctx)
        work = work_flops(bb, res.info, splits, cache_dir, use_cache) if scratch and scratch_budget == "work" else None
        work_all = None if work is None or work_all is None else work_all + work
        tried[spec] = val_score(res.info)
        if best is None or tried[spec] > val_score(best[1].info):
            best = (spec, res, load_s, time.perf_counter() - t0)
        if checkpoint is not None and checkpoint.exists() and len(candidates) > 1:
            shutil.rmtree(checkpoint)  # the next candidate starts fresh
    assert best is not None
    spec, result, load_s, transfer_s = best
    if len(candidates) > 1:  # choosing among k candidates cost all k runs: the scratch budget counts them all
        transfer_s = time.perf_counter() - t_all
    y_test = ds.targets[splits.test]
    n_classes = len(ds.classes)

    def scored(pred: np.ndarray) -> dict[str, float]:
        if ds.task == "regression":
            return regression_metrics(y_test, pred)
        return classification_metrics(y_test, pred, n_classes)

    metrics = {"transfer": scored(result.test_values if ds.task == "regression" else result.test_pred)}
    rows = [
        {
            "name": f"{strategy} ({spec})",
            **metrics["transfer"],
            "wall_s": transfer_s,
            "trainable_parameters": result.info.get("trainable_parameters", 0),
        }
    ]
    control: ControlResult | None = None
    if scratch:  # choosing among k candidates cost all k runs: the budget counts them all
        control_config = budget_config(scratch_budget, work_all, cold_cost(transfer_s, result.info))
        control = run_scratch(
            ds, splits, seed=seed, config=control_config, progress=progress, cache_dir=cache_dir, use_cache=use_cache
        )
        metrics["scratch"] = scored(control.test_pred)
        rows.append(
            {
                "name": f"scratch: {control.description}",
                **metrics["scratch"],
                "wall_s": control.wall_s,
                "trainable_parameters": control.trainable_parameters,
            }
        )
    record = _record(
        ds, splits, spec, strategy, config, seed, metrics, result.info, result.timings, control, load_s, transfer_s
    )
    record["scratch_budget"] = {"mode": scratch_budget, "transfer_flops": work_all}
    writes = out is not None and is_main_process()
    temperature = calibrate_model(result.model, ds, splits.val, result.val_proba) if calibrate else None
    if ds.task == "regression":
        record["test_evaluation"] = regression_evidence(ds, splits.test, result.test_values,
                                                        Path(out) if writes else None)
    else:
        record["test_evaluation"] = test_evidence(ds, splits.test, result.test_proba, Path(out) if writes else None,
                                                  seed, temperature)
    if ranking is not None:
        record["rank"] = {**ranking.to_dict(), "top_k": top_k, "val_accuracy": tried, "chosen": spec}
    record["results"] = rows
    fit_result = FitResult(result.model, metrics, record, Path(out) if out else None, rows)
    if out is not None and is_main_process():  # under `accelerate launch`, one process writes
        write_run(fit_result, Path(out))
        if checkpoint is not None and checkpoint.exists():
            shutil.rmtree(checkpoint)
    remember_images(verified, cache_dir, use_cache)
    return fit_result


def numeric_strategies() -> list[str]:
    """The strategies that train on a numeric target (they declare ``numeric_targets``)."""
    return [name for name in STRATEGIES.names() if getattr(STRATEGIES.get(name), "numeric_targets", False)]


def check_numeric_target(name: str, strategy: str, calibrate: bool = False) -> None:
    """One sentence if ``strategy`` (or ``calibrate``) does not apply to a numeric target."""
    allowed = [*numeric_strategies(), "auto"]
    if strategy not in allowed or calibrate:
        what = "--calibrate (it scales class probabilities)" if calibrate else f"strategy {strategy}"
        raise TransferkitError(
            f"{name} has a numeric target (regression), which {what} does not take; it trains with "
            f"{', '.join(allowed)}. Pass --task classification if its numbers are class codes."
        )


def val_score(info: dict[str, Any]) -> float:
    """What a run is chosen by on validation: its accuracy, or for a regression target its R^2."""
    return float(info.get("val_accuracy", info.get("val_r2", float("nan"))))


def _summarise(value: Any) -> Any:
    """A config value as run.json keeps it: in-memory data (a Dataset, a long list of inputs) by its size only."""
    if isinstance(value, Dataset):
        return f"<Dataset {value.name}: {len(value)} items>"
    if isinstance(value, list | tuple | np.ndarray) and len(value) > 20:
        return f"<{type(value).__name__} of {len(value)} items>"
    return value


def _record(
    ds: Dataset,
    splits: Splits,
    spec: str,
    strategy: str,
    config: Any,
    seed: int,
    metrics: dict[str, Any],
    info: dict[str, Any],
    timings: dict[str, float],
    control: ControlResult | None,
    load_s: float,
    transfer_s: float,
) -> dict[str, Any]:
    """Everything needed to re-run and check the numbers: config, seed, data hash, versions."""
    from dataclasses import asdict


    return {
        "transferkit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {
            "name": ds.name,
            "modality": ds.modality,
            "classes": ds.classes,
            "size": len(ds),
            "content_hash": ds.content_hash(),
            "splits": splits.to_dict(),
            "duplicates": splits.duplicates,
            "layout": ds.layout,
            "task": ds.task,
        },
        "backbone": spec,
        "strategy": strategy,
        "config": {k: _summarise(v) for k, v in asdict(config).items()},
        "seed": seed,
        "metrics": metrics,
        "strategy_info": info,
        "timings_s": {
            "backbone_load": load_s,
            "transfer_total": transfer_s,
            **timings,
            **({"scratch_total": control.wall_s} if control else {}),
        },
        "scratch": (
            {"description": control.description, "trainable_parameters": control.trainable_parameters, **control.info}
            if control
            else None
        ),
        "environment": environment(),
    }


def write_run(result: FitResult, out: Path) -> None:
    """``out/model`` (the saved model), ``out/run.json`` (the record) and ``out/report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    result.model.save(out / "model")
    (out / "run.json").write_text(json_text(result.record))
    r = result.record
    text = [
        f"# transferkit run: {r['data']['name']}",
        "",
        f"- backbone `{r['backbone']}`, strategy `{r['strategy']}`, seed {r['seed']}",
        f"- data: {r['data']['size']} items, "
        + (f"{len(r['data']['classes'])} classes" if r["data"].get("task") != "regression" else "a numeric target")
        + ", content hash "
        f"`{r['data']['content_hash']}`; splits {r['data']['splits']}",
        "",
        result.table(),
        "",
        verdict_line(result.metrics),
        *notes(result.record),
        "",
    ]
    (out / "report.md").write_text("\n".join(text))
    write_html(out)


def notes(record: dict[str, Any]) -> list[str]:
    """Sentences the report adds below the verdict: a rung that gave way to a cheaper one, the control's budget."""
    data = record.get("data", {})
    out = layout_note(data.get("layout", ""), data.get("splits", {}).get("given", []))
    out += duplicates_note(data.get("duplicates", 0))
    if data.get("task") == "regression":
        info = record.get("strategy_info", {})
        how = ("ridge on the features" if info.get("head") == "ridge" or info.get("kept") == "linear-probe" else
               f"a one-output head trained with the {record.get('config', {}).get('regression_loss', 'huber')} loss "
               "on the standardised target")
        out.append(f"The labels are numbers: they were fitted as a regression target ({how}; "
                   "--task classification treats them as class names).")
    info = record.get("strategy_info", {})
    if info.get("kept") == "linear-probe" and record.get("strategy") != "linear-probe":
        out.append(f"The {record['strategy']} run gave way to the linear probe: {info['kept_reason']}.")
    scratch, budget = record.get("scratch"), record.get("scratch_budget", {})
    if scratch and "cnn_epochs" in scratch:
        how = {
            "work": "half the FLOPs the transfer run cost",
            "fixed": "its own fixed schedule",
            "matched": "the seconds the transfer run cost on this machine",
        }.get(budget.get("mode", ""), "")
        out.append(
            f"Scratch control: {scratch['cnn_epochs']} CNN epochs ({how}); "
            f"{'reused from the control cache' if scratch.get('cache') == 'hit' else 'trained in this run'}."
        )
    return out


def verdict_line(metrics: dict[str, dict[str, float]]) -> str:
    """The verdict sentence for one seed (no interval: run seeds for that)."""
    if "scratch" not in metrics:
        return "No scratch control was run."
    if "r2" in metrics["transfer"]:  # a regression target: R^2, in points
        return verdict([metrics["transfer"]["r2"]], [metrics["scratch"]["r2"]], metric="R^2").sentence()
    return verdict([metrics["transfer"]["accuracy"]], [metrics["scratch"]["accuracy"]]).sentence()


def print_result(result: FitResult) -> None:
    """Rich table of the comparison on the console."""
    console.print(result.result_table().rich())
    console.print(verdict_line(result.metrics))
    for line in notes(result.record):
        console.print(line)
