"""Fine-tuning on a numeric target: finetune and lora train a one-output head on the standardised target, keep
epochs by validation R^2, save and predict in the target's own units, resume exactly, and LP-FT keeps the ridge
probe unless the fine-tune clearly lowers its validation error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import transferkit
from transferkit import create_backbone
from transferkit.core.evaluation import regression_metrics
from transferkit.core.training import regression_loss
from transferkit.data import make_splits
from transferkit.data.dataset import Dataset
from transferkit.strategies import STRATEGIES, RunContext, make_config
from transferkit.strategies.base import TargetScale
from transferkit.strategies.finetune import clearly_lower

from .conftest import TIMM_SPEC
from .test_cli import assert_clean_failure, invoke


def _brightness(n: int = 48) -> Dataset:
    """Flat grey images with a little noise; the target is their brightness, far from zero in its own units."""
    rng = np.random.default_rng(0)
    level = rng.uniform(20, 235, n)
    x = np.clip(level[:, None, None, None] + rng.normal(0, 8, (n, 24, 24, 3)), 0, 255).astype(np.uint8)
    return Dataset(list(x), [f"{500 + 2 * v:.3f}" for v in level], "image", name="brightness", task="regression")


def _run(strategy: str, options: dict, ds: Dataset | None = None, seed: int = 0, **ctx):
    torch.manual_seed(123)  # the random-init backbone is the same in every call
    bb = create_backbone(TIMM_SPEC)
    ds = ds if ds is not None else _brightness()
    splits = make_splits(ds, seed=0)
    strat = STRATEGIES.get(strategy)
    cfg = make_config(strat, {"batch_size": 8, "lr": 0.01, **options})
    return ds, splits, strat.run(bb, ds, splits, cfg, RunContext(seed=seed, progress=False, **ctx))


def test_target_scale_round_trips_a_linear_head():
    head = torch.nn.Linear(5, 1)
    x = torch.randn(7, 5)
    want = head(x).detach()
    scale = TargetScale.of(np.array([100.0, 140.0, 90.0]))
    scale.to_standard_units(head)
    torch.testing.assert_close(head(x).detach(), (want - scale.mean) / scale.std)
    scale.to_target_units(head)
    torch.testing.assert_close(head(x).detach(), want, rtol=1e-5, atol=1e-4)


def test_finetune_learns_a_numeric_target_in_its_own_units(tmp_path):
    ds, splits, res = _run("finetune", {"lp_ft": False, "epochs": 6, "patience": None})
    y_test = ds.targets[splits.test]
    m = regression_metrics(y_test, res.test_values)
    assert res.test_proba.shape == (len(splits.test), 0) and res.test_values.shape == (len(splits.test),)
    assert m["r2"] > 0.5, m  # brightness is easy: trained on the standardised target, predicted in its units
    assert abs(res.test_values.mean() - y_test.mean()) < y_test.std()
    curve = [r["val_accuracy"] for r in res.info["learning_curve"]]  # validation R^2 per epoch
    assert res.info["val_r2"] == pytest.approx(max(curve)) and "val_accuracy" not in res.info
    assert res.info["augment"] is False  # off by default for a numeric target
    assert res.info["target_scale"]["mean"] == pytest.approx(ds.targets[splits.train].mean())
    res.model.save(tmp_path / "m")
    again = transferkit.load(tmp_path / "m")
    assert again.task == "regression"
    np.testing.assert_allclose(again.predict_values(ds.take(splits.test)), res.test_values, rtol=1e-5, atol=1e-3)


def test_huber_and_mse_are_both_losses_and_differ():
    a, b = torch.tensor([0.0, 3.0]), torch.tensor([0.0, 0.0])
    assert float(regression_loss(a, b, "mse")) == pytest.approx(4.5)
    assert float(regression_loss(a, b, "huber")) == pytest.approx(1.25)  # linear beyond one standard deviation
    _, _, huber = _run("finetune", {"lp_ft": False, "epochs": 2})
    _, _, mse = _run("finetune", {"lp_ft": False, "epochs": 2, "regression_loss": "mse"})
    assert not np.allclose(huber.test_values, mse.test_values)
    with pytest.raises(transferkit.TransferkitError, match="regression_loss"):
        make_config(STRATEGIES.get("finetune"), {"regression_loss": "l1"})


def test_lp_ft_starts_from_the_ridge_probe_and_keeps_it_when_the_fine_tune_does_not_help():
    ds, splits, res = _run("finetune", {"lr": 0.0, "epochs": 2})  # lr 0: no epoch can beat the probe
    info = res.info
    assert info["kept"] == "linear-probe" and "ridge probe" in info["kept_reason"]
    assert info["val_r2"] == pytest.approx(info["probe_val_r2"])
    torch.manual_seed(123)  # the same random-init backbone: the kept model is what linear-probe fits
    probe = transferkit.fit(ds, TIMM_SPEC, seed=0, progress=False, scratch=False)
    np.testing.assert_allclose(res.test_values, probe.model.predict_values(ds.take(splits.test)), rtol=1e-4,
                               atol=1e-2)


def test_clearly_lower_is_a_paired_test():
    rng = np.random.default_rng(0)
    base = rng.uniform(1, 2, 200)
    assert clearly_lower(base * 0.5, base, 1.0)
    assert not clearly_lower(base, base, 0.0)
    noisy = base + rng.normal(0, 0.5, 200)  # lower on average by chance at most: not by 3 standard errors
    assert not clearly_lower(noisy, base, 3.0)


def test_regression_resume_ends_exactly_like_an_uninterrupted_run(tmp_path):
    opts = {"epochs": 3, "patience": None}  # LP-FT: the ridge head is folded into standardised units each start
    _, _, full = _run("finetune", opts)
    ck = tmp_path / "checkpoint"
    _run("finetune", opts, checkpoint_dir=ck, stop_after=1)
    _, _, resumed = _run("finetune", opts, checkpoint_dir=ck, resume=True)
    assert resumed.info["resumed_from_epoch"] == 1
    assert resumed.info["kept"] == full.info["kept"]
    np.testing.assert_array_equal(resumed.test_values, full.test_values)


def test_lora_on_a_numeric_text_target(bert_dir, tmp_path):
    from .test_regression import WORDS

    rng = np.random.default_rng(1)
    texts, values = [], []
    for _ in range(60):
        words = rng.choice(WORDS, size=5)
        texts.append(" ".join(words))
        values.append(f"{100 + 10 * (sum(w in WORDS[:3] for w in words) - sum(w in WORDS[3:6] for w in words)):.1f}")
    ds = Dataset(texts, values, "text", name="scores", task="regression")
    res = transferkit.fit(ds, f"hf:{bert_dir}", strategy="lora", epochs=2, progress=False, out=tmp_path / "run")
    assert res.record["strategy_info"]["trainable_parameters"] > 0
    assert set(res.metrics["transfer"]) == {"mae", "rmse", "r2", "spearman"}
    model = transferkit.load(tmp_path / "run" / "model")
    values_out = model.predict_values(texts[:5])
    assert np.all(np.isfinite(values_out)) and 50 < values_out.mean() < 150  # in the target's units


def test_what_a_numeric_target_does_not_take(tmp_path):
    from transferkit.workflows.fit import check_numeric_target, numeric_strategies

    assert set(numeric_strategies()) == {"linear-probe", "finetune", "lora"}
    with pytest.raises(transferkit.TransferkitError, match="strategy distill does not take"):
        check_numeric_target("scores", "distill")
    csv = tmp_path / "v.csv"
    csv.write_text("text,label\n" + "".join(f"word{i},{i * 0.5}\n" for i in range(40)))
    assert_clean_failure(invoke("fit", csv, "--calibrate", "--out", tmp_path / "a"), "--calibrate")
    assert not (tmp_path / "a").exists()


def test_an_epoch_with_r2_below_minus_one_is_still_kept_over_the_untrained_head():
    from transferkit.core.training import ParamGroup, TrainConfig, Trainer

    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    trainer = Trainer(model, [ParamGroup("all", list(model.parameters()), 0.1)],
                      lambda items, train, gen: torch.tensor(items, dtype=torch.float32)[:, None],
                      TrainConfig(epochs=2, batch_size=4, patience=None), progress=False)
    x = np.linspace(-1, 1, 16)
    result = trainer.fit(list(x), 2 * x, [5.0, 5.1], np.array([0.0, 0.01]), 0, regression=True)
    assert result.best_epoch >= 0 and result.best_val_accuracy < -1  # a terrible R^2, but a trained epoch


def test_a_checkpoint_from_before_a_new_training_field_still_resumes(tmp_path):
    import json

    opts = {"epochs": 2, "patience": None, "lp_ft": False}
    ck = tmp_path / "checkpoint"
    _run("finetune", opts, checkpoint_dir=ck, stop_after=1)
    meta = json.loads((ck / "trainer.json").read_text())
    del meta["config"]["regression_loss"]  # as an older transferkit wrote it
    del meta["identity"]["strategy settings"]["regression_loss"]
    (ck / "trainer.json").write_text(json.dumps(meta))
    _, _, resumed = _run("finetune", opts, checkpoint_dir=ck, resume=True)
    assert resumed.info["resumed_from_epoch"] == 1
