"""Contract tests over every registered strategy and backbone source (like sklearn's parametrize_with_checks).

A new strategy or source is covered the moment it registers; a source with no tiny spec below fails
``test_every_source_has_a_tiny_spec`` until one is added.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import transferkit
from transferkit import TransferkitError, create_backbone, from_arrays
from transferkit.backbones.base import Backbone, preprocess_from_dict
from transferkit.backbones.registry import SOURCES
from transferkit.core.model import TransferModel
from transferkit.data import make_splits
from transferkit.strategies import STRATEGIES, RunContext, make_config

from .conftest import NEGATIVE, POSITIVE

# fast settings per strategy (options of its Config dataclass)
FAST_OPTIONS = {
    "linear-probe": {"c_grid": (0.1, 1.0)},
    "finetune": {"epochs": 4, "batch_size": 8, "lr": 0.01, "lp_ft": True},
    "lora": {"epochs": 8, "batch_size": 8, "lr": 0.03, "r": 4, "alpha": 8},
    "distill": {"epochs": 6, "batch_size": 8, "lr": 0.01},  # + the teacher, made once below
    "adapt": {"epochs": 10, "method": "dann"},  # + an unlabelled target, below
    "contrastive": {"pairs_per_example": 4, "lr": 1e-3, "c_grid": (0.1, 1.0)},
}
NEEDS_ATTENTION = {"lora"}  # adapters go on attention projections: a ViT instead of the CNN
TEXT_ONLY = {"contrastive"}  # pairs of texts: the tiny BERT on word lists instead of the CNN on shades


@pytest.fixture(scope="module")
def _teacher(tmp_path_factory, timm_dir):
    """A saved linear-probe model on the same data: the teacher the distill strategy needs."""
    ds = _shades()
    strat = STRATEGIES.get("linear-probe")
    res = strat.run(create_backbone(str(timm_dir)), ds, make_splits(ds, seed=0),
                    make_config(strat, FAST_OPTIONS["linear-probe"]), RunContext(progress=False))
    return str(res.model.save(tmp_path_factory.mktemp("teacher") / "model"))


@pytest.fixture
def backbone_for(timm_dir, vit_dir, bert_dir, _teacher):
    """name -> (backbone spec, options) for a fast, learnable run of that strategy."""
    def pick(name):
        options = dict(FAST_OPTIONS.get(name, {}), **({"teacher": _teacher} if name == "distill" else {}))
        if name == "adapt":  # a shifted copy of the data, its labels dropped
            options["target"] = [np.clip(x.astype(int) + 30, 0, 255).astype(np.uint8) for x in _shades().items]
        if name in TEXT_ONLY:
            return f"hf:{bert_dir}", options
        return str(vit_dir if name in NEEDS_ATTENTION else timm_dir), options

    return pick


def _shades(n: int = 10):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(0, 60, (n, 24, 24, 3)), rng.integers(190, 255, (n, 24, 24, 3))])
    return from_arrays(x.astype(np.uint8), ["dark"] * n + ["light"] * n, name="shades")


def _words(n: int = 10):
    """Texts of only positive or only negative words: as trivially learnable as the shades."""
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(pool, size=2 + i % 4)) for i in range(n) for pool in (POSITIVE, NEGATIVE)]
    return from_arrays(texts, ["pos", "neg"] * n, name="words")


def _run(name: str, spec_and_options: tuple[str, dict], seed: int = 0):
    strat = STRATEGIES.get(name)
    backbone_spec, options = spec_and_options
    ds = _words() if name in TEXT_ONLY else _shades()
    splits = make_splits(ds, seed=seed)
    cfg = make_config(strat, options)
    return (
        ds,
        splits,
        strat.run(create_backbone(backbone_spec), ds, splits, cfg, RunContext(seed=seed, progress=False)),
    )


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_learns_and_claims_its_trainable_parameters(name, backbone_for):
    ds, splits, result = _run(name, backbone_for(name))
    assert isinstance(result.model, TransferModel) and result.model.classes == ds.classes
    assert result.test_pred.shape == (len(splits.test),)
    assert (result.test_pred == ds.targets[splits.test]).mean() == 1.0  # brightness is trivially learnable
    trainable = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
    assert result.info["trainable_parameters"] == trainable
    assert json.loads(json.dumps(result.info)) == result.info  # goes into run.json as is


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_model_round_trips(name, backbone_for, tmp_path):
    ds, splits, result = _run(name, backbone_for(name))
    items = ds.take(splits.test)
    loaded = transferkit.load(result.model.save(tmp_path / "m"))
    np.testing.assert_allclose(loaded.predict_proba(items), result.model.predict_proba(items), rtol=1e-5, atol=1e-6)
    assert loaded.predict_proba(items).argmax(1).tolist() == result.test_pred.tolist()


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_repeats_exactly_with_a_fixed_seed(name, backbone_for):
    _, _, a = _run(name, backbone_for(name), seed=4)
    _, _, b = _run(name, backbone_for(name), seed=4)
    assert a.test_pred.tolist() == b.test_pred.tolist()
    for (k, va), vb in zip(a.model.head.state_dict().items(), b.model.head.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_misconfiguration_is_a_clear_error(name):
    strat = STRATEGIES.get(name)
    with pytest.raises(TransferkitError, match=rf"Strategy '{name}' has no option\(s\) bogus_option; its options"):
        make_config(strat, {"bogus_option": 1})
    assert strat.Config.__doc__  # one dataclass per strategy, documented


# ---------------------------------------------------------------- backbone sources

TINY_SPECS = {
    "timm": lambda dirs: "timm:test_resnet?pretrained=false",
    "hf": lambda dirs: f"hf:{dirs['bert']}",
    "scratch": lambda dirs: "scratch:cnn?size=16&width=8",
}
COVERED_BY_INTEGRATION = {"pack"}  # real offline weights: tests/test_integration.py


def test_every_source_has_a_tiny_spec():
    assert set(SOURCES) <= set(TINY_SPECS) | COVERED_BY_INTEGRATION


@pytest.mark.parametrize("source", sorted(TINY_SPECS))
def test_backbone_source_contract(source, bert_dir, image_folder):
    bb = create_backbone(TINY_SPECS[source]({"bert": bert_dir}))
    assert isinstance(bb, Backbone) and bb.spec.startswith(f"{source}:")
    items = (
        ["good film", "a very boring plot"]
        if bb.modality == "text"
        else transferkit.from_folder(image_folder).items[:2]
    )
    feats = bb.embed(items)
    assert feats.shape == (2, bb.feature_dim) and feats.dtype == torch.float32 and not feats.requires_grad
    assert not bb.training
    assert preprocess_from_dict(json.loads(json.dumps(bb.preprocess.to_dict()))) == bb.preprocess
    assert bb.fingerprint() == create_backbone(bb.spec).fingerprint() or not bb.pretrained
    assert len(bb.blocks()) >= 1 and bb.num_parameters() > 0
