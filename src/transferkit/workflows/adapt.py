"""``adapt``: labelled source, unlabelled target, over seeds: the shift diagnostic, the source-only baseline and each
adaptation method, chosen without target labels; target labels, when given, only score the result.

The target-test labels enter in one place, ``AdaptResult.score_target``, after every model has been trained and
selected; training and selection receive target features only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.evaluation import mean_ci, verdict
from ..core.inputs import check_images, remember_images
from ..core.outdir import check_out
from ..data.dataset import Dataset
from ..data.spec import DataSpec, SplitSpec
from ..errors import DataError, TransferkitError
from ..methods.adaptation import (
    ADAPTING,
    BLIND,
    AdaptSettings,
    Trial,
    check_methods,
    predict_logits,
    to_head,
    train_method,
)
from ..methods.selection import SELECTIONS, importance_weights
from ..methods.shift import shift_diagnostic
from .html import write_html
from .report import Column, ResultTable, Tabulated, decimal, duplicates_note, environment, percent, percent_ci

RECOMMEND = ("reverse", "criterion")


@dataclass
class AdaptResult(Tabulated):
    """Diagnostic, per-seed chosen checkpoints and predictions, and (with target labels) target accuracy."""

    source: str
    target: str
    backbone: str
    methods: list[str]
    select: str
    classes: list[str]
    recommend: str = "reverse"
    diagnostic: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    target_predictions: list[dict[str, np.ndarray]] = field(default_factory=list, repr=False)
    target_accuracy: dict[str, list[float]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)
    out: Path | None = None
    duplicates: int = 0

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AdaptResult:
        """The result as ``adapt.json`` keeps it (no model, no per-item predictions)."""
        keys = ("source", "target", "backbone", "methods", "select", "classes", "recommend", "diagnostic", "runs")
        return cls(*(record[k] for k in keys), target_accuracy=record["target_accuracy"], sizes=record["sizes"],
                   timings=record["timings_s"], duplicates=record.get("duplicates", 0))

    @property
    def all_methods(self) -> list[str]:
        return ["source-only", *self.methods]

    def score_target(self, labels: np.ndarray) -> None:
        """Target-test accuracy of every method on every seed, from the stored predictions."""
        self.target_accuracy = {
            m: [float((p[m] == labels).mean()) for p in self.target_predictions] for m in self.all_methods
        }

    def _mean(self, method: str, key: str) -> float:
        return float(np.mean([r["methods"][method][key] for r in self.runs]))

    def criterion(self, method: str) -> float:
        return self._mean(method, "criterion")

    def reverse(self, method: str) -> float:
        """Mean reverse-validation accuracy over seeds (see ``adaptation.reverse_accuracy``)."""
        return self._mean(method, "reverse_accuracy")

    def scored(self, method: str) -> bool:
        """Whether the selection criterion can tell this method from source-only at all."""
        return method not in BLIND[self.select]

    def recommended(self) -> str:
        """The method to use on the target, chosen without target labels (``recommend``).

        ``reverse`` (default): among the methods whose reverse-validation accuracy beats source-only's on every
        seed, the best on average; source-only when none does. Reverse validation is noisy under a large shift
        (BENCHMARKS.md), so adapting is advised only on evidence that holds on every seed.
        ``criterion``: among the methods the selection criterion can see, the best mean criterion.
        """
        if self.recommend == "criterion":
            return max((m for m in self.all_methods if self.scored(m)), key=self.criterion)
        winners = [m for m in self.methods if self._reverse_wins(m) == len(self.runs)]
        return max(winners, key=self.reverse) if winners else "source-only"

    def _reverse_wins(self, method: str) -> int:
        return sum(r["methods"][method]["reverse_accuracy"] > r["methods"]["source-only"]["reverse_accuracy"]
                   for r in self.runs)

    def recommendation_reason(self) -> str:
        """Why ``recommended`` chose what it chose, in words."""
        best = self.recommended()
        if self.recommend == "criterion":
            return f"best mean criterion among the methods `{self.select}` can score"
        if best != "source-only":
            return (f"reverse validation {100 * self.reverse(best):.1f} % vs source-only's "
                    f"{100 * self.reverse('source-only'):.1f} %, better on "
                    + (f"every one of {len(self.runs)} seeds" if len(self.runs) > 1 else "its one seed"))
        top = max(self.methods, key=self.reverse)
        return (f"no method's reverse validation beat source-only's on every seed (the best other method on "
                f"average, {top}, {100 * self.reverse(top):.1f} % vs {100 * self.reverse('source-only'):.1f} %, beat "
                f"it on {self._reverse_wins(top)} of {len(self.runs)})")

    def verdict_line(self, method: str) -> str:
        v = verdict(self.target_accuracy[method], self.target_accuracy["source-only"])
        return v.sentence(method, "source-only")

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        for m in self.all_methods:
            src = [r["methods"][m]["source_test_accuracy"] for r in self.runs]
            row: dict[str, Any] = {"method": m, "source_test_accuracy": float(np.mean(src)),
                                   "criterion": self.criterion(m), "reverse_accuracy": self.reverse(m),
                                   "reverse_wins": self._reverse_wins(m),
                                   "chosen": [_chosen(r["methods"][m]) for r in self.runs]}
            if self.target_accuracy:
                mean, lo, hi = mean_ci(self.target_accuracy[m])
                row.update(target_accuracy=mean, low=max(lo, 0.0), high=min(hi, 1.0))
                if m != "source-only":
                    row["verdict"] = self.verdict_line(m)
            rows.append(row)
        return rows

    def result_table(self) -> ResultTable:
        """Per method: source and (with labels) target test accuracy, the selection criterion, reverse validation
        and the checkpoint chosen on the first seed."""
        has_t = bool(self.target_accuracy)
        columns = [Column("method", text=True), Column("source test", percent)]
        columns += [Column("target test (mean [95% CI])", percent_ci)] if has_t else []
        columns += [Column(f"criterion ({self.select}, higher is better)", decimal(4)),
                    Column("reverse val (seeds beating source-only)", text=True), Column("chosen (seed 0)", text=True)]
        table = ResultTable(f"{self.source} -> {self.target} ({self.backbone}, {len(self.runs)} seeds)", columns)
        for r in self.summary():
            target = [(r["target_accuracy"], r["low"], r["high"])] if has_t else []
            crit = r["criterion"] if self.scored(r["method"]) else f"n/a ({self.select} cannot see it)"
            wins = "" if r["method"] == "source-only" else f" ({r['reverse_wins']}/{len(self.runs)})"
            table.add(r["method"], r["source_test_accuracy"], *target, crit, percent(r["reverse_accuracy"]) + wins,
                      r["chosen"][0])
        return table

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "target": self.target, "backbone": self.backbone, "methods": self.methods,
            "select": self.select, "classes": self.classes, "diagnostic": self.diagnostic, "runs": self.runs,
            "summary": self.summary(), "recommend": self.recommend, "recommended": self.recommended(),
            "recommendation": self.recommendation_reason(), "target_accuracy": self.target_accuracy,
            "sizes": self.sizes, "timings_s": self.timings, "duplicates": self.duplicates,
            "environment": environment(),
        }


def _chosen(m: dict[str, Any]) -> str:
    params = ", ".join(f"{k} {v:g}" for k, v in m["params"].items())
    return f"epoch {m['epoch']}" + (f", {params}" if params else "")


def _target_labels(test: Dataset, classes: list[str]) -> np.ndarray:
    unknown = sorted(set(test.labels) - set(classes))
    if unknown:
        raise DataError(f"The target test data has labels the source lacks: {', '.join(map(str, unknown))}; "
                        f"the source classes are {', '.join(classes)}.")
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[label] for label in test.labels])


def adapt(
    source: Any,
    target: Any,
    target_test: Any = None,
    *,
    backbone: str | None = None,
    methods: tuple[str, ...] | list[str] = ADAPTING,
    select: str = "dev",
    recommend: str = "reverse",
    seeds: int = 3,
    epochs: int = 30,
    settings: AdaptSettings | None = None,
    seed: int = 0,
    per_class: int | None = None,
    val_size: float = 0.2,
    test_size: float = 0.2,
    max_test: int | None = None,
    dedupe: bool = True,
    max_target: int | None = None,
    text_column: str | None = None,
    label_column: str = "label",
    image_column: str | None = None,
    encoding: str = "utf-8",
    test: Any = None,
    val: Any = None,
    task: str = "auto",
    target_column: str | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    out: str | Path | None = None,
    overwrite: bool = False,
) -> AdaptResult:
    """Adapt a model trained on labelled ``source`` to the unlabelled ``target`` with each of ``methods``, over
    ``seeds`` seeds (``seed``, ``seed`` + 1, ...; each its own source split).

    ``source``: anything ``fit`` takes. ``target``: unlabelled inputs (a folder, a CSV/JSONL file with
    ``target_column``, a built-in name or Dataset whose labels are ignored, a list). ``target_test``: labelled
    target data, used only to report target accuracy after training and selection. The backbone is frozen (its
    features are cached); each method trains an adapter on them per seed, its epoch and hyperparameter chosen by
    ``select`` (see ``transferkit.methods.selection``); ``settings`` tunes the adapter (``epochs`` always applies).
    ``recommend`` says how the method to use is chosen, also without target labels (see
    ``AdaptResult.recommended``). With ``out``: ``adapt.json``, ``report.md`` and, in ``out/model``, the first
    seed's model of the recommended method.
    """
    from ..backbones import create_backbone
    from ..core.features import extract_features
    from ..core.model import TransferModel
    from ..data.sources import load_unlabelled, unlabelled_dataset
    from .fit import DEFAULT_BACKBONES

    chosen_methods = check_methods(methods)
    if select not in SELECTIONS:
        raise TransferkitError(f"select={select!r} is not one of {', '.join(SELECTIONS)}.")
    if recommend not in RECOMMEND:
        raise TransferkitError(f"recommend={recommend!r} is not one of {', '.join(RECOMMEND)}.")
    if epochs < 1:
        raise TransferkitError(f"epochs must be at least 1, got {epochs}.")
    if seeds < 1:
        raise TransferkitError(f"seeds must be at least 1, got {seeds}.")
    settings = replace(settings, epochs=epochs) if settings else AdaptSettings(epochs=epochs)
    if out is not None:  # before any work: a folder transferkit may not write fails now
        check_out(out, overwrite=overwrite)
    split = SplitSpec(seed, val_size, test_size, per_class, max_test, dedupe)
    reading = DataSpec(text_column, label_column, image_column, encoding, test=test, val=val, task=task)
    ds = reading.load(source)
    if ds.task == "regression":
        raise TransferkitError(
            "adapt handles classification only so far; a numeric target trains with fit or compare (linear-probe, "
            "finetune, lora)."
        )
    items = load_unlabelled(target, ds.modality, target_column or text_column or image_column, encoding)
    if len(items) < 10:
        raise DataError(f"The unlabelled target holds {len(items)} inputs; adaptation needs at least 10.")
    if max_target is not None and len(items) > max_target:
        keep = np.sort(np.random.default_rng(0).choice(len(items), max_target, replace=False))
        items = [items[int(i)] for i in keep]
    test_ds = None
    if target_test is not None:
        test_ds = replace(reading, test=None, val=None).load(target_test)
        if test_ds.modality != ds.modality:
            raise DataError(f"The target test data holds {test_ds.modality}s; the source holds {ds.modality}s.")
        _target_labels(test_ds, ds.classes)  # fail early on unknown classes; the labels are read again at the end
    spec = backbone or DEFAULT_BACKBONES[ds.modality]
    bb = create_backbone(spec)
    res = AdaptResult(_name(source, ds.name), _name(target, "target"), spec, chosen_methods, select, ds.classes,
                      recommend, out=Path(out) if out else None)
    cache = Path(cache_dir) if cache_dir else None
    t0 = time.perf_counter()
    seed_list = list(range(split.seed, split.seed + seeds))
    splits = [split.make(ds, seed=s) for s in seed_list]
    res.duplicates = splits[0].duplicates
    used = np.unique(np.concatenate([np.concatenate([sp.train, sp.val, sp.test]) for sp in splits]))
    feats = dict(cache_dir=cache, use_cache=use_cache, progress=progress)
    xs_all, _ = extract_features(bb, ds, used, description="source features", **feats)
    pos = {int(i): k for k, i in enumerate(used)}
    pool = unlabelled_dataset(items, ds, res.target)
    verified: list[str] = []
    for d in (ds, pool, *([test_ds] if test_ds is not None else [])):
        verified += check_images(d, range(len(d)), cache_dir=cache_dir, use_cache=use_cache, progress=progress)
    xt, _ = extract_features(bb, pool, range(len(pool)), description="target features", **feats)
    x_test = None
    if test_ds is not None:
        x_test, _ = extract_features(bb, test_ds, range(len(test_ds)), description="target test features", **feats)
    res.timings["features"] = time.perf_counter() - t0
    res.sizes = {"source": len(ds), "target_unlabelled": len(items), "target_test": len(test_ds or [])}

    def rows(idx: np.ndarray) -> np.ndarray:
        return xs_all[[pos[int(i)] for i in idx]]

    t0 = time.perf_counter()
    res.diagnostic = shift_diagnostic(rows(splits[0].train), xt, seed=seed_list[0])
    res.timings["diagnostic"] = time.perf_counter() - t0
    heads: dict[str, Any] = {}
    y = ds.targets
    for seed, sp in zip(seed_list, splits, strict=True):
        xs, ys, xv, yv = rows(sp.train), y[sp.train], rows(sp.val), y[sp.val]
        weights = importance_weights(xs, xt, xv, seed) if select == "dev" else None
        run: dict[str, Any] = {"seed": seed, "methods": {}}
        preds: dict[str, np.ndarray] = {}
        base: Trial | None = None
        for method in res.all_methods:
            t1 = time.perf_counter()
            trial = train_method(method, xs, ys, xv, yv, xt, len(ds.classes), select=select, settings=settings,
                                 seed=seed, weights=weights, source_only=base)
            if method == "source-only":
                base = trial
            head = to_head(trial, settings)
            src_pred = predict_logits(to_head(trial, settings, domain="source"), rows(sp.test)).argmax(1)
            run["methods"][method] = {
                **trial.describe(), "params": trial.params,
                "source_test_accuracy": float((src_pred == y[sp.test]).mean()),
                "seconds": time.perf_counter() - t1,
            }
            if x_test is not None:
                preds[method] = predict_logits(head, x_test).argmax(1)
            if seed == seed_list[0]:
                heads[method] = head
        res.runs.append(run)
        res.target_predictions.append(preds)
    res.timings["train"] = time.perf_counter() - t0 - res.timings["diagnostic"]
    best = res.recommended()
    res.model = TransferModel(bb, heads[best], ds.classes)
    if test_ds is not None:  # the only place target labels are read
        res.score_target(_target_labels(test_ds, ds.classes))
    if out is not None:
        write_adapt(res, Path(out))
    remember_images(verified, cache_dir, use_cache)
    return res


def _name(data: Any, default: str) -> str:
    if isinstance(data, Dataset):
        return data.name
    if isinstance(data, str | Path):
        return str(data)
    return default


def write_adapt(res: AdaptResult, out: Path) -> None:
    """``adapt.json``, ``report.md`` and the recommended method's seed-0 model in ``out/model``."""
    out.mkdir(parents=True, exist_ok=True)
    res.model.save(out / "model")
    (out / "adapt.json").write_text(json.dumps(res.to_dict(), indent=2, default=str))
    d = res.diagnostic
    text = [
        f"# transferkit adapt: {res.source} -> {res.target}",
        "",
        f"- backbone `{res.backbone}` (frozen; adapters train on its features), {len(res.runs)} seeds, "
        f"selection `{res.select}` (no target labels)",
        f"- shift: proxy A-distance {d['proxy_a_distance']:.2f} (domain classifier error {d['domain_error']:.3f}), "
        f"MMD^2 {d['mmd2']:.4f} (permutation p = {d['mmd_p']:.3f})",
        f"- {d['words']}",
        "",
        res.table(),
        "",
        *[f"- {r['verdict']}" for r in res.summary() if "verdict" in r],
        f"- recommended without target labels: **{res.recommended()}** ({res.recommendation_reason()}); saved to "
        "`model/`",
        *[f"- {line}" for line in duplicates_note(res.duplicates)],
        "",
    ]
    if not res.target_accuracy:
        text.insert(-1, "- no labelled target test data was given: target accuracy is unknown")
    (out / "report.md").write_text("\n".join(text))
    write_html(out)


def print_adapt(res: AdaptResult) -> None:
    """Rich table of the comparison, the diagnostic and the verdicts on the console."""
    from ..core.progress import out_console as console

    d = res.diagnostic
    console.print(f"Shift diagnostic: proxy A-distance {d['proxy_a_distance']:.2f} of 2, MMD^2 {d['mmd2']:.4f} "
                  f"(p = {d['mmd_p']:.3f})")
    console.print(d["words"])
    console.print(res.result_table().rich())
    for r in res.summary():
        if "verdict" in r:
            console.print(r["verdict"])
    if not res.target_accuracy:
        console.print("No labelled target test data: target accuracy is unknown (pass --target-test to measure it).")
    console.print(f"Recommended without target labels: {res.recommended()} ({res.recommendation_reason()})")
    for line in duplicates_note(res.duplicates):
        console.print(line)
