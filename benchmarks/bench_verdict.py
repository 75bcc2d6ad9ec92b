"""The verdict shown right both ways: transfer helps on Fashion-MNIST, and is negative when the pixels of every
image are shuffled by one fixed permutation (ImageNet features then carry no spatial meaning, while a
from-scratch model on raw pixels does not care).

Run: .venv/bin/python benchmarks/bench_verdict.py [--seeds 3] [--per-class 100]
Prints the comparison table and verdict of each case; every number comes from this one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from transferkit.data import Dataset, load_builtin
from transferkit.workflows.compare import compare


def subset(ds: Dataset, per_class_train: int, test: int, seed: int = 0) -> Dataset:
    """A fixed pool: per_class_train x 3 training images per class (seeds draw from it) and `test` test images."""
    rng = np.random.default_rng(seed)
    y, split = ds.targets, np.array(ds.split)
    keep = []
    for c in range(len(ds.classes)):
        keep += list(rng.choice(np.where((y == c) & (split == "train"))[0], 3 * per_class_train, replace=False))
        keep += list(rng.choice(np.where((y == c) & (split == "test"))[0], test // len(ds.classes), replace=False))
    keep = np.sort(np.array(keep))
    x = np.asarray(ds.items)[keep]
    return Dataset(x, [ds.labels[i] for i in keep], "image", name=ds.name, split=[split[i] for i in keep])


def permuted(ds: Dataset, seed: int = 1234) -> Dataset:
    x = np.asarray(ds.items)
    perm = np.random.default_rng(seed).permutation(x.shape[1] * x.shape[2])
    xp = x.reshape(len(x), -1)[:, perm].reshape(x.shape)
    return Dataset(xp, list(ds.labels), "image", name=f"{ds.name} (pixels permuted)", split=list(ds.split))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--cases", default="original,permuted", help="comma-separated: original, permuted")
    args = ap.parse_args()
    print(f"date {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    base = subset(load_builtin("fashion-mnist"), args.per_class, args.test)
    with tempfile.TemporaryDirectory() as cache:
        cases = {"original": lambda: base, "permuted": lambda: permuted(base)}
        for ds in (cases[c]() for c in args.cases.split(",")):
            t0 = time.perf_counter()
            res = compare(ds, "pack:efficientnet-lite0", ["linear-probe"], seeds=args.seeds,
                          per_class=args.per_class, cache_dir=Path(cache), progress=False)
            print(f"**{ds.name}**, {args.per_class} labelled per class, {args.test} test, seeds "
                  f"{res.meta['seeds']} ({time.perf_counter() - t0:.0f} s)\n")
            print(res.table())
            print("\n" + "\n".join(res.verdict_lines()))
            scratch = {r["description"] for r in res.runs if r["model"] == "scratch"}
            print(f"scratch control chosen on validation: {', '.join(sorted(scratch))}\n", flush=True)


if __name__ == "__main__":
    main()
