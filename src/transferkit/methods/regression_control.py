"""The from-scratch control of a regression target: ridge on what needs no pretraining (raw pixels or TF-IDF)."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..data.dataset import Dataset, Splits
from .control import ControlResult, _image_tensor, _pick_size


def regression_control(ds: Dataset, splits: Splits, seed: int) -> ControlResult:
    """Ridge regression on what needs no pretraining: TF-IDF of the texts, or the leading principal components of
    the raw pixels (their count and the ridge strength chosen on validation R^2). ``test_pred`` holds values."""
    from ..core.heads import fit_ridge

    t0 = time.perf_counter()
    y = ds.targets
    if ds.modality == "text":
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=20_000)
        vec.fit(ds.take(splits.train))
        # TruncatedSVD keeps the closed-form ridge dense and small: 256 components of the TF-IDF
        from sklearn.decomposition import TruncatedSVD

        svd = TruncatedSVD(n_components=min(256, len(vec.vocabulary_) - 1, len(splits.train) - 1), random_state=seed)
        svd.fit(vec.transform(ds.take(splits.train)))
        x = {p: svd.transform(vec.transform(ds.take(getattr(splits, p)))) for p in ("train", "val", "test")}
        k = svd.n_components
        description = f"TF-IDF (1-2 grams, {k} SVD components) + ridge regression"
    else:
        size = _pick_size(ds, splits.train)
        flat = {p: _image_tensor(ds, getattr(splits, p), size).reshape(len(getattr(splits, p)), -1).double() / 255.0
                for p in ("train", "val", "test")}
        mean = flat["train"].mean(0)
        _, _, vh = torch.linalg.svd(flat["train"] - mean, full_matrices=False)
        best = None
        for k in sorted({min(c, vh.shape[0]) for c in (32, 128)}):
            proj = {p: ((v - mean) @ vh[:k].T).numpy() for p, v in flat.items()}
            fit = fit_ridge(proj["train"], y[splits.train], proj["val"], y[splits.val])
            if best is None or fit.val_accuracy > best[1].val_accuracy:
                best = (k, fit, proj)
        assert best is not None
        k, _, x = best
        description = f"ridge regression on raw pixels ({size}px, {k} principal components)"
    fit = fit_ridge(x["train"], y[splits.train], x["val"], y[splits.val])
    with torch.no_grad():
        values = fit.head(torch.from_numpy(np.asarray(x["test"], dtype=np.float32))).numpy()[:, 0]
    return ControlResult(
        test_pred=values.astype(np.float64), description=description,
        trainable_parameters=sum(p.numel() for p in fit.head.parameters()), wall_s=time.perf_counter() - t0,
        info={"alpha": fit.chosen["alpha"], "val_r2": fit.val_accuracy, "components": k, "cache": "not cached"},
    )
