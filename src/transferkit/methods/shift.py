"""How far apart two domains are, from their features: proxy A-distance and MMD, and what that means in words.

``transferkit.adapt`` runs this before training; the domain classifier also gives DEV its importance weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.heads import _moments


def domain_classifier(xs: np.ndarray, xt: np.ndarray, seed: int, c: float = 1.0) -> Any:
    """Standardised logistic regression source (0) vs target (1), classes balanced."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([xs, xt]).astype(np.float64)
    y = np.concatenate([np.zeros(len(xs)), np.ones(len(xt))])
    clf = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=seed)
    )
    return clf.fit(x, y)


def proxy_a_distance(xs: np.ndarray, xt: np.ndarray, seed: int = 0, max_per_domain: int = 1000) -> tuple[float, float]:
    """(proxy A-distance 2 (1 - 2 err), err): err is the 2-fold cross-validated error of a linear domain classifier
    on balanced subsamples (Ben-David et al. 2007; Ganin et al. 2016). 0: indistinguishable; 2: fully separable."""
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(seed)
    n = min(len(xs), len(xt), max_per_domain)
    a, b = xs[rng.choice(len(xs), n, replace=False)], xt[rng.choice(len(xt), n, replace=False)]
    x, y = np.concatenate([a, b]), np.concatenate([np.zeros(n), np.ones(n)])
    wrong = 0
    for tr, te in StratifiedKFold(2, shuffle=True, random_state=seed).split(x, y):
        clf = domain_classifier(x[tr][y[tr] == 0], x[tr][y[tr] == 1], seed)
        wrong += int((clf.predict(x[te].astype(np.float64)) != y[te]).sum())
    err = wrong / len(y)
    return float(np.clip(2 * (1 - 2 * err), 0.0, 2.0)), float(err)


def mmd(xs: np.ndarray, xt: np.ndarray, seed: int = 0, max_per_domain: int = 500,
        permutations: int = 200) -> tuple[float, float]:
    """(unbiased MMD^2 with the Gaussian kernel exp(-d^2 / median d^2), permutation p-value) on standardised
    features (Gretton et al., JMLR 2012)."""
    rng = np.random.default_rng(seed)
    a = xs[rng.choice(len(xs), min(len(xs), max_per_domain), replace=False)].astype(np.float64)
    b = xt[rng.choice(len(xt), min(len(xt), max_per_domain), replace=False)].astype(np.float64)
    z = np.concatenate([a, b])
    mean, std = _moments(z)
    z = (z - mean) / std
    sq = (z * z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    med = float(np.median(d2[np.triu_indices(len(z), 1)]))
    k = np.exp(-d2 / max(med, 1e-12))
    np.fill_diagonal(k, 0.0)
    n, m = len(a), len(b)

    def stat(is_a: np.ndarray) -> float:
        ia, ib = np.flatnonzero(is_a), np.flatnonzero(~is_a)
        return float(k[np.ix_(ia, ia)].sum() / (n * (n - 1)) + k[np.ix_(ib, ib)].sum() / (m * (m - 1))
                     - 2 * k[np.ix_(ia, ib)].sum() / (n * m))

    labels = np.arange(n + m) < n
    observed = stat(labels)
    exceed = sum(stat(rng.permutation(labels)) >= observed for _ in range(permutations))
    return observed, (exceed + 1) / (permutations + 1)


def shift_words(pad: float, mmd_p: float) -> str:
    """The diagnostic in plain words."""
    if pad >= 1.5:
        return (f"Large shift: a linear classifier tells source from target features apart almost every time "
                f"(proxy A-distance {pad:.2f} of 2). Expect the source-only model to lose accuracy on the target; "
                f"adaptation can help, but it can also hurt (negative transfer) when the label proportions or the "
                f"meaning of the classes differ: check the adapted model on a few labelled target items.")
    if pad >= 0.5 or mmd_p < 0.01:
        return (f"Moderate shift (proxy A-distance {pad:.2f} of 2, MMD permutation p = {mmd_p:.3f}): adaptation may "
                f"help a little; compare it with the source-only model.")
    return (f"Small shift (proxy A-distance {pad:.2f} of 2, MMD permutation p = {mmd_p:.3f}): the source-only model "
            f"should transfer as it is; adaptation has little to fix.")


def shift_diagnostic(xs: np.ndarray, xt: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Proxy A-distance and MMD between source and target features, with their reading in words."""
    pad, err = proxy_a_distance(xs, xt, seed)
    m2, p = mmd(xs, xt, seed)
    return {"proxy_a_distance": pad, "domain_error": err, "mmd2": m2, "mmd_p": p, "words": shift_words(pad, p),
            "large": pad >= 1.5}
