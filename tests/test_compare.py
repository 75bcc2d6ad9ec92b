"""Seeds, intervals and the verdict: transfer helps / no clear difference / negative transfer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import transferkit
from transferkit.cli import app
from transferkit.core.evaluation import Verdict, mean_ci, verdict
from transferkit.errors import TransferkitError
from transferkit.workflows.compare import compare

from .conftest import TIMM_SPEC


def test_verdict_both_ways_and_undecided():
    helps = verdict([0.85, 0.86, 0.84], [0.80, 0.80, 0.81])
    assert helps.kind == "helps" and helps.low > 0
    assert helps.text.startswith("transfer helps: +4.7 points [")
    neg = verdict([0.50, 0.52, 0.49], [0.80, 0.79, 0.81])
    assert neg.kind == "negative transfer" and neg.high < 0
    assert neg.text.startswith("negative transfer: scratch is better by 29.7 points")
    unclear = verdict([0.80, 0.85, 0.78], [0.81, 0.80, 0.80])
    assert unclear.kind == "no clear difference" and unclear.low < 0 < unclear.high
    single = verdict([0.9], [0.5])  # one seed decides nothing
    assert single.kind == "no clear difference" and single.seeds == 1
    with pytest.raises(ValueError, match="same, non-zero number of seeds"):
        verdict([0.9, 0.8], [0.5])


def test_verdict_is_paired():
    # seeds differ a lot from each other, but transfer wins by exactly 2 points on each: a paired test sees it
    t = [0.62, 0.92, 0.77]
    s = [0.60, 0.90, 0.75]
    assert verdict(t, s).kind == "helps"
    m, lo, hi = mean_ci([100 * (a - b) for a, b in zip(t, s, strict=True)])
    assert m == pytest.approx(2.0) and hi - lo < 1e-6


def test_compare_runs_every_strategy_and_seed_on_the_same_splits(image_folder, tmp_path):
    res = compare(
        image_folder,
        TIMM_SPEC,
        ["linear-probe", "finetune"],
        seeds=2,
        out=tmp_path / "cmp",
        options={"finetune": {"epochs": 1, "batch_size": 4}},
        progress=False,
    )
    assert sorted((r["model"], r["seed"]) for r in res.runs) == sorted(
        (m, s) for m in ("linear-probe", "finetune", "scratch") for s in (0, 1)
    )
    assert set(res.verdicts) == {"linear-probe", "finetune"} and res.best in res.verdicts
    record = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert record["seeds"] == [0, 1] and record["verdicts"][res.best]["text"]
    assert (tmp_path / "cmp" / "model" / "transferkit.json").is_file()
    report = (tmp_path / "cmp" / "report.md").read_text()
    for name in ("linear-probe", "finetune", "scratch"):
        assert f"| {name} |" in report
    for row in res.summary():
        assert 0.0 <= row["accuracy"][1] <= row["accuracy"][0] <= row["accuracy"][2] <= 1.0


def test_compare_bad_input():
    with pytest.raises(TransferkitError, match="at least one seed and one strategy"):
        compare("fashion-mnist-small", seeds=[], progress=False)
    with pytest.raises(TransferkitError, match="Unknown strategy 'lora2'"):
        compare("fashion-mnist-small", strategies=["lora2"], progress=False)


def test_cli_compare(image_folder, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "compare",
            str(image_folder),
            "--backbone",
            TIMM_SPEC,
            "--strategies",
            "linear-probe",
            "--seeds",
            "2",
            "--out",
            str(tmp_path / "c"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "linear-probe:" in result.stdout and "(2 seeds)" in result.stdout
    bad = runner.invoke(app, ["compare", str(image_folder), "--set", "epochs=3", "--quiet"])
    assert bad.exit_code == 2 and "write LABEL.KEY" in bad.stderr


def test_image_scratch_control_picks_the_better_on_validation():
    from transferkit.data import make_splits
    from transferkit.methods.control import run_scratch

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(0, 60, (15, 16, 16)), rng.integers(190, 255, (15, 16, 16))]).astype(np.uint8)
    ds = transferkit.from_arrays(x, ["dark"] * 15 + ["light"] * 15)
    splits = make_splits(ds, seed=0)
    res = run_scratch(ds, splits, seed=0, progress=False)
    cands = res.info["candidates"]
    assert len(cands) == 2 and res.info["val_accuracy"] == max(cands.values())
    assert (res.test_pred == ds.targets[splits.test]).mean() == 1.0


def test_parse_budget():
    from transferkit.workflows.auto import parse_budget

    assert parse_budget("90s") == 90 and parse_budget("10m") == 600 and parse_budget("1.5h") == 5400
    assert parse_budget("42") == 42
    with pytest.raises(TransferkitError, match="is not a duration like 90s, 10m or 1.5h"):
        parse_budget("ten minutes")


def test_auto_plan_follows_the_budget(image_folder, vit_dir):
    from transferkit import create_backbone, from_folder
    from transferkit.workflows.auto import MIRROR_BELOW, plan_ladder

    ds = from_folder(image_folder)
    bb = create_backbone(TIMM_SPEC)
    tiny = plan_ladder(bb, ds, n_train=20, n_eval=10, seeds=3, budget_s=1e-6, smallest_class=8)
    assert tiny.strategies == ["linear-probe"] and any("finetune skipped" in n for n in tiny.notes)
    assert "linear-probe" not in tiny.options and any("without mirror images" in n for n in tiny.notes)
    roomy = plan_ladder(bb, ds, n_train=20, n_eval=10, seeds=3, budget_s=3600, smallest_class=8)
    assert roomy.strategies == ["linear-probe", "finetune"]  # no attention: no lora
    assert roomy.options["finetune"] == {"unfreeze": "last:2", "lp_ft": True, "epochs": 10}
    assert roomy.options["linear-probe"] == {"mirror": True} and any("dev_tta.py" in n for n in roomy.notes)
    mlp = plan_ladder(bb, ds, n_train=20, n_eval=10, seeds=3, budget_s=3600, probe_head="mlp", smallest_class=8)
    assert "linear-probe" not in mlp.options  # mirror images are for the linear head
    many = plan_ladder(bb, ds, n_train=20, n_eval=10, seeds=3, budget_s=3600, smallest_class=MIRROR_BELOW)
    assert "linear-probe" not in many.options  # measured within the noise at 100 a class
    vit = plan_ladder(create_backbone(str(vit_dir)), ds, n_train=20, n_eval=10, seeds=3, budget_s=3600)
    assert vit.strategies == ["linear-probe", "finetune", "lora"]  # images: no contrastive rung


def test_auto_plan_adds_the_contrastive_rung_for_text_classes_when_it_fits(text_csv, bert_dir):
    from transferkit import create_backbone
    from transferkit.data.dataset import Dataset
    from transferkit.data.spec import DataSpec
    from transferkit.workflows.auto import plan_ladder

    ds = DataSpec().load(str(text_csv))
    bb = create_backbone(f"hf:{bert_dir}")
    roomy = plan_ladder(bb, ds, n_train=24, n_eval=12, seeds=1, budget_s=3600)
    # 24 texts, 12 a class: 144 of their 276 pairs differ in class, and as many same-class ones (132, some repeated)
    assert roomy.strategies[-1] == "contrastive" and any("288 sentence pairs" in n for n in roomy.notes)
    tight = plan_ladder(bb, ds, n_train=24, n_eval=12, seeds=1, budget_s=1e-6)
    assert "contrastive" not in tight.strategies and any("contrastive skipped" in n for n in tight.notes)
    numbers = Dataset(["a b", "c d", "e f"], ["0.5", "1.5", "2.5"], "text", task="regression")
    assert "contrastive" not in plan_ladder(bb, numbers, n_train=24, n_eval=12, seeds=1, budget_s=3600).strategies


def test_cli_fit_auto(image_folder, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "fit",
            str(image_folder),
            "--backbone",
            TIMM_SPEC,
            "--strategy",
            "auto",
            "--budget",
            "1s",
            "--seeds",
            "2",
            "--out",
            str(tmp_path / "auto"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "auto" / "run.json").read_text())
    assert record["strategy"] == "auto" and record["seeds"] == [0, 1]
    assert record["compare"]["auto_plan"] and "linear-probe" in record["compare"]["verdicts"]
    page = (tmp_path / "auto" / "report.html").read_text()  # the ladder's page: every rung, then the saved model
    assert "Every rung against scratch" in page and 'id="test"' in page and record["data"]["content_hash"] in page
    assert page.count('class="verdict') == len(record["compare"]["verdicts"])
    assert record["test_evaluation"]["items"] == record["data"]["splits"]["test"]


def test_variants_of_one_strategy_and_a_budget_matched_scratch(image_folder):
    res = compare(
        image_folder,
        TIMM_SPEC,
        ["probe=linear-probe", "last-1=finetune", "full=finetune"],
        seeds=2,
        options={"last-1": {"epochs": 1, "unfreeze": "last:1"}, "full": {"epochs": 1, "batch_size": 4}},
        progress=False,
        scratch_budget="matched",
    )
    assert res.meta["strategies"] == {"probe": "linear-probe", "last-1": "finetune", "full": "finetune"}
    assert res.meta["configs"]["last-1"]["unfreeze"] == "last:1" and res.meta["configs"]["full"]["unfreeze"] == "all"
    assert set(res.verdicts) == {"probe", "last-1", "full"}
    for seed in (0, 1):
        runs = [r for r in res.runs if r["seed"] == seed]
        control = next(r for r in runs if r["model"] == "scratch")
        # the control gets the time of this seed's costliest transfer run, no more, no less
        assert control["budget_s"] == max(r["cost_s"] for r in runs if r["model"] != "scratch")
        assert control["info"]["time_budget_s"] == control["budget_s"]
        assert 1 <= control["info"]["cnn_epochs"] <= 100
    assert "budget-matched to the costliest transfer run" in res.scratch_line()


def test_work_budget_is_the_costliest_run_in_flops_and_reproducible(image_folder, tmp_path):
    from transferkit.methods.control import cnn_flops

    kw = {
        "seeds": [0, 1],
        "options": {"ft": {"epochs": 1, "batch_size": 4}},
        "progress": False,
    }
    first = compare(image_folder, TIMM_SPEC, ["linear-probe", "ft=finetune"], cache_dir=tmp_path / "a", **kw)
    again = compare(image_folder, TIMM_SPEC, ["linear-probe", "ft=finetune"], cache_dir=tmp_path / "b", **kw)
    for seed in (0, 1):
        runs = [r for r in first.runs if r["seed"] == seed]
        control = next(r for r in runs if r["model"] == "scratch")
        work = max(r["work_flops"] for r in runs if r["model"] != "scratch")
        assert control["info"]["work_budget_flops"] == work
        # the CNN's own FLOPs fit in its share of the budget (unless even one epoch does not: then it gets one)
        assert control["info"]["cnn_flops"] <= 0.5 * work or control["info"]["cnn_epochs"] == 1
        assert cnn_flops(control["info"]["input_px"], 3) > 0
    assert "TFLOP" in first.scratch_line()
    # no wall clock in the budget: a fresh cache gives the same control, epoch for epoch
    pick = [(r["accuracy"], r["info"]["cnn_epochs"]) for r in first.runs if r["model"] == "scratch"]
    assert pick == [(r["accuracy"], r["info"]["cnn_epochs"]) for r in again.runs if r["model"] == "scratch"]


def test_control_is_cached_and_a_longer_budget_extends_it(tmp_path):
    from transferkit.data import make_splits
    from transferkit.methods.control import ScratchConfig, run_scratch

    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (40, 16, 16)).astype(np.uint8)
    ds = transferkit.from_arrays(x, ["a", "b"] * 20)
    splits = make_splits(ds, seed=0)
    kw = {"progress": False, "cache_dir": tmp_path}
    short = run_scratch(ds, splits, config=ScratchConfig(epochs=3), **kw)
    assert short.info["cache"] == "miss" and short.info["cnn_epochs"] == 3
    long = run_scratch(ds, splits, config=ScratchConfig(epochs=6), **kw)
    assert long.info["cache"] == "extended" and long.info["cnn_epochs"] == 6
    again = run_scratch(ds, splits, config=ScratchConfig(epochs=2), **kw)
    assert again.info["cache"] == "hit"
    # extending a cached run gives what one uninterrupted run gives
    fresh = run_scratch(ds, splits, config=ScratchConfig(epochs=6), progress=False, use_cache=False)
    assert fresh.info["cache"] == "miss"
    assert fresh.info["candidates"] == long.info["candidates"]
    assert np.array_equal(fresh.test_pred, long.test_pred)
    # a tampered state is not trusted: the run is trained again
    state = next((tmp_path / "control").glob("*/state.pt"))
    state.write_bytes(b"garbage")
    redone = run_scratch(ds, splits, config=ScratchConfig(epochs=6), **kw)
    assert redone.info["cache"] == "miss" and redone.info["candidates"] == long.info["candidates"]


def test_a_cached_run_is_charged_its_cold_cost(image_folder, timm_dir, tmp_path):
    kw = {"seeds": [0], "cache_dir": tmp_path, "progress": False, "scratch_budget": "fixed"}
    cold = compare(image_folder, str(timm_dir), ["linear-probe"], **kw).runs[0]
    warm = compare(image_folder, str(timm_dir), ["linear-probe"], **kw).runs[0]
    assert cold["cost_s"] == cold["wall_s"] and warm["cost_s"] > warm["wall_s"]


def test_fixed_scratch_schedule():
    res = compare(
        "fashion-mnist-small",
        TIMM_SPEC,
        ["linear-probe"],
        seeds=[0],
        per_class=3,
        max_test=20,
        scratch_budget="fixed",
        progress=False,
    )
    control = next(r for r in res.runs if r["model"] == "scratch")
    assert control["budget_s"] is None and control["info"]["cnn_epochs"] == 40
    assert res.scratch_line().endswith("its own fixed schedule")


def test_scratch_cnn_epochs_follow_the_time_budget():
    from transferkit.data import make_splits
    from transferkit.methods.control import ScratchConfig, run_scratch

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (24, 16, 16)).astype(np.uint8)
    ds = transferkit.from_arrays(x, ["a", "b"] * 12)
    splits = make_splits(ds, seed=0)
    none_left = run_scratch(ds, splits, config=ScratchConfig(time_budget_s=0.0), progress=False)
    assert none_left.info["cnn_epochs"] == 1 and none_left.info["time_budget_s"] == 0.0
    plenty = run_scratch(ds, splits, config=ScratchConfig(time_budget_s=1e6, max_epochs=3), progress=False)
    assert plenty.info["cnn_epochs"] == 3


def test_bad_variants_and_scratch_budget(image_folder):
    for strategies, message in [
        (["a=linear-probe", "a=finetune"], "given twice"),
        (["scratch=linear-probe"], "reserved"),
        (["=linear-probe"], "empty"),
        (["x=lora2"], "Unknown strategy 'lora2'"),
    ]:
        with pytest.raises(TransferkitError, match=message):
            compare(image_folder, TIMM_SPEC, strategies, seeds=1, progress=False)
    with pytest.raises(TransferkitError, match="Options given for ft, which is not among linear-probe"):
        compare(image_folder, TIMM_SPEC, ["linear-probe"], options={"ft": {}}, seeds=1, progress=False)
    with pytest.raises(TransferkitError, match="scratch_budget='time' is not one of work, fixed, matched"):
        compare(image_folder, TIMM_SPEC, ["linear-probe"], scratch_budget="time", progress=False)
    with pytest.raises(TransferkitError, match="scratch_budget='x' is not one of work, fixed, matched"):
        transferkit.fit(image_folder, TIMM_SPEC, scratch_budget="x", progress=False)
    bad = CliRunner().invoke(app, ["compare", str(image_folder), "--scratch-budget", "later", "--quiet"])
    assert bad.exit_code == 2 and "scratch_budget='later' is not one of work, fixed, matched" in bad.stderr


def test_verdict_phrase_names_the_method_and_its_baseline():
    assert Verdict("helps", 2.0, 1.0, 3.0, 3).phrase("dann", "source-only") == (
        "dann helps: +2.0 points [+1.0, +3.0] over source-only (3 seeds)"
    )
    assert Verdict("negative transfer", -2.0, -3.0, -1.0, 3).phrase("coral", "source-only") == (
        "coral hurts: -2.0 points [-3.0, -1.0] against source-only (3 seeds)"
    )
    assert Verdict("no clear difference", 0.5, -1.0, 2.0, 5).phrase("distillation", "hard labels alone") == (
        "distillation: no clear difference from hard labels alone, +0.5 points [-1.0, +2.0] (5 seeds)"
    )


def test_macro_f1_matches_scikit_learn_including_absent_classes():
    from sklearn.metrics import f1_score

    from transferkit.core.evaluation import classification_metrics

    rng = np.random.default_rng(0)
    for k in (2, 3, 10):
        for _ in range(20):
            y = rng.integers(0, k, 40)
            pred = rng.integers(0, max(2, k - 1), 40)  # the last class never predicted
            ours = classification_metrics(y, pred, k)
            ref = f1_score(y, pred, labels=list(range(k)), average="macro", zero_division=0)
            assert ours["macro_f1"] == pytest.approx(ref, abs=1e-12)
            assert ours["accuracy"] == pytest.approx(float((y == pred).mean()))


def test_auto_gives_the_probe_mirror_images_when_they_fit_and_not_with_the_mlp_head(image_folder):
    res = compare(image_folder, TIMM_SPEC, "auto", seeds=1, budget=3600, progress=False,
                  options=None, common_options={"epochs": 1})
    assert res.meta["configs"]["linear-probe"]["mirror"] is True
    mlp = compare(image_folder, TIMM_SPEC, "auto", seeds=1, budget=3600, progress=False,
                  common_options={"epochs": 1, "head": "mlp"})
    assert mlp.meta["configs"]["linear-probe"]["mirror"] is False
