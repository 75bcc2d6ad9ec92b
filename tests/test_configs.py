"""Strategy configs are checked when they are built: one clear sentence per bad option, before any data is read."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import transferkit
from transferkit.cli import app
from transferkit.core.heads import C_GRID
from transferkit.core.training import TrainConfig
from transferkit.errors import TransferkitError
from transferkit.methods.adaptation import METHODS
from transferkit.methods.selection import SELECTIONS
from transferkit.strategies import STRATEGIES, make_config
from transferkit.strategies.adapt import AdaptConfig
from transferkit.strategies.distill import DistillConfig
from transferkit.strategies.finetune import FinetuneConfig
from transferkit.strategies.linear_probe import LinearProbeConfig
from transferkit.strategies.lora import LoraStrategyConfig

from .conftest import TIMM_SPEC

TEACHER = {"teacher": "some/model"}  # distill needs one to be built at all (the folder is read only by run)
TARGET = {"target": ["a", "b"]}  # and adapt an unlabelled target

# (strategy, options, the bad option, its bad value as the message shows it)
BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # finetune: what --set gives for a typo, a fraction, a word, or a meaningless number
    ("finetune", {"epochs": "abc"}, "epochs", "'abc'"),
    ("finetune", {"epochs": 1.5}, "epochs", "1.5"),
    ("finetune", {"epochs": 3.0}, "epochs", "3.0"),
    ("finetune", {"epochs": True}, "epochs", "True"),
    ("finetune", {"epochs": 0}, "epochs", "0"),
    ("finetune", {"epochs": -2}, "epochs", "-2"),
    ("finetune", {"lr": "fast"}, "lr", "'fast'"),
    ("finetune", {"lr": -1}, "lr", "-1"),
    ("finetune", {"batch_size": 0}, "batch_size", "0"),
    ("finetune", {"batch_size": None}, "batch_size", "None"),
    ("finetune", {"patience": 0}, "patience", "0"),
    ("finetune", {"warmup_frac": 1.5}, "warmup_frac", "1.5"),
    ("finetune", {"weight_decay": -0.1}, "weight_decay", "-0.1"),
    ("finetune", {"grad_clip": 0}, "grad_clip", "0"),
    ("finetune", {"layer_decay": 0}, "layer_decay", "0"),
    ("finetune", {"layer_decay": 1.5}, "layer_decay", "1.5"),
    ("finetune", {"backbone_lr_mult": -0.5}, "backbone_lr_mult", "-0.5"),
    ("finetune", {"keep_margin": -1}, "keep_margin", "-1"),
    ("finetune", {"lp_ft": "yes"}, "lp_ft", "'yes'"),
    ("finetune", {"augment": 1}, "augment", "1"),
    ("finetune", {"bn_stats": "sometimes"}, "bn_stats", "'sometimes'"),
    ("finetune", {"class_weights": "maybe"}, "class_weights", "'maybe'"),
    ("finetune", {"unfreeze": "top"}, "unfreeze", "'top'"),
    ("finetune", {"unfreeze": "last:0"}, "unfreeze", "'last:0'"),
    ("finetune", {"unfreeze": "last:x"}, "unfreeze", "'last:x'"),
    ("finetune", {"unfreeze": 2}, "unfreeze", "2"),
    ("finetune", {"lr": float("nan")}, "lr", "nan"),
    # linear-probe
    ("linear-probe", {"head": "svm"}, "head", "'svm'"),
    ("linear-probe", {"c_grid": "abc"}, "c_grid", "'abc'"),
    ("linear-probe", {"c_grid": []}, "c_grid", "[]"),
    ("linear-probe", {"c_grid": [0.1, -1]}, "c_grid", "[0.1, -1]"),
    ("linear-probe", {"c_grid": [0.1, "x"]}, "c_grid", "[0.1, 'x']"),
    ("linear-probe", {"c_grid": 1.0}, "c_grid", "1.0"),
    ("linear-probe", {"mlp_hidden": 0}, "mlp_hidden", "0"),
    ("linear-probe", {"batch_size": 0}, "batch_size", "0"),
    ("linear-probe", {"batch_size": "8"}, "batch_size", "'8'"),
    # lora
    ("lora", {"r": 0}, "r", "0"),
    ("lora", {"alpha": -4}, "alpha", "-4"),
    ("lora", {"r": "eight"}, "r", "'eight'"),
    ("lora", {"dropout": 1.0}, "dropout", "1.0"),
    ("lora", {"dropout": -0.1}, "dropout", "-0.1"),
    ("lora", {"lr": 0}, "lr", "0"),
    ("lora", {"target_modules": "query"}, "target_modules", "'query'"),
    ("lora", {"target_modules": [1, 2]}, "target_modules", "[1, 2]"),
    ("lora", {"epochs": 0}, "epochs", "0"),
    # distill
    ("distill", {}, "teacher", "''"),
    ("distill", {**TEACHER, "temperature": 0}, "temperature", "0"),
    ("distill", {**TEACHER, "temperature": "hot"}, "temperature", "'hot'"),
    ("distill", {**TEACHER, "alpha": 1.5}, "alpha", "1.5"),
    ("distill", {**TEACHER, "alpha": -0.1}, "alpha", "-0.1"),
    ("distill", {**TEACHER, "lr": 0}, "lr", "0"),
    ("distill", {**TEACHER, "teacher": 3}, "teacher", "3"),
    ("distill", {**TEACHER, "unlabelled_column": 3}, "unlabelled_column", "3"),
    ("distill", {**TEACHER, "epochs": "ten"}, "epochs", "'ten'"),
    # adapt
    ("adapt", {}, "target", "None"),
    ("adapt", {**TARGET, "method": "mmd"}, "method", "'mmd'"),
    ("adapt", {**TARGET, "select": "oracle"}, "select", "'oracle'"),
    ("adapt", {**TARGET, "epochs": 0}, "epochs", "0"),
    ("adapt", {**TARGET, "hidden": 0}, "hidden", "0"),
    ("adapt", {**TARGET, "lr": -1e-3}, "lr", "-0.001"),
    ("adapt", {**TARGET, "lr": "1e-3"}, "lr", "'1e-3'"),
]


@pytest.mark.parametrize(("strategy", "options", "option", "shown"), BAD, ids=[f"{s}-{o}={v}" for s, _, o, v in BAD])
def test_a_bad_option_is_one_clear_error_naming_it(strategy, options, option, shown):
    with pytest.raises(TransferkitError) as err:
        make_config(STRATEGIES.get(strategy), options)
    message = str(err.value)
    assert message.startswith(f"Strategy {strategy!r}: ") and message.endswith(".")
    assert option in message and shown in message, message
    assert "\n" not in message and "Traceback" not in message


# (strategy, options, what the built config holds for them); JSON-decoded --set values among them
GOOD: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("finetune", {}, {"epochs": 5, "unfreeze": "all", "lp_ft": True}),
    ("finetune", {"epochs": 3, "lr": 0.001}, {"epochs": 3, "lr": 0.001}),
    ("finetune", {"lr": 1}, {"lr": 1}),  # a whole number is a number
    ("finetune", {"lr": 0.0}, {"lr": 0.0}),  # changes no weight: LP-FT then keeps the probe
    ("finetune", {"lp_ft": True, "augment": False}, {"lp_ft": True, "augment": False}),
    ("finetune", {"patience": None, "grad_clip": None, "layer_decay": None}, {"patience": None}),
    ("finetune", {"layer_decay": 0.8, "keep_margin": 0, "backbone_lr_mult": 0}, {"layer_decay": 0.8}),
    ("finetune", {"unfreeze": "last:2"}, {"unfreeze": "last:2"}),
    ("finetune", {"unfreeze": "last:99"}, {"unfreeze": "last:99"}),  # the number of blocks is checked by run
    ("finetune", {"unfreeze": "gradual", "bn_stats": "train", "class_weights": "on"}, {"bn_stats": "train"}),
    ("finetune", {"warmup_frac": 0, "weight_decay": 0}, {"warmup_frac": 0}),
    ("linear-probe", {}, {"head": "linear", "batch_size": None}),
    ("linear-probe", {"c_grid": [0.1, 1.0]}, {"c_grid": (0.1, 1.0)}),
    ("linear-probe", {"c_grid": [1]}, {"c_grid": (1,)}),
    ("linear-probe", {"c_grid": (0.1, 1.0)}, {"c_grid": (0.1, 1.0)}),
    ("linear-probe", {"head": "mlp", "mlp_hidden": 16, "batch_size": 8}, {"head": "mlp", "mlp_hidden": 16}),
    ("linear-probe", {"batch_size": None}, {"batch_size": None}),
    ("lora", {"r": 4, "alpha": 8, "dropout": 0.0, "lr": 0.03}, {"r": 4, "alpha": 8}),
    ("lora", {"target_modules": ["query", "value"]}, {"target_modules": ("query", "value")}),
    ("lora", {"target_modules": None}, {"target_modules": None}),
    ("distill", {**TEACHER}, {"teacher": "some/model", "alpha": 0.7}),
    ("distill", {"teacher": Path("some/model")}, {"teacher": Path("some/model")}),
    ("distill", {**TEACHER, "alpha": 0, "temperature": 1}, {"alpha": 0}),  # the hard-label control
    ("distill", {**TEACHER, "alpha": 1, "unlabelled": ["x"], "unlabelled_column": "text"}, {"alpha": 1}),
    ("adapt", {**TARGET}, {"method": "dann", "select": "dev"}),
    ("adapt", {**TARGET, "method": "self-training", "select": "im", "epochs": 1}, {"method": "self-training"}),
]


@pytest.mark.parametrize(("strategy", "options", "expected"), GOOD)
def test_good_options_build_unchanged(strategy, options, expected):
    config = make_config(STRATEGIES.get(strategy), options)
    for name, value in expected.items():
        got = getattr(config, name)
        assert got == value and type(got) is type(value), (name, got)


def test_every_problem_is_named_in_one_message():
    with pytest.raises(TransferkitError) as err:
        make_config(STRATEGIES.get("finetune"), {"epochs": "abc", "lr": "fast", "batch_size": 0})
    message = str(err.value)
    assert message == (
        "Strategy 'finetune': epochs must be a whole number, got 'abc'; lr must be a number, got 'fast'; "
        "batch_size must be at least 1, got 0."
    )


@pytest.mark.parametrize(
    ("strategy", "options", "wording"),
    [
        ("finetune", {"epochs": "abc"}, "epochs must be a whole number, got 'abc'"),
        ("finetune", {"lr": -1}, "lr must not be negative, got -1"),
        ("finetune", {"layer_decay": 2}, "layer_decay must be positive and at most 1, got 2"),
        ("finetune", {"unfreeze": "last:x"}, "unfreeze='last:x': N must be a whole number of at least 1"),
        ("finetune", {"bn_stats": "sometimes"}, "bn_stats='sometimes' is not one of frozen, train"),
        ("linear-probe", {"head": "lineer"}, "head='lineer' is not one of linear, mlp (did you mean 'linear'?)"),
        ("linear-probe", {"c_grid": "abc"}, "c_grid must be a list of numbers, got 'abc'"),
        ("linear-probe", {"c_grid": [0.1, -1]}, "c_grid values must be positive, got [0.1, -1]"),
        ("linear-probe", {"batch_size": "x"}, "batch_size must be a whole number or None, got 'x'"),
        ("lora", {"r": 0}, "r and alpha must be positive, got r=0"),
        ("lora", {"dropout": 1}, "dropout must be at least 0 and below 1, got 1"),
        ("distill", {"teacher": "t", "alpha": 1.5}, "alpha must lie between 0 and 1, got 1.5"),
        ("distill", {"teacher": "t", "temperature": 0}, "temperature must be positive, got 0"),
        ("distill", {}, "distill needs a teacher"),
        ("adapt", {}, "adapt needs unlabelled target data"),
        ("adapt", {"target": "t", "method": "dan"}, "Unknown adaptation method 'dan'; choose from source-only, dann"),
        ("adapt", {"target": "t", "method": "dan"}, "(did you mean 'dann'?)"),
    ],
)
def test_the_wording_says_what_is_expected(strategy, options, wording):
    with pytest.raises(TransferkitError) as err:
        make_config(STRATEGIES.get(strategy), options)
    assert wording in str(err.value)


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (FinetuneConfig, {"epochs": 0}),
        (LinearProbeConfig, {"c_grid": ()}),
        (LoraStrategyConfig, {"r": 0}),
        (DistillConfig, {"teacher": "t", "alpha": 2.0}),
        (AdaptConfig, {"target": "t", "select": "oracle"}),
    ],
)
def test_direct_construction_is_checked_too(cls, options):
    with pytest.raises(TransferkitError):
        cls(**options)


def test_direct_construction_makes_lists_tuples():
    assert LinearProbeConfig(c_grid=[0.5, 2]).c_grid == (0.5, 2)
    assert FinetuneConfig().epochs == 5 and LinearProbeConfig().c_grid == C_GRID


def test_choices_match_what_the_code_accepts():
    hints = typing.get_type_hints(AdaptConfig)
    assert typing.get_args(hints["method"]) == METHODS and typing.get_args(hints["select"]) == SELECTIONS
    train = typing.get_type_hints(TrainConfig)
    assert typing.get_args(train["bn_stats"]) == ("frozen", "train")
    assert typing.get_args(train["class_weights"]) == ("auto", "on", "off")


def test_epochs_is_checked_in_every_training_strategy():
    """A subclass that redefines a field must keep its rule."""
    needs = {"distill": TEACHER, "adapt": TARGET}
    for name in STRATEGIES:
        strat = STRATEGIES.get(name)
        if "epochs" not in strat.Config.__dataclass_fields__:
            continue
        with pytest.raises(TransferkitError, match="epochs must be at least 1, got 0"):
            make_config(strat, {**needs.get(name, {}), "epochs": 0})


def test_cli_bad_option_value_is_one_error_line_and_writes_nothing(image_folder: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["fit", str(image_folder), "--backbone", TIMM_SPEC, "--strategy", "finetune", "--set", "epochs=abc",
         "--out", str(out), "--quiet"],
    )
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "epochs" in errors[0] and "'abc'" in errors[0], result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


def test_the_training_loop_config_checks_itself_too():
    from transferkit.core.training import TrainConfig

    with pytest.raises(TransferkitError, match="epochs"):
        TrainConfig(epochs=0)
    assert TrainConfig(epochs=2).epochs == 2


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: transferkit.distill("no/such/data", "pack:x", alpha=2.0), "alpha"),
        (lambda: transferkit.distill("no/such/data", "pack:x", epochs=0), "epochs"),
        (lambda: transferkit.compare("no/such/data", None, ["finetune"], options={"finetune": {"lr": -1}}), "lr"),
        (lambda: transferkit.fit("no/such/data", strategy="finetune", epochs=0), "epochs"),
    ],
)
def test_workflow_options_are_checked_before_the_data_is_read(call, match):
    with pytest.raises(TransferkitError, match=match):
        call()
