"""``distill``: teacher -> student with its controls, over seeds: teacher, the student on hard labels alone (same
student, same epochs), and the distilled student; accuracy with intervals, size and CPU throughput of each."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.evaluation import classification_metrics, mean_ci, verdict
from ..core.inputs import check_images, remember_images
from ..core.model import TransferModel
from ..core.outdir import check_out
from ..data.dataset import Dataset
from ..data.spec import DataSpec, SplitSpec
from ..errors import TransferkitError
from ..strategies import STRATEGIES, make_config
from .html import write_html
from .report import Column, ResultTable, Tabulated, count, decimal, duplicates_note, environment, percent_ci

SWEEP_TEMPERATURES = (1.0, 2.0, 4.0, 8.0)
SWEEP_ALPHAS = (0.5, 0.9)


@dataclass
class DistillResult(Tabulated):
    """Per-seed runs of teacher, hard-label student and distilled student, and their summary."""

    data: str
    teacher: str
    student: str
    temperature: float
    alpha: float
    runs: list[dict[str, Any]] = field(default_factory=list)
    sizes: dict[str, dict[str, float]] = field(default_factory=dict)
    out: Path | None = None
    duplicates: int = 0

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DistillResult:
        """The result as ``distill.json`` keeps it (no model)."""
        return cls(record["data"], record["teacher"], record["student"], record["temperature"], record["alpha"],
                   record["runs"], record["sizes"], duplicates=record.get("duplicates", 0))

    def accuracies(self, role: str) -> list[float]:
        return [r[role]["accuracy"] for r in self.runs]

    def summary(self) -> list[dict[str, Any]]:
        """One row per role: accuracy mean [CI], parameters, fp32 size, samples/s on this CPU."""
        rows = []
        for role in ("teacher", "student (hard labels)", "student (distilled)"):
            m, lo, hi = mean_ci(self.accuracies(role))  # an accuracy interval stays within [0, 1]
            rows.append({"role": role, "accuracy": m, "low": max(lo, 0.0), "high": min(hi, 1.0),
                         **self.sizes.get(role, {})})
        return rows

    def verdict_line(self) -> str:
        v = verdict(self.accuracies("student (distilled)"), self.accuracies("student (hard labels)"))
        return v.sentence("distillation", "hard labels alone")

    def swept(self) -> str | None:
        """The T and alpha validation chose per seed, when the run swept them."""
        role = "student (distilled)"
        if not self.runs or "sweep" not in self.runs[0][role]:
            return None
        picks = ", ".join(f"seed {r['seed']}: T {r[role]['temperature']:g}, alpha {r[role]['alpha']:g}"
                          for r in self.runs)
        return (f"T and alpha chosen on validation from T {SWEEP_TEMPERATURES} x alpha {SWEEP_ALPHAS} (the control "
                f"gets no such choice, so compare test accuracies, not validation): {picks}")

    def retained(self) -> float:
        """Distilled-student accuracy / teacher accuracy (means over seeds)."""
        return float(np.mean(self.accuracies("student (distilled)")) / max(np.mean(self.accuracies("teacher")), 1e-12))

    def result_table(self) -> ResultTable:
        """Teacher and students: accuracy as mean [95% CI] over the seeds, size and CPU speed."""
        table = ResultTable(
            f"{self.data}: {self.teacher} -> {self.student} (T={self.temperature}, alpha={self.alpha})",
            (Column("model", text=True), Column("accuracy (mean [95% CI])", percent_ci),
             Column("parameters", count), Column("fp32 MB", decimal(1)), Column("samples/s (CPU)", decimal(1))),
        )
        for r in self.summary():
            table.add(r["role"], (r["accuracy"], r["low"], r["high"]), r.get("parameters"), r.get("fp32_mb"),
                      r.get("samples_s"))
        return table

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data, "teacher": self.teacher, "student": self.student, "temperature": self.temperature,
            "alpha": self.alpha, "runs": self.runs, "sizes": self.sizes, "summary": self.summary(),
            "verdict": self.verdict_line(), "retained": self.retained(), "duplicates": self.duplicates,
            "environment": environment(),
        }


def _size(model: TransferModel, items: list[Any]) -> dict[str, float]:
    """Parameters, fp32 megabytes, and prediction throughput on ``items`` (one warm-up batch first)."""
    params = sum(p.numel() for p in model.parameters())
    model.predict_proba(items[:8])
    t0 = time.perf_counter()
    model.predict_proba(items)
    return {"parameters": float(params), "fp32_mb": params * 4 / 2**20,
            "samples_s": len(items) / max(time.perf_counter() - t0, 1e-9)}


def distill(
    data: Any,
    teacher: str,
    student: str = "auto",
    *,
    seeds: int = 3,
    temperature: float = 4.0,
    alpha: float = 0.7,
    epochs: int = 10,
    unlabelled: Any = None,
    unlabelled_column: str | None = None,
    teacher_strategy: str = "linear-probe",
    teacher_options: dict[str, Any] | None = None,
    student_options: dict[str, Any] | None = None,
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
    out: str | Path | None = None,
    overwrite: bool = False,
    sweep: bool = False,
) -> DistillResult:
    """Distil ``teacher`` into ``student`` on ``data`` over ``seeds`` seeds (``seed``, ``seed`` + 1, ...; each its
    own split), next to the hard-label control.

    ``teacher``: a saved transferkit model folder (used as is on every seed: it must not have seen the test
    items) or a backbone spec, trained per seed with ``teacher_strategy`` on that seed's training split.
    ``student``: a backbone spec (e.g. ``scratch:cnn``, ``pack:minilm-l6?layer=2``); ``auto`` is ``scratch:cnn``
    for images and the first two layers of MiniLM for texts. Both students train ``epochs`` epochs with the same
    schedule; the control has alpha 0 and no unlabelled data. With ``out``: ``distill.json``, ``report.md`` and
    the first seed's distilled student in ``out/model``. ``sweep``: the distilled student tries every T in
    ``SWEEP_TEMPERATURES`` with every alpha in ``SWEEP_ALPHAS`` per seed and keeps the best on validation (the
    test split plays no part; the choice is recorded per seed).
    """
    import tempfile

    from ..core.export import CONFIG, load
    from ..core.training import is_main_process
    from .fit import fit, write_run

    if seeds < 1:
        raise TransferkitError(f"seeds must be at least 1, got {seeds}.")
    looks_like_path = ":" not in str(teacher).split("?")[0] or str(teacher).startswith(("/", ".", "~"))
    if looks_like_path and not Path(teacher).expanduser().exists():
        raise TransferkitError(
            f"--teacher {teacher} does not exist: pass a saved model folder (e.g. runs/photos/model) or a backbone "
            "spec (e.g. pack:efficientnet-lite2)."
        )
    if out is not None:  # before any work: a folder transferkit may not write fails now
        check_out(out, overwrite=overwrite)
    split = SplitSpec(seed, val_size, test_size, per_class, max_test, dedupe)
    opts = {"epochs": epochs, "patience": None, "temperature": temperature, **(student_options or {})}
    # the students' and the teacher's options are checked before any data is read or any teacher trained
    make_config(STRATEGIES.get("distill"), {"teacher": str(teacher), "alpha": alpha, **opts})
    make_config(STRATEGIES.get(teacher_strategy), dict(teacher_options or {}))
    ds: Dataset = DataSpec(text_column, label_column, image_column, encoding, test=test, val=val, task=task).load(data)
    if ds.task == "regression":
        raise TransferkitError(
            "distill handles classification only so far; a numeric target trains with fit or compare (linear-probe, "
            "finetune, lora)."
        )
    verified = check_images(ds, range(len(ds)), cache_dir=cache_dir, progress=progress)
    first = split.seed
    if student == "auto":
        student = "scratch:cnn?size=32" if ds.modality == "image" else "pack:minilm-l6?layer=2"
    saved_teacher = Path(teacher).expanduser()
    is_saved = (saved_teacher / CONFIG).is_file()
    if saved_teacher.is_dir() and not is_saved and not (saved_teacher / "config.json").is_file():
        raise TransferkitError(
            f"{saved_teacher} is neither a saved transferkit model (no {CONFIG} in it) nor a backbone folder."
        )
    common = {**split.kwargs(), "cache_dir": cache_dir, "progress": progress, "scratch": False}
    del common["seed"]  # each run is given its own
    res = DistillResult(ds.name, teacher, student, temperature, alpha, out=Path(out) if out else None)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(first, first + seeds):
            splits = split.make(ds, seed=seed)
            res.duplicates = splits.duplicates
            if is_saved:
                teacher_dir = saved_teacher
                tmodel = load(teacher_dir)
                pred = np.asarray(tmodel.predict_proba(ds.take(splits.test))).argmax(1)
                t_metrics = classification_metrics(ds.targets[splits.test], pred, len(ds.classes))
            else:
                teacher_dir = Path(tmp) / f"teacher-{seed}"
                tfit = fit(ds, teacher, teacher_strategy, seed=seed, out=teacher_dir, **common,
                           **(teacher_options or {}))
                teacher_dir, tmodel, t_metrics = teacher_dir / "model", tfit.model, tfit.metrics["transfer"]
            runs: dict[str, Any] = {"seed": seed, "teacher": t_metrics}
            for role, a, extra in (("student (hard labels)", 0.0, None), ("student (distilled)", alpha, unlabelled)):
                grid = [(temperature, a)]
                if sweep and a > 0:
                    grid = [(t, al) for t in SWEEP_TEMPERATURES for al in SWEEP_ALPHAS]
                r, vals = None, []
                for t, al in grid:  # only the best so far stays in memory
                    f = fit(ds, student, "distill", seed=seed, teacher=str(teacher_dir), alpha=al, unlabelled=extra,
                            unlabelled_column=unlabelled_column, **common, **{**opts, "temperature": t})
                    vals.append(f.record["strategy_info"].get("val_accuracy") or 0.0)
                    if r is None or vals[-1] > max(vals[:-1]):
                        r = f
                assert r is not None
                if out and seed == first and a > 0 and is_main_process():
                    write_run(r, Path(out))
                curve = r.record["strategy_info"].get("learning_curve", [])
                runs[role] = {**r.metrics["transfer"], "wall_s": r.record["timings_s"]["transfer_total"],
                              "epoch_s": float(np.median([e["seconds"] for e in curve])) if curve else None,
                              "val_accuracy": r.record["strategy_info"].get("val_accuracy"),
                              "unlabelled": r.record["strategy_info"].get("unlabelled", 0),
                              "temperature": r.record["strategy_info"].get("temperature"),
                              "alpha": r.record["strategy_info"].get("alpha")}
                if len(grid) > 1:
                    runs[role]["sweep"] = [{"temperature": t, "alpha": al, "val_accuracy": v}
                                           for (t, al), v in zip(grid, vals, strict=True)]
                if seed == first:
                    res.sizes[role] = _size(r.model, ds.take(splits.test[:256]))
            if seed == first:
                res.sizes["teacher"] = _size(tmodel, ds.take(splits.test[:256]))
            res.runs.append(runs)
    if out is not None:
        write_distill(res, Path(out))
    remember_images(verified, cache_dir)
    return res


def write_distill(res: DistillResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "distill.json").write_text(json.dumps(res.to_dict(), indent=2, default=str))
    text = [
        f"# transferkit distill: {res.data}",
        "",
        f"- teacher `{res.teacher}`, student `{res.student}`, "
        + ("T and alpha swept per seed (below)" if res.swept() else f"T = {res.temperature}, alpha = {res.alpha}")
        + f", {len(res.runs)} seeds",
        "",
        res.table(),
        "",
        res.verdict_line(),
        f"Accuracy retained (distilled student / teacher): {100 * res.retained():.1f} %.",
        *([res.swept()] if res.swept() else []),
        *duplicates_note(res.duplicates),
        "",
    ]
    (out / "report.md").write_text("\n".join(text))
    write_html(out)


def print_distill(res: DistillResult) -> None:
    from ..core.progress import out_console as console

    console.print(res.result_table().rich())
    console.print(res.verdict_line())
    console.print(f"Accuracy retained (distilled student / teacher): {res.retained():.1%}")
    if res.swept():
        console.print(res.swept())
    for line in duplicates_note(res.duplicates):
        console.print(line)
