"""Negative transfer: ``--strategy auto`` saves its from-scratch control when the control clearly beats every
transfer rung on validation (the image classes' small CNN, as a ``scratch:cnn`` model that predicts like any other)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.data.dataset import Dataset, make_splits
from transferkit.methods import control as control_mod
from transferkit.methods.control import ControlResult, ScratchConfig, control_model, run_scratch
from transferkit.workflows.compare_result import scratch_beats

from .conftest import TIMM_SPEC

CNN = "small CNN from random init (32px)"


def _noise(n: int = 120, seed: int = 0) -> Dataset:
    """Grey noise around the same mean, weak or strong: no linear function of the pixels tells the classes apart."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    amplitude = np.where(labels == 1, rng.uniform(45, 60, n), rng.uniform(4, 10, n))
    x = np.clip(128 + amplitude[:, None, None] * rng.standard_normal((n, 32, 32)), 0, 255).astype(np.uint8)
    return Dataset(x, ["calm" if v == 0 else "noisy" for v in labels], "image", name="noise")


def _noise_folder(root: Path, per_class: int = 40) -> Path:
    from PIL import Image

    ds = _noise(2 * per_class)
    for k, (x, y) in enumerate(zip(ds.items, ds.labels, strict=True)):
        (root / y).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).convert("RGB").save(root / y / f"{k:03d}.png")
    return root


def test_the_control_replaces_transfer_only_by_more_than_one_standard_error():
    # one standard error at 85 % over 100 validation predictions: 3.6 points
    assert scratch_beats({"linear-probe": 0.80, "finetune": 0.78}, 0.85, 100)
    assert not scratch_beats({"linear-probe": 0.80, "finetune": 0.78}, 0.83, 100)
    assert not scratch_beats({"linear-probe": 0.80}, 0.85, 10)  # ten predictions: 11 points
    assert scratch_beats({"linear-probe": float("nan"), "lora": 0.5}, 0.9, 100)  # a rung without a score is ignored
    assert not scratch_beats({"contrastive": float("nan")}, 0.9, 100)  # nothing scored on validation: no choice
    assert not scratch_beats({"linear-probe": 0.8}, 0.95, 0)


def test_the_control_cnn_becomes_a_model_that_scores_as_the_control_did(tmp_path):
    ds = _noise()
    splits = make_splits(ds, seed=0)
    kw = {"progress": False, "cache_dir": tmp_path}
    first = run_scratch(ds, splits, config=ScratchConfig(epochs=6, batch_size=8), **kw)
    assert first.description == CNN and first.weights is not None
    assert first.info["candidates"][CNN] > max(v for k, v in first.info["candidates"].items() if k != CNN)
    model = control_model(first, ds)
    assert model.backbone.spec == "scratch:cnn?size=32&width=32" and model.classes == ["calm", "noisy"]
    # the same network: its logits on the control's own inputs are the control CNN's at its best epoch
    cnn = control_mod.SmallCNN(2).eval()
    cnn.load_state_dict(first.weights)
    x = control_mod._norm(control_mod._image_tensor(ds, splits.test, 32))
    with torch.no_grad():
        torch.testing.assert_close(model.head(model.backbone(x)), cnn(x))
        assert (cnn(x).argmax(1).numpy() == first.test_pred).all()
    # and through predict's own preprocessing it predicts what the control predicted
    agree = (model.predict_proba(ds.take(splits.test)).argmax(1) == first.test_pred).mean()
    assert agree >= 0.9
    # a cache hit returns the same weights; a shorter budget the best epoch's within it, as a fresh run makes them
    again = run_scratch(ds, splits, config=ScratchConfig(epochs=6, batch_size=8), **kw)
    assert again.info["cache"] == "hit"
    assert all(torch.equal(again.weights[k], v) for k, v in first.weights.items())
    short = run_scratch(ds, splits, config=ScratchConfig(epochs=4, batch_size=8), **kw)
    fresh = run_scratch(ds, splits, config=ScratchConfig(epochs=4, batch_size=8), progress=False, use_cache=False)
    assert short.info["cache"] == "hit" and short.description == fresh.description == CNN
    assert short.info["cnn_best_epoch"] == fresh.info["cnn_best_epoch"]
    assert all(torch.equal(short.weights[k], v) for k, v in fresh.weights.items())


def test_only_the_image_classes_cnn_is_saved():
    text = Dataset(["a b", "c d", "e f", "g h"], ["x", "y", "x", "y"], "text", name="t")
    tfidf = ControlResult(np.zeros(1, dtype=int), "TF-IDF (1-2 grams) + logistic regression", 10, 0.1)
    assert "not saved as a model for text classification" in control_model(tfidf, text)
    pixels = ControlResult(np.zeros(1, dtype=int), "logistic regression on raw pixels (32px)", 10, 0.1)
    assert "not the small CNN" in control_model(pixels, _noise())


@pytest.fixture
def control_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule itself is tested above; here the control is made to win so that the whole path runs."""
    monkeypatch.setattr("transferkit.workflows.compare.scratch_beats", lambda *a: True)


def test_auto_saves_the_control_when_it_wins_and_predict_uses_it(tmp_path, control_wins):
    data = _noise_folder(tmp_path / "noise")
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, ["fit", str(data), "--backbone", TIMM_SPEC, "--strategy", "auto", "--budget", "1s",
                                 "--scratch-budget", "fixed", "--out", str(out), "--quiet"])  # the CNN's 40 epochs
    assert result.exit_code == 0, result.output
    record = json.loads((out / "run.json").read_text())
    assert record["chosen"]["label"] == "scratch" and "negative transfer" in record["chosen"]["by"]
    assert record["compare"]["control_choice"]["kept"] is True
    assert record["compare"]["best"] == "linear-probe"  # the best transfer rung is still reported as such
    saved, control = record["metrics"]["saved"], record["metrics"]["scratch"]
    assert abs(saved["accuracy"] - control["accuracy"]) <= 0.1  # the control's CNN, through predict's preprocessing
    spec = json.loads((out / "model" / "transferkit.json").read_text())["backbone"]["spec"]
    assert spec.startswith("scratch:cnn")
    report = (out / "report.md").read_text()
    assert "the saved model is the control" in report and "saved model: `scratch`" in report
    assert "the saved model is the control" in (out / "report.html").read_text()
    image = next((data / "noisy").iterdir())
    pred = runner.invoke(app, ["predict", str(out / "model"), str(image), "--json"])
    assert pred.exit_code == 0, pred.output
    assert json.loads(pred.stdout.splitlines()[0])["label"] in ("calm", "noisy")
    assert record["test_evaluation"]["items"] == record["data"]["splits"]["test"]


def test_a_winning_control_that_cannot_be_saved_leaves_transfer_saved(tmp_path, control_wins, monkeypatch):
    monkeypatch.setattr(control_mod, "train_scratch_pixels", _perfect_pixels)
    data = _noise_folder(tmp_path / "noise")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["fit", str(data), "--backbone", TIMM_SPEC, "--strategy", "auto", "--budget",
                                      "1s", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "run.json").read_text())
    assert record["chosen"]["label"] == "linear-probe"
    choice = record["compare"]["control_choice"]
    assert choice["kept"] is False and "not the small CNN" in choice["text"]
    assert "saved model is `linear-probe`" in (out / "report.md").read_text()


def _perfect_pixels(ds, splits, xs, seed):  # the pixel model wins the control (validation 1.0)
    return {"test_pred": [0] * len(splits.test), "val_accuracy": 1.0, "C": 1.0, "components": 1,
            "trainable_parameters": 3, "seconds": 0.0}
