"""Several strategies x several seeds against the scratch control on the same splits, with a verdict in words."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .._files import json_text
from ..backbones import create_backbone
from ..core.evaluation import classification_metrics, regression_metrics, verdict
from ..core.inputs import check_images, remember_images
from ..core.model import TransferModel
from ..core.outdir import check_out
from ..core.progress import log_folder, out_console
from ..data.dataset import Dataset
from ..data.spec import DataSpec, SplitSpec
from ..errors import TransferkitError
from ..methods.control import SCRATCH_BUDGETS, budget_config, control_model, run_scratch
from ..strategies import STRATEGIES, RunContext, make_config
from ..strategies.base import cold_cost, work_flops
from ..strategies.linear_probe import cv_folds
from .compare_result import METRICS, SCRATCH, CompareResult, _val_means, choose_rung, scratch_beats, val_key
from .evidence import regression_evidence, test_evidence
from .html import write_html
from .report import environment

__all__ = ["METRICS", "SCRATCH", "CompareResult", "compare", "compare_record", "parse_variants", "val_key"]

def parse_variants(strategies: Sequence[str]) -> dict[str, str]:
    """Entries ``strategy`` or ``label=strategy`` -> {label: strategy name}; labels must be unique."""
    variants: dict[str, str] = {}
    for entry in strategies:
        label, eq, name = (part.strip() for part in entry.partition("="))
        name = name if eq else label
        if not label or label == SCRATCH or label in variants:
            raise TransferkitError(
                f"Strategy label {label!r} is empty, reserved or given twice; name variants like lp-ft=finetune."
            )
        STRATEGIES.get(name)  # an unknown strategy names the known ones
        variants[label] = name
    return variants


def unused_options(strategies: Sequence[str], common_options: dict[str, Any] | None) -> list[str]:
    """The common options that none of ``strategies`` takes."""
    from dataclasses import fields

    has = [{f.name for f in fields(STRATEGIES.get(name).Config)} for name in strategies]
    return sorted(k for k in common_options or {} if not any(k in h for h in has))


LADDER = ("linear-probe", "finetune", "lora", "contrastive")
"""Every strategy ``--strategy auto`` may run."""


def rung_configs(
    variants: dict[str, str],
    options: dict[str, dict[str, Any]] | None,
    common_options: dict[str, Any] | None,
    plan_options: dict[str, dict[str, Any]],
    ladder: Sequence[str] = (),
) -> dict[str, Any]:
    """Each variant's validated config; its own options > options for every rung > what the auto plan chose.

    A common option must apply to one of the variants or, for auto, to one of the ``ladder`` strategies it may run
    (a plan that skips a rung does not turn the user's options into errors)."""
    from dataclasses import fields

    unknown = sorted(set(options or {}) - set(variants))
    if unknown:
        raise TransferkitError(f"Options given for {', '.join(unknown)}, which is not among {', '.join(variants)}.")
    common_options = common_options or {}
    has = {label: {f.name for f in fields(STRATEGIES.get(name).Config)} for label, name in variants.items()}
    unused = unused_options([*variants.values(), *ladder], common_options)
    if unused:
        raise TransferkitError(
            f"Option(s) {', '.join(unused)} apply to none of the strategies run ({', '.join(variants)})."
        )
    merged = {
        label: {
            **plan_options.get(label, {}),
            **{k: v for k, v in common_options.items() if k in has[label]},
            **(options or {}).get(label, {}),
        }
        for label in variants
    }
    return {label: make_config(STRATEGIES.get(name), merged[label]) for label, name in variants.items()}


def compare(
    data: Any,
    backbone: str | None = None,
    strategies: Sequence[str] | str = ("linear-probe",),
    seeds: int | Sequence[int] = 3,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    options: dict[str, dict[str, Any]] | None = None,
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
    cache_dir: str | Path | None = None,
    progress: bool = True,
    budget: str | float = "10m",
    scratch_budget: str = "work",
    use_cache: bool = True,
    common_options: dict[str, Any] | None = None,
    log: str | None = None,
    log_dir: str | Path | None = None,
) -> CompareResult:
    """Run each strategy and the scratch control on the same seeded splits; decide with paired intervals.

    ``seeds`` is a count (seeds ``seed``, ``seed`` + 1, ...; each its own split) or the seeds themselves.

    ``strategies`` entries are strategy names or ``label=strategy`` variants (e.g. ``lp-ft=finetune``), and
    ``options`` maps a label to its config options. ``strategies="auto"`` picks the rungs that fit ``budget`` (see
    ``transferkit.workflows.auto``). ``scratch_budget="matched"`` gives the scratch control, in each seed, the time the
    costliest transfer run took (counting feature extraction a cache hit saved); ``"fixed"`` runs its own fixed
    schedule; ``"work"`` (default) gives it the FLOPs of the costliest transfer run of each seed (reproducible on
    any machine). The control is cached (see ``run_scratch``). The strategy kept as ``best`` is the one with the
    highest mean validation accuracy (the test split is read only for the report). With ``out``, its first-seed
    model goes to ``out/model`` and the runs to ``out/compare.json`` and ``out/report.md``. ``backbone="auto"``
    ranks the installed packs first (``rank``). ``common_options`` go to every strategy whose config has them (an
    option that none has is an error). ``log="tensorboard"`` writes every trained rung's epochs as TensorBoard
    scalars to ``log_dir`` (default ``out/tensorboard``), one folder per rung and seed.
    """
    from .fit import DEFAULT_BACKBONES

    if scratch_budget not in SCRATCH_BUDGETS:
        raise TransferkitError(f"scratch_budget={scratch_budget!r} is not one of {', '.join(SCRATCH_BUDGETS)}.")
    if out is not None:  # before any work: a folder transferkit may not write fails now
        check_out(out, overwrite=overwrite)
    logs = log_folder(log, log_dir or (Path(out) / "tensorboard" if out is not None else None))
    split = SplitSpec(seed, val_size, test_size, per_class, max_test, dedupe)
    is_auto = strategies == "auto" or list(strategies) == ["auto"]
    if not is_auto:  # options checked before any data is read
        rung_configs(parse_variants(list(strategies)), options, common_options, {})
    ds = DataSpec(text_column, label_column, image_column, encoding, test=test, val=val, task=task).load(data)
    regression = ds.task == "regression"
    if regression and not is_auto:
        from .fit import check_numeric_target

        for name in parse_variants(list(strategies)).values():
            check_numeric_target(ds.name, name)
    verified = check_images(ds, range(len(ds)), cache_dir=cache_dir, use_cache=use_cache, progress=progress)
    seed_list = list(range(seed, seed + seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list or not strategies:
        raise TransferkitError("compare needs at least one seed and one strategy.")
    spec = backbone or DEFAULT_BACKBONES[ds.modality]
    notes: list[str] = []
    if spec == "auto":  # one choice for every seed: ranked on the first seed's training split
        from .rank import rank

        ranked = rank(
            ds, None, controls=False, **split.with_seed(seed_list[0]).kwargs(), cache_dir=cache_dir,
            use_cache=use_cache, progress=progress,
        )
        spec = ranked.recommended
        notes.append(
            f"backbone auto: {spec}, the highest LogME of {', '.join(ranked.ordered(controls=False))} "
            f"(seed {seed_list[0]}'s training split)"
        )
    if is_auto:
        from .auto import parse_budget, plan_ladder

        first = split.make(ds, seed=seed_list[0])
        labelled = ds.targets[np.concatenate([first.train, first.val])]
        folds = 0 if regression else cv_folds(labelled, first)
        probe_options = {**(common_options or {}), **(options or {}).get("linear-probe", {})}
        plan = plan_ladder(
            create_backbone(spec),
            ds,
            len(first.train),
            len(first.val) + len(first.test),
            len(seed_list),
            budget if isinstance(budget, float | int) else parse_budget(budget),
            val_items=len(first.val) * len(seed_list),
            cv_folds=folds,
            n_val=len(first.val),
            probe_head=str(probe_options.get("head", "linear")),
            smallest_class=None if regression else int(np.bincount(labelled, minlength=len(ds.classes)).min()),
        )
        strategies = plan.strategies
        notes += plan.notes
        idle = unused_options(plan.strategies, common_options)
        if idle:
            notes.append(f"option(s) {', '.join(idle)} not used: no rung planned takes them")
        plan_options = plan.options
        if progress:
            out_console.print("auto: " + "; ".join(notes))
    else:
        plan, plan_options = None, {}
    variants = parse_variants(list(strategies))
    configs = rung_configs(variants, options, common_options, plan_options, LADDER if is_auto else ())
    runs: list[dict[str, Any]] = []
    models: dict[str, TransferModel] = {}
    first_proba: dict[str, Any] = {}  # the first seed's test probabilities (or values): the saved model's evidence
    first_control = None
    n_classes = len(ds.classes)
    score = val_key(ds.task)

    def scored(y_test: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        return regression_metrics(y_test, pred) if regression else classification_metrics(y_test, pred, n_classes)

    for seed in seed_list:
        splits = split.make(ds, seed=seed)
        costs, works = [], []
        preds: dict[str, Any] = {}
        for label, name in variants.items():
            t0 = time.perf_counter()
            bb = create_backbone(spec)  # fresh pretrained weights for every run: fine-tuning changes them
            ctx = RunContext(
                seed=seed, cache_dir=Path(cache_dir) if cache_dir else None, use_cache=use_cache, progress=progress,
                log_dir=logs / label / f"seed-{seed}" if logs else None,
            )
            result = STRATEGIES.get(name).run(bb, ds, splits, configs[label], ctx)
            wall = time.perf_counter() - t0
            costs.append(cold_cost(wall, result.info))
            counted = scratch_budget == "work"  # the FLOPs are counted only for the budget that uses them
            works.append(work_flops(bb, result.info, splits, cache_dir, use_cache) if counted else None)
            preds[label] = result.test_values if regression else result.test_pred
            runs.append(
                {
                    "model": label,
                    "strategy": name,
                    "seed": seed,
                    "wall_s": wall,
                    "cost_s": costs[-1],
                    "work_flops": works[-1],
                    score: float(result.info.get(score, float("nan"))),
                    "kept": result.info.get("kept", name),
                    "trainable_parameters": result.info.get("trainable_parameters", 0),
                    "best_epoch": result.info.get("best_epoch"),
                    "learning_curve": result.info.get("learning_curve"),
                }
            )
            if seed == seed_list[0]:
                models[label] = result.model
                first_proba[label] = result.test_values if regression else result.test_proba
        work = None if any(w is None for w in works) else max(works)
        control_config = budget_config(scratch_budget, work, max(costs))
        control = run_scratch(
            ds, splits, seed=seed, config=control_config, progress=progress, cache_dir=cache_dir, use_cache=use_cache
        )
        if seed == seed_list[0]:
            first_control = control
        # every choice of this seed is made: only now are its test labels read, for the report
        y_test = ds.targets[splits.test]
        for r in runs[-len(variants) :]:
            r.update(scored(y_test, preds[r["model"]]))
        budget_s = max(costs) if scratch_budget == "matched" else None
        runs.append(
            {
                "model": SCRATCH,
                "seed": seed,
                "wall_s": control.wall_s,
                "cost_s": control.info.get("cost_s", control.wall_s),
                "budget_s": budget_s,
                score: control.info.get(score),
                "description": control.description,
                "trainable_parameters": control.trainable_parameters,
                "info": {k: v for k, v in control.info.items() if k != "candidates"},
                **scored(y_test, control.test_pred),
            }
        )
    key, metric = ("r2", "R^2") if regression else ("accuracy", "accuracy")
    verdicts = {
        label: verdict([r[key] for r in runs if r["model"] == label], [r[key] for r in runs if r["model"] == SCRATCH],
                       metric=metric)
        for label in variants
    }
    val_mean = _val_means(runs, list(variants), score)
    prefer = plan.prefer if plan is not None else None
    best = prefer or choose_rung(val_mean, len(splits.val) * len(seed_list), ds.task)  # validation only
    meta = {
        "chosen_by": plan.prefer_reason if prefer else "",
        "val_items": len(splits.val) * len(seed_list),
        "data": ds.name,
        "modality": ds.modality,
        "task": ds.task,
        "content_hash": ds.content_hash(),
        "backbone": spec,
        "seeds": seed_list,
        "per_class": per_class,
        "max_test": max_test,
        "strategies": variants,
        "configs": {s: asdict(c) for s, c in configs.items()},
        "scratch_budget": scratch_budget,
        "auto_plan": notes,
        "duplicates": splits.duplicates,  # the same for every seed: deduplication comes before splitting
        "classes": ds.classes,
        "splits": splits.to_dict(),  # the last seed's sizes; every seed's are the same
        "layout": ds.layout,
        "environment": environment(),
    }
    test_idx = split.make(ds, seed=seed_list[0]).test
    test, model = (test_idx, first_proba[best]), models.get(best)
    if is_auto and not prefer and not regression and first_control is not None:
        scratch = scratch_choice(ds, runs, val_mean, best, len(splits.val) * len(seed_list), first_control,
                                 seed_list[0])
        if scratch is not None:
            meta["control_choice"], made = scratch
            if made is not None:  # the control's own model, scored (for the report only) as predict will score it
                model, test = made, (test_idx, made.predict_proba(ds.take(test_idx)))
    where = Path(out) if out is not None else None
    meta["test_evaluation"] = (regression_evidence(ds, *test, where) if regression else
                               test_evidence(ds, *test, where, seed_list[0]))
    res = CompareResult(runs, verdicts, best, model, meta, test)
    if out is not None:
        _write(res, Path(out))
    remember_images(verified, cache_dir, use_cache)
    return res


def scratch_choice(
    ds: Dataset, runs: list[dict[str, Any]], val_mean: dict[str, float], best: str, val_items: int, control: Any,
    seed: int,
) -> tuple[dict[str, Any], TransferModel | None] | None:
    """For ``--strategy auto``: when the from-scratch control's mean validation accuracy beats every transfer rung's
    by more than one standard error (``scratch_beats``), the control's first-seed model, if it can be saved (image
    classes' controls can: ``control_model``), and what was decided in words; None when the control did not win."""
    scores = [r["val_accuracy"] for r in runs if r["model"] == SCRATCH]
    if not scores or any(v is None for v in scores):
        return None
    control_mean = float(np.mean(scores))
    if not scratch_beats(val_mean, control_mean, val_items):
        return None
    made = control_model(control, ds)
    won = (f"the from-scratch control ({control.description}) beat every transfer rung on validation: "
           f"{100 * control_mean:.1f} % against {100 * val_mean[best]:.1f} % for `{best}`, by more than one standard "
           f"error over {val_items} validation predictions (negative transfer)")
    if isinstance(made, str):
        return {"kept": False, "text": f"{won}; {made}, so the saved model is `{best}`"}, None
    return {"kept": True, "text": f"{won}; the saved model is the control (`{made.backbone.spec}`, seed {seed})"}, made


def compare_record(res: CompareResult) -> dict[str, Any]:
    """What compare.json holds (and run.json's ``compare`` part for ``fit --strategy auto``)."""
    return {
        **res.meta,
        "runs": res.runs,
        "verdicts": {k: asdict(v) | {"text": v.text} for k, v in res.verdicts.items()},
        f"{val_key(res.task)}_mean": res.val_means(),
        "best": res.best,
    }


def report_lines(res: CompareResult, title: str = "transferkit compare") -> list[str]:
    """The markdown report: table, verdicts, the control's budget, what was kept and why."""
    return [
        f"# {title}: {res.meta['data']}",
        "",
        f"- backbone `{res.meta['backbone']}`, seeds {res.meta['seeds']}, data hash `{res.meta['content_hash']}`",
        "",
        res.table(),
        "",
        *[f"- {line}" for line in res.verdict_lines()],
        f"- {res.scratch_line()}",
        *[f"- {line}" for line in res.choice_lines()],
        f"- saved model: `{res.saved}` (seed {res.meta['seeds'][0]})",
        *[f"- {line}" for line in res.data_notes()],
        "",
    ]


def _write(res: CompareResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if res.model is not None:
        res.model.save(out / "model")
    (out / "compare.json").write_text(json_text(compare_record(res)))
    (out / "report.md").write_text("\n".join(report_lines(res)))
    write_html(out)


def print_compare(res: CompareResult) -> None:
    out_console.print(res.result_table().rich())
    for line in res.verdict_lines():
        out_console.print(line)
    out_console.print(res.scratch_line())
    for line in res.choice_lines() + res.data_notes():
        out_console.print(line)
