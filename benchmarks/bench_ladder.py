"""The fine-tuning ladder: scratch, linear probe, LP-FT, last-2-blocks, full fine-tune (and LoRA for text), each
over the same seeded splits, mean and 95 % CI over seeds, wall time on this machine, paired verdicts against the
budget-matched scratch control.

Run: .venv/bin/python benchmarks/bench_ladder.py --data fashion-mnist --per-class 100 --epochs 5
     .venv/bin/python benchmarks/bench_ladder.py --data fashion-mnist --per-class 500 --epochs 2
     .venv/bin/python benchmarks/bench_ladder.py --data tweets --per-class 100 --epochs 5
Every number printed comes from this one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench_verdict import subset
from transferkit.core.fastpath import cpu_name
from transferkit.data import load_builtin
from transferkit.workflows.compare import compare

RUNGS = {
    "linear-probe": ("linear-probe", {}),  # lp-ft: the probe's head, then the last 2 blocks fine-tuned
    "lp-ft": ("finetune", {"unfreeze": "last:2", "lp_ft": True}),
    "last-2": ("finetune", {"unfreeze": "last:2"}),
    "full": ("finetune", {"unfreeze": "all"}),
    "lora": ("lora", {}),
    "default-ft": ("finetune", {}),  # `fit --strategy finetune` as a user gets it: every default, epochs included
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist", choices=["fashion-mnist", "tweets"])
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--rungs", default=None, help="comma-separated subset of " + ", ".join(RUNGS))
    args = ap.parse_args()
    image = args.data == "fashion-mnist"
    rungs = args.rungs.split(",") if args.rungs else [r for r in RUNGS if not (image and r == "lora")]
    print(
        f"date {time.strftime('%Y-%m-%d')}, {cpu_name()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, cuda {torch.cuda.is_available()}\n"
    )
    if image:  # a fixed pool: 3 x per-class training images per class, `test` test images; seeds draw from it
        ds, backbone = subset(load_builtin("fashion-mnist"), args.per_class, args.test), "pack:efficientnet-lite0"
    else:
        ds, backbone = load_builtin("tweets"), "pack:minilm-l6"
    options = {
        r: {**RUNGS[r][1], **({} if r == "default-ft" else {"epochs": args.epochs})}
        for r in rungs
        if RUNGS[r][0] != "linear-probe"
    }
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        res = compare(
            ds,
            backbone,
            [f"{r}={RUNGS[r][0]}" for r in rungs],
            seeds=args.seeds,
            options=options,
            per_class=args.per_class,
            max_test=args.test,
            cache_dir=Path(cache),
            progress=False,
        )
    print(
        f"**{ds.name}**, {args.per_class} labelled per class (80 % train, 20 % validation), {args.test} test, "
        f"`{backbone}`, seeds {res.meta['seeds']}, {args.epochs} epochs max per trained rung "
        f"({time.perf_counter() - t0:.0f} s in all)\n"
    )
    print(res.table())
    print("\n" + "\n".join(res.verdict_lines()))
    print(res.scratch_line())
    print("\n".join(res.choice_lines()))
    for r in rungs:
        if RUNGS[r][0] == "finetune":
            kept = [run["kept"] for run in res.runs if run["model"] == r]
            print(f"{r}: the probe was kept on {kept.count('linear-probe')} of {len(kept)} seeds")
    probe = {run["seed"]: run["accuracy"] for run in res.runs if run["model"] == "linear-probe"}
    for r in rungs:
        if r != "linear-probe" and probe:
            diffs = [100 * (run["accuracy"] - probe[run["seed"]]) for run in res.runs if run["model"] == r]
            print(f"{r} - linear-probe test accuracy per seed: {', '.join(f'{d:+.1f}' for d in diffs)} points")


if __name__ == "__main__":
    main()
