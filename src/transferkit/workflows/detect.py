"""``transferkit detect``: anomaly detection fitted on normal examples only, on a frozen pretrained backbone's
features, against the same detectors on raw pixels / TF-IDF (the from-scratch control), over seeds.

Each seed splits the normal data into a part the detectors are fitted on and a held-out part that standardises
their scores and sets the threshold (a target false-positive rate, or the contamination rate). Labelled test data,
when given, is read only after every detector of the seed is fitted and thresholded: for the report (AUROC,
average precision, false-positive rate and recall at the threshold). The saved detector is fixed before any of
that (the first of ``detectors``), so test labels play no part in what is saved.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import json_text
from .._version import __version__
from ..backbones import create_backbone
from ..core.evaluation import Verdict, mean_ci, verdict
from ..data.dataset import Dataset
from ..data.spec import DataSpec
from ..errors import DataError, TransferkitError
from ..methods.anomaly import BUILTIN, KNN_K, check_detector, detection_metrics, fit_detector
from ..methods.detector import AnomalyDetector
from .report import Column, ResultTable, Tabulated, environment, percent_ci

NORMAL_WORDS = ("normal", "inlier", "good", "ok", "0", "false")
ANOMALY_WORDS = ("anomaly", "anomalous", "abnormal", "outlier", "1", "true")
"""Test labels that say normal / anomaly when the normal data has no class names to compare them with."""

METRICS = (("auroc", "AUROC"), ("average_precision", "average precision"), ("fpr", "FPR at threshold"),
           ("recall", "recall at threshold"))
CONTROL = {"image": "raw pixels (32x32)", "text": "TF-IDF 1-2 grams (LSA to at most 256)"}


@dataclass
class NormalData:
    """Normal items to fit on, and labelled test items (``is_anomaly``) when there are any."""

    items: list[Any]
    modality: str
    name: str
    test_items: list[Any] = field(default_factory=list)
    is_anomaly: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    test_labels: list[str] = field(default_factory=list)
    normal: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_normal(data: Any, normal: Sequence[str] | None, test: Any, reading: DataSpec) -> NormalData:
    """The normal data and its test set: ``normal`` names the normal classes of a labelled DATA (its other
    classes are never fitted on; its own test split, if any, is the test set unless ``test`` is given); without it,
    every item of DATA is normal and the test labels say normal / anomaly."""
    from ..data.sources import load_data, load_unlabelled

    read = {"text_column": reading.text_column, "label_column": reading.label_column,
            "image_column": reading.image_column, "encoding": reading.encoding}
    normal = [str(n) for n in normal or []]
    if normal:
        ds = load_data(data, **read)
        unknown = [n for n in normal if n not in ds.classes]
        if unknown:
            raise DataError(f"--normal {', '.join(unknown)}: not a class of {ds.name} (its classes: "
                            f"{', '.join(ds.classes)}).")
        split = list(ds.split or ["train"] * len(ds))
        keep = [i for i, (lab, s) in enumerate(zip(ds.labels, split, strict=True)) if lab in normal and s != "test"]
        if not keep:
            raise DataError(f"{ds.name} has no {', '.join(normal)} items outside its test split to fit on.")
        nd = NormalData([ds.items[i] for i in keep], ds.modality, ds.name, normal=normal)
        own = [i for i, s in enumerate(split) if s == "test"]
        if own and test is None:
            nd.test_items = [ds.items[i] for i in own]
            nd.test_labels = [ds.labels[i] for i in own]
            nd.notes.append(f"test set: {ds.name}'s own test split ({len(own)} items)")
        elif own:
            nd.notes.append(f"{ds.name}'s own test split ({len(own)} items) is not used: --test replaces it")
        left = len(ds) - len(own) - len(keep)
        if left:
            nd.notes.append(f"{left} items of other classes outside the test split are not used (normal: "
                            f"{', '.join(normal)})")
    else:
        modality = _modality(data, reading)
        column = reading.text_column if modality == "text" else reading.image_column
        items = load_unlabelled(data, modality, column, reading.encoding)
        nd = NormalData(items, modality, _name(data))
        path = Path(str(data)) if isinstance(data, str | Path) else None
        if path is not None and path.is_dir() and any(p.is_dir() for p in path.iterdir()):
            nd.notes.append(f"every image under {path}, in all its subfolders, was taken as normal (--normal CLASS "
                            "takes only the named class subfolders)")
    if test is not None:
        tds = load_data(test, **read)
        if tds.modality != nd.modality:
            raise DataError(f"--test {test} holds {tds.modality}s but the normal data holds {nd.modality}s.")
        nd.test_items, nd.test_labels = list(tds.items), list(tds.labels)
    if nd.test_labels:
        nd.is_anomaly = _anomaly_flags(nd.test_labels, normal, "the test set")
        if nd.is_anomaly.all() or not nd.is_anomaly.any():
            raise DataError("The test set needs both normal and anomalous examples to be scored; "
                            f"it has {int(nd.is_anomaly.sum())} anomalies among {len(nd.is_anomaly)}.")
    return nd


def _modality(data: Any, reading: DataSpec) -> str:
    if isinstance(data, Dataset):
        return data.modality
    if isinstance(data, np.ndarray):
        return "image"
    if isinstance(data, list | tuple):
        from ..data.sources import IMAGE_EXTENSIONS

        texts = data and all(isinstance(t, str) for t in data)
        paths = data and all(isinstance(t, str | Path) and Path(t).suffix.lower() in IMAGE_EXTENSIONS for t in data)
        return "text" if texts and not paths else "image"
    path = Path(str(data))
    if path.is_dir():
        return "image"
    if path.is_file():
        if path.suffix.lower() not in (".csv", ".jsonl", ".ndjson"):
            raise DataError(f"{path}: expected a folder of images or a .csv/.jsonl file of normal examples.")
        return "image" if reading.image_column else "text"
    from ..data.builtin import DATASETS

    if isinstance(data, str) and data in DATASETS:
        raise DataError(f"{data} is a labelled dataset: name its normal class(es) with --normal (e.g. --normal "
                        "CLASS); the others are the anomalies.")
    raise DataError(f"{data} is neither an existing folder/file nor a built-in dataset.")


def _name(data: Any) -> str:
    if isinstance(data, Dataset):
        return data.name
    return Path(str(data)).stem if isinstance(data, str | Path) else "normal data"


def _anomaly_flags(labels: Sequence[str], normal: Sequence[str], where: str) -> np.ndarray:
    if normal and any(lab in normal for lab in labels):
        return np.array([lab not in normal for lab in labels], dtype=bool)
    low = [str(lab).strip().lower() for lab in labels]
    odd = sorted({lab for lab in low if lab not in NORMAL_WORDS + ANOMALY_WORDS})
    if odd:
        raise DataError(
            f"{where} has labels {', '.join(odd[:5])} that say neither normal nor anomaly: label its rows "
            f"{NORMAL_WORDS[0]} / {ANOMALY_WORDS[0]} (or 0 / 1), or name the normal classes with --normal"
            + (f" (no test label is {' or '.join(normal)})." if normal else ".")
        )
    return np.array([lab in ANOMALY_WORDS for lab in low], dtype=bool)


def _as_dataset(items: list[Any], modality: str, name: str) -> Dataset:
    """``items`` as a Dataset for feature extraction; its labels are placeholders that nothing reads."""
    return Dataset(items, [("a", "b")[i % 2] for i in range(len(items))], modality, name=name)  # type: ignore[arg-type]


def control_inputs(pool: Dataset) -> Any:
    """The control's raw inputs for every ``pool`` item: 32x32 pixels in [0, 1] (images) or the texts."""
    if pool.modality == "image":
        from ..methods.control import _image_tensor

        x = _image_tensor(pool, np.arange(len(pool)), 32)
        return x.reshape(len(pool), -1).numpy().astype(np.float32) / 255.0
    return [str(t) for t in pool.items]


def control_features(raw: Any, fit: np.ndarray, seed: int) -> np.ndarray:
    """The control's representation of every item, fitted on ``fit`` only: the pixels (images) or LSA of TF-IDF
    1-2 grams (texts, at most 256 dimensions)."""
    if isinstance(raw, np.ndarray):  # the pixels as they are: nothing to fit (centring would blur cosine kNN)
        return raw
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=100_000).fit([raw[i] for i in fit])
    except ValueError as e:  # e.g. only one-letter words: nothing for the control to count
        raise DataError(f"The TF-IDF control finds no words in the normal texts ({e}).") from None
    x_fit = vec.transform([raw[i] for i in fit])
    svd = TruncatedSVD(n_components=max(1, min(256, len(fit) - 1, x_fit.shape[1] - 1)), random_state=seed).fit(x_fit)
    # measured: a residual-norm coordinate (what the projection leaves out) made the kNN control weaker on
    # SpamAssassin (72.8 -> 65.6 mean AUROC) and left Mahalanobis below chance, so the control is plain LSA
    return svd.transform(vec.transform(raw)).astype(np.float32)


@dataclass
class DetectResult(Tabulated):
    """Every seed's test metrics per detector and representation, the verdicts (transfer against the control, on
    AUROC), the saved detector, and what the run was."""

    runs: list[dict[str, Any]]
    verdicts: dict[str, Verdict]
    detector: AnomalyDetector | None
    """The saved detector (None for a result read back from detect.json)."""
    meta: dict[str, Any]
    out: Path | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DetectResult:
        """The result as ``detect.json`` holds it (no detector: load that with ``load_detector``)."""
        skip = ("runs", "summary", "verdicts")
        verdicts = {k: Verdict(v["kind"], v["diff"], v["low"], v["high"], v["seeds"], "AUROC")
                    for k, v in record["verdicts"].items()}
        return cls(record["runs"], verdicts, None, {k: v for k, v in record.items() if k not in skip})

    def summary(self) -> list[dict[str, Any]]:
        """Per detector and features: each metric as (mean, low, high) over the seeds."""
        out = []
        for det in self.meta["detectors"]:
            for rep in ("transfer", "control"):
                runs = [r for r in self.runs if r["detector"] == det and r["features"] == rep]
                if not runs or "auroc" not in runs[0]:
                    continue
                out.append({"detector": det, "features": rep,
                            **{k: mean_ci([r[k] for r in runs]) for k, _ in METRICS},
                            "fit_score_s_per_1000": float(np.mean([r["fit_score_s_per_1000"] for r in runs]))})
        return out

    def result_table(self) -> ResultTable:
        seeds = len(self.meta["seeds"])
        table = ResultTable(
            f"{self.meta['data']}: anomaly detection, {seeds} seed(s), mean [95% CI]",
            (Column("detector", text=True), Column("features", text=True),
             *(Column(title, percent_ci) for _, title in METRICS),
             Column("fit + score s / 1,000", lambda v: f"{v:.2f}")),
        )
        names = {"transfer": self.meta["backbone"], "control": CONTROL[self.meta["modality"]]}
        for r in self.summary():
            table.add(r["detector"], names[r["features"]], *(r[k] for k, _ in METRICS), r["fit_score_s_per_1000"])
        return table

    def verdict_lines(self) -> list[str]:
        control = CONTROL[self.meta["modality"]]
        ours = f"{self.meta['backbone']} features"
        return [f"{det}, AUROC: {v.sentence(ours, control)}" for det, v in self.verdicts.items()]

    def lines(self) -> list[str]:
        """What was fitted, the threshold, the saved detector and every note."""
        m = self.meta
        how = (f"the contamination rate {m['rate']:g}" if m["rate_kind"] == "contamination" else
               f"a {100 * m['rate']:g} % false-positive rate on held-out normal data")
        out = [f"normal data: {m['n_normal']} items of {m['data']} ({', '.join(m['normal']) or 'all'}), each seed "
               f"fitting on {m['n_fit']} and setting the threshold on the other {m['n_val']} ({how})",
               f"saved detector: {m['saved']} on {m['backbone']} features (seed {m['seeds'][0]}), threshold "
               f"{m['threshold']:.3f} (standardised score); chosen before any test label was read"]
        if not m["n_test"]:
            out.append("no labelled test data: nothing to score (give --test, or --normal on data with a test split)")
        elif len(m["seeds"]) > 1:
            out.append("the intervals cover what the seeds vary (which normal items fit and which set the threshold) "
                       "on one test set, not the variation between test sets")
        return out + list(m["notes"])

    def to_dict(self) -> dict[str, Any]:
        return {**self.meta, "runs": self.runs, "summary": self.summary(),
                "verdicts": {k: {"kind": v.kind, "diff": v.diff, "low": v.low, "high": v.high, "seeds": v.seeds,
                                 "text": line}
                             for (k, v), line in zip(self.verdicts.items(), self.verdict_lines(), strict=True)}}


def detect(
    data: Any,
    backbone: str | None = None,
    *,
    normal: Sequence[str] | str | None = None,
    test: Any = None,
    fpr: float | None = None,
    contamination: float | None = None,
    detectors: Sequence[str] | str = BUILTIN,
    k: int = KNN_K,
    seeds: int = 3,
    seed: int = 0,
    val_size: float = 0.2,
    max_test: int | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    text_column: str | None = None,
    label_column: str = "label",
    image_column: str | None = None,
    encoding: str = "utf-8",
) -> DetectResult:
    """Fit anomaly detectors on normal data only (``normal``: the normal classes of a labelled DATA; without it,
    every item is normal), threshold them on held-out normal data, compare with the raw-input control on labelled
    ``test`` data over ``seeds``, and save the first detector (``out/model``) with ``detect.json`` and a report.
    ``k``: the neighbours the kNN score averages (its default was chosen on development data, see BENCHMARKS.md).
    ``backbone="auto"``: the installed pack with the lowest held-out kNN distance ratio on the normal data
    (``choose_backbone``; label-free)."""
    from ..core.features import extract_features
    from ..core.outdir import check_out
    from ..core.progress import out_console
    from .fit import DEFAULT_BACKBONES

    if fpr is not None and contamination is not None:
        raise TransferkitError("Give --fpr or --contamination, not both: each sets the threshold.")
    rate_kind, rate = ("contamination", contamination) if contamination is not None else (
        "fpr", 0.05 if fpr is None else fpr)
    if not 0 < rate < 0.5:
        raise TransferkitError(f"--{rate_kind} must be between 0 and 0.5, got {rate:g}.")
    detectors = [d.strip() for d in detectors.split(",")] if isinstance(detectors, str) else list(detectors)
    if not detectors or len(set(detectors)) < len(detectors):
        raise TransferkitError("--detectors must name one or more distinct detectors.")
    for d in detectors:
        check_detector(d)
    if seeds < 1:
        raise TransferkitError(f"seeds must be at least 1, got {seeds}.")
    if k < 1:
        raise TransferkitError(f"k must be at least 1, got {k}.")
    if not 0 < val_size < 1:
        raise TransferkitError(f"val_size must be between 0 and 1, got {val_size:g}.")
    if max_test is not None and max_test < 2:
        raise TransferkitError(f"max_test must be at least 2, got {max_test}.")
    target = check_out(out, overwrite=overwrite) if out is not None else None
    normal = [n.strip() for n in normal.split(",")] if isinstance(normal, str) else list(normal or [])
    reading = DataSpec(text_column, label_column, image_column, encoding)
    nd = load_normal(data, normal, test, reading)
    if max_test is not None and len(nd.test_items) > max_test:  # a seeded, stratified subsample
        rng = np.random.default_rng(seed)
        pick = np.sort(np.concatenate([rng.permutation(np.flatnonzero(nd.is_anomaly == a))[
            : max(1, round(max_test * float(np.mean(nd.is_anomaly == a))))] for a in (False, True)]))
        nd.test_items = [nd.test_items[i] for i in pick]
        nd.test_labels = [nd.test_labels[i] for i in pick]
        nd.is_anomaly = nd.is_anomaly[pick]
        nd.notes.append(f"test set capped at {len(pick)} items (--max-test), anomalies in the same share")
    n, n_val = len(nd.items), max(2, round(val_size * len(nd.items)))
    if n - n_val < 2:
        raise DataError(f"{nd.name}: {n} normal items leave {n - n_val} to fit on after {n_val} to threshold on; "
                        "at least 2 are needed to fit (give more normal data, or a smaller val_size).")
    choice: dict[str, float] = {}
    if backbone == "auto":  # label-free: the normal data's held-out kNN distance ratio (methods.anomaly)
        backbone, choice = choose_backbone(nd, k, seed, cache_dir, use_cache, progress)
        nd.notes.append(f"backbone chosen without labels, by the held-out kNN distance ratio of the normal data "
                        f"(lower is better): {', '.join(f'{c} {v:.3f}' for c, v in choice.items())}")
    spec = backbone or DEFAULT_BACKBONES[nd.modality]
    bb = create_backbone(spec)
    if bb.modality != nd.modality:
        raise TransferkitError(f"Backbone {spec} takes {bb.modality}s but {nd.name} holds {nd.modality}s.")
    bb.freeze()
    pool = _as_dataset(nd.items + nd.test_items, nd.modality, nd.name)
    t0 = time.perf_counter()
    parts, hit = [], True
    for items, what in ((nd.items, "normal"), (nd.test_items, "test")):  # apart: a test set reused is cached once
        if items:
            part = _as_dataset(items, nd.modality, f"{nd.name} ({what})")
            x, cached = extract_features(bb, part, np.arange(len(part)), cache_dir=Path(cache_dir) if cache_dir
                                         else None, use_cache=use_cache, progress=progress,
                                         description=f"{what} features")
            parts.append(x)
            hit = hit and cached
    feats = np.concatenate(parts)
    extract_s = time.perf_counter() - t0
    test_rows = np.arange(n, len(pool))
    raw = control_inputs(pool)
    runs: list[dict[str, Any]] = []
    saved: AnomalyDetector | None = None
    hist: dict[str, list[Any]] = {}
    seed_list = list(range(seed, seed + seeds))
    for s in seed_list:
        perm = np.random.default_rng(s).permutation(n)
        val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        reps = {"transfer": feats, "control": control_features(raw, fit, s)}
        for rep, x in reps.items():
            for name in detectors:
                t1 = time.perf_counter()
                det = fit_detector(name, x[fit], seed=s, k=k)
                det.calibrate(det.raw(x[val]), rate)
                run: dict[str, Any] = {"seed": s, "detector": name, "features": rep, "params": det.params,
                                       "val_fpr": float(np.mean(det.score(x[val]) > det.threshold)),
                                       "threshold": det.threshold}
                if rep == "transfer" and name == detectors[0] and s == seed_list[0]:
                    saved = AnomalyDetector(bb, det, {rate_kind: rate})
                if len(test_rows):  # test labels: read only here, after this detector is fitted and thresholded
                    z = det.score(x[test_rows])
                    run.update(detection_metrics(z, nd.is_anomaly, det.threshold))
                    if saved is not None and saved.detector is det:
                        hist = {"scores": z.tolist(), "anomaly": nd.is_anomaly.tolist()}
                        top = np.argsort(-z)[:10]
                        run["top"] = [{"input": _shown(nd.test_items[i]), "score": float(z[i]),
                                       "label": nd.test_labels[i]} for i in top]
                elapsed = time.perf_counter() - t1
                run["fit_score_s_per_1000"] = 1000 * elapsed / (len(fit) + len(val) + len(test_rows))
                runs.append(run)
        if progress and len(test_rows):
            got = ", ".join(f"{r['detector']}/{r['features']} {100 * r['auroc']:.1f}" for r in runs
                            if r["seed"] == s)
            out_console.print(f"seed {s}: AUROC {got}")
    assert saved is not None
    verdicts = {}
    if len(test_rows):
        for name in detectors:
            t = [r["auroc"] for r in runs if r["detector"] == name and r["features"] == "transfer"]
            c = [r["auroc"] for r in runs if r["detector"] == name and r["features"] == "control"]
            verdicts[name] = verdict(t, c, metric="AUROC")
    meta = {"data": nd.name, "modality": nd.modality, "backbone": spec, "detectors": detectors, "saved": detectors[0],
            "seeds": seed_list, "rate_kind": rate_kind, "rate": rate, "normal": nd.normal, "n_normal": n,
            "n_fit": n - n_val, "n_val": n_val, "n_test": len(test_rows),
            "n_test_anomalies": int(nd.is_anomaly.sum()) if len(test_rows) else 0,
            "feature_s": extract_s, "features_cached": hit, "notes": nd.notes,
            "threshold": saved.detector.threshold, "saved_test_scores": hist, "backbone_choice": choice,
            "transferkit_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "environment": environment()}
    known = {pool.item_hash(i) for i in range(n)}
    shared = sum(pool.item_hash(int(i)) in known for i in test_rows)
    if shared:
        meta["notes"] = [*nd.notes, f"{shared} test item(s) also appear in the normal data (left in)"]
    res = DetectResult(runs, verdicts, saved, meta, target)
    if target is not None:
        write_detect(res, target)
    return res


def choose_backbone(nd: NormalData, k: int, seed: int, cache_dir: str | Path | None, use_cache: bool,
                    progress: bool, sample: int = 500) -> tuple[str, dict[str, float]]:
    """The installed pack for the data's modality with the lowest held-out kNN distance ratio on (at most
    ``sample``) normal items, and every candidate's ratio; no label of any kind is read."""
    from ..core.features import extract_features
    from ..methods.anomaly import held_out_knn_ratio
    from .rank import default_candidates

    rows = np.sort(np.random.default_rng(seed).permutation(len(nd.items))[:sample])
    part = _as_dataset([nd.items[i] for i in rows], nd.modality, f"{nd.name} (normal sample)")
    scores = {}
    for spec in default_candidates(nd.modality, controls=False):
        bb = create_backbone(spec)
        bb.freeze()
        x, _ = extract_features(bb, part, np.arange(len(part)), cache_dir=Path(cache_dir) if cache_dir else None,
                                use_cache=use_cache, progress=progress, description=f"{spec} (choosing)")
        scores[spec] = held_out_knn_ratio(x, k, seed)
    return min(scores, key=lambda c: scores[c]), scores


def _shown(item: Any) -> str:
    text = str(item) if isinstance(item, str | Path) else f"<{type(item).__name__}>"
    return text if len(text) <= 120 else text[:117] + "..."


def report_lines(res: DetectResult) -> list[str]:
    """The markdown report: the table, the verdicts, what was saved and the top anomalies of the saved detector."""
    lines = [f"# transferkit detect: {res.meta['data']}", "", res.table(), "",
             *[f"- {line}" for line in res.verdict_lines()], *[f"- {line}" for line in res.lines()]]
    top = next((r["top"] for r in res.runs if "top" in r), [])
    if top:
        lines += ["", "## Highest-scoring test items (saved detector, first seed)", "", "| input | score | label |",
                  "|---|---|---|"]
        lines += [f"| {t['input'].replace('|', '/')} | {t['score']:.2f} | {t['label']} |" for t in top]
    return [*lines, ""]


def write_detect(res: DetectResult, out: Path) -> None:
    """``out/model`` (the saved detector), ``out/detect.json``, ``out/report.md`` and ``out/report.html``."""
    from .html import write_html

    out.mkdir(parents=True, exist_ok=True)
    assert res.detector is not None
    res.detector.save(out / "model")
    (out / "detect.json").write_text(json_text(res.to_dict()))
    (out / "report.md").write_text("\n".join(report_lines(res)))
    write_html(out)


def print_detect(res: DetectResult) -> None:
    from ..core.progress import out_console

    if res.summary():
        out_console.print(res.result_table().rich())
    for line in res.verdict_lines() + res.lines():
        out_console.print(line)
