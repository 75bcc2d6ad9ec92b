"""Anomaly detection from normal data only: transferkit.detect on pretrained features against the same detectors
on raw inputs, as a user runs it (each call loads, extracts, fits, thresholds, scores and saves), over seeds.

- Fashion-MNIST one-class protocol: each class in turn is normal (N seeded training images of it), the other nine
  are the anomalies; the official test set (or a seeded stratified part of it, --test) scores every class.
  EfficientNet-Lite0 vs 32x32 pixels (PCA); mean AUROC over the ten classes.
- SpamAssassin: ham normal (1,000 seeded ham emails to fit on) with spam the anomalies, and the reverse, scored on
  bench_peers.py's fixed 600-email test set. MiniLM-L6 vs TF-IDF (LSA).

Each seed re-splits the normal data into fit / threshold parts; the detectors' defaults (k, the saved one) were
chosen by benchmarks/dev_detect.py on development data disjoint from these test sets.

Run: .venv/bin/python benchmarks/bench_detect.py [--data fashion-mnist,spam] [--normal 1000] [--test 10000]
     [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import fixed_test  # noqa: E402


def run(ds, normal: str, spec: str, seeds: int, cache: Path) -> tuple[dict, float]:
    import transferkit

    t0 = time.perf_counter()
    res = transferkit.detect(ds, spec, normal=normal, seeds=seeds, progress=False, cache_dir=cache)
    return res, time.perf_counter() - t0


def table(name: str, results: list[tuple[str, object, float]]) -> None:
    from transferkit.core.evaluation import mean_ci as raw_ci
    from transferkit.core.evaluation import verdict

    def mean_ci(v):  # a proportion's interval shown within [0, 1]
        m, lo, hi = raw_ci(v)
        return m, max(lo, 0.0), min(hi, 1.0)

    dets = results[0][1].meta["detectors"]
    cols = [f"{d} {rep}" for d in dets for rep in ("transfer", "control")]
    print(f"\n### {name}\n")
    print(f"| normal class | {' | '.join(cols)} | wall s | fit + score s / 1,000 (knn transfer) |")
    print("|---|" + "---|" * (len(cols) + 2))
    per = {c: [] for c in cols}
    for normal, res, wall in results:
        cells = []
        for d in dets:
            for rep in ("transfer", "control"):
                a = [r["auroc"] for r in res.runs if r["detector"] == d and r["features"] == rep]
                per[f"{d} {rep}"].append(a)
                cells.append("{:.1f} [{:.1f}, {:.1f}]".format(*(100 * v for v in mean_ci(a))))
        speed = np.mean([r["fit_score_s_per_1000"] for r in res.runs if r["detector"] == dets[0]
                         and r["features"] == "transfer"])
        print(f"| {normal} | {' | '.join(cells)} | {wall:.0f} | {speed:.2f} |", flush=True)
    means = {c: np.mean(v, axis=0) for c, v in per.items()}  # per seed: the mean over the classes
    cells = ["**{:.1f}** [{:.1f}, {:.1f}]".format(*(100 * v for v in mean_ci(means[c]))) for c in cols]
    print(f"| mean over {len(results)} | {' | '.join(cells)} | | |")
    for d in dets:
        v = verdict(list(means[f"{d} transfer"]), list(means[f"{d} control"]), metric="AUROC")
        print(f"\n{d}, mean AUROC: {v.sentence('transfer', 'the raw-input control')}")


def main() -> None:
    from transferkit import Dataset
    from transferkit.data import load_builtin

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist,spam")
    ap.add_argument("--normal", type=int, default=1000, help="normal training items per run")
    ap.add_argument("--test", type=int, default=10000, help="Fashion-MNIST test items (stratified)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--classes", default=None, help="Fashion-MNIST: only these class indices")
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="detect-cache-"))
    for name in args.data.split(","):
        ds = load_builtin(name)
        results = []
        t_all = time.perf_counter()
        if name == "fashion-mnist":
            split = np.asarray(ds.split)
            rng = np.random.default_rng(1234)
            test = np.flatnonzero(split == "test")
            if args.test < len(test):
                y = ds.targets[test]
                test = np.sort(np.concatenate([rng.choice(test[y == c], size=args.test // len(ds.classes),
                                                          replace=False) for c in range(len(ds.classes))]))
            train = np.flatnonzero(split == "train")
            classes = range(len(ds.classes)) if args.classes is None else map(int, args.classes.split(","))
            for c in classes:
                fit = np.sort(rng.choice(train[ds.targets[train] == c], size=args.normal, replace=False))
                idx = np.concatenate([fit, test])
                sub = Dataset([ds.items[i] for i in idx], [ds.labels[i] for i in idx], "image", name="fashion-mnist",
                              split=["train"] * len(fit) + ["test"] * len(test))
                res, wall = run(sub, ds.classes[c], "pack:efficientnet-lite0", args.seeds, cache)
                results.append((ds.classes[c], res, wall))
            table(f"Fashion-MNIST one-class: {args.normal} normal training images, {len(test)} test images, "
                  f"`pack:efficientnet-lite0`, {args.seeds} seeds ({time.perf_counter() - t_all:.0f} s)", results)
        else:
            test, pool = fixed_test(ds, 600)
            rng = np.random.default_rng(1234)
            for normal in ("ham", "spam"):
                c = ds.classes.index(normal)
                members = pool[ds.targets[pool] == c]
                fit = np.sort(rng.choice(members, size=min(args.normal, len(members)), replace=False))
                idx = np.concatenate([fit, test])
                sub = Dataset([str(ds.items[i]) for i in idx], [ds.labels[i] for i in idx], "text", name="spam",
                              split=["train"] * len(fit) + ["test"] * len(test))
                res, wall = run(sub, normal, "pack:minilm-l6", args.seeds, cache)
                results.append((normal, res, wall))
            table(f"SpamAssassin: {args.normal} normal emails, 600 test emails, `pack:minilm-l6`, {args.seeds} "
                  f"seeds ({time.perf_counter() - t_all:.0f} s)", results)


if __name__ == "__main__":
    main()
