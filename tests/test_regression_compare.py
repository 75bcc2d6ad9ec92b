"""compare and fit --strategy auto on a numeric target: R^2/MAE/RMSE/Spearman as mean [95 % CI] over seeds, the
verdict in R^2 points, the rung chosen by mean validation R^2, and the refusals of what takes classes only."""

from __future__ import annotations

import json

import numpy as np
import pytest

import transferkit
from transferkit.data.dataset import Dataset

from .test_cli import assert_clean_failure, invoke
from .test_regression import WORDS


@pytest.fixture(scope="module")
def scores() -> Dataset:
    rng = np.random.default_rng(4)
    texts, values = [], []
    for _ in range(70):
        words = rng.choice(WORDS, size=5)
        texts.append(" ".join(words))
        y = 3 * (sum(w in WORDS[:3] for w in words) - sum(w in WORDS[3:6] for w in words)) + rng.normal()
        values.append(f"{y:.3f}")
    return Dataset(texts, values, "text", name="scores", task="regression")


def test_compare_on_a_numeric_target(scores, bert_dir, tmp_path):
    res = transferkit.compare(scores, f"hf:{bert_dir}", ["linear-probe", "ft=finetune"], seeds=2, progress=False,
                              options={"ft": {"epochs": 2}}, out=tmp_path / "cmp")
    assert res.task == "regression"
    for r in res.runs:
        assert {"mae", "rmse", "r2", "spearman"} <= set(r) and "accuracy" not in r
    assert all("val_r2" in r for r in res.runs if r["model"] != "scratch")
    rows = {r["model"]: r for r in res.summary()}
    lo, hi = rows["scratch"]["r2"][1:], rows["linear-probe"]["spearman"][1:]
    assert lo[1] <= 1.0 and hi[0] >= -1.0 and hi[1] <= 1.0  # intervals clipped to each metric's range
    assert rows["ft"]["mae"][1] >= 0.0
    means = res.val_means()
    assert res.best == max(means, key=means.get)
    assert res.verdicts["ft"].metric == "R^2" and "points" in res.verdicts["ft"].text
    assert "mean validation R^2" in res.choice_lines()[0]
    table = res.table()
    assert "| model | MAE | RMSE | R^2 | Spearman |" in table
    record = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert record["task"] == "regression" and record["test_evaluation"]["task"] == "regression"
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert "validation R^2" in page and "predicted against true" in page
    model = transferkit.load(tmp_path / "cmp" / "model")
    assert model.task == "regression" and np.isfinite(model.predict_values(scores.items[:3])).all()


def test_fit_auto_on_a_numeric_target(scores, bert_dir, tmp_path):
    res = transferkit.fit(scores, f"hf:{bert_dir}", strategy="auto", seeds=2, budget="5m", progress=False,
                          out=tmp_path / "auto")
    assert set(res.metrics["transfer"]) == {"mae", "rmse", "r2", "spearman"}
    assert res.record["chosen"]["by"] == "mean validation R^2 over the seeds"
    assert "| model | MAE | RMSE | R^2 | Spearman |" in (tmp_path / "auto" / "report.md").read_text()
    assert transferkit.load(tmp_path / "auto" / "model").task == "regression"


def test_compare_cli_on_a_numeric_target_and_its_refusals(scores, bert_dir, tmp_path):
    data = tmp_path / "scores.csv"
    data.write_text("text,label\n" + "".join(f"{t},{v}\n" for t, v in zip(scores.items, scores.labels, strict=True)))
    r = invoke("compare", data, "--backbone", f"hf:{bert_dir}", "--strategies", "linear-probe", "--seeds", "2",
               "--quiet", "--out", tmp_path / "ok")
    assert r.exit_code == 0, r.output
    assert "R^2" in r.stdout and "points" in r.stdout
    assert_clean_failure(invoke("compare", data, "--backbone", f"hf:{bert_dir}", "--strategies",
                                "linear-probe,adapt", "--set", f"adapt.target={data}", "--out", tmp_path / "no"),
                         "strategy adapt does not take")
    assert not (tmp_path / "no").exists()
