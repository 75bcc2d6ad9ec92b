"""Numeric targets: a regression head (ridge on cached features, strength chosen on validation) against a
from-scratch ridge control, with MAE/RMSE/R^2/Spearman, saved and predicted like any model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import transferkit
from transferkit.core.evaluation import regression_metrics
from transferkit.core.heads import fit_ridge
from transferkit.data.dataset import Dataset, infer_task, make_splits
from transferkit.data.spec import DataSpec
from transferkit.errors import DataError

from .conftest import make_image_folder
from .test_cli import assert_clean_failure, invoke

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "movie", "plot"]


@pytest.fixture(scope="module")
def scores_csv(tmp_path_factory) -> Path:
    """Texts whose target is (positive - negative words) plus noise."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("reg") / "scores.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        for _ in range(80):
            words = rng.choice(WORDS, size=6)
            y = sum(x in WORDS[:3] for x in words) - sum(x in WORDS[3:6] for x in words) + 0.3 * rng.normal()
            w.writerow({"text": " ".join(words), "label": f"{y:.3f}"})
    return path


def test_which_labels_are_a_regression_target():
    assert infer_task(["0.5", "1", "2.25"]) == "regression"
    assert infer_task([str(i) for i in range(30)]) == "regression"  # many integer values
    assert infer_task([str(i % 10) for i in range(100)]) == "classification"  # digit classes
    assert infer_task(["cat", "1.5"]) == "classification"


def test_a_regression_dataset_and_its_splits():
    values = np.sin(np.arange(100)) * 10
    ds = Dataset([f"t{i}" for i in range(100)], [f"{v:.4f}" for v in values], "text", task="regression")
    assert ds.classes == [] and np.allclose(ds.targets, np.round(values, 4))
    s = make_splits(ds, seed=1)
    assert len(s.train) + len(s.val) + len(s.test) == 100
    for part in (s.train, s.test):  # stratified on quintiles: each part spans the range
        assert ds.targets[part].min() < -5 and ds.targets[part].max() > 5
    with pytest.raises(DataError, match="per_class applies to classes"):
        make_splits(ds, per_class=5)
    with pytest.raises(DataError, match=r"target 'high' \(item 1\) is not a number"):
        Dataset(["a", "b"], ["1.5", "high"], "text", task="regression")
    with pytest.raises(DataError, match="every target is 2"):
        Dataset(["a", "b"], ["2", "2.0"], "text", task="regression")


def test_ridge_agrees_with_scikit_learn():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(2)
    x = rng.normal(size=(150, 12)) * rng.uniform(0.1, 10, 12) + 5
    y = x @ rng.normal(size=12) + rng.normal(size=150) + 3
    fit = fit_ridge(x[:100], y[:100], x[100:], y[100:], refit_on_val=False)
    alpha = fit.chosen["alpha"]
    mean, std = x[:100].mean(0), x[:100].std(0).mean()  # one shared scale
    sk = Ridge(alpha=alpha * 100).fit((x[:100] - mean) / std, (y[:100] - y[:100].mean()) / y[:100].std())
    want = sk.predict((x[100:] - mean) / std) * y[:100].std() + y[:100].mean()
    import torch

    with torch.no_grad():
        got = fit.head(torch.from_numpy(x[100:]).float()).numpy()[:, 0]
    assert np.allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    assert fit.val_accuracy == pytest.approx(regression_metrics(y[100:], want)["r2"], abs=1e-4)


def test_regression_metrics_agree_with_scikit_learn_and_scipy():
    from scipy.stats import spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(3)
    t, p = rng.normal(size=50), rng.normal(size=50)
    m = regression_metrics(t, p)
    assert m["mae"] == pytest.approx(mean_absolute_error(t, p))
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(t, p)))
    assert m["r2"] == pytest.approx(r2_score(t, p))
    assert m["spearman"] == pytest.approx(spearmanr(t, p).statistic)


def test_fit_save_and_predict_a_regression_target(scores_csv, bert_dir, tmp_path):
    out = tmp_path / "run"
    res = transferkit.fit(str(scores_csv), f"hf:{bert_dir}", out=out, progress=False)
    assert set(res.metrics["transfer"]) == {"mae", "rmse", "r2", "spearman"} and "scratch" in res.metrics
    assert res.record["data"]["task"] == "regression" and res.record["strategy_info"]["head"] == "ridge"
    report = (out / "report.md").read_text()
    assert "| model | MAE | RMSE | R^2 | Spearman |" in report and "Transfer R^2 is" in report
    page = (out / "report.html").read_text()
    assert "predicted against true" in page and "Largest errors" in page
    model = transferkit.load(out / "model")
    assert model.task == "regression" and model.classes == []
    ds = DataSpec().load(str(scores_csv))
    test = make_splits(ds).test
    values = model.predict_values(ds.take(test))
    assert regression_metrics(ds.targets[test], values)["mae"] == pytest.approx(res.metrics["transfer"]["mae"],
                                                                               rel=1e-4)
    r = invoke("predict", out / "model", "good great fine movie", "--json")
    assert r.exit_code == 0 and set(json.loads(r.stdout)) == {"input", "value"}
    preds = tmp_path / "preds.csv"
    r = invoke("predict", out / "model", "--file", scores_csv, "--output", preds, "--quiet")
    assert r.exit_code == 0, r.output
    assert preds.read_text().splitlines()[0] == "input,value,true_value" and "MAE" in " ".join(r.stderr.split())
    with pytest.raises(transferkit.TransferkitError, match="predicts a number"):
        model.predict_proba(["good"])


def test_an_image_regression_target(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=10)
    rows = [{"image": str(p), "label": f"{np.asarray(__import__('PIL').Image.open(p))[..., 0].mean():.3f}"}
            for p in sorted(root.rglob("*.png"))]  # the target: mean red value, which the pixels carry
    data = tmp_path / "red.csv"
    with open(data, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "label"])
        w.writeheader()
        w.writerows(rows)
    res = transferkit.fit(str(data), "timm:test_efficientnet?pretrained=false", progress=False)
    assert res.record["scratch"]["description"].startswith("ridge regression on raw pixels")
    assert res.metrics["scratch"]["r2"] > 0.9  # the control sees the pixels: it must find the red mean


def test_the_task_can_be_said_and_what_regression_does_not_do_yet(scores_csv, tmp_path, bert_dir):
    ds = DataSpec(task="classification").load(str(scores_csv))
    assert ds.task == "classification" and len(ds.classes) > 20
    words = tmp_path / "words.csv"
    words.write_text("text,label\na,x\nb,y\n")
    assert_clean_failure(invoke("fit", words, "--task", "regression", "--out", tmp_path / "a"), "is not a number")
    assert_clean_failure(invoke("fit", scores_csv, "--task", "sideways"), "task='sideways'")
    assert_clean_failure(invoke("fit", scores_csv, "--strategy", "finetune", "--calibrate", "--out", tmp_path / "b"),
                         "which --calibrate (it scales class probabilities) does not take")
    assert_clean_failure(invoke("distill", scores_csv, "--teacher", f"hf:{bert_dir}", "--out", tmp_path / "distill"),
                         "handles classification only so far")
    assert_clean_failure(invoke("rank", scores_csv, "--backbones", f"hf:{bert_dir}", "--by", "leep"),
                         "a regression target is scored by LogME")
    r = invoke("rank", scores_csv, "--backbones", f"hf:{bert_dir}", "--quiet", "--out", tmp_path / "rank")
    assert r.exit_code == 0, r.output
    row = json.loads((tmp_path / "rank" / "rank.json").read_text())["rows"][0]
    assert row["scores"]["logme"] is not None and row["scores"]["hscore"] is None
    assert not any((tmp_path / n).exists() for n in ("a", "b", "distill"))
