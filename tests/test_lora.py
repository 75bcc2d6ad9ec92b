"""The lora strategy: adapters on attention projections, frozen base weights, head saved with the adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import transferkit
from transferkit import TransferkitError, create_backbone, from_arrays
from transferkit.backbones.adapters import default_targets
from transferkit.data import make_splits
from transferkit.strategies import STRATEGIES, RunContext, make_config

from .conftest import make_texts


def _text_data():
    texts, labels = make_texts(16)
    return from_arrays(texts, labels, name="texts")


def _run(spec: str, ds, **options):
    torch.manual_seed(0)
    bb = create_backbone(spec)
    strat = STRATEGIES.get("lora")
    cfg = make_config(strat, {"epochs": 6, "batch_size": 8, "lr": 0.01, "r": 4, "alpha": 8, **options})
    splits = make_splits(ds, seed=0)
    return bb, splits, strat.run(bb, ds, splits, cfg, RunContext(progress=False))


def test_lora_trains_only_adapters_and_head_and_learns(bert_dir):
    ds = _text_data()
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in create_backbone(f"hf:{bert_dir}").state_dict().items()}
    bb, splits, result = _run(f"hf:{bert_dir}", ds, epochs=15, lr=0.03, patience=None)
    assert result.info["target_modules"] == ["query", "value"]
    trainable = [n for n, p in result.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert result.info["trainable_parameters"] == sum(p.numel() for p in result.model.parameters() if p.requires_grad)
    after = {k.replace(".base_layer.", "."): v for k, v in bb.state_dict().items() if "lora_" not in k}
    assert after.keys() == before.keys()
    for k, v in before.items():  # the pretrained weights are untouched
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)
    assert (result.test_pred == ds.targets[splits.test]).mean() >= 0.75


def test_lora_model_round_trips_with_its_head(bert_dir, tmp_path):
    ds = _text_data()
    _, splits, result = _run(f"hf:{bert_dir}", ds)
    path = result.model.save(tmp_path / "m")
    assert sorted(p.name for p in path.iterdir()) == ["adapter.safetensors", "head.safetensors", "transferkit.json"]
    loaded = transferkit.load(path)
    items = ds.take(splits.test)
    np.testing.assert_allclose(loaded.predict_proba(items), result.model.predict_proba(items), rtol=1e-5, atol=1e-6)


def test_lora_on_a_decoder_and_a_vit(gpt2_dir, image_folder, tmp_path):
    _, _, gpt = _run(f"hf:{gpt2_dir}", _text_data(), epochs=1)
    assert gpt.info["target_modules"] == ["c_attn"] and gpt.info["adapter_parameters"] > 0
    images = transferkit.from_folder(image_folder)
    _, splits, vit = _run("timm:test_vit?pretrained=false", images, epochs=1)
    assert vit.info["target_modules"] == ["qkv"]
    loaded = transferkit.load(vit.model.save(tmp_path / "vit"))  # random base weights are saved too
    items = images.take(splits.test)
    np.testing.assert_allclose(loaded.predict_proba(items), vit.model.predict_proba(items), rtol=1e-5, atol=1e-6)


def test_lora_without_attention_says_what_to_pass():
    bb = create_backbone("timm:test_efficientnet?pretrained=false")
    with pytest.raises(TransferkitError, match=r"no attention projections found .*pass target_modules"):
        default_targets(bb)


def test_lora_bad_rank_and_unknown_target(bert_dir):
    ds = _text_data()
    with pytest.raises(TransferkitError, match=r"r and alpha must be positive"):
        _run(f"hf:{bert_dir}", ds, r=0)
    with pytest.raises(TransferkitError, match=r"lora: "):
        _run(f"hf:{bert_dir}", ds, target_modules=("nonexistent_proj",))
