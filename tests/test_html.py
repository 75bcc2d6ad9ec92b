"""report.html: built from the run record alone for every command, rebuilt by ``transferkit report``, the numbers on
the page equal to the record; and the evaluation behind it (per-class scores, calibration, temperature)."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import transferkit
from transferkit.core.evaluation import calibration, fit_temperature, per_class_metrics, scale_temperature
from transferkit.workflows import svg

from .conftest import TIMM_SPEC, make_texts, write_csv
from .test_cli import assert_clean_failure, invoke

# ------------------------------------------------------------------------------------------- evaluation


def test_per_class_metrics_agree_with_scikit_learn():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    p[:5] = 3  # class 3 predicted more often than it occurs
    got = per_class_metrics(y, p, 5)  # class 4: never true, never predicted
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=range(5), zero_division=0)
    assert np.allclose(got["precision"], prec) and np.allclose(got["recall"], rec) and np.allclose(got["f1"], f1)
    assert got["support"] == sup.tolist()
    assert got["confusion"] == confusion_matrix(y, p, labels=range(5)).tolist()


def test_calibration_error_by_hand():
    # two bins used: confidence 0.9 (right 1 of 2) and 0.6 (right 2 of 2)
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    cal = calibration(np.array([0, 1, 1, 1]), proba, bins=10)
    assert cal["ece"] == pytest.approx(0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6))
    assert [(b["items"], b["accuracy"]) for b in cal["bins"]] == [(2, 1.0), (2, 0.5)]


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(4000, 5))
    true_p = scale_temperature(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 2.0)
    y = np.array([rng.choice(5, p=row) for row in true_p])
    overconfident = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t = fit_temperature(y, overconfident)
    assert t == pytest.approx(2.0, rel=0.1)
    assert calibration(y, scale_temperature(overconfident, t))["ece"] < calibration(y, overconfident)["ece"]


def test_every_chart_is_well_formed_svg():
    charts = [
        svg.line_chart([("a", [1, 2, 3], [0.5, 0.4, float("nan")]), ("b", [1, 2, 3], [1, 0.9, 0.8])],
                       title="t <&>", x_label="epoch", y_label="loss", marks=[(2, 0.9, "kept")]),
        svg.scatter([(10.0, 0.8, "x"), (1000.0, 0.7, "y")], title="s", x_label="n", y_label="acc", log_x=True),
        svg.heatmap([[3, 1], [0, 4]], ["cat", "dog"], title="confusion"),
        svg.reliability([{"low": 0.5, "high": 0.6, "items": 3, "confidence": 0.55, "accuracy": 0.33}], title="r"),
        svg.line_chart([("one point", [1], [0.5])], title="flat", x_label="x", y_label="y"),
    ]
    for chart in charts:
        root = ET.fromstring(chart)
        assert root.tag.endswith("svg") and len(root) > 4


# ------------------------------------------------------------------------------------------- pages


def _numbers(page: str) -> list[tuple[float, str]]:
    """(data-value, the cell's text) of every number cell on the page."""
    return [(float(v), text) for v, text in re.findall(r'data-value="([^"]+)">([^<]*)<', page)]


def _self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    assert not re.search(r'(src|href)="(?!data:)', page), "the page must load nothing from outside itself"
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        assert base64.b64decode(data).startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, timm_dir, image_folder) -> Path:
    out = tmp_path_factory.mktemp("html") / "fit"
    r = invoke("fit", image_folder, "--backbone", timm_dir, "--out", out, "--quiet", "--calibrate")
    assert r.exit_code == 0, (r.output, r.exception)
    assert f"report: {out / 'report.html'}" in r.output
    return out


def test_a_fit_page_shows_the_record_and_rebuilds_the_same(image_run):
    page = (image_run / "report.html").read_text()
    record = json.loads((image_run / "run.json").read_text())
    _self_contained(page)
    for sid in ("comparison", "test", "calibration", "examples", "record"):
        assert f'id="{sid}"' in page
    shown = _numbers(page)
    for row in record["results"]:  # the comparison table: every accuracy and macro-F1, as the record holds it
        for key in ("accuracy", "macro_f1"):
            assert (row[key], f"{100 * row[key]:.1f} %") in shown
    ev = record["test_evaluation"]
    assert (ev["calibration"]["ece"], f"{100 * ev['calibration']['ece']:.1f} %") in shown
    assert "temperature scaling (T = " in page and ev["calibrated"]["temperature"] > 0
    assert len(re.findall(r"data:image/png;base64", page)) == sum("thumbnail" in e for e in ev["examples"]) > 0
    assert record["data"]["content_hash"] in page
    before = page
    (image_run / "report.html").unlink()
    r = invoke("report", image_run)
    assert r.exit_code == 0 and (image_run / "report.html").read_text() == before


def test_a_calibrated_model_keeps_its_temperature(image_run, image_folder):
    model = transferkit.load(image_run / "model")
    ev = json.loads((image_run / "run.json").read_text())["test_evaluation"]
    assert model.temperature == pytest.approx(ev["calibrated"]["temperature"])
    image = str(next(image_folder.rglob("*.png")))
    calibrated = model.predict_proba([image])
    model.temperature = 1.0
    plain = model.predict_proba([image])
    assert calibrated.argmax() == plain.argmax()
    assert np.allclose(calibrated, scale_temperature(plain, ev["calibrated"]["temperature"]), atol=1e-5)


def test_a_compare_page_has_every_rung_and_its_learning_curves(timm_dir, image_folder, tmp_path):
    out = tmp_path / "cmp"
    r = invoke("compare", image_folder, "--backbone", timm_dir, "--strategies", "linear-probe,finetune",
               "--seeds", "2", "--set", "finetune.epochs=2", "--out", out, "--quiet")
    assert r.exit_code == 0, (r.output, r.exception)
    page = (out / "report.html").read_text()
    record = json.loads((out / "compare.json").read_text())
    _self_contained(page)
    assert 'id="curves"' in page and "finetune: validation accuracy" in page and "<polyline" in page
    tuned = next(r for r in record["runs"] if r["model"] == "finetune" and r["seed"] == record["seeds"][0])
    best = tuned["best_epoch"]
    assert (f"kept (epoch {best})" if best else "the starting weights kept") in page
    assert page.count('class="verdict') == len(record["verdicts"])
    shown = {v for v, _ in _numbers(page)}
    for label in record["strategies"]:
        accs = [run["accuracy"] for run in record["runs"] if run["model"] == label]
        assert float(np.mean(accs)) in shown


def test_rank_distill_and_adapt_pages(bert_dir, tmp_path):
    texts, labels = make_texts(12)
    data = write_csv(tmp_path / "t.csv", [{"text": t, "label": lab} for t, lab in zip(texts, labels, strict=True)])
    spec = f"hf:{bert_dir}"
    runs = {
        "rank": ["rank", data, "--backbones", spec, "--probe"],
        "distill": ["distill", data, "--teacher", spec, "--student", spec, "--seeds", "1", "--epochs", "1"],
        "adapt": ["adapt", "--source", data, "--target", data, "--backbone", spec, "--seeds", "1", "--epochs", "1",
                  "--method", "coral"],
    }
    for kind, args in runs.items():
        out = tmp_path / kind
        r = invoke(*args, "--quiet", "--out", out)
        assert r.exit_code == 0, (kind, r.output, r.exception)
        page = (out / "report.html").read_text()
        _self_contained(page)
        assert f"transferkit {kind}:" in page and 'id="record"' in page and 'class="verdict' in page
        charts = re.findall(r"<svg.*?</svg>", page, re.S)
        assert charts and all(len(ET.fromstring(c)) > 2 for c in charts)
    rank = json.loads((tmp_path / "rank" / "rank.json").read_text())
    assert rank["rows"] and all(0 <= r["probe_accuracy"] <= 1 for r in rank["rows"])
    assert "LogME against probe accuracy" in (tmp_path / "rank" / "report.html").read_text()
    distill = (tmp_path / "distill" / "report.html").read_text()
    assert "Accuracy retained" in distill and 'id="examples"' in distill  # the student's excerpts
    assert "Shift diagnostic" in (tmp_path / "adapt" / "report.html").read_text()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing", "is not a folder"),
        (lambda d: d, "holds no run record"),
        (lambda d: (d / "run.json").write_text("{not json") and d, "is not a readable run record"),
        (lambda d: (d / "run.json").write_text("[1, 2]") and d, "is not a run record"),
        (lambda d: (d / "compare.json").write_text("{}") and d, "lacks what the report needs"),
    ],
)
def test_report_on_a_folder_that_is_no_run(make, match, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    assert_clean_failure(invoke("report", make(folder)), match)
    assert not (folder / "report.html").exists()


# ------------------------------------------------------------------------------------------- TensorBoard


def test_tensorboard_scalars_are_the_learning_curve(timm_dir, image_folder, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    res = transferkit.fit(str(image_folder), str(timm_dir), "finetune", out=out, epochs=2, patience=None,
                          scratch=False, progress=False, log="tensorboard")
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    curve = res.record["strategy_info"]["learning_curve"]
    for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("accuracy/val", "val_accuracy")):
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in got] == [r["epoch"] for r in curve]
        assert np.allclose([v for _, v in got], [r[key] for r in curve], rtol=1e-6)
    assert any(t.startswith("lr/") for t in events.Tags()["scalars"])


def test_tensorboard_is_off_by_default_and_checked_before_any_work(image_folder, tmp_path, monkeypatch):
    out = tmp_path / "plain"
    transferkit.fit(str(image_folder), TIMM_SPEC, out=out, scratch=False, progress=False)
    assert not (out / "tensorboard").exists()
    assert_clean_failure(invoke("fit", image_folder, "--log", "wandb", "--out", tmp_path / "a"), "log='wandb'")
    assert_clean_failure(invoke("compare", image_folder, "--log", "wandb", "--out", tmp_path / "b"), "log='wandb'")
    if importlib.util.find_spec("tensorboard") is not None:
        with pytest.raises(transferkit.TransferkitError, match="give an output folder"):
            transferkit.fit(str(image_folder), TIMM_SPEC, log="tensorboard", progress=False)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    assert_clean_failure(invoke("fit", image_folder, "--log", "tensorboard", "--out", tmp_path / "c"),
                         "pip install 'transferkit[tensorboard]'")
    assert not any((tmp_path / n).exists() for n in "abc")
