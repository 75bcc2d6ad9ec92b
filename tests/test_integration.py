"""Integration: the real offline packs and built-in data (slower; ``pytest -m integration``)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

import transferkit
from transferkit import create_backbone

from .conftest import run_fresh_python

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def effnet():
    return create_backbone("pack:efficientnet-lite0")


@pytest.fixture(scope="module")
def minilm():
    return create_backbone("pack:minilm-l6")


def test_efficientnet_lite0_pack_classifies_imagenet_photos(effnet):
    skdata = pytest.importorskip("skimage.data")
    assert effnet.spec == "pack:efficientnet-lite0" and effnet.pretrained and effnet.feature_dim == 1280
    assert effnet.preprocess.input_size == (3, 224, 224)
    assert effnet.preprocess.mean == (0.5, 0.5, 0.5) and effnet.preprocess.std == (0.5, 0.5, 0.5)
    with torch.inference_mode():
        logits = effnet.source_logits(effnet.prepare([skdata.chelsea(), skdata.coffee()]))
    assert logits.shape == (2, 1000)
    assert logits.argmax(1).tolist() == [285, 967]  # Egyptian cat, espresso
    assert effnet.embed([skdata.coffee()]).shape == (1, 1280)


def test_minilm_pack_embeds_sentences(minilm):
    assert minilm.spec == "pack:minilm-l6" and minilm.feature_dim == 384
    pre = minilm.preprocess
    assert (pre.pooling, pre.normalize) == ("mean", True)
    e = (
        minilm.embed(
            [
                "A man is playing a guitar.",
                "Someone is strumming a guitar.",
                "The stock market fell sharply today.",
            ]
        )
        .cpu()
        .numpy()
    )
    assert e.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_pack_fingerprints_are_stable(effnet):
    assert create_backbone("pack:efficientnet-lite0").fingerprint() == effnet.fingerprint()


def test_fashion_mnist_small_fit_and_fresh_process_predict(tmp_path):
    result = transferkit.fit("fashion-mnist-small", per_class=10, max_test=200, progress=False, out=tmp_path / "run")
    assert result.record["backbone"] == "pack:efficientnet-lite0"
    assert result.record["data"]["splits"]["test"] == 200
    assert result.metrics["transfer"]["accuracy"] > 0.5  # chance is 0.1
    assert set(result.metrics) == {"transfer", "scratch"}
    model_dir = tmp_path / "run" / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == ["head.safetensors", "transferkit.json"]
    ds = transferkit.load_builtin("fashion-mnist-small")
    picks = np.flatnonzero(np.array(ds.split) == "test")[::250]
    images = ds.items[picks]
    expected = result.model.predict_proba(list(images))
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import transferkit
        model = transferkit.load({str(model_dir)!r})
        images = np.load({str(tmp_path / "images.npy")!r})
        json.dump(model.predict_proba(list(images)).tolist(), sys.stdout)
    """)
    np.testing.assert_allclose(run_fresh_python(script, tmp_path), expected, rtol=1e-4, atol=1e-5)


def test_tweets_text_fit_beats_chance():
    result = transferkit.fit("tweets", per_class=30, max_test=300, progress=False)
    assert result.record["backbone"] == "pack:minilm-l6"
    assert result.record["data"]["classes"] == ["negative", "neutral", "positive"]
    assert result.record["data"]["splits"]["train"] + result.record["data"]["splits"]["val"] == 90
    assert result.metrics["transfer"]["accuracy"] > 0.4  # chance is 1/3


def test_rank_puts_the_random_init_control_below_the_pack() -> None:
    specs = ["pack:efficientnet-lite0", "pack:efficientnet-lite0?init=random"]
    res = transferkit.rank("fashion-mnist-small", specs, max_samples=200, progress=False)
    assert res.recommended == "pack:efficientnet-lite0"
    for metric in ("logme", "leep", "nce", "hscore"):
        assert res.ordered(metric)[-1].endswith("init=random"), metric
    assert not res.warnings


def test_adapt_recovers_shifted_fashion_mnist_with_per_domain_statistics() -> None:
    """Real pack, real images: garments inverted, tinted and put on photo patches are a large shift, and
    AdaBN-style standardisation recovers much of what the source-only model loses."""
    from transferkit.data.shifts import shift_images

    ds = transferkit.load_builtin("fashion-mnist-small")
    split, y = np.asarray(ds.split), ds.targets
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.choice(np.flatnonzero((split == "train") & (y == c)), 40, replace=False)
                            for c in range(10)])
    test = rng.permutation(np.flatnonzero(split == "test"))[:600]
    source = transferkit.from_arrays(ds.items[train], [ds.labels[i] for i in train], name="fashion")
    shifted = shift_images(ds.items[test], seed=1)
    target_test = transferkit.from_arrays(shifted[300:], [ds.labels[i] for i in test[300:]], name="shifted")
    res = transferkit.adapt(source, list(shifted[:300]), target_test, methods=["adabn"], seeds=2, epochs=10,
                            progress=False)
    assert res.diagnostic["large"]
    source_only, adabn = (np.mean(res.target_accuracy[m]) for m in ("source-only", "adabn"))
    assert adabn > source_only + 0.1, (source_only, adabn)


def test_a_rerun_on_cached_features_imports_neither_timm_nor_dynamo(tmp_path):
    """The second identical fit is fast because the pack is not built and torch.optim is not touched."""
    first = transferkit.fit("fashion-mnist-small", per_class=6, max_test=60, progress=False, out=tmp_path / "a")
    script = textwrap.dedent(f"""
        import json, sys
        import transferkit
        out = {str(tmp_path / "b")!r}
        r = transferkit.fit("fashion-mnist-small", per_class=6, max_test=60, progress=False, out=out)
        json.dump({{"metrics": r.metrics, "imported": sorted(m for m in ("timm", "torchvision", "torch._dynamo")
                                                         if m in sys.modules)}}, sys.stdout)
    """)
    second = run_fresh_python(script, tmp_path)
    assert second["imported"] == []
    assert second["metrics"] == json.loads(json.dumps(first.metrics))
    saved = json.loads((tmp_path / "b" / "model" / "transferkit.json").read_text())
    assert saved == json.loads((tmp_path / "a" / "model" / "transferkit.json").read_text())
