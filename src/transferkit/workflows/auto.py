"""``--strategy auto``: choose the rungs of the transfer ladder that fit the data and a time budget."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._files import json_text
from ..backbones.base import Backbone
from ..data.dataset import Dataset
from ..errors import TransferkitError

if TYPE_CHECKING:
    from ..data.spec import SplitSpec
    from .fit import FitResult


def parse_budget(text: str) -> float:
    """'90s', '10m', '1.5h' or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise TransferkitError(f"Budget {text!r} is not a duration like 90s, 10m or 1.5h.")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


@dataclass(frozen=True)
class Plan:
    """The strategies chosen, their options, and the estimates that led there."""

    strategies: list[str]
    options: dict[str, dict[str, Any]]
    estimate_s: float
    notes: list[str]
    prefer: str | None = None
    """A rung kept by default, without a validation score to choose by (see ``plan_ladder``)."""
    prefer_reason: str = ""


SMALL_VAL_SE = 0.10
"""One standard error of a validation accuracy (at 50 %) above which auto runs no rung past the probe: over fewer than
25 validation predictions a costlier rung could be kept only by a lead of over 10 points (the one-standard-error
rule), which it would mostly owe to chance."""


MIRROR_BELOW = 100
"""auto gives the probe mirror images when the smallest class has fewer labelled images than this (train + val)."""
MIRROR_REASON = ("benchmarks/dev_tta.py measured +1.1 and +1.2 points for mirror-image training and test-time "
                 "augmentation at 50 images per class (Fashion-MNIST, digits; development splits), +0.3 ± 0.4 at "
                 f"100 (Fashion-MNIST): used below {MIRROR_BELOW} a class")


def plan_ladder(
    backbone: Backbone, ds: Dataset, n_train: int, n_eval: int, seeds: int, budget_s: float, *,
    val_items: int | None = None, cv_folds: int = 0, n_val: int = 0, probe_head: str = "linear",
    smallest_class: int | None = None,
) -> Plan:
    """Linear probe always (for image classes with the linear head and fewer than ``MIRROR_BELOW`` labelled images
    in the ``smallest_class``, trained and scored with mirror images too when the budget allows twice its
    extraction: ``MIRROR_REASON``); LP-FT on the last two blocks when the budget allows
    at least 2 epochs for every seed; LoRA on top for backbones with attention when there is room for that as well;
    for text classes, the contrastive (SetFit-style) rung when its sentence pairs fit what is left.

    Classes with too few labels for validation to choose (``val_items`` validation predictions over all seeds, one
    standard error above ``SMALL_VAL_SE``): the probe alone. A given test set with few labels (``cv_folds`` > 0: the
    probe's C is cross-validated over all ``n_train + n_val`` labels, which a rung that holds out a validation split
    cannot match): the probe, and for text classes the contrastive rung trained on every label and kept by default
    (``Plan.prefer``: no validation split is left to choose by; the default is the one measured on development data).
    Costs come from timing one small batch of this backbone on this data (forward ~ 1 unit, training step ~ 3).
    """
    from ..backbones.adapters import default_targets

    sample = ds.take(range(min(16, len(ds))))
    backbone.embed(sample[:2])  # warm-up
    t0 = time.perf_counter()
    backbone.embed(sample)
    per_item = (time.perf_counter() - t0) / len(sample)
    probe = (n_train + n_eval) * per_item
    epoch = 3 * n_train * per_item + n_eval * per_item / 2
    notes = [f"{per_item * 1000:.1f} ms per item forward; probe ~{probe:.0f} s, one fine-tuning epoch ~{epoch:.0f} s"]
    strategies, options = ["linear-probe"], {}
    spent = seeds * probe
    few = smallest_class is not None and smallest_class < MIRROR_BELOW
    if ds.modality == "image" and ds.task != "regression" and probe_head == "linear" and few:
        if 2 * spent <= budget_s:
            options["linear-probe"] = {"mirror": True}
            spent *= 2
            notes.append(f"linear probe with mirror images (twice the extraction): {MIRROR_REASON}")
        else:
            notes.append("linear probe without mirror images: twice its extraction does not fit the budget")
    text_classes = ds.modality == "text" and ds.task != "regression"
    if text_classes and cv_folds:
        from ..strategies.contrastive import ContrastiveConfig, pair_count

        pairs = pair_count(n_train + n_val, len(ds.classes), ContrastiveConfig())
        cost = _contrastive_cost(pairs, n_train + n_eval, per_item, ContrastiveConfig().batch_size)
        notes.append(f"a given test set and few labels: every label trains (the probe's C by {cv_folds}-fold "
                     "cross-validation); finetune and lora would hold a validation split out and are not run")
        if spent + seeds * cost <= budget_s:
            strategies.append("contrastive")
            spent += seeds * cost
            reason = ("with few labels and a given test set, contrastive (SetFit-style, sentence pairs from every "
                      "labelled text) is the default: no validation split is left to check it, and "
                      "benchmarks/dev_fewshot.py measured it level with or ahead of the probe at 8 and 16 texts per "
                      "class")
            notes.append(f"contrastive: {pairs} sentence pairs, 1 epoch (~{cost:.0f} s a seed), kept by default")
            return Plan(strategies, options, spent, notes, "contrastive", reason)
        notes.append(f"contrastive skipped: its {pairs} sentence pairs (~{cost:.0f} s a seed) do not fit the budget")
        return Plan(strategies, options, spent, notes)
    if ds.task != "regression" and (cv_folds or (val_items is not None and _se(val_items) > SMALL_VAL_SE)):
        if cv_folds:
            why = (f"a given test set and few labels: every label trains the probe (C by {cv_folds}-fold "
                   "cross-validation), while finetune and lora would hold a validation split out of training and be "
                   "judged on it alone")
        else:
            why = (f"{val_items} validation predictions (one standard error ~{100 * _se(val_items):.0f} points) "
                   "cannot tell a costlier rung from the probe")
        notes.append(f"linear probe only: {why}")
        return Plan(strategies, options, spent, notes)
    left = budget_s - spent
    epochs = int(min(10, left / max(seeds * epoch, 1e-9)))
    if epochs >= 2:
        strategies.append("finetune")
        options["finetune"] = {"unfreeze": "last:2", "lp_ft": True, "epochs": epochs}
        spent += seeds * epochs * epoch
        notes.append(f"finetune: LP-FT on the last 2 blocks, {epochs} epochs")
    else:
        notes.append("finetune skipped: the budget does not allow 2 epochs per seed")
    try:
        default_targets(backbone)
        has_attention = True
    except TransferkitError:
        has_attention = False
    lora_epochs = int(min(10, (budget_s - spent) / max(seeds * epoch, 1e-9)))
    if has_attention and lora_epochs >= 2:
        strategies.append("lora")
        options["lora"] = {"epochs": lora_epochs}
        spent += seeds * lora_epochs * epoch
        notes.append(f"lora: {lora_epochs} epochs")
    if text_classes:
        from ..strategies.contrastive import ContrastiveConfig, pair_count

        cfg = ContrastiveConfig()
        pairs = pair_count(n_train, len(ds.classes), cfg)
        cost = _contrastive_cost(pairs, n_train + n_eval, per_item, cfg.batch_size)
        if spent + seeds * cost <= budget_s:
            strategies.append("contrastive")
            spent += seeds * cost
            notes.append(f"contrastive: {pairs} sentence pairs, 1 epoch (~{cost:.0f} s a seed)")
        else:
            notes.append(f"contrastive skipped: its {pairs} sentence pairs (~{cost:.0f} s a seed) do not fit the "
                         "budget")
    return Plan(strategies, options, spent, notes)


def _contrastive_cost(pairs: int, n_items: int, per_item: float, batch: int) -> float:
    """Seconds: a training step ~3 forwards of the distinct texts of its batch, then tuned features of every item."""
    distinct = min(2 * batch, n_items)  # an upper bound: pair_loss embeds a repeated text once
    return -(-pairs // batch) * distinct * 3 * per_item + n_items * per_item


def _se(val_items: int) -> float:
    return 0.5 / max(val_items, 1) ** 0.5


def fit_auto(
    ds: Dataset, backbone: str | None, *, out: str | Path | None, split: SplitSpec, seeds: int, **kw: Any
) -> FitResult:
    """The ladder through ``compare``, written as a fit: model, run.json (with the whole comparison), report.md."""
    from .._version import __version__
    from ..core.evaluation import classification_metrics
    from ..core.training import is_main_process
    from .compare import METRICS, SCRATCH, compare, compare_record, report_lines
    from .evidence import calibrate as calibrate_model
    from .evidence import regression_evidence, test_evidence
    from .fit import FitResult
    from .html import write_html
    from .report import environment

    options, calibrate = kw.pop("options"), kw.pop("calibrate")
    res = compare(ds, backbone, "auto", seeds, common_options=options or None, **split.kwargs(), **kw)
    seeds = list(range(split.seed, split.seed + seeds))
    first = [r for r in res.runs if r["seed"] == seeds[0]]
    pick = next(r for r in first if r["model"] == res.best)
    control = next(r for r in first if r["model"] == SCRATCH)
    regression = ds.task == "regression"
    keys = [k for k, _ in METRICS[ds.task]]
    metrics = {"transfer": {k: pick[k] for k in keys}, "scratch": {k: control[k] for k in keys}}
    if res.saved == SCRATCH:  # the saved model is the control's: its test metrics as predict computes them
        y_test = ds.targets[res.test[0]]
        metrics["saved"] = classification_metrics(y_test, np.asarray(res.test[1]).argmax(1), len(ds.classes))
    rows = [
        {"name": r["model"], **{k: r[k][0] for k in keys}, "wall_s": r["wall_s"],
         "trainable_parameters": r["trainable_parameters"]}
        for r in res.summary()
    ]
    where = Path(out) if out is not None and is_main_process() else None
    if regression:
        evidence = regression_evidence(ds, *res.test, where)
    else:
        evidence = test_evidence(ds, *res.test, where, seeds[0],
                                 calibrate_model(res.model, ds, split.make(ds).val) if calibrate else None)
    splits = split.make(ds)
    record = {
        "transferkit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {"name": ds.name, "modality": ds.modality, "classes": ds.classes, "size": len(ds),
                 "content_hash": ds.content_hash(), "splits": splits.to_dict(), "duplicates": splits.duplicates,
                 "layout": ds.layout, "task": ds.task},
        "backbone": res.meta["backbone"],
        "strategy": "auto",
        "chosen": {"label": SCRATCH, "strategy": SCRATCH, "by": res.meta["control_choice"]["text"]}
        if res.saved == SCRATCH else
        {"label": res.best, "strategy": res.meta["strategies"][res.best],
         "by": res.meta.get("chosen_by") or f"mean validation {'R^2' if regression else 'accuracy'} over the seeds"},
        "config": {"budget": kw["budget"], "options": options, "scratch_budget": kw["scratch_budget"],
                   "configs": res.meta["configs"]},
        "seed": seeds[0],
        "seeds": seeds,
        "metrics": metrics,
        "compare": compare_record(res),
        "test_evaluation": evidence,
        "environment": environment(),
    }
    assert res.model is not None
    record["results"] = rows
    result = FitResult(res.model, metrics, record, Path(out) if out else None, rows, compare=res)
    if out is not None and is_main_process():
        target = Path(out)
        target.mkdir(parents=True, exist_ok=True)
        res.model.save(target / "model")
        (target / "run.json").write_text(json_text(record))
        (target / "report.md").write_text("\n".join(report_lines(res, "transferkit fit --strategy auto")))
        write_html(target)
    return result
