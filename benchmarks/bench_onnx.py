"""ONNX export of every strategy's saved model: parity with PyTorch on real held-out inputs, and onnxruntime's
predict throughput against PyTorch eager on the same inputs, in one run.

Each model is trained here on a small real set (the packs' own weights), saved, loaded back as a user's
``transferkit predict`` would, exported with ``transferkit export`` semantics (``TransferModel.to_onnx``, parity
checked on the default real inputs), then both runtimes predict the same N test inputs (raw images / texts,
preprocessing included) after one warm-up batch; the median of 3 timings each.

Run: .venv/bin/python benchmarks/bench_onnx.py [--n 256] [--work runs/bench-onnx]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _sample(ds, idx):
    """The items at ``idx`` as a data set of their own (transferkit splits it)."""
    from transferkit import Dataset

    return Dataset([ds.items[i] for i in idx], [ds.labels[i] for i in idx], ds.modality,
                   name=f"{ds.name}-{len(idx)}", conflicting=ds.conflicting)


def main() -> None:
    import torch

    import transferkit as tk
    from transferkit.onnx_runtime import OnnxModel

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256, help="test inputs each runtime predicts")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-onnx-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TRANSFERKIT_CACHE", str(work / "cache"))
    images = tk.load_builtin("fashion-mnist-small")
    tweets = tk.load_builtin("tweets")
    rng = np.random.default_rng(0)
    img_sub = _sample(images, np.sort(rng.choice(len(images), 600, replace=False)))
    txt_sub = _sample(tweets, np.sort(rng.choice(len(tweets), 600, replace=False)))
    common = {"progress": False, "overwrite": True, "scratch": False}
    jobs = [
        ("linear-probe", "pack:efficientnet-lite0", img_sub,
         lambda d, o: tk.fit(d, "pack:efficientnet-lite0", "linear-probe", out=o, **common)),
        ("finetune (last 2 blocks, 2 epochs)", "pack:efficientnet-lite0", img_sub,
         lambda d, o: tk.fit(d, "pack:efficientnet-lite0", "finetune", out=o,
                             unfreeze="last:2", epochs=2, **common)),
        ("linear-probe", "pack:minilm-l6", txt_sub,
         lambda d, o: tk.fit(d, "pack:minilm-l6", "linear-probe", out=o, **common)),
        ("lora (2 epochs)", "pack:minilm-l6", txt_sub,
         lambda d, o: tk.fit(d, "pack:minilm-l6", "lora", out=o, epochs=2, **common)),
        ("linear-probe", "pack:smollm2-135m", txt_sub,
         lambda d, o: tk.fit(d, "pack:smollm2-135m", "linear-probe", out=o, **common)),
    ]
    print(f"- torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, "
          f"{torch.get_num_threads()} threads, N = {args.n} test inputs, median of 3")
    print()
    print("| strategy | backbone | parity: max abs probability difference (default real inputs) | same on the N "
          "test inputs | PyTorch eager predict s | onnxruntime predict s | onnxruntime / PyTorch throughput | "
          "export s |")
    print("|---|---|---|---|---|---|---|---|")
    outs = []
    for i, (name, spec, data, train) in enumerate(jobs):
        out = work / f"run{i}"
        train(data, out)
        outs.append((name, spec, out / "model", data))
    # the distilled student (issue 6's default image student, scratch:cnn) from a Lite0 probe teacher
    dist_out = work / "distill"
    tk.distill(img_sub, str(outs[0][2]), seeds=1, epochs=3, out=dist_out, progress=False, overwrite=True)
    outs.append(("distilled student (scratch:cnn, 3 epochs)", "scratch:cnn", dist_out / "model", img_sub))
    for name, spec, model_dir, data in outs:
        model = tk.load(model_dir)
        items = [data.items[j] for j in range(min(args.n, len(data)))]
        t0 = time.perf_counter()
        res = model.to_onnx(model_dir.parent / "model.onnx", overwrite=True)
        export_s = time.perf_counter() - t0
        onnx = OnnxModel(model_dir.parent / "model.onnx")
        onnx.predict_proba(items[:64])
        model.predict_proba(items[:64])
        diff = float(np.abs(onnx.predict_proba(items) - model.predict_proba(items)).max())
        t_torch = _timed(lambda m=model, x=items: m.predict_proba(x))
        t_onnx = _timed(lambda m=onnx, x=items: m.predict_proba(x))
        print(f"| {name} | {spec} | {res.max_abs_diff:.1e} ({res.checked} inputs) | {diff:.1e} | {t_torch:.2f} | "
              f"{t_onnx:.2f} | {t_torch / t_onnx:.2f} | {export_s:.0f} |", flush=True)


if __name__ == "__main__":
    main()
