"""Whole processes, timed as a user runs them: `transferkit fit DIR` (probe + scratch control) cold and warm, against
the tutorial recipe run as its own process on the same folder, split and weights; and `make demo`.

The folder: N Fashion-MNIST training images per class written as PNG files (``DIR/<class>/<i>.png``), as a user's
photo folder would be. Both sides split it with ``make_splits(seed=0, val_size=0.2, test_size=0.2)`` (what
`transferkit fit DIR` does by default) and use EfficientNet-Lite0 from the offline pack at 224 px.

- cold: `transferkit fit DIR` with an empty ``TRANSFERKIT_CACHE`` (features and the control are computed);
- warm: the same command again, same cache (a second identical run; three of them, the median shown);
- recipe: ``python bench_process.py --recipe DIR`` — the frozen backbone inside the training loop, GAP +
  Dense(1024) + Dense(classes), Adam 1e-3, batch 128, early stopping on validation loss (patience 3), up to 40
  epochs (``bench_recipe.recipe``).

Run: .venv/bin/python benchmarks/bench_process.py [--per-class 60] [--demo]
Every number printed comes from this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent


def write_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    from transferkit.data import load_builtin

    full = load_builtin("fashion-mnist")
    rng = np.random.default_rng(seed)
    train = np.array([i for i, s in enumerate(full.split) if s == "train"])
    y = full.targets[train]
    for c, name in enumerate(full.classes):
        folder = root / name.replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        for j, i in enumerate(rng.choice(train[y == c], per_class, replace=False)):
            Image.fromarray(full.items[int(i)]).save(folder / f"{j:04d}.png")
    return root


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    secs = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return secs, done.stdout


def run_recipe(folder: str) -> None:
    """The recipe as its own process: prints one JSON line with its test accuracy and epochs."""
    sys.path.insert(0, str(HERE))
    import transferkit
    from bench_recipe import recipe

    ds = transferkit.from_folder(folder)
    acc, secs, epochs = recipe(ds, seed=0, val_size=0.2)
    print(json.dumps({"accuracy": acc, "inner_s": secs, "epochs": epochs}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--demo", action="store_true", help="also time `make demo` with an empty cache")
    ap.add_argument("--recipe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.recipe:
        run_recipe(args.recipe)
        return
    import torch

    from transferkit.core.fastpath import cpu_name

    print(f"date {time.strftime('%Y-%m-%d')}, {cpu_name()}, torch {torch.__version__}, {os.cpu_count()} cores\n")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        folder = write_folder(tmp_path / "fashion", args.per_class)
        env = {**os.environ, "TRANSFERKIT_CACHE": str(tmp_path / "cache")}
        fit = [str(BIN / "transferkit"), "fit", str(folder), "--quiet", "--out"]
        cold_s, _ = timed([*fit, str(tmp_path / "cold")], env)
        warms = sorted(timed([*fit, str(tmp_path / f"warm{i}")], env)[0] for i in range(3))
        warm_s = warms[1]  # the median of three identical reruns
        recipe_s, out = timed([sys.executable, str(HERE / "bench_process.py"), "--recipe", str(folder)], env)
        recipe = json.loads(out.strip().splitlines()[-1])
        cold = json.loads((tmp_path / "cold" / "run.json").read_text())
        warm = json.loads((tmp_path / "warm0" / "run.json").read_text())
        demo_s = None
        if args.demo:
            demo_env = {**os.environ, "TRANSFERKIT_CACHE": str(tmp_path / "demo-cache")}
            demo_s, _ = timed(["make", "demo"], demo_env)
    n = cold["data"]["size"]
    splits = cold["data"]["splits"]
    print(f"Fashion-MNIST folder: {n} PNG images ({args.per_class} per class), split {splits}, seed 0, "
          "pack:efficientnet-lite0 at 224 px\n")
    print("| command (whole process) | test accuracy % | wall s | recipe / this |")
    print("|---|---|---|---|")
    print(f"| recipe (frozen backbone in the loop, {recipe['epochs']} epochs; inner loop {recipe['inner_s']:.1f} s) "
          f"| {100 * recipe['accuracy']:.1f} | {recipe_s:.1f} | 1.0x |")
    for name, r, s in (("`transferkit fit DIR`, cold cache", cold, cold_s),
                       ("the same command again (warm, median of 3)", warm, warm_s)):
        sc = r["scratch"]
        print(f"| {name} | {100 * r['metrics']['transfer']['accuracy']:.1f} | {s:.1f} | {recipe_s / s:.1f}x |")
        print(f"|   its control: {sc['description']}, {sc['cnn_epochs']} CNN epochs, cache {sc['cache']} | "
              f"{100 * r['metrics']['scratch']['accuracy']:.1f} | {r['timings_s']['scratch_total']:.1f} | |")
    print(f"\nsecond identical fit vs the first: {cold_s / warm_s:.1f}x faster "
          f"({cold_s:.1f} s -> {warm_s:.1f} s; reruns {', '.join(f'{w:.1f}' for w in warms)} s); "
          "targets: cold >= 2x, warm >= 5x the recipe; rerun >= 5x")
    print(f"transfer FLOPs {cold['scratch_budget']['transfer_flops'] / 1e12:.2f} T; control "
          f"{cold['scratch']['cnn_flops'] / 1e12:.2f} T; inner timings of the cold fit: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in cold["timings_s"].items()))
    if demo_s is not None:
        print(f"\n`make demo` (environment already set up, empty cache): {demo_s:.1f} s (target < 120 s)")


if __name__ == "__main__":
    main()
