"""Eager or compiled extraction: the choice, its verification against eager, and its record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transferkit.core.fastpath import Runner, Tuning, compile_mode, should_compile
from transferkit.core.features import extract_features
from transferkit.data import from_folder
from transferkit.errors import TransferkitError


def test_compile_mode_from_argument_and_environment(monkeypatch):
    assert compile_mode(None) == "auto"
    monkeypatch.setenv("TRANSFERKIT_COMPILE", "0")
    assert compile_mode(None) == "never" and compile_mode("always") == "always"
    monkeypatch.setenv("TRANSFERKIT_COMPILE", "sometimes")
    with pytest.raises(TransferkitError, match="Compile mode 'sometimes' .* not one of auto, always, never"):
        compile_mode(None)


def test_should_compile_weighs_saving_against_compile_time():
    ok, why = should_compile(10.0, Tuning())  # short job, defaults: never worth 40 s of compiling
    assert not ok and "compiled (x1.30)" in why
    assert should_compile(1000.0, Tuning())[0]
    measured = Tuning(eager_items_s=100.0, compiled_items_s=200.0, compile_s=5.0)
    assert should_compile(20.0, measured)[0] and not should_compile(10.0, measured)[0]
    slower = Tuning(eager_items_s=100.0, compiled_items_s=90.0, compile_s=1.0)
    assert not should_compile(1e6, slower)[0]
    ok, why = should_compile(1e6, Tuning(failed="no compiler"))
    assert not ok and "failed here before (no compiler)" in why


def test_short_jobs_stay_eager_and_say_why(timm_backbone, image_folder):
    stats: dict = {}
    extract_features(
        timm_backbone, from_folder(image_folder), range(6), batch_size=2, use_cache=False, progress=False, stats=stats
    )
    assert stats["engine"]["engine"] == "eager" and "would save" in stats["engine"]["why"]


def test_forced_compile_matches_eager_and_is_recorded(timm_backbone, image_folder, cache_dir):
    ds = from_folder(image_folder)
    idx = list(range(7))  # batches of 3, 3, 1: the short last batch is padded to one static shape
    eager, _ = extract_features(timm_backbone, ds, idx, batch_size=3, use_cache=False, progress=False, compile="never")
    stats: dict = {}
    compiled, _ = extract_features(timm_backbone, ds, idx, batch_size=3, progress=False, compile="always", stats=stats)
    assert stats["engine"]["engine"] == "compiled", stats["engine"]
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-5)
    record = next(iter(json.loads((cache_dir / "tuning.json").read_text()).values()))
    assert record["compile_s"] > 0 and record["max_rel_diff"] <= 1e-4


def test_compiler_failure_falls_back_to_eager_and_remembers(timm_backbone, image_folder, cache_dir, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    ds = from_folder(image_folder)
    stats: dict = {}
    feats, _ = extract_features(
        timm_backbone, ds, range(4), batch_size=2, progress=False, compile="always", stats=stats
    )
    assert stats["engine"]["engine"] == "eager" and "no C++ compiler found" in stats["engine"]["why"]
    assert np.isfinite(feats).all()
    # auto mode on this machine now knows compiling fails here and does not try again
    runner = Runner(timm_backbone, 10_000, 2, torch.device("cpu"), "auto", cache_dir / "tuning.json")
    assert runner.tuning.failed and "no C++ compiler found" in runner.tuning.failed


def test_compiled_output_that_differs_is_rejected(timm_backbone, image_folder, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model, **kw: lambda x: model(x) * 1.01)
    stats: dict = {}
    ref, _ = extract_features(
        timm_backbone,
        from_folder(image_folder),
        range(4),
        batch_size=2,
        use_cache=False,
        progress=False,
        compile="never",
    )
    feats, _ = extract_features(
        timm_backbone,
        from_folder(image_folder),
        range(4),
        batch_size=2,
        use_cache=False,
        progress=False,
        compile="always",
        stats=stats,
    )
    assert stats["engine"]["engine"] == "eager" and "> 1e-04" in stats["engine"]["why"]
    np.testing.assert_array_equal(feats, ref)
