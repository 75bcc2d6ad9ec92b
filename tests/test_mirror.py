"""The linear probe with mirror images: mirrors train beside the originals, validation and prediction average an
image's logits with its mirror's (test-time augmentation), and the cross-validated probe holds an image and its
mirror out together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import transferkit
from transferkit import TransferkitError, create_backbone, from_arrays
from transferkit.core.features import cache_key, extract_features
from transferkit.core.heads import fit_linear_probe, fit_linear_probe_cv
from transferkit.data import make_splits
from transferkit.strategies import STRATEGIES, RunContext, make_config

from .conftest import TIMM_SPEC


def _stripes(n: int = 16):
    """Dark-left/light-right images against the opposite: a class only the unmirrored image shows, so a model that
    averages with the mirror gets the mirror's logits too."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 40, (2 * n, 24, 24, 3))
    x[:n, :, 12:] += 200
    x[n:, :, :12] += 200
    return from_arrays(x.astype(np.uint8), ["left-dark"] * n + ["right-dark"] * n, name="stripes")


def test_cv_holds_an_image_and_its_mirror_out_together():
    # no signal at all: labels are random, the mirror is a near copy; were a held-out row's mirror in training,
    # a weakly regularised probe would recall its label and the out-of-fold accuracy would be far above chance
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 80)).astype(np.float32)
    y = rng.integers(0, 2, 60)
    mirror = x + rng.normal(scale=1e-3, size=x.shape).astype(np.float32)
    fit = fit_linear_probe_cv(x, y, 2, c_grid=(100.0,), folds=5, mirror=mirror)
    assert fit.val_accuracy < 0.75
    assert fit.val_logits is not None and fit.val_logits.shape == (60, 2)


def test_validation_is_scored_on_the_mean_of_an_image_and_its_mirror():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    m = x.copy()
    m[:, 0] *= -1  # the mirror flips the one feature that decides the class
    fit = fit_linear_probe(x[:60], y[:60], x[60:], y[60:], 2, refit_on_val=False, mirror=(m[:60], m[60:]))
    with torch.no_grad():
        both = (fit.head(torch.from_numpy(x[60:])) + fit.head(torch.from_numpy(m[60:]))) / 2
    np.testing.assert_allclose(fit.val_logits, both.numpy(), rtol=1e-4, atol=1e-4)
    assert fit.val_accuracy == pytest.approx(float((both.argmax(1).numpy() == y[60:]).mean()))


def test_mirror_features_are_the_flipped_images_and_cached_apart(tmp_path):
    torch.manual_seed(0)
    bb = create_backbone(TIMM_SPEC)
    ds = _stripes(4)
    idx = list(range(len(ds)))
    assert cache_key(bb, ds, idx) != cache_key(bb, ds, idx, mirror=True)
    plain, _ = extract_features(bb, ds, idx, cache_dir=tmp_path, progress=False)
    flipped, hit = extract_features(bb, ds, idx, cache_dir=tmp_path, progress=False, mirror=True)
    assert not hit
    with torch.no_grad():
        expected = bb.eval()(bb.prepare(ds.take(idx)).flip(-1)).numpy()
    np.testing.assert_allclose(flipped, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(plain, flipped)
    again, hit = extract_features(bb, ds, idx, cache_dir=tmp_path, progress=False, mirror=True)
    assert hit and np.array_equal(again, flipped)


def test_the_mirror_probe_predicts_as_it_was_scored_and_saves_its_tta(tmp_path):
    torch.manual_seed(123)
    bb = create_backbone(TIMM_SPEC)
    ds = _stripes()
    splits = make_splits(ds, seed=0)
    strat = STRATEGIES.get("linear-probe")
    res = strat.run(bb, ds, splits, make_config(strat, {"mirror": True}), RunContext(seed=0, progress=False,
                                                                                      cache_dir=tmp_path / "c"))
    model = res.model
    assert model.tta and res.info["mirror"]
    n = len(splits.train) + len(splits.val) + len(splits.test)
    assert res.info["work"]["forward"] == 2 * n
    test = ds.take(splits.test)
    np.testing.assert_allclose(res.test_proba, model.predict_proba(test), rtol=1e-4, atol=1e-5)
    model.tta = False
    plain = model.predict_proba(test)
    model.tta = True
    assert not np.allclose(plain, model.predict_proba(test))  # the mirror's logits do count
    again = transferkit.load(model.save(tmp_path / "m"))
    assert again.tta
    np.testing.assert_allclose(again.predict_proba(test), res.test_proba, rtol=1e-4, atol=1e-5)


def test_mirror_is_refused_for_a_numeric_target():
    torch.manual_seed(0)
    bb = create_backbone(TIMM_SPEC)
    ds = transferkit.Dataset([np.full((24, 24, 3), v, np.uint8) for v in range(0, 240, 10)],
                             [f"{v}.5" for v in range(24)], "image", task="regression")
    strat = STRATEGIES.get("linear-probe")
    with pytest.raises(TransferkitError, match="mirror .* is for image classes with the linear head"):
        strat.run(bb, ds, make_splits(ds, seed=0), make_config(strat, {"mirror": True}),
                  RunContext(seed=0, progress=False))
