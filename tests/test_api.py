"""``transferkit.fit`` end to end (tiny random backbones), the run record and report, seeds, strategies."""

from __future__ import annotations

import json

import numpy as np
import pytest

import transferkit
from transferkit import DataError, TransferkitError, from_arrays
from transferkit.core.evaluation import classification_metrics, mean_ci
from transferkit.strategies import STRATEGIES, make_config, register_strategy
from transferkit.workflows.fit import verdict_line

from .conftest import TIMM_SPEC, make_image_folder

FAST = {"c_grid": (0.1, 1.0)}  # a short C grid keeps each linear probe quick


def _check_metrics(metrics: dict, keys: set[str]) -> None:
    assert set(metrics) == keys
    for m in metrics.values():
        assert set(m) == {"accuracy", "macro_f1"}
        assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0


def test_fit_images_end_to_end(image_folder, tmp_path, cache_dir):
    result = transferkit.fit(image_folder, backbone=TIMM_SPEC, out=tmp_path / "run", progress=False)
    _check_metrics(result.metrics, {"transfer", "scratch"})
    out = tmp_path / "run"
    assert result.out == out
    assert (out / "model" / "transferkit.json").is_file()
    assert (out / "model" / "backbone.safetensors").is_file()  # random init: its weights are saved
    record = json.loads((out / "run.json").read_text())
    assert record["backbone"] == TIMM_SPEC and record["strategy"] == "linear-probe" and record["seed"] == 0
    assert record["metrics"] == result.metrics
    assert record["data"]["classes"] == ["blue", "green", "red"] and record["data"]["size"] == 24
    assert record["data"]["splits"] == {"train": 15, "val": 3, "test": 6}
    assert record["data"]["content_hash"] == transferkit.from_folder(image_folder).content_hash()
    assert record["config"]["head"] == "linear"
    scratch = record["scratch"]
    assert scratch["description"] in scratch["candidates"] and scratch["input_px"] == 32
    assert {d.split(" (")[0] for d in scratch["candidates"]} == {
        "small CNN from random init",
        "logistic regression on raw pixels",
    }
    assert record["strategy_info"]["features_from_cache"] is False
    report = (out / "report.md").read_text()
    assert TIMM_SPEC in report and "| model | accuracy |" in report and f"scratch: {scratch['description']}" in report
    assert verdict_line(result.metrics) in report
    assert len(result.rows) == 2 and "| linear-probe" in result.table()
    # the saved model predicts like the returned one
    items = transferkit.from_folder(image_folder).items[:4]
    np.testing.assert_allclose(
        transferkit.load(out / "model").predict_proba(items),
        result.model.predict_proba(items),
        rtol=1e-5,
        atol=1e-6,
    )
    assert list((cache_dir / "features").glob("*.safetensors"))  # features went to TRANSFERKIT_CACHE


def test_fit_texts_end_to_end(text_csv, bert_dir, tmp_path):
    result = transferkit.fit(str(text_csv), backbone=str(bert_dir), out=tmp_path / "run", progress=False, **FAST)
    _check_metrics(result.metrics, {"transfer", "scratch"})
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["backbone"] == str(bert_dir) and record["data"]["modality"] == "text"
    assert record["scratch"]["description"].startswith("TF-IDF")
    assert record["config"]["c_grid"] == [0.1, 1.0]
    model = transferkit.load(tmp_path / "run" / "model")
    assert model.classes == ["neg", "pos"]
    preds = model.predict(["good fun film", "bad boring plot"])
    assert [p.label in ("neg", "pos") for p in preds] == [True, True]
    assert (tmp_path / "run" / "report.md").read_text().startswith("# transferkit run:")


def test_fit_with_hf_prefix_and_mlp_head_without_scratch(text_csv, gpt2_dir):
    result = transferkit.fit(
        text_csv, backbone=f"hf:{gpt2_dir}", head="mlp", mlp_hidden=16, scratch=False, progress=False
    )
    _check_metrics(result.metrics, {"transfer"})
    assert result.out is None and len(result.rows) == 1
    assert result.record["strategy_info"]["head"] == "mlp" and result.record["scratch"] is None
    assert result.model.backbone.preprocess.pooling == "last"
    assert result.record["strategy_info"]["trainable_parameters"] == 16 * 16 + 16 + 16 * 2 + 2


def test_fit_on_arrays_dataset():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(0, 60, (12, 20, 20)), rng.integers(190, 255, (12, 20, 20))]).astype(np.uint8)
    ds = from_arrays(x, ["dark"] * 12 + ["light"] * 12, name="shades")
    result = transferkit.fit(ds, backbone=TIMM_SPEC, scratch=False, progress=False, **FAST)
    assert result.record["data"]["name"] == "shades"
    assert result.metrics["transfer"]["accuracy"] == 1.0  # brightness is trivially separable
    assert result.model.predict([np.full((20, 20), 250, np.uint8)])[0].label == "light"


def test_same_seed_identical_metrics_images(image_folder, timm_dir):
    runs = [transferkit.fit(image_folder, backbone=str(timm_dir), seed=3, progress=False, **FAST) for _ in range(2)]
    a, b = (r.record for r in runs)
    assert runs[0].metrics == runs[1].metrics  # transfer and the control
    assert a["data"]["splits"] == b["data"]["splits"]
    assert a["scratch"]["candidates"] == b["scratch"]["candidates"]
    assert a["strategy_info"]["features_from_cache"] is False and b["strategy_info"]["features_from_cache"] is True
    for x, y in zip(runs[0].model.head.state_dict().values(), runs[1].model.head.state_dict().values(), strict=True):
        assert (x == y).all()


def test_same_seed_identical_metrics_texts(bert_dir, text_csv):
    runs = [transferkit.fit(text_csv, backbone=str(bert_dir), seed=5, progress=False, **FAST) for _ in range(2)]
    assert runs[0].metrics == runs[1].metrics
    assert runs[0].record["config"] == runs[1].record["config"]
    assert runs[0].record["strategy_info"]["features_from_cache"] is False
    assert runs[1].record["strategy_info"]["features_from_cache"] is True
    for a, b in zip(runs[0].model.head.state_dict().values(), runs[1].model.head.state_dict().values(), strict=True):
        assert (a == b).all()


def test_fit_per_class_max_test_and_cache_dir(tmp_path, cache_dir):
    root = make_image_folder(tmp_path / "d", per_class=10)
    result = transferkit.fit(
        root,
        backbone=TIMM_SPEC,
        per_class=4,
        max_test=3,
        scratch=False,
        progress=False,
        cache_dir=tmp_path / "mine",
        **FAST,
    )
    assert result.record["data"]["splits"] == {"train": 9, "val": 3, "test": 3}
    assert len(list((tmp_path / "mine" / "features").glob("*.safetensors"))) == 3  # train, val, test
    assert not (cache_dir / "features").exists()
    transferkit.fit(root, backbone=TIMM_SPEC, scratch=False, use_cache=False, progress=False, **FAST)
    assert not (cache_dir / "features").exists()


def test_fit_bad_data_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="neither an existing folder/file nor a built-in dataset"):
        transferkit.fit(tmp_path / "nothing", backbone=TIMM_SPEC, progress=False)


def test_fit_corrupt_image_names_the_file_and_writes_nothing(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=5)
    (root / "red" / "bad.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(DataError, match=r"Cannot read image .*red/bad\.jpg"):
        transferkit.fit(root, backbone=TIMM_SPEC, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_fit_modality_mismatch(text_csv):
    with pytest.raises(TransferkitError, match="takes images but .* holds texts"):
        transferkit.fit(text_csv, backbone=TIMM_SPEC, scratch=False, progress=False)


# ---------------------------------------------------------------- strategies


def test_unknown_strategy_suggests_the_closest(image_folder):
    with pytest.raises(
        TransferkitError,
        match=r"Unknown strategy 'linear-prob'\. Did you mean 'linear-probe'\? "
        r"Known: .*linear-probe",
    ):
        transferkit.fit(image_folder, backbone=TIMM_SPEC, strategy="linear-prob", progress=False)


def test_unknown_strategy_option_lists_the_options(image_folder):
    with pytest.raises(
        TransferkitError,
        match=r"Strategy 'linear-probe' has no option\(s\) heads; its options are "
        r".*c_grid.*head",
    ):
        transferkit.fit(image_folder, backbone=TIMM_SPEC, heads="mlp", progress=False)


def test_bad_head_value(image_folder):
    with pytest.raises(TransferkitError, match=r"head='svm' is not one of linear, mlp"):
        transferkit.fit(image_folder, backbone=TIMM_SPEC, head="svm", scratch=False, progress=False)


def test_strategy_registry_rejects_duplicates():
    strat = STRATEGIES.get("linear-probe")
    assert "linear-probe" in STRATEGIES and list(STRATEGIES) == sorted(STRATEGIES)
    with pytest.raises(TransferkitError, match="strategy 'linear-probe' is already registered"):
        register_strategy(strat)
    cfg = make_config(strat, {"head": "mlp"})
    assert cfg.head == "mlp" and cfg.mlp_hidden == 1024


# ---------------------------------------------------------------- evaluation


def test_classification_metrics_count_every_class():
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0]), num_classes=3)
    assert m["accuracy"] == 0.75
    # class 2 never appears: it still counts (F1 0) in the macro average
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 0.0) / 3)


def test_mean_ci():
    assert mean_ci([0.5]) == (0.5, 0.5, 0.5)
    m, lo, hi = mean_ci([0.8, 0.9, 1.0])
    assert m == pytest.approx(0.9) and lo < 0.9 < hi and hi - m == pytest.approx(m - lo)
    assert hi - m == pytest.approx(4.302652729911275 * 0.1 / np.sqrt(3))


def test_verdict_line():
    assert verdict_line({"transfer": {"accuracy": 0.9}}) == "No scratch control was run."
    line = verdict_line({"transfer": {"accuracy": 0.8}, "scratch": {"accuracy": 0.9}})
    assert "10.0 points lower than scratch" in line


def test_fit_budget_matched_scratch_records_its_budget(image_folder, timm_dir):
    res = transferkit.fit(image_folder, backbone=str(timm_dir), progress=False, scratch_budget="matched")
    budget = res.record["scratch"]["time_budget_s"]
    saved = res.record["strategy_info"]["cache_saved_s"]
    assert budget == pytest.approx(res.record["timings_s"]["transfer_total"] + saved)
    assert 1 <= res.record["scratch"]["cnn_epochs"] <= 100
