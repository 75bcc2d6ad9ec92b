"""Feature-extraction throughput against the hardware limit, all measured in this one run.

1. peak: the machine's fp32 matmul rate (square sgemm, best of several sizes and repeats);
2. each pack backbone: FLOPs of its forward pass counted with torch's FlopCounterMode, achieved GFLOP/s of
   ``extract_features`` (what transferkit runs) and its fraction of the peak;
3. EfficientNet-Lite0: transferkit's extraction with its defaults (channels-last, batch 8 on a CPU, compile when
   it pays) vs the eager fp32 baseline (NCHW, torch.no_grad, batch 32, the same preprocessing), same images, and
   the largest relative difference of the features;
4. tweets: batches sorted by length (transferkit) vs every text padded to the maximum length;
5. memory: peak resident memory of extracting 1,000 and 10,000 images (fresh processes, cache on, defaults);
6. batch: EfficientNet-Lite0 eager throughput per extraction batch size (why the CPU default is 8).

Run: .venv/bin/python benchmarks/bench_extraction.py [--repeats 3] [--sections peak,effnet,minilm,tweets,memory]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from transferkit.backbones import create_backbone
from transferkit.backbones.base import load_image
from transferkit.core.fastpath import cpu_name
from transferkit.core.features import _batches, default_batch_size, extract_features
from transferkit.data import Dataset, from_arrays, load_builtin


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up (allocator, oneDNN primitive cache, lazy init)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def matmul_peak(repeats: int) -> float:
    """Best fp32 sgemm rate over a few square sizes, GFLOP/s."""
    best = 0.0
    for n in (1024, 2048, 3072):
        a, b = torch.randn(n, n), torch.randn(n, n)
        c = torch.empty(n, n)
        for t in timed(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), repeats + 2):
            best = max(best, 2 * n**3 / t / 1e9)
    return best


def count_flops(backbone, ds: Dataset, indices: list[int], batch_size: int) -> float:
    """FLOPs of the forward passes extract_features makes over these items (same batches, same padding)."""
    items = ds.take(indices)
    total = 0
    with torch.inference_mode():
        for batch in _batches(backbone, items, batch_size):
            inputs = backbone.prepare([items[i] for i in batch])
            with FlopCounterMode(display=False) as fc:
                backbone(inputs)
            total += fc.get_total_flops()
    return float(total)


def fmnist_images(n: int, seed: int = 0) -> Dataset:
    ds = load_builtin("fashion-mnist-small") if n <= 3000 else load_builtin("fashion-mnist")
    idx = np.random.default_rng(seed).choice(len(ds), n, replace=False)
    return from_arrays(np.asarray(ds.items)[idx], [ds.labels[i] for i in idx], name=f"fashion-mnist x{n}")


def tweets(n: int, seed: int = 0) -> Dataset:
    ds = load_builtin("tweets")
    idx = np.random.default_rng(seed).choice(len(ds), n, replace=False)
    return from_arrays(ds.take(idx), [ds.labels[i] for i in idx], name=f"tweets x{n}")


def extract(bb, ds: Dataset, n: int, batch_size: int, compile: str) -> tuple[np.ndarray, float, dict]:
    """One full extract_features call (no cache): features, seconds, and how the backbone ran."""
    stats: dict = {}
    t0 = time.perf_counter()
    feats, _ = extract_features(bb, ds, range(n), batch_size=batch_size, use_cache=False, progress=False,
                                compile=compile, stats=stats)
    return feats, time.perf_counter() - t0, stats["engine"]


def efficiency(spec: str, ds: Dataset, n: int, batch_size: int, peak: float, repeats: int) -> dict:
    """Achieved GFLOP/s of extract_features, eager and compiled (compiled: steady state, compile time apart)."""
    bb = create_backbone(spec).eval()
    flops = count_flops(bb, ds, list(range(n)), batch_size)
    extract(bb, ds, min(n, 2 * batch_size), batch_size, "never")  # warm-up
    eager = [extract(bb, ds, n, batch_size, "never")[1] for _ in range(repeats)]
    runs = [extract(bb, ds, n, batch_size, "always") for _ in range(repeats)]
    steady = [secs - eng.get("compile_s", 0.0) for _, secs, eng in runs]
    out = {"spec": spec, "items": n, "gflop": flops / 1e9}
    for name, times in (("eager", eager), ("compiled", steady)):
        med = statistics.median(times)
        out[name] = {"median_s": med, "items_s": n / med, "gflops": flops / med / 1e9,
                     "fraction_of_peak": flops / med / 1e9 / peak}
    out["compile_s"] = statistics.median(eng.get("compile_s", 0.0) for _, _, eng in runs)
    out["engines"] = sorted({eng["engine"] for _, _, eng in runs})
    return out


def effnet_vs_eager(ds: Dataset, n: int, repeats: int) -> dict:
    """The eager fp32 baseline (NCHW, torch.no_grad, batch 32, per-image preprocessing) vs extract_features,
    whole calls, same images; compiled also without its one-off compile time."""
    ours = create_backbone("pack:efficientnet-lite0").eval()
    eager = create_backbone("pack:efficientnet-lite0").eval()
    eager.model = eager.model.to(memory_format=torch.contiguous_format)
    transform = eager._transform.transform  # the per-image torchvision pipeline
    items = ds.take(range(n))

    def baseline() -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, n, 32):
                x = torch.stack([transform(load_image(it)) for it in items[i : i + 32]])
                out.append(eager(x).numpy())
        return np.concatenate(out)

    baseline_s, ref = [], None
    baseline()  # warm-up
    for _ in range(repeats):
        t0 = time.perf_counter()
        ref = baseline()
        baseline_s.append(time.perf_counter() - t0)
    base = statistics.median(baseline_s)
    res = {"items": n, "eager_baseline_s": base, "runs": {}}
    for mode in ("auto", "never", "always"):
        runs = [extract(ours, ds, n, default_batch_size("image", torch.device("cpu")), mode) for _ in range(repeats)]
        secs = statistics.median(r[1] for r in runs)
        compile_s = statistics.median(r[2].get("compile_s", 0.0) if r[2]["engine"] == "compiled" else 0.0
                                      for r in runs)
        rel = max(float(np.abs(r[0] - ref).max() / np.abs(ref).max()) for r in runs)
        res["runs"][mode] = {"median_s": secs, "ratio": base / secs, "compile_s": compile_s,
                             "steady_ratio": base / max(secs - compile_s, 1e-9), "max_rel_diff": rel,
                             "engine": runs[-1][2]["engine"], "why": runs[-1][2]["why"]}
    return res


def tweets_padding(n: int, repeats: int) -> dict:
    ds = tweets(n)
    bb = create_backbone("pack:minilm-l6").eval()
    items = ds.take(range(n))
    max_len = bb.preprocess.max_length

    def padded() -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, n, 64):
                enc = bb.tokenizer(items[i : i + 64], padding="max_length", truncation=True, max_length=max_len,
                                   return_tensors="pt")
                out.append(bb({k: enc[k] for k in ("input_ids", "attention_mask")}).numpy())
        return np.concatenate(out)

    def ours() -> np.ndarray:
        return extract_features(bb, ds, range(n), use_cache=False, progress=False)[0]

    t_pad, t_ours = timed(padded, repeats), timed(ours, repeats)
    a, b = padded(), ours()
    lengths = [sum(m) for m in bb.tokenizer(items, truncation=True, max_length=max_len)["attention_mask"]]
    return {"texts": n, "max_length": max_len, "mean_tokens": float(np.mean(lengths)),
            "padded_s": statistics.median(t_pad), "sorted_s": statistics.median(t_ours),
            "ratio": statistics.median(t_pad) / statistics.median(t_ours),
            "max_rel_diff": float(np.abs(a - b).max() / np.abs(a).max())}


MEMORY_CHILD = """
import gc, json, sys, tempfile
from pathlib import Path
def status(field):  # kB, from /proc/self/status
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1])
sys.path.insert(0, {bench!r})
from bench_extraction import fmnist_images
from transferkit.backbones import create_backbone
from transferkit.backbones.base import load_image
from transferkit.core.features import extract_features
n = int(sys.argv[1])
ds = fmnist_images(n)
bb = create_backbone("pack:efficientnet-lite0")
extract_features(bb, ds, range(8), use_cache=False, progress=False)  # warm-up: lazy allocations happen here
gc.collect()
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS")
stats = {{}}
with tempfile.TemporaryDirectory() as cache:  # defaults throughout: compile=auto decides for this job
    feats, _ = extract_features(bb, ds, range(n), cache_dir=Path(cache), progress=False, stats=stats)
after = status("VmHWM")
mib = {{"before_mib": before / 1024, "peak_mib": after / 1024, "features_mib": feats.nbytes / 2**20,
        "seconds": stats["extract_s"], "engine": stats["engine"]["engine"], "why": stats["engine"]["why"]}}
print(json.dumps({{"n": n, **mib}}))
"""


def memory(sizes: list[int]) -> list[dict]:
    out = []
    code = MEMORY_CHILD.format(bench=str(Path(__file__).parent))
    for n in sizes:
        res = subprocess.run([sys.executable, "-c", code, str(n)], capture_output=True, text=True, check=True)
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def batch_sweep(ds: Dataset, n: int, sizes: list[int], repeats: int) -> dict[int, float]:
    """EfficientNet-Lite0 eager extraction rate (img/s, median) per batch size: what the CPU default rests on."""
    bb = create_backbone("pack:efficientnet-lite0")
    extract(bb, ds, 64, 8, "never")  # warm-up
    return {b: n / statistics.median(extract(bb, ds, n, b, "never")[1] for _ in range(repeats)) for b in sizes}


def report_efficiency(name: str, unit: str, e: dict) -> None:
    print(f"{name}: {e['gflop']:.1f} GFLOP counted over {e['items']} items")
    for k in ("eager", "compiled"):
        v = e[k]
        print(f"  {k}: {v['items_s']:.1f} {unit}/s, {v['gflops']:.1f} GFLOP/s = {100 * v['fraction_of_peak']:.1f} % "
              f"of peak" + (f" (steady state; compile {e['compile_s']:.1f} s apart)" if k == "compiled" else ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sections", default="peak,effnet,batch,minilm,tweets,memory")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--texts", type=int, default=2000)
    args = ap.parse_args()
    sections = args.sections.split(",")
    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} runs\n")
    peak = matmul_peak(args.repeats)
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s")
    if "effnet" in sections:
        ds = fmnist_images(args.images)
        e = efficiency("pack:efficientnet-lite0", ds, args.images, default_batch_size("image", torch.device("cpu")),
                       peak, args.repeats)
        report_efficiency("efficientnet-lite0", "img", e)
        r = effnet_vs_eager(ds, args.images, args.repeats)
        print(f"efficientnet-lite0, {args.images} images: eager fp32 baseline {r['eager_baseline_s']:.1f} s")
        for mode, v in r["runs"].items():
            print(f"  extract_features compile={mode}: {v['median_s']:.1f} s ({v['engine']}), ratio "
                  f"{v['ratio']:.2f}x; without the one-off compile ({v['compile_s']:.1f} s) "
                  f"{v['steady_ratio']:.2f}x; max relative feature difference {v['max_rel_diff']:.1e}")
        print(f"  auto chose: {r['runs']['auto']['why']}")
    if "batch" in sections:
        rates = batch_sweep(fmnist_images(args.images), args.images, [64, 32, 16, 8, 4], args.repeats)
        print("efficientnet-lite0 eager, img/s by extraction batch size: "
              + ", ".join(f"{b}: {r:.1f}" for b, r in rates.items()))
    if "minilm" in sections:
        ds = tweets(args.texts)
        e = efficiency("pack:minilm-l6", ds, args.texts, 64, peak, args.repeats)
        report_efficiency("minilm-l6 (tweets)", "text", e)
    if "tweets" in sections:
        t = tweets_padding(args.texts, args.repeats)
        print(f"tweets, {t['texts']} texts (mean {t['mean_tokens']:.1f} tokens): padded to {t['max_length']} "
              f"{t['padded_s']:.2f} s vs sorted batches {t['sorted_s']:.2f} s, ratio {t['ratio']:.1f}x, "
              f"max relative feature difference {t['max_rel_diff']:.1e}")
    if "memory" in sections:
        for m in memory([1000, 10000]):
            print(f"memory, {m['n']} images: {m['before_mib']:.0f} MiB before, peak {m['peak_mib']:.0f} MiB "
                  f"(+{m['peak_mib'] - m['before_mib']:.0f}; the features themselves {m['features_mib']:.0f} MiB); "
                  f"{m['seconds']:.0f} s = {m['n'] / m['seconds']:.1f} img/s, engine {m['engine']} ({m['why']})")


if __name__ == "__main__":
    main()
