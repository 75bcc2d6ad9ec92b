"""A GPT-style decoder (pack:smollm2-135m, last-token and mean pooling) against the sentence encoders MiniLM and
mpnet as frozen text backbones: linear-probe accuracy over seeds, and features per second, on the same data.

Each data set is one seeded, stratified sample of ``--items`` texts; ``transferkit.compare`` then splits it per
seed (train / validation / test) and fits the probe, its L2 strength chosen on validation; features are extracted
once per backbone (the cache), timed cold. Test labels are read only for the table.

Run: .venv/bin/python benchmarks/bench_decoder.py [--data tweets,spam] [--items 1500] [--seeds 3]
     [--backbones pack:minilm-l6,pack:mpnet-base,pack:smollm2-135m?pooling=last,pack:smollm2-135m?pooling=mean]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import transferkit as tk
    from transferkit._files import default_cache_dir
    from transferkit.core.evaluation import mean_ci
    from transferkit.core.features import extract_features

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="tweets,spam")
    ap.add_argument("--items", type=int, default=1500)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--backbones",
                    default="pack:minilm-l6,pack:mpnet-base,pack:smollm2-135m?pooling=last,pack:smollm2-135m?pooling=mean")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-decoder-"))
    os.environ.setdefault("TRANSFERKIT_CACHE", str(work / "cache"))  # cold: extraction is timed
    print("| data | backbone | linear-probe test accuracy % (mean [95% CI]) | features/s (cold, whole sample) | "
          "params M |")
    print("|---|---|---|---|---|")
    for name in args.data.split(","):
        ds = tk.load_builtin(name)
        rng = np.random.default_rng(0)
        y = ds.targets
        take = np.concatenate([rng.choice(np.flatnonzero(y == c), size=min(int((y == c).sum()),
                               round(args.items * float((y == c).mean()))), replace=False)
                               for c in range(len(ds.classes))])
        idx = np.sort(take)
        sub = tk.Dataset([ds.items[i] for i in idx], [ds.labels[i] for i in idx], ds.modality,
                         name=f"{name}-{len(idx)}", conflicting=ds.conflicting)
        for spec in args.backbones.split(","):
            bb = tk.create_backbone(spec)
            params = sum(p.numel() for p in bb.parameters()) / 1e6
            t0 = time.perf_counter()
            extract_features(bb, sub, range(len(sub)), cache_dir=default_cache_dir(), progress=False)
            rate = len(sub) / (time.perf_counter() - t0)
            res = tk.compare(sub, spec, ["linear-probe"], seeds=args.seeds, progress=False, dedupe=True)
            accs = [r["accuracy"] for r in res.runs if r.get("strategy") == "linear-probe"]
            lo_mean_hi = mean_ci(accs)
            print(f"| {name} | {spec} | {100 * lo_mean_hi[0]:.1f} [{100 * lo_mean_hi[1]:.1f}, "
                  f"{100 * lo_mean_hi[2]:.1f}] | {rate:.0f} | {params:.1f} |", flush=True)
            del bb


if __name__ == "__main__":
    main()
