"""Choosing detect's defaults (kNN's k, the detector saved first) on development data, never on bench_detect.py's.

Fashion-MNIST's training split only (bench_detect.py scores on the official test set): per class, 300 seeded
training images of it are the normal data, and a disjoint development set of 100 training images of every class
holds the anomalies (and 100 normals); SpamAssassin: a development set of 600 emails disjoint from bench_detect.py's
test set (seed 4321 after setting that one aside), with 1,000 ham (or spam) emails to fit on. Features come from
the default packs once; each detector and k is scored by AUROC on the development set.

Run: .venv/bin/python benchmarks/dev_detect.py [--data fashion-mnist,spam] [--ks 1,2,3,5,10,20,50]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import fixed_test  # noqa: E402


def scores(x_fit: np.ndarray, x_dev: np.ndarray, anomaly: np.ndarray, ks: list[int]) -> dict[str, float]:
    from transferkit.methods.anomaly import detection_metrics, fit_detector

    out = {}
    for name, k in [("mahalanobis", 0), *(("knn", k) for k in ks)]:
        det = fit_detector(name, x_fit, k=max(k, 1))
        det.calibrate(det.raw(x_fit[:50]), 0.05)  # the threshold plays no part in AUROC
        out[f"knn k={k}" if name == "knn" else name] = detection_metrics(det.score(x_dev), anomaly, 0.0)["auroc"]
    return out


def features(spec: str, items: list) -> np.ndarray:
    from transferkit import create_backbone
    from transferkit.core.features import extract_features
    from transferkit.workflows.detect import _as_dataset

    bb = create_backbone(spec)
    bb.freeze()
    ds = _as_dataset(items, bb.modality, "dev")
    return extract_features(bb, ds, np.arange(len(ds)), progress=True)[0]


def main() -> None:
    from transferkit.data import load_builtin

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist,spam")
    ap.add_argument("--ks", default="1,2,3,5,10,20,50")
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    for name in args.data.split(","):
        ds = load_builtin(name)
        rows: list[dict[str, float]] = []
        if name == "fashion-mnist":
            rng = np.random.default_rng(4321)
            train = np.flatnonzero(np.asarray(ds.split) == "train")
            y = ds.targets[train]
            normal_idx, dev_idx = {}, []
            for c in range(len(ds.classes)):
                members = rng.permutation(train[y == c])
                normal_idx[c], dev = members[:300], members[300:400]
                dev_idx.extend(dev)
            dev_idx = np.asarray(dev_idx)
            order = [i for c in range(len(ds.classes)) for i in normal_idx[c]] + list(dev_idx)
            x = features("pack:efficientnet-lite0", [ds.items[i] for i in order])
            x_dev = x[-len(dev_idx):]
            for c in range(len(ds.classes)):
                x_fit = x[300 * c : 300 * (c + 1)]
                rows.append(scores(x_fit, x_dev, ds.targets[dev_idx] != c, ks))
                print(f"{ds.classes[c]}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in rows[-1].items()), flush=True)
        else:
            _, pool = fixed_test(ds, 600)  # bench_detect.py's test set, set aside
            rng = np.random.default_rng(4321)
            y = ds.targets[pool]
            dev_idx = np.sort(np.concatenate([rng.choice(pool[y == c], size=round(600 * np.mean(y == c)),
                                                         replace=False) for c in range(len(ds.classes))]))
            pool = np.setdiff1d(pool, dev_idx)
            for normal in ("ham", "spam"):
                c = ds.classes.index(normal)
                fit_idx = rng.permutation(pool[ds.targets[pool] == c])[:1000]
                x = features("pack:minilm-l6", [str(ds.items[i]) for i in np.concatenate([fit_idx, dev_idx])])
                rows.append(scores(x[: len(fit_idx)], x[len(fit_idx):], ds.targets[dev_idx] != c, ks))
                print(f"{normal} normal: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in rows[-1].items()), flush=True)
        means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        print(f"| {name} | " + " | ".join(f"{k}: {100 * v:.1f}" for k, v in means.items()) + " |", flush=True)


if __name__ == "__main__":
    main()
