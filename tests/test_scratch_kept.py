"""Negative transfer: ``--strategy auto`` saves its from-scratch control when the control clearly beats every
transfer rung on validation (for image classes: the small CNN as ``scratch:cnn``, the pixel model as
``scratch:pixels``, models that predict like any other)."""

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


def _colours(n: int = 90, seed: int = 0) -> Dataset:
    """Noisy solid colours: the pixel model separates them, and the simpler model wins the control's ties."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    base = np.array([(200, 40, 40), (40, 200, 40), (40, 40, 200)], dtype=np.float64)[labels]
    x = np.clip(base[:, None, None, :] + rng.normal(0, 25, (n, 20, 20, 3)), 0, 255).astype(np.uint8)
    return Dataset(x, [("red", "green", "blue")[v] for v in labels], "image", name="colours")


def test_the_pixel_control_becomes_a_model_that_scores_as_the_control_did(tmp_path):
    ds = _colours()
    splits = make_splits(ds, seed=0)
    first = run_scratch(ds, splits, config=ScratchConfig(epochs=1, batch_size=8), progress=False, cache_dir=tmp_path)
    assert first.description == "logistic regression on raw pixels (32px)" and first.weights is not None
    model = control_model(first, ds)
    k = first.weights["proj"].shape[0]
    assert model.backbone.spec == f"scratch:pixels?size=32&components={k}"
    x = control_mod._image_tensor(ds, splits.test, 32)
    flat = x.reshape(len(x), -1).double() / 255.0
    expected = ((flat - first.weights["mean"].double()) @ first.weights["proj"].double().T).float()
    with torch.no_grad():  # the projection and head as the control fitted them
        torch.testing.assert_close(model.backbone(x.float() / 255.0), expected, atol=1e-4, rtol=1e-4)
        assert (model.head(expected).argmax(1).numpy() == first.test_pred).all()
    assert (model.predict_proba(ds.take(splits.test)).argmax(1) == first.test_pred).mean() >= 0.9
    saved = model.save(tmp_path / "model")  # and back, as predict loads it
    from transferkit.core.export import load

    again = load(saved)
    np.testing.assert_allclose(again.predict_proba(ds.take(splits.test)), model.predict_proba(ds.take(splits.test)),
                               atol=1e-6)
    hit = run_scratch(ds, splits, config=ScratchConfig(epochs=1, batch_size=8), progress=False, cache_dir=tmp_path)
    assert hit.info["cache"] == "hit" and all(torch.equal(hit.weights[n], v) for n, v in first.weights.items())


def test_a_text_control_or_one_without_weights_is_not_saved():
    text = Dataset(["a b", "c d", "e f", "g h"], ["x", "y", "x", "y"], "text", name="t")
    tfidf = ControlResult(np.zeros(1, dtype=int), "TF-IDF (1-2 grams) + logistic regression", 10, 0.1)
    assert "not saved as a model for text classification" in control_model(tfidf, text)
    pixels = ControlResult(np.zeros(1, dtype=int), "logistic regression on raw pixels (32px)", 10, 0.1)
    assert "kept no weights to save" in control_model(pixels, _noise())


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
    assert choice["kept"] is False and "kept no weights to save" in choice["text"]
    assert "saved model is `linear-probe`" in (out / "report.md").read_text()


def _perfect_pixels(ds, splits, xs, seed):  # the pixel model wins the control (validation 1.0), without weights
    return {"test_pred": [0] * len(splits.test), "val_accuracy": 1.0, "C": 1.0, "components": 1,
            "trainable_parameters": 3, "seconds": 0.0}
