"""Choices are made on validation data only: permuting the test labels changes no choice, only the reported numbers.

Each workflow runs twice on data whose test split is given (so the splits cannot move): once with the true test
labels and once with the test labels shuffled. Every choice (kept strategy, validation scores, chosen backbone, the
control's epochs and model) must be identical; the test accuracy must differ somewhere, or the test proves nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import transferkit
from transferkit import TransferkitError
from transferkit.cli import app
from transferkit.data.dataset import Dataset
from transferkit.workflows.compare import compare

from .conftest import make_timm_folder

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 200)}


def _pair(n_train: int = 10, n_test: int = 9) -> tuple[Dataset, Dataset]:
    """(true, permuted): noisy colour patches, the same items; only the test labels differ between the two."""
    rng = np.random.default_rng(0)
    items, labels, split = [], [], []
    for part, n in (("train", n_train), ("test", n_test)):
        for name, rgb in COLOURS.items():
            for _ in range(n):
                noise = rng.normal(0, 70, (24, 24, 3))
                items.append(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8))
                labels.append(name)
                split.append(part)
    test = [i for i, s in enumerate(split) if s == "test"]
    shuffled = list(labels)
    perm = rng.permutation(test)
    for i, j in zip(test, perm, strict=True):
        shuffled[i] = labels[j]
    assert shuffled != labels
    return (
        Dataset(items, labels, "image", name="colours", split=split),
        Dataset(items, shuffled, "image", name="colours", split=split),
    )


def _choices(res) -> list:
    return [
        (r["model"], r["seed"], r.get("val_accuracy"), r.get("kept"), json.dumps(r.get("info", {}), sort_keys=True,
                                                                                    default=str))
        for r in res.runs
    ]


def _strip_costs(info: dict) -> dict:
    return {k: v for k, v in info.items() if k not in ("cost_s", "cache")}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Saved random weights: the same backbone in every run (a random-init spec would draw from the global RNG)."""
    return str(make_timm_folder(tmp_path_factory.mktemp("bb") / "timm"))


def test_compare_choices_ignore_the_test_labels(tmp_path: Path, spec: str) -> None:
    true, shuffled = _pair()
    kw = {
        "seeds": [0, 1],
        "options": {"ft": {"epochs": 1, "batch_size": 8, "lp_ft": False}},
        "progress": False,
    }
    a = compare(true, spec, ["linear-probe", "ft=finetune"], cache_dir=tmp_path / "a", **kw)
    b = compare(shuffled, spec, ["linear-probe", "ft=finetune"], cache_dir=tmp_path / "b", **kw)
    assert a.best == b.best and a.val_means() == b.val_means()
    for ra, rb in zip(a.runs, b.runs, strict=True):
        assert (ra["model"], ra["seed"], ra["val_accuracy"], ra.get("kept")) == (
            rb["model"], rb["seed"], rb["val_accuracy"], rb.get("kept")
        )
        assert _strip_costs(ra.get("info", {})) == _strip_costs(rb.get("info", {}))
    assert [r["accuracy"] for r in a.runs] != [r["accuracy"] for r in b.runs]


def test_compare_keeps_the_best_on_validation_not_on_test(tmp_path: Path, spec: str) -> None:
    true, _ = _pair()
    res = compare(true, spec, ["linear-probe", "ft=finetune"], seeds=[0], progress=False,
                  options={"ft": {"epochs": 1, "batch_size": 8, "lp_ft": False}}, out=tmp_path / "c")
    from transferkit.workflows.compare_result import choose_rung

    means = res.val_means()
    assert res.best == choose_rung(means, res.meta["val_items"], "classification")
    report = (tmp_path / "c" / "report.md").read_text()
    assert f"kept `{res.best}`: " in report and "mean validation accuracy" in report
    assert "test labels played no part in the choice" in report
    assert json.loads((tmp_path / "c" / "compare.json").read_text())["val_accuracy_mean"] == means


def test_fit_auto_choices_ignore_the_test_labels(tmp_path: Path, spec: str) -> None:
    true, shuffled = _pair()
    kw = {"strategy": "auto", "seeds": 2, "budget": 3600, "epochs": 1, "batch_size": 8, "progress": False}
    a = transferkit.fit(true, spec, out=tmp_path / "a", cache_dir=tmp_path / "ca", **kw)
    b = transferkit.fit(shuffled, spec, out=tmp_path / "b", cache_dir=tmp_path / "cb", **kw)
    assert a.record["chosen"] == b.record["chosen"]
    assert a.compare.val_means() == b.compare.val_means()
    assert [r["accuracy"] for r in a.compare.runs] != [r["accuracy"] for r in b.compare.runs]


def test_fit_top_k_backbone_choice_ignores_the_test_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    true, shuffled = _pair()
    one, two = make_timm_folder(tmp_path / "one", seed=1), make_timm_folder(tmp_path / "two", seed=2)
    monkeypatch.setattr("transferkit.workflows.rank.default_candidates", lambda *a, **k: [str(one), str(two)])
    a = transferkit.fit(true, "auto", top_k=2, progress=False, cache_dir=tmp_path / "ca")
    b = transferkit.fit(shuffled, "auto", top_k=2, progress=False, cache_dir=tmp_path / "cb")
    assert a.record["rank"]["chosen"] == b.record["rank"]["chosen"]
    assert a.record["rank"]["val_accuracy"] == b.record["rank"]["val_accuracy"]
    assert _strip_costs(a.record["scratch"]) == _strip_costs(b.record["scratch"])
    assert a.metrics != b.metrics


def test_fit_auto_is_a_library_call_that_writes_run_json(tmp_path: Path, spec: str) -> None:
    true, _ = _pair()
    res = transferkit.fit(true, spec, "auto", seed=3, seeds=2, budget="1s", val_size=0.3, progress=False,
                          out=tmp_path / "r", cache_dir=tmp_path / "c")
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["strategy"] == "auto" and record["seeds"] == [3, 4] and record["chosen"]["label"] == "linear-probe"
    assert record["compare"]["auto_plan"] and record["compare"]["seeds"] == [3, 4]
    assert (tmp_path / "r" / "model" / "config.json").is_file() or any((tmp_path / "r" / "model").iterdir())
    assert "auto" in (tmp_path / "r" / "report.md").read_text()
    assert res.model.predict([true.items[0]])[0].label in COLOURS
    # the validation fraction is honoured: seed 3's split has 30 % of the labelled pool for validation
    assert record["data"]["splits"]["val"] == 9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resume": True, "out": "x"}, "resume does not apply to strategy auto"),
        ({"top_k": 2}, "top_k does not apply to strategy auto"),
        ({"scratch": False}, "always runs the scratch control"),
        ({"seeds": 0}, "seeds must be at least 1"),
        ({"budget": "1s", "unfreez": "last:1"}, "apply to none of the strategies run (linear-probe)"),
    ],
)
def test_fit_auto_refuses_what_it_cannot_honour(kwargs: dict, message: str, spec: str) -> None:
    true, _ = _pair()
    with pytest.raises(TransferkitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        transferkit.fit(true, spec, "auto", progress=False, **kwargs)


def test_fit_auto_notes_the_options_no_planned_rung_takes(tmp_path: Path, spec: str) -> None:
    true, _ = _pair()
    res = transferkit.fit(true, spec, "auto", budget="1s", unfreeze="last:1", progress=False, seeds=1)
    assert res.record["compare"]["auto_plan"][-1] == "option(s) unfreeze not used: no rung planned takes them"


def test_auto_runs_the_probe_alone_when_validation_cannot_choose(image_folder: Path, spec: str) -> None:
    res = transferkit.fit(str(image_folder), spec, "auto", budget="1h", seeds=1, progress=False)
    val = res.record["data"]["splits"]["val"]
    assert val < 25 and res.record["chosen"]["label"] == "linear-probe"
    assert list(res.compare.meta["strategies"]) == ["linear-probe"]
    assert any(n.startswith(f"linear probe only: {val} validation predictions (one standard error")
               for n in res.record["compare"]["auto_plan"])


def test_auto_with_a_given_test_set_and_few_labels_trains_the_probe_on_every_label(spec: str) -> None:
    true, _ = _pair()  # a split column: the test set is given; 10 labels per class
    res = transferkit.fit(true, spec, "auto", budget="1h", seeds=1, progress=False)
    assert list(res.compare.meta["strategies"]) == ["linear-probe"]
    assert any("every label trains the probe (C by 5-fold cross-validation)" in n
               for n in res.record["compare"]["auto_plan"])


def test_cli_fit_auto_honours_its_options(image_folder: Path, tmp_path: Path, spec: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("transferkit.workflows.auto.SMALL_VAL_SE", 1.0)  # the tiny folder's validation split
    args = ["fit", str(image_folder), "--backbone", spec, "--strategy", "auto", "--budget", "1h", "--seeds", "1",
            "--seed", "5", "--epochs", "1", "--set", "batch_size=8", "--out", str(tmp_path / "a"), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "a" / "run.json").read_text())
    assert record["seeds"] == [5] and record["config"]["configs"]["finetune"]["epochs"] == 1
    assert record["config"]["configs"]["finetune"]["batch_size"] == 8
    assert "kept `" in result.output
    bad = CliRunner().invoke(app, ["fit", str(image_folder), "--strategy", "auto", "--resume", "--quiet",
                                   "--backbone", spec, "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "resume does not apply to strategy auto" in bad.stderr


def test_distill_sweep_choice_ignores_the_test_labels(tmp_path: Path, spec: str) -> None:
    true, shuffled = _pair()
    kw = {"seeds": 1, "epochs": 1, "sweep": True, "progress": False}
    a = transferkit.distill(true, spec, "scratch:cnn?size=16&width=8", cache_dir=tmp_path / "a", **kw)
    b = transferkit.distill(shuffled, spec, "scratch:cnn?size=16&width=8", cache_dir=tmp_path / "b", **kw)
    role = "student (distilled)"
    da, db = a.runs[0][role], b.runs[0][role]
    assert (da["temperature"], da["alpha"], da["sweep"]) == (db["temperature"], db["alpha"], db["sweep"])
    roles = ("teacher", role)
    assert [a.runs[0][r]["accuracy"] for r in roles] != [b.runs[0][r]["accuracy"] for r in roles]


def test_the_cheapest_rung_within_one_standard_error_of_the_best_is_kept() -> None:
    from transferkit.workflows.compare_result import choose_rung, one_se

    means = {"linear-probe": 0.40, "finetune": 0.55, "lora": 0.67}
    assert one_se(means, 6, "classification") == pytest.approx((0.67 * 0.33 / 6) ** 0.5)
    assert choose_rung(means, 6, "classification") == "finetune"  # 6 validation items: 0.67 is mostly noise
    assert choose_rung(means, 3000, "classification") == "lora"  # 3,000: the lead is real
    assert choose_rung({"a": 0.5, "b": 0.5}, 10, "classification") == "a"  # ties: the cheaper
    assert choose_rung({"a": 0.1, "b": 0.3}, 6, "regression") == "b"  # R^2: the best
