"""``report.html``: one self-contained page per run (inline SVG and PNG, no script, no network), built from the run
folder alone, so ``transferkit report RUN_DIR`` rebuilds exactly what the run wrote.

Tables come from the same ``ResultTable`` as ``report.md`` and the console; every number cell carries its raw value
(``data-value``) so the page can be checked against the record.
"""

from __future__ import annotations

import base64
import json
import platform
from html import escape
from pathlib import Path
from typing import Any

from ..errors import TransferkitError
from . import svg
from .report import Column, ResultTable, count, decimal, duplicates_note, percent, significant

KINDS = ("adapt.json", "distill.json", "compare.json", "rank.json", "detect.json", "run.json")
"""Run records, most specific first (a distill folder also holds its student's run.json)."""

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1b1b;background:#fff;
line-height:1.45}
main{max-width:62rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.15rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:1.8rem}
.sub{color:#555;margin:.2rem 0 1rem}
.verdict{font-size:1.1rem;padding:.7rem 1rem;border-left:5px solid #1f77b4;background:#f3f7fb}
.verdict.helps{border-color:#2ca02c;background:#f1f9f1}.verdict.negative{border-color:#d62728;background:#fcf1f1}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
caption{text-align:left;font-weight:600;padding:.3rem 0}
th,td{padding:.3rem .6rem;border-bottom:1px solid #e4e4e4}td.num,th.num{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}td.text,th.text{text-align:left}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(24rem,1fr));gap:1rem}
.charts svg,figure svg{width:100%;height:auto;max-height:34rem}
.charts>figure{margin:0}
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(20rem,1fr));gap:1rem;align-items:start}
.pair figure{margin:0}.pair svg{width:100%;height:auto}
.examples{display:grid;grid-template-columns:repeat(auto-fill,minmax(8.5rem,1fr));gap:.7rem}
.examples figure{margin:0;border:1px solid #ddd;border-radius:4px;padding:.4rem;font-size:.8rem}
.examples img{width:100%;height:auto;image-rendering:pixelated}
.examples .wrong{border-color:#d62728}
.excerpt{font-size:.88rem;border-left:3px solid #ccc;padding:.2rem .6rem;margin:.4rem 0}
.excerpt.wrong{border-color:#d62728}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{font-weight:600}dd{margin:0;
word-break:break-all}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.8rem}
ul.notes li{margin:.2rem 0}
@media (max-width:40rem){main{padding:.6rem}table{font-size:.8rem}th,td{padding:.25rem .35rem}}
@media print{main{max-width:none}.charts{grid-template-columns:1fr 1fr}section{break-inside:avoid}}
"""


def find_record(run_dir: Path) -> tuple[str, dict[str, Any]]:
    """(kind, record) of the run in ``run_dir``, or one sentence saying there is none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TransferkitError(f"{run_dir} is not a folder: pass a run folder (the --out of a transferkit run).")
    for name in KINDS:
        path = run_dir / name
        if path.is_file():
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise TransferkitError(f"{path} is not a readable run record ({e}).") from None
            if not isinstance(record, dict):
                raise TransferkitError(f"{path} is not a run record (a JSON object).")
            return name.removesuffix(".json"), record
    raise TransferkitError(f"{run_dir} holds no run record ({', '.join(KINDS)}): it is not a transferkit run folder.")


def write_html(run_dir: Path) -> Path:
    """Build ``run_dir/report.html`` from the run record in it; returns its path."""
    from .._files import atomic_write

    run_dir = Path(run_dir)
    kind, record = find_record(run_dir)
    try:
        page = {"run": _fit_page, "compare": _compare_page, "rank": _rank_page, "distill": _distill_page,
                "adapt": _adapt_page, "detect": _detect_page}[kind](record, run_dir)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise TransferkitError(f"{run_dir / (kind + '.json')} lacks what the report needs ({type(e).__name__}: "
                               f"{e}); was it written by an older transferkit? Rerun the command.") from None
    target = run_dir / "report.html"
    atomic_write(target, lambda p: p.write_text(page, encoding="utf-8"))
    return target


# ------------------------------------------------------------------------------------------------------ pages


def _page(title: str, sub: str, sections: list[str]) -> str:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{escape(title)}</h1><p class=\"sub\">{escape(sub)}</p>" + "".join(sections)
            + "<footer class=\"sub\"><p>Written by transferkit; rebuild with <code>transferkit report RUN_DIR"
            "</code>.</p></footer></main></body></html>")


def _section(sid: str, title: str, *parts: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2>' + "".join(parts) + "</section>"


def _verdict(text: str) -> str:
    kind = "helps" if " helps" in text[:40] else "negative" if text.startswith("negative") else ""
    return f'<p class="verdict {kind}">{escape(text)}</p>'


def _table(table: ResultTable) -> str:
    return f'<div class="scroll">{table.html()}</div>'


def _notes(lines: list[str]) -> str:
    return '<ul class="notes">' + "".join(f"<li>{escape(x)}</li>" for x in lines) + "</ul>" if lines else ""


def _fit_page(record: dict[str, Any], run_dir: Path) -> str:
    from .fit import FitResult, notes, verdict_line

    res = FitResult.from_record(record)
    d = record["data"]
    what = "a numeric target" if d.get("task") == "regression" else f"{len(d['classes'])} classes"
    sub = (f"transferkit fit · backbone {record['backbone']} · strategy {record['strategy']} · "
           f"{d['size']} items, {what}")
    sections = []
    if res.compare is not None:
        sections += _compare_sections(res.compare)
    else:
        sections.append(_section("comparison", "Transfer against scratch", _verdict(verdict_line(res.metrics)),
                                 _table(res.result_table()), _notes(notes(record))))
        curves = _curves({f"{record['strategy']} ({record['backbone']})": record.get("strategy_info", {})})
        if curves:
            sections.append(_section("curves", "Learning curves", curves))
    sections += _evidence(record.get("test_evaluation"), run_dir)
    sections.append(_record_section(record))
    return _page(f"transferkit fit: {d['name']}", sub, sections)


def _compare_sections(res: Any) -> list[str]:
    verdicts = "".join(_verdict(f"{name}: {v.text}") for name, v in res.verdicts.items())
    lines = [res.scratch_line(), *res.choice_lines(), *res.data_notes()]
    out = [_section("comparison", "Every rung against scratch", verdicts, _table(res.result_table()),
                    _notes(lines))]
    first = res.meta["seeds"][0]
    runs = {r["model"]: r for r in res.runs if r["seed"] == first and r.get("learning_curve")}
    curves = _curves(runs)
    if curves:
        out.append(_section("curves", f"Learning curves (seed {first})", curves))
    return out


def _compare_page(record: dict[str, Any], run_dir: Path) -> str:
    from .compare import CompareResult

    res = CompareResult.from_record(record)
    sub = f"transferkit compare · backbone {record['backbone']} · seeds {record['seeds']}"
    sections = _compare_sections(res) + _evidence(record.get("test_evaluation"), run_dir)
    sections.append(_record_section(record))
    return _page(f"transferkit compare: {record['data']}", sub, sections)


def _rank_page(record: dict[str, Any], run_dir: Path) -> str:
    from .rank import _METRIC_NAMES, RankResult

    res = RankResult.from_record(record)
    parts = [f'<p class="verdict">Recommended: {escape(res.recommended)} (highest '
             f"{escape(_METRIC_NAMES[res.by])})</p>", _table(res.result_table()), _notes(res.warnings)]
    sections = [_section("ranking", "Candidates", *parts)]
    probe = [(r.scores["logme"], r.probe_accuracy, r.spec) for r in res.rows
             if r.scores.get("logme") is not None and r.probe_accuracy is not None]
    scored = [(r.scores[res.by], i, r.spec) for i, r in enumerate(res.rows, 1) if r.scores.get(res.by) is not None]
    if probe:
        chart = svg.scatter([(x, y, s) for x, y, s in probe], title="LogME against probe accuracy",
                            x_label="LogME", y_label="probe accuracy")
        sections.append(_section("scatter", "LogME against probe accuracy", f'<div class="charts">{chart}</div>'))
    elif scored:
        chart = svg.scatter([(float(i), v, s) for v, i, s in scored], title=f"{_METRIC_NAMES[res.by]} per candidate",
                            x_label="rank", y_label=_METRIC_NAMES[res.by])
        sections.append(_section("scores", "Scores", f'<div class="charts">{chart}</div>',
                                 "<p>No probe accuracy was measured (rank --probe measures one), so LogME is not "
                                 "plotted against it.</p>"))
    sections.append(_record_section(record))
    return _page(f"transferkit rank: {record['data']}", f"transferkit rank · {record['n_samples']} training samples",
                 sections)


def _detect_page(record: dict[str, Any], run_dir: Path) -> str:
    import numpy as np

    from .detect import DetectResult

    res = DetectResult.from_record(record)
    parts = [*(_verdict(v) for v in res.verdict_lines()), _table(res.result_table()) if res.summary() else "",
             _notes(res.lines())]
    sections = [_section("detection", "Transfer against the raw-input control", *parts)]
    hist = record.get("saved_test_scores") or {}
    if hist.get("scores"):
        z, bad = np.asarray(hist["scores"], dtype=float), np.asarray(hist["anomaly"], dtype=bool)
        edges = np.histogram_bin_edges(z, bins=30)
        mids = ((edges[:-1] + edges[1:]) / 2).tolist()
        series = [(name, mids, np.histogram(z[mask], bins=edges)[0].tolist())
                  for name, mask in (("normal", ~bad), ("anomaly", bad))]
        chart = svg.line_chart(series, title="Test scores of the saved detector", x_label="standardised score",
                               y_label="test items", marks=[(record["threshold"], 0.0, "threshold")])
        sections.append(_section("scores", "Score histogram", f'<div class="charts">{chart}</div>'))
    top = next((r["top"] for r in record["runs"] if "top" in r), [])
    if top:
        rows = "".join(f"<tr><td class=\"text\">{escape(t['input'])}</td><td class=\"num\">{t['score']:.2f}</td>"
                       f"<td class=\"text\">{escape(str(t['label']))}</td></tr>" for t in top)
        sections.append(_section("top", "Highest-scoring test items", '<div class="scroll"><table><thead><tr>'
                                 '<th class="text">input</th><th class="num">score</th><th class="text">label</th>'
                                 f"</tr></thead><tbody>{rows}</tbody></table></div>"))
    sections.append(_record_section(record))
    return _page(f"transferkit detect: {record['data']}",
                 f"transferkit detect · backbone {record['backbone']} · {record['n_normal']} normal items", sections)


def _distill_page(record: dict[str, Any], run_dir: Path) -> str:
    from .distill import DistillResult

    res = DistillResult.from_record(record)
    lines = [f"Accuracy retained (distilled student / teacher): {100 * res.retained():.1f} %.",
             *([res.swept()] if res.swept() else []), *duplicates_note(res.duplicates)]
    sections = [_section("comparison", "Teacher and students", _verdict(res.verdict_line()),
                         _table(res.result_table()), _notes(lines))]
    points = [(r["samples_s"], r["accuracy"], r["role"]) for r in res.summary() if r.get("samples_s")]
    if points:
        chart = svg.scatter(points, title="accuracy against speed", x_label="samples/s (CPU)",
                            y_label="test accuracy", log_x=True)
        sections.append(_section("speed", "Accuracy against speed", f'<div class="charts">{chart}</div>'))
    student = run_dir / "run.json"
    if student.is_file():
        srec = json.loads(student.read_text())
        curves = _curves({"distilled student": srec.get("strategy_info", {})})
        if curves:
            sections.append(_section("curves", "Learning curves (distilled student, first seed)", curves))
        sections += _evidence(srec.get("test_evaluation"), run_dir)
    sections.append(_record_section(record))
    return _page(f"transferkit distill: {record['data']}",
                 f"transferkit distill · teacher {record['teacher']} · student {record['student']}", sections)


def _adapt_page(record: dict[str, Any], run_dir: Path) -> str:
    from .adapt import AdaptResult

    res = AdaptResult.from_record(record)
    d = res.diagnostic
    diag = ResultTable("Shift between source and target features", (Column("measure", text=True),
                                                                     Column("value", decimal(4))))
    diag.add("proxy A-distance (0 same, 2 apart)", d["proxy_a_distance"])
    diag.add("domain classifier error", d["domain_error"])
    diag.add("MMD^2", d["mmd2"])
    diag.add("MMD permutation p", d["mmd_p"])
    sections = [_section("shift", "Shift diagnostic", _table(diag), f"<p>{escape(d['words'])}</p>")]
    verdicts = "".join(_verdict(r["verdict"]) for r in res.summary() if "verdict" in r)
    if not verdicts:
        verdicts = _verdict(f"Recommended without target labels: {res.recommended()}")
    rec = (f"Recommended without target labels: {res.recommended()} ({res.recommendation_reason()})")
    lines = [rec, *duplicates_note(res.duplicates)]
    if not res.target_accuracy:
        lines.insert(0, "No labelled target test data: target accuracy is unknown (pass --target-test).")
    summary = res.summary()
    key, what = ("target_accuracy", "target test accuracy") if res.target_accuracy else (
        "reverse_accuracy", "reverse validation accuracy (no target labels)")
    chart = svg.bars([(r["method"], r[key]) for r in summary], title=f"{what}, mean over seeds", x_label=what)
    sections.append(_section("comparison", "Source-only against each method", verdicts, _table(res.result_table()),
                             _notes(lines), f'<div class="charts">{chart}</div>'))
    sizes = ResultTable("Data", (Column("part", text=True), Column("items", count)))
    for k, v in res.sizes.items():
        sizes.add(k.replace("_", " "), v)
    sections.append(_section("data", "Data", _table(sizes)))
    sections.append(_record_section(record))
    return _page(f"transferkit adapt: {res.source} -> {res.target}",
                 f"transferkit adapt · backbone {res.backbone} · {len(res.runs)} seeds", sections)


# ---------------------------------------------------------------------------------------------------- pieces


def _curves(infos: dict[str, dict[str, Any]]) -> str:
    """Loss and validation-accuracy charts of every trained model, the kept epoch circled."""
    charts = []
    for name, info in infos.items():
        curve = info.get("learning_curve") or []
        if not curve:
            continue
        epochs = [float(e["epoch"]) for e in curve]  # 1 = the first epoch
        best = info.get("best_epoch")  # 1-based; 0: the starting weights were kept
        charts.append(svg.line_chart(
            [("train loss", epochs, [e["train_loss"] for e in curve]),
             ("val loss", epochs, [e["val_loss"] for e in curve])],
            title=f"{name}: loss", x_label="epoch", y_label="loss"))
        accs = [e["val_accuracy"] for e in curve]  # validation R^2 for a numeric target
        what = "R^2" if "val_r2" in info else "accuracy"
        marks = [(float(best), accs[best - 1], f"kept (epoch {best})")] if best and best <= len(accs) else []
        kept = " (the starting weights kept)" if best == 0 else ""
        charts.append(svg.line_chart([(f"val {what}", epochs, accs)], title=f"{name}: validation {what}{kept}",
                                     x_label="epoch", y_label=what, marks=marks))
    return f'<div class="charts">{"".join(charts)}</div>' if charts else ""


def _evidence(ev: dict[str, Any] | None, run_dir: Path) -> list[str]:
    """Confusion matrix, per-class scores, calibration and examples of the saved model on the test set."""
    if not ev:
        return []
    if ev.get("task") == "regression":
        return _regression_evidence(ev, run_dir)
    classes = ev["classes"]
    per = ResultTable(f"Per class ({ev['items']} test items)", (
        Column("class", text=True), Column("precision", percent), Column("recall", percent), Column("F1", percent),
        Column("support", count)))
    for k, c in enumerate(classes):
        per.add(c, ev["precision"][k], ev["recall"][k], ev["f1"][k], ev["support"][k])
    matrix = svg.heatmap(ev["confusion"], classes, title="confusion matrix (% of each true class)")
    out = [_section("test", "The saved model on the test set", f'<div class="pair"><figure>{matrix}</figure>'
                    f"<div>{_table(per)}</div></div>")]
    cal = ev["calibration"]
    ece = ResultTable("Calibration", (Column("measure", text=True), Column("expected calibration error",
                                                                             percent)))
    ece.add("test set", cal["ece"])
    if "calibrated" in ev:
        ece.add(f"after temperature scaling (T = {ev['calibrated']['temperature']:.2f}, fitted on validation)",
                ev["calibrated"]["ece"])
    chart = svg.reliability(cal["bins"], title="reliability (test set)")
    extra, worse = "", ""
    if "calibrated" in ev:
        extra = svg.reliability(ev["calibrated"]["bins"], title="reliability after temperature scaling")
        if ev["calibrated"]["ece"] >= cal["ece"]:
            worse = ("<p><strong>Temperature scaling did not lower the test ECE here</strong> (it was fitted on "
                     "validation, which the test set did not follow); the saved model keeps it, as asked.</p>")
    out.append(_section("calibration", "Calibration", f'<div class="charts">{chart}{extra}</div>', _table(ece), worse,
                        "<p>Bars: accuracy of the predictions in each confidence bin; a calibrated model follows "
                        "the dashed diagonal.</p>"))
    examples = ev.get("examples") or []
    if examples:
        parts = []
        for kind, title in (("mistake", "Most confident mistakes"), ("correct", "A sample of correct predictions")):
            chosen = [e for e in examples if e["kind"] == kind]
            if chosen:
                parts.append(f"<h3>{title}</h3>" + _examples(chosen, run_dir))
        out.append(_section("examples", "Examples", *parts))
    return out


def _regression_evidence(ev: dict[str, Any], run_dir: Path) -> list[str]:
    """Predicted against true values, the residuals, and the largest errors with a sample of the rest."""
    chart = svg.scatter([(t, p, "") for t, p in ev["points"]], title="predicted against true (test set)",
                        x_label="true", y_label="predicted", diagonal=True)
    res = ResultTable("Residuals (predicted - true)", (Column("measure", text=True), Column("value", significant)))
    res.add("mean (bias)", ev["residual_mean"])
    res.add("standard deviation", ev["residual_std"])
    out = [_section("test", "The saved model on the test set", f'<div class="pair"><figure>{chart}</figure>'
                    f"<div>{_table(res)}<p>{len(ev['points'])} of {ev['items']} test items are plotted; on the "
                    "dashed line the prediction is exact.</p></div></div>")]
    parts = []
    for kind, title in (("mistake", "Largest errors"), ("correct", "A sample of the rest")):
        chosen = [e for e in ev.get("examples", []) if e["kind"] == kind]
        if chosen:
            parts.append(f"<h3>{title}</h3>" + _examples(chosen, run_dir))
    if parts:
        out.append(_section("examples", "Examples", *parts))
    return out


def _examples(examples: list[dict[str, Any]], run_dir: Path) -> str:
    texts, figures = [], []
    for e in examples:
        wrong = e["kind"] == "mistake"
        if "value" in e:  # a regression target
            said = f"predicted {e['predicted']:.4g}; true {e['value']:.4g}"
        else:
            said = (f"predicted {e['predicted']} ({100 * e['probability']:.1f} %)"
                    + (f"; true {e['label']} ({100 * e['label_probability']:.1f} %)" if wrong else ""))
        if "text" in e:
            texts.append(f'<blockquote class="excerpt{" wrong" if wrong else ""}">{escape(e["text"])}'
                         f"<br><small>{escape(said)}</small></blockquote>")
        else:
            img = ""
            path = run_dir / e["thumbnail"] if e.get("thumbnail") else None
            if path is not None and path.is_file():
                data = base64.b64encode(path.read_bytes()).decode()
                img = f'<img alt="test item {e["index"]}" src="data:image/png;base64,{data}">'
            figures.append(f'<figure class="{"wrong" if wrong else ""}">{img}<figcaption>{escape(said)}'
                           "</figcaption></figure>")
    return "".join(texts) + (f'<div class="examples">{"".join(figures)}</div>' if figures else "")


def _record_section(record: dict[str, Any]) -> str:
    """Data hash, splits, seed, config, versions and machine: where the numbers came from."""
    data = record.get("data")
    rows: list[tuple[str, str]] = []
    if isinstance(data, dict):
        rows += [("data", f"{data.get('name')} ({data.get('modality')}, {data.get('size')} items)"),
                 ("content hash", str(data.get("content_hash"))), ("splits", json.dumps(data.get("splits"))),
                 ("duplicates left out", str(data.get("duplicates", 0)))]
    elif data is not None:
        rows.append(("data", str(data)))
    if "splits" in record and not isinstance(data, dict):
        rows.append(("splits", json.dumps(record["splits"])))
    for key in ("content_hash", "backbone", "strategy", "seed", "seeds", "by", "teacher", "student", "source",
                "target", "transferkit_version", "created"):
        if key in record and not (key == "content_hash" and isinstance(data, dict)):
            rows.append((key.replace("_", " "), str(record[key])))
    env = record.get("environment") or {}
    machine = ", ".join(f"{k} {v}" for k, v in env.items()) or f"python {platform.python_version()} (this page)"
    rows.append(("machine", machine))
    config = record.get("config") or record.get("configs")
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    cfg = f"<h3>Config</h3><pre>{escape(json.dumps(config, indent=2, default=str))}</pre>" if config else ""
    return _section("record", "Run record", f"<dl>{dl}</dl>", cfg)
