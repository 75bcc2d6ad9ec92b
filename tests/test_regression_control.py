"""The from-scratch control of a numeric target: pixel ridge or a one-output CNN (budgeted and cached like the
classification control) for images; ridge on TF-IDF word or character n-grams for texts."""

from __future__ import annotations

import itertools

import numpy as np

from transferkit.core.heads import r2_score
from transferkit.data.dataset import Dataset, Splits, make_splits
from transferkit.methods.control import ScratchConfig, cnn_flops, run_scratch

CNN = "small CNN from random init (32px, linear output)"


def _numbers(items: list[str] | np.ndarray, values: list[float] | np.ndarray, modality: str) -> Dataset:
    return Dataset(items, [f"{v:.4f}" for v in values], modality, name="numbers", task="regression")


def _contrast(n: int = 80) -> Dataset:
    """Grey noise images whose target is the noise amplitude: no linear function of the pixels carries it."""
    rng = np.random.default_rng(0)
    amplitude = rng.uniform(5, 60, n)
    x = np.clip(128 + amplitude[:, None, None] * rng.standard_normal((n, 16, 16)), 0, 255).astype(np.uint8)
    return _numbers(x, amplitude, "image")


def _brightness(n: int = 60) -> Dataset:
    """Noisy images whose target is their mean brightness / 10: linear in the pixels."""
    rng = np.random.default_rng(0)
    level = rng.uniform(40, 200, n)
    x = np.clip(level[:, None, None] + rng.normal(0, 30, (n, 16, 16)), 0, 255).astype(np.uint8)
    return _numbers(x, x.reshape(n, -1).mean(1) / 10, "image")


def _grams(candidates: dict[str, float], grams: str) -> float:
    (r2,) = (v for k, v in candidates.items() if k.startswith(f"TF-IDF ({grams} "))
    return r2


def _test_r2(ds: Dataset, splits: Splits, pred: np.ndarray) -> float:
    return r2_score(ds.targets[splits.test], pred)


def test_the_cnn_wins_where_pixels_cannot_see_the_target_and_is_cached(tmp_path):
    ds = _contrast()
    splits = make_splits(ds, seed=0)
    kw = {"progress": False, "cache_dir": tmp_path}
    first = run_scratch(ds, splits, config=ScratchConfig(epochs=10, batch_size=8), **kw)
    assert first.description == CNN and first.info["cache"] == "miss" and first.info["cnn_epochs"] == 10
    cands = first.info["candidates"]
    assert len(cands) == 2 and first.info["val_r2"] == cands[CNN] == max(cands.values())
    assert max(v for k, v in cands.items() if k != CNN) < 0.3  # the pixel ridge sees no amplitude
    y = ds.targets
    assert first.test_pred.dtype == np.float64 and np.isfinite(first.test_pred).all()
    assert abs(first.test_pred.mean() - y[splits.train].mean()) < 0.3 * y.std()  # in the target's units
    assert _test_r2(ds, splits, first.test_pred) > 0.8
    again = run_scratch(ds, splits, config=ScratchConfig(epochs=10, batch_size=8), **kw)
    assert again.info["cache"] == "hit" and again.info["candidates"] == cands
    assert np.array_equal(again.test_pred, first.test_pred)
    longer = run_scratch(ds, splits, config=ScratchConfig(epochs=12, batch_size=8), **kw)
    assert longer.info["cache"] == "extended" and longer.info["cnn_epochs"] == 12
    assert longer.info["val_r2"] >= first.info["val_r2"]


def test_the_cnn_gets_the_work_budget_and_a_bigger_one_extends_it_exactly(tmp_path):
    ds = _brightness()
    splits = make_splits(ds, seed=0)
    f = cnn_flops(32, 1)  # one output: the count of the network actually trained
    per_epoch = f * (3 * len(splits.train) + len(splits.val))

    def config(epochs: int) -> ScratchConfig:  # the work that buys ``epochs`` CNN epochs (half a spare epoch)
        return ScratchConfig(work_budget=(f * len(splits.test) + (epochs + 0.5) * per_epoch) / 0.5)

    kw = {"progress": False, "cache_dir": tmp_path}
    short = run_scratch(ds, splits, config=config(2), **kw)
    assert short.info["cache"] == "miss" and short.info["cnn_epochs"] == 2
    assert short.info["work_budget_flops"] == config(2).work_budget and short.info["cnn_flops"] <= config(2).work_budget
    # mean brightness is linear in the pixels: the ridge finds it, and wins
    assert short.description.startswith("ridge regression on raw pixels (32px") and short.info["val_r2"] > 0.99
    assert _test_r2(ds, splits, short.test_pred) > 0.99 and np.isfinite(short.info["candidates"][CNN])
    long = run_scratch(ds, splits, config=config(4), **kw)
    assert long.info["cache"] == "extended" and long.info["cnn_epochs"] == 4
    fresh = run_scratch(ds, splits, config=config(4), progress=False, use_cache=False)
    assert fresh.info["cache"] == "miss" and fresh.info["candidates"] == long.info["candidates"]
    assert np.array_equal(fresh.test_pred, long.test_pred)


def test_texts_are_read_by_characters_when_the_test_words_are_new(tmp_path):
    """A word's value from its first and last letters (a prefix and a suffix): no test word occurs in training."""
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnop")
    value = dict(zip(letters, rng.normal(size=len(letters)), strict=True))
    words = sorted({"".join(rng.choice(letters, 6)) for _ in range(300)})
    ds = _numbers(words, [value[w[0]] + value[w[-1]] for w in words], "text")
    splits = make_splits(ds, seed=0)
    assert not set(ds.take(splits.test)) & set(ds.take(splits.train))
    res = run_scratch(ds, splits, progress=False, cache_dir=tmp_path)
    assert res.description.startswith("TF-IDF (character 2-5 grams, ") and res.info["cache"] == "miss"
    word, char = (_grams(res.info["candidates"], g) for g in ("word", "character"))
    assert word < 0.1 < 0.4 < char == res.info["val_r2"]
    assert _test_r2(ds, splits, res.test_pred) > 0.4
    again = run_scratch(ds, splits, progress=False, cache_dir=tmp_path)
    assert again.info["cache"] == "hit" and np.array_equal(again.test_pred, res.test_pred)


def test_texts_are_read_by_whole_words_when_they_are_shared():
    """Each word's value is the XOR of its first and last syllables: no character n-gram (at most 5 letters) spans
    both, so only whole words carry it."""
    rng = np.random.default_rng(0)
    sign = {"kop": 1, "zut": -1, "dex": 1, "wal": -1}
    vocab = [a + b + c for a, b, c in itertools.product(["kop", "zut"], ["lima", "rena", "sovi"], ["dex", "wal"])]
    texts = sorted({" ".join(rng.choice(vocab, 3)) for _ in range(150)})
    y = [sum(sign[w[:3]] * sign[w[-3:]] for w in t.split()) + 0.1 * rng.normal() for t in texts]
    ds = _numbers(texts, y, "text")
    splits = make_splits(ds, seed=0)
    res = run_scratch(ds, splits, progress=False, use_cache=False)
    assert res.description.startswith("TF-IDF (word 1-2 grams, ") and res.info["cache"] == "miss"
    word, char = (_grams(res.info["candidates"], g) for g in ("word", "character"))
    assert char < 0.2 < 0.8 < word == res.info["val_r2"]
    assert _test_r2(ds, splits, res.test_pred) > 0.8
