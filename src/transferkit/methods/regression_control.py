"""The from-scratch control of a regression target.

Images: the better on validation R^2 of ridge regression on the leading principal components of the raw pixels and
``SmallCNN`` with one linear output, trained with the Huber loss (delta 1) on the target standardised over the
training split: the classification control's run (``control._image_control(regressor=True)``), with its budget and
its cache. Texts: ridge on TF-IDF word 1-2 grams or character 2-5 grams, each reduced by TruncatedSVD, whichever
has the better validation R^2 (an unseen word has no word n-gram, but shares character n-grams with known words).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.dataset import Dataset, Splits
from .control import ControlResult, ScratchConfig, _image_control
from .control_cache import ControlCache, control_key

_PARTS = ("train", "val", "test")
_GRAMS: dict[str, dict[str, Any]] = {
    "word 1-2 grams": {"ngram_range": (1, 2)},
    "character 2-5 grams": {"analyzer": "char_wb", "ngram_range": (2, 5)},
}


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    """Validation R^2, floored at -1e9 (a diverged network's NaN must not win the best epoch)."""
    from ..core.heads import r2_score

    r2 = r2_score(y, pred)
    return r2 if math.isfinite(r2) else -1e9


def cnn_target(
    ds: Dataset, splits: Splits
) -> tuple[torch.Tensor, Callable[[torch.Tensor], float], Callable[[torch.Tensor], list[float]]]:
    """The regressor CNN's view of the target: the values standardised over train (what the Huber loss sees), the
    validation R^2 of its outputs, and its outputs mapped back to the target's units (what the cache keeps)."""
    values = ds.targets
    mean, std = float(values[splits.train].mean()), float(values[splits.train].std()) or 1.0
    y = torch.from_numpy((values - mean) / std).float()

    def back(p: torch.Tensor) -> np.ndarray:
        return p.double().numpy() * std + mean

    return y, lambda p: _r2(values[splits.val], back(p)), lambda p: back(p).tolist()


def ridge_pixels(ds: Dataset, splits: Splits, xs: dict[str, torch.Tensor], seed: int) -> dict[str, Any]:
    """Ridge regression on the leading principal components of the raw pixels (their count and the ridge strength
    chosen on validation R^2, refit on train + val); the pixel record of ``_image_control(regressor=True)``."""
    from ..core.heads import fit_ridge

    t0 = time.perf_counter()
    y = ds.targets
    flat = {p: x.reshape(len(x), -1).double() / 255.0 for p, x in xs.items()}
    mean = flat["train"].mean(0)
    _, _, vh = torch.linalg.svd(flat["train"] - mean, full_matrices=False)
    best = None
    for k in sorted({min(c, vh.shape[0]) for c in (32, 128)}):
        proj = {p: ((v - mean) @ vh[:k].T).numpy() for p, v in flat.items()}
        fit = fit_ridge(proj["train"], y[splits.train], proj["val"], y[splits.val])
        if best is None or fit.val_accuracy > best[1].val_accuracy:
            best = (k, fit, proj)
    assert best is not None
    k, fit, proj = best
    with torch.no_grad():
        values = fit.head(torch.from_numpy(proj["test"]).float()).numpy()[:, 0]
    return {
        "name": f"ridge regression on raw pixels ({xs['train'].shape[-1]}px, {k} principal components)",
        "test_pred": values.astype(np.float64).tolist(),
        "val_r2": fit.val_accuracy,
        "alpha": fit.chosen["alpha"],
        "components": k,
        "trainable_parameters": sum(p.numel() for p in fit.head.parameters()) + k * int(mean.numel()),
        "seconds": time.perf_counter() - t0,
    }


def _text_ridge(ds: Dataset, splits: Splits, seed: int, cache_root: Path | None) -> ControlResult:
    """Ridge on TF-IDF word 1-2 grams or character 2-5 grams (``char_wb``) + TruncatedSVD, chosen on validation R^2
    (words win ties)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    from ..core.heads import fit_ridge

    t0 = time.perf_counter()
    cache = ControlCache(cache_root, control_key(ds, splits, seed, {"model": "tfidf-word-1-2|char_wb-2-5+svd+ridge"}))
    record = cache.read()
    status = "hit"
    if record is None:
        status = "miss"
        y, texts = ds.targets, {p: ds.take(getattr(splits, p)) for p in _PARTS}
        best: dict[str, Any] | None = None
        candidates: dict[str, float] = {}
        for grams, kw in _GRAMS.items():
            vec = TfidfVectorizer(**kw, sublinear_tf=True, max_features=20_000)
            x_train = vec.fit_transform(texts["train"])
            # TruncatedSVD keeps the closed-form ridge dense and small: at most 256 components of the TF-IDF
            k = max(1, min(256, x_train.shape[1] - 1, len(splits.train) - 1))
            svd = TruncatedSVD(n_components=k, random_state=seed).fit(x_train)
            x = {p: svd.transform(vec.transform(t)) for p, t in texts.items()}
            fit = fit_ridge(x["train"], y[splits.train], x["val"], y[splits.val])
            name = f"TF-IDF ({grams}, {k} SVD components) + ridge regression"
            candidates[name] = fit.val_accuracy
            if best is None or fit.val_accuracy > best["info"]["val_r2"]:
                with torch.no_grad():
                    values = fit.head(torch.from_numpy(np.asarray(x["test"], dtype=np.float32))).numpy()[:, 0]
                best = {
                    "description": name,
                    "test_pred": values.astype(np.float64).tolist(),
                    "trainable_parameters": sum(p.numel() for p in fit.head.parameters()),
                    "info": {"val_r2": fit.val_accuracy, "alpha": fit.chosen["alpha"], "components": k,
                             "vocabulary": len(vec.vocabulary_)},
                }
        assert best is not None
        record = {**best, "candidates": candidates, "seconds": time.perf_counter() - t0}
        cache.write(record, None)
    return ControlResult(
        test_pred=np.asarray(record["test_pred"], dtype=np.float64),
        description=record["description"],
        trainable_parameters=int(record["trainable_parameters"]),
        wall_s=time.perf_counter() - t0,
        info={**record["info"], "candidates": record["candidates"], "cache": status, "cost_s": record["seconds"]},
    )


def regression_control(
    ds: Dataset,
    splits: Splits,
    seed: int,
    config: ScratchConfig | None = None,
    progress: bool = False,
    cache_root: Path | None = None,
) -> ControlResult:
    """The control of a numeric target (``test_pred`` holds values in the target's units): for texts the better
    TF-IDF ridge, for images the better of pixel ridge and the one-output CNN under ``config``'s budget; cached
    under ``cache_root`` (None: not cached)."""
    if ds.modality == "text":
        return _text_ridge(ds, splits, seed, cache_root)
    return _image_control(ds, splits, seed, config or ScratchConfig(), progress, cache_root, regressor=True)
