"""Foundation benchmark: linear probe vs scratch (3 seeds) on images and texts, and the warm-cache speed-up.

Run: .venv/bin/python benchmarks/bench_foundation.py [--seeds 0 1 2] [--only image|text|cache]
Prints markdown tables; every number comes from this one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import timm  # noqa: F401  (import cost paid before any timing)
import torch
import transformers  # noqa: F401

import transferkit
from transferkit.core.evaluation import mean_ci

IMAGE = {"data": "fashion-mnist", "backbone": "pack:efficientnet-lite0", "per_class": 100, "max_test": 2000}
TEXT = {"data": "tweets", "backbone": "pack:minilm-l6", "per_class": 100, "max_test": 2000}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def compare(setup: dict, seeds: list[int], cache: Path) -> dict:
    runs = []
    for seed in seeds:
        r = transferkit.fit(
            setup["data"],
            setup["backbone"],
            seed=seed,
            per_class=setup["per_class"],
            max_test=setup["max_test"],
            cache_dir=cache,
            progress=False,
        )
        row = {
            "seed": seed,
            **{f"{k}_{m}": v[m] for k, v in r.metrics.items() for m in v},
            "transfer_s": r.rows[0]["wall_s"],
            "scratch_s": r.rows[1]["wall_s"],
        }
        runs.append(row)
        print(json.dumps(row), flush=True)
    return {"setup": setup, "runs": runs}


def fmt(values: list[float], pct: bool = True) -> str:
    m, lo, hi = mean_ci(values)
    k = 100 if pct else 1
    return f"{k * m:.1f} [{k * lo:.1f}, {k * hi:.1f}]"


def table(res: dict) -> str:
    runs = res["runs"]
    s = res["setup"]
    out = [
        f"**{s['data']}**, {s['per_class']} labelled per class, {s['max_test']} test, backbone "
        f"`{s['backbone']}`, seeds {[r['seed'] for r in runs]} (mean [95% CI])",
        "",
        "| model | accuracy % | macro-F1 % | wall s (mean) |",
        "|---|---|---|---|",
    ]
    for name, key in (("linear probe", "transfer"), ("scratch", "scratch")):
        out.append(
            f"| {name} | {fmt([r[f'{key}_accuracy'] for r in runs])} | "
            f"{fmt([r[f'{key}_macro_f1'] for r in runs])} | "
            f"{sum(r[f'{key}_s'] for r in runs) / len(runs):.1f} |"
        )
    diff = [r["transfer_accuracy"] - r["scratch_accuracy"] for r in runs]
    out.append(f"\nprobe - scratch accuracy: {fmt(diff)} points")
    return "\n".join(out)


def cache_ratio(setup: dict, cache: Path, repeats: int = 3) -> str:
    """Cold fit (empty cache) vs warm fits (same data), transfer only, same process."""
    kw = {
        "per_class": setup["per_class"],
        "max_test": setup["max_test"],
        "scratch": False,
        "progress": False,
        "cache_dir": cache,
    }
    t0 = time.perf_counter()
    cold = transferkit.fit(setup["data"], setup["backbone"], **kw)
    cold_s = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        w = transferkit.fit(setup["data"], setup["backbone"], **kw)
        warm.append(time.perf_counter() - t0)
        assert w.record["strategy_info"]["features_from_cache"], "warm run did not hit the cache"
        assert w.metrics == cold.metrics, "warm run gave different metrics"
    med = sorted(warm)[len(warm) // 2]
    return f"| {setup['data']} ({setup['backbone']}) | {cold_s:.1f} | {med:.2f} | {cold_s / med:.0f}x |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", choices=["image", "text", "cache"], default=None)
    args = ap.parse_args()
    print(
        f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"date {time.strftime('%Y-%m-%d')}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        reports = []
        if args.only in (None, "image"):
            reports.append(table(compare(IMAGE, args.seeds, cache / "img")))
        if args.only in (None, "text"):
            reports.append(table(compare(TEXT, args.seeds, cache / "txt")))
        if args.only in (None, "cache"):
            rows = ["| data | cold fit s | warm fit s (median of 3) | ratio |", "|---|---|---|---|"]
            rows.append(cache_ratio(IMAGE, cache / "ratio-img"))
            rows.append(cache_ratio(TEXT, cache / "ratio-txt"))
            reports.append("\n".join(rows))
    print("\n\n".join(reports))


if __name__ == "__main__":
    main()
