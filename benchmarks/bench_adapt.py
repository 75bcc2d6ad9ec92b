"""Domain adaptation on the shift pairs of ``transferkit.data.shifts``: the shift diagnostic, then source-only vs DANN,
Deep CORAL, AdaBN, label-shift and self-training on the target test set (mean and 95 % CI over seeds, paired
verdicts), each chosen without target labels; and which method each label-free rule (reverse validation, the
selection criterion) recommends.

Run: .venv/bin/python benchmarks/bench_adapt.py [--pairs spam-dated,tweets-topics,fashion-shifted] [--seeds 5]
     [--select dev] [--epochs 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

import transferkit
from transferkit.core.fastpath import cpu_name
from transferkit.data.shifts import PAIRS

BACKBONES = {"text": "pack:minilm-l6", "image": "pack:efficientnet-lite0"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default=",".join(PAIRS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--select", default="dev")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--cache", default=None, help="feature cache folder (default: a temporary one)")
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        for pair in args.pairs.split(","):
            source, target, test = PAIRS[pair]()
            spec = BACKBONES[source.modality]
            t0 = time.perf_counter()
            res = transferkit.adapt(source, target, test, backbone=spec, seeds=args.seeds, select=args.select,
                                    epochs=args.epochs, cache_dir=args.cache or tmp, progress=False)
            wall = time.perf_counter() - t0
            d = res.diagnostic
            share = {c: f"{np.mean(np.asarray(ds.labels) == c):.0%}" for ds in (source,) for c in source.classes}
            test_share = {c: f"{np.mean(np.asarray(test.labels) == c):.0%}" for c in source.classes}
            print(f"\n## {pair}: {res.source} ({len(source)} labelled) -> {len(target)} unlabelled target, "
                  f"{len(test)} target test; {spec} frozen, {args.seeds} seeds, selection {args.select} "
                  f"({wall:.0f} s: features {res.timings['features']:.0f} s, training {res.timings['train']:.0f} s)")
            print(f"class shares: source {share}, target test {test_share}")
            print(f"shift: proxy A-distance {d['proxy_a_distance']:.2f} (domain error {d['domain_error']:.3f}), "
                  f"MMD^2 {d['mmd2']:.4f} (p = {d['mmd_p']:.3f})\n")
            print(res.table())
            print()
            for r in res.summary():
                if "verdict" in r:
                    print(f"- {r['verdict']}")
            best_true = max(res.all_methods, key=lambda m: np.mean(res.target_accuracy[m]))
            picks = {}
            for rule in ("reverse", "criterion"):
                res.recommend = rule
                picks[rule] = res.recommended()
                print(f"- recommended without target labels by {rule}: {picks[rule]} "
                      f"({100 * np.mean(res.target_accuracy[picks[rule]]):.1f} % on the target test; "
                      f"{res.recommendation_reason()})")
            print(f"- best on the target test: {best_true}")
            rev = {m: [round(100 * r["methods"][m]["reverse_accuracy"], 1) for r in res.runs] for m in res.all_methods}
            crit = {m: [round(r["methods"][m]["criterion"], 4) for r in res.runs] for m in res.all_methods}
            print(f"- criterion ({args.select}) per seed: {crit}")
            print(f"- reverse validation (source-val accuracy of a classifier trained on the target's predicted "
                  f"labels) per seed: {rev}")
            per_seed = {m: [round(100 * a, 1) for a in res.target_accuracy[m]] for m in res.all_methods}
            print(f"- per seed target accuracy: {per_seed}")
            print(f"- chosen per seed: { {r['method']: r['chosen'] for r in res.summary()} }")


if __name__ == "__main__":
    main()
