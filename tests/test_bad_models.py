"""A damaged or tampered saved model: `predict` says what is wrong with which file, exit 2, no traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from .conftest import write_png
from .test_cli import assert_clean_failure, invoke


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    from transferkit.backbones import create_backbone
    from transferkit.core.heads import linear_head
    from transferkit.core.model import TransferModel

    bb = create_backbone("scratch:cnn?size=32")
    return TransferModel(bb, linear_head(bb.feature_dim, 3), ["a", "b", "c"]).save(
        tmp_path_factory.mktemp("good") / "model"
    )


def _json(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(model: Path) -> None:
        cfg = json.loads((model / "transferkit.json").read_text())
        out = edit(cfg)
        (model / "transferkit.json").write_text(json.dumps(cfg if out is None else out))

    return apply


def _head(edit: Callable[[dict], dict]) -> Callable[[Path], None]:
    def apply(model: Path) -> None:
        save_file(edit(load_file(str(model / "head.safetensors"))), str(model / "head.safetensors"))

    return apply


def _truncate(name: str, keep: int) -> Callable[[Path], None]:
    def apply(model: Path) -> None:
        data = (model / name).read_bytes()
        (model / name).write_bytes(data[:keep])

    return apply


def _nan(t: dict) -> dict:
    t["weight"][0, 0] = float("nan")
    return t


CASES = {
    "truncated json": (_truncate("transferkit.json", 40), "is not readable JSON"),
    "empty json": (_truncate("transferkit.json", 0), "is not readable JSON"),
    "json list": (_json(lambda c: [c]), "holds a list, not an object"),
    "no head entry": (_json(lambda c: c.pop("head") and None), "head entry is missing"),
    "head of unknown type": (_json(lambda c: c["head"].update(type="svm")), "unknown type"),
    "head size not a number": (_json(lambda c: c["head"].update(num_classes="3")), "not positive whole numbers"),
    "wrong head input size": (_json(lambda c: c["head"].update(in_features=7)), "has shape"),
    "fewer classes than outputs": (_json(lambda c: c.update(classes=["a", "b"])), "names 2 classes but its head has 3"),
    "duplicate classes": (_json(lambda c: c.update(classes=["a", "a", "b"])), "list of distinct names"),
    "classes not names": (_json(lambda c: c.update(classes=[1, 2, 3])), "list of distinct names"),
    "format version text": (_json(lambda c: c.update(format_version="1")), "format_version"),
    "no backbone spec": (_json(lambda c: c["backbone"].pop("spec") and None), "backbone entry"),
    "weights_saved not a flag": (_json(lambda c: c["backbone"].update(weights_saved="yes")), "weights_saved"),
    "malformed preprocess": (
        _json(lambda c: c.update(preprocess={"kind": "image", "size": 3})), "preprocessing is malformed"
    ),
    "tta not a flag": (_json(lambda c: c.update(tta="yes")), "its tta ('yes') is not true or false"),
    "no head file": (lambda m: (m / "head.safetensors").unlink(), "head.safetensors is missing"),
    "truncated head file": (_truncate("head.safetensors", 30), "not a readable safetensors file"),
    "garbage head file": (lambda m: (m / "head.safetensors").write_bytes(b"\x00" * 64), "not a readable safetensors"),
    "extra head tensor": (_head(lambda t: {**t, "extra": t["bias"].clone()}), "unexpected extra"),
    "missing head tensor": (_head(lambda t: {"weight": t["weight"]}), "missing bias"),
    "NaN in the head": (_head(_nan), "NaN or infinite"),
    "backbone weights missing": (lambda m: (m / "backbone.safetensors").unlink(), "backbone.safetensors is missing"),
    "truncated backbone weights": (_truncate("backbone.safetensors", 100), "not a readable safetensors file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_model_is_one_sentence_and_exit_2(case, good_model, tmp_path):
    damage, match = CASES[case]
    model = Path(shutil.copytree(good_model, tmp_path / "model"))
    damage(model)
    image = write_png(tmp_path / "x.png", (10, 200, 30), np.random.default_rng(0))
    assert_clean_failure(invoke("predict", model, image), match)


def test_the_undamaged_model_predicts(good_model, tmp_path):
    image = write_png(tmp_path / "x.png", (10, 200, 30), np.random.default_rng(0))
    result = invoke("predict", good_model, image)
    assert result.exit_code == 0, result.output
