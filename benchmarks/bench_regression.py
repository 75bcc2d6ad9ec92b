"""Regression transfer: predict the angle an image was rotated by (seeded, uniform in [-45, 45] degrees), a target
that needs spatial features, with a ridge probe on EfficientNet-Lite0 features against the from-scratch ridge on
raw pixels, over seeds (each its own split), on Fashion-MNIST (the official training images, Debian package) and
the digits set.

Run: .venv/bin/python benchmarks/bench_regression.py [--n 1500] [--seeds 3]
Every number printed comes from this one run; test labels are read only for the report (``fit`` chooses the ridge
strength on validation).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def rotated(name: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of ``name`` (seeded choice), each rotated by its own seeded angle; (images, angles)."""
    from PIL import Image

    from transferkit.data import load_builtin

    ds = load_builtin(name)
    rng = np.random.default_rng(seed)
    pool = [i for i, s in enumerate(ds.split or ["train"] * len(ds)) if s == "train"]
    pick = np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))
    angles = rng.uniform(-45, 45, size=len(pick))
    images = np.stack([
        np.asarray(Image.fromarray(np.asarray(ds.items[int(i)])).rotate(float(a), resample=Image.BILINEAR))
        for i, a in zip(pick, angles, strict=True)
    ])
    return images, angles


def main() -> None:
    import transferkit
    from transferkit.core.evaluation import mean_ci, verdict
    from transferkit.data.dataset import Dataset

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--backbones", default="pack:efficientnet-lite0,pack:efficientnet-lite0?layer=4",
                    help="each reported in its own rows (none is chosen here: a user would choose by validation)")
    args = ap.parse_args()
    print("| data | model | MAE (degrees) | RMSE | R^2 | Spearman |")
    print("|---|---|---|---|---|---|")
    verdicts = []
    for name in ("fashion-mnist", "digits"):
        images, angles = rotated(name, args.n)
        ds = Dataset(images, [f"{a:.4f}" for a in angles], "image", name=f"{name} rotated", task="regression")
        for k, spec in enumerate(args.backbones.split(",")):
            runs: dict[str, list[dict[str, float]]] = {"transfer": [], "scratch": []}
            t0 = time.perf_counter()
            for seed in range(args.seeds):
                res = transferkit.fit(ds, spec, seed=seed, progress=False)
                for side in runs:
                    runs[side].append(res.metrics[side])
                desc = res.record["scratch"]["description"]
            rows = [("transfer", f"ridge probe on `{spec}` features")] + ([("scratch", desc)] if k == 0 else [])
            for side, label in rows:
                cells = []
                for key in ("mae", "rmse", "r2", "spearman"):
                    m, lo, hi = mean_ci([r[key] for r in runs[side]])
                    cells.append(f"{m:.3f} [{lo:.3f}, {hi:.3f}]")
                print(f"| {ds.name} ({len(ds)} images, {args.seeds} seeds) | {label} | " + " | ".join(cells) + " |")
            v = verdict([r["r2"] for r in runs["transfer"]], [r["r2"] for r in runs["scratch"]], metric="R^2")
            verdicts.append(f"{ds.name}, {spec}: {v.text} (R^2 in points; {time.perf_counter() - t0:.0f} s for "
                            "all seeds)")
    print()
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    main()
