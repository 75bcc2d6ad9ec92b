"""Choosing detect's defaults (kNN's k, the detector saved first) and checking its label-free backbone choice, on
development data, never on bench_detect.py's test sets.

Fashion-MNIST's training split only (bench_detect.py scores on the official test set): per class, N seeded
training images of it are the normal data, and a disjoint development set of 100 training images of every class
holds the anomalies (and 100 normals). SpamAssassin: a development set of 600 emails disjoint from bench_detect.py's
test set (drawn with seed 4321 after setting that one aside), with N ham (or spam) emails to fit on. Per backbone,
the held-out kNN distance ratio of the normal data (what ``detect --backbone auto`` minimises) and each detector's
AUROC on the development set, averaged over the normal classes.

Run: .venv/bin/python benchmarks/dev_detect.py [--data fashion-mnist,spam] [--ks 1,2,3,5,10,20,50] [--normal 300]
     [--image-backbones pack:efficientnet-lite0,...] [--text-backbones pack:minilm-l6,pack:mpnet-base]
     [--pyod ECOD,IForest]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import fixed_test  # noqa: E402


def scores(x_fit: np.ndarray, x_dev: np.ndarray, anomaly: np.ndarray, ks: list[int]) -> dict[str, float]:
    from transferkit.methods.anomaly import detection_metrics, fit_detector, held_out_knn_ratio

    out = {"held-out kNN ratio": held_out_knn_ratio(x_fit)}
    for name, k in [("mahalanobis", 0), *(("knn", k) for k in ks), *((p, 0) for p in PYOD)]:
        det = fit_detector(name, x_fit, k=max(k, 1))
        det.calibrate(det.raw(x_fit[:50]), 0.05)  # the threshold plays no part in AUROC
        out[f"knn k={k}" if name == "knn" else name] = detection_metrics(det.score(x_dev), anomaly, 0.0)["auroc"]
    return out


PYOD: list[str] = []
"""pyod detectors to score beside the built-in ones (--pyod)."""


def features(spec: str, items: list) -> np.ndarray:
    from transferkit import create_backbone
    from transferkit.core.features import extract_features
    from transferkit.workflows.detect import _as_dataset

    bb = create_backbone(spec)
    bb.freeze()
    ds = _as_dataset(items, bb.modality, "dev")
    return extract_features(bb, ds, np.arange(len(ds)), progress=False)[0]


def main() -> None:
    from transferkit.data import load_builtin

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist,spam")
    ap.add_argument("--ks", default="1,2,3,5,10,20,50")
    ap.add_argument("--image-backbones", default="pack:efficientnet-lite0,pack:efficientnet-lite1,"
                    "pack:efficientnet-lite2")
    ap.add_argument("--text-backbones", default="pack:minilm-l6,pack:mpnet-base")
    ap.add_argument("--normal", type=int, default=300, help="normal items to fit on")
    ap.add_argument("--pyod", default="", help="pyod detectors to score too, e.g. ECOD,IForest")
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    PYOD.extend(f"pyod:{c}" for c in args.pyod.split(",") if c)
    print("| data | backbone | " + " | ".join(["held-out kNN ratio", "mahalanobis", *(f"knn k={k}" for k in ks),
                                             *PYOD]) + " |")
    print("|---|---|" + "---|" * (2 + len(ks) + len(PYOD)))
    for name in args.data.split(","):
        ds = load_builtin(name)
        rng = np.random.default_rng(4321)
        if name == "fashion-mnist":
            train = np.flatnonzero(np.asarray(ds.split) == "train")
            y = ds.targets[train]
            members = {c: rng.permutation(train[y == c]) for c in range(len(ds.classes))}
            fits = {ds.classes[c]: members[c][: args.normal] for c in members}
            dev_idx = np.concatenate([members[c][args.normal : args.normal + 100] for c in members])
            specs = args.image_backbones.split(",")
        else:
            _, pool = fixed_test(ds, 600)  # bench_detect.py's test set, set aside
            y = ds.targets[pool]
            dev_idx = np.sort(np.concatenate([rng.choice(pool[y == c], size=round(600 * np.mean(y == c)),
                                                         replace=False) for c in range(len(ds.classes))]))
            pool = np.setdiff1d(pool, dev_idx)
            fits = {c: rng.permutation(pool[ds.targets[pool] == ds.classes.index(c)])[: args.normal]
                    for c in ("ham", "spam")}
            specs = args.text_backbones.split(",")
        order = np.concatenate([*fits.values(), dev_idx])
        items = [ds.items[i] if ds.modality == "image" else str(ds.items[i]) for i in order]
        for spec in specs:
            t0 = time.perf_counter()
            x = features(spec, items)
            x_dev = x[-len(dev_idx):]
            rows = []
            for j, (normal, fit) in enumerate(fits.items()):
                x_fit = x[j * args.normal : j * args.normal + len(fit)]
                rows.append(scores(x_fit, x_dev, np.asarray(ds.labels)[dev_idx] != normal, ks))
                print(f"{name} {spec} {normal}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()),
                      file=sys.stderr, flush=True)
            means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            cells = [f"{means['held-out kNN ratio']:.3f}"] + [f"{100 * v:.1f}" for k, v in means.items()
                                                              if k != "held-out kNN ratio"]
            print(f"| {name} | {spec} ({time.perf_counter() - t0:.0f} s) | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
