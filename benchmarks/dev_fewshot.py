"""Choosing the few-shot text recipe on a development split, never on bench_peers.py's test set.

For each data set the 600 test texts of bench_peers.py (seed 1234) are set aside untouched; a second, disjoint set
of 600 (seed 4321) is the development test here, and the N labelled texts per class are drawn from what is left
with seeds 100, 101, ... (not bench_peers' seeds). Each variant is scored on the development set only.

Variants: the linear probe (C by stratified CV over the N labelled texts, as fit does with a given test set and few
labels); the contrastive encoder trained on all N labelled texts with the head's C chosen by CV on the tuned
features or fixed; and the number of pairs.

Run: .venv/bin/python benchmarks/dev_fewshot.py [--data tweets,spam] [--sizes 8,16] [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import fixed_test  # noqa: E402


def features(bb, texts: list[str], batch: int = 64) -> np.ndarray:
    return np.concatenate([bb.embed(texts[i : i + batch]).numpy() for i in range(0, len(texts), batch)])


def setfit(tr_texts: list[str], labels: list[str], train: np.ndarray, dev: np.ndarray, seed: int) -> float:
    """SetFit's accuracy on the development texts (benchmarks/peers/setfit_run.py, its own process)."""
    import json
    import subprocess
    import tempfile

    from bench_peers import write_csv
    from transferkit.backbones.packs import PACKS

    work = Path(tempfile.mkdtemp(prefix="dev-setfit-"))
    texts = {int(i): t for i, t in zip(train, tr_texts, strict=True)}
    from transferkit.data import load_builtin  # noqa: F401

    tr = write_csv(work / "train.csv", [texts[int(i)] for i in train], [labels[int(i)] for i in train])
    te = write_csv(work / "dev.csv", DEV_TEXTS, [labels[int(i)] for i in dev])
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "peers/setfit_run.py"),
                          str(PACKS["minilm-l6"].location()), str(tr), str(te), str(seed)],
                         capture_output=True, text=True, check=True, cwd=work).stdout
    return float(json.loads(out.strip().splitlines()[-1])["accuracy"])


DEV_TEXTS: list[str] = []


def main() -> None:
    from transferkit import create_backbone
    from transferkit.core.heads import fit_linear_probe_cv
    from transferkit.data import load_builtin
    from transferkit.strategies.base import RunContext
    from transferkit.strategies.contrastive import ContrastiveConfig, _trainable, make_pairs, train_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="tweets,spam")
    ap.add_argument("--sizes", default="8,16")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pairs", default="all", help="pairs_per_example values to try (all: every distinct pair)")
    ap.add_argument("--setfit", action="store_true", help="SetFit (defaults) on the same texts too")
    ap.add_argument("--wise", default="", help="weight interpolations to try, e.g. 0.5,0.75: the encoder at "
                    "(1 - a) * pretrained + a * tuned (WiSE-FT), its own probe")
    ap.add_argument("--fixed-c", action="store_true", help="also the tuned probe with C fixed at 0.1 and 1")
    ap.add_argument("--ensemble", action="store_true",
                    help="also the mean of the plain probe's and the tuned probe's probabilities (two encoders)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    for name in args.data.split(","):
        ds = load_builtin(name)
        _, pool = fixed_test(ds, 600)
        rng = np.random.default_rng(4321)
        dev = np.sort(rng.choice(pool, size=600, replace=False))
        pool = np.setdiff1d(pool, dev)
        texts = [str(t) for t in ds.items]
        dev_texts, y_dev = [texts[i] for i in dev], ds.targets[dev]
        DEV_TEXTS[:] = dev_texts
        for size in map(int, args.sizes.split(",")):
            scores: dict[str, list[float]] = {}
            secs: dict[str, list[float]] = {}
            for seed in range(100, 100 + args.seeds):
                r = np.random.default_rng(seed)
                y = ds.targets[pool]
                train = np.concatenate([r.choice(pool[y == c], size=size, replace=False)
                                        for c in range(len(ds.classes))])
                tr_texts, y_tr = [texts[i] for i in train], ds.targets[train]
                bb = create_backbone("pack:minilm-l6")
                bb.freeze()
                f_tr, f_dev = features(bb, tr_texts), features(bb, dev_texts)
                folds = min(5, size)
                fit = fit_linear_probe_cv(f_tr, y_tr, len(ds.classes), folds=folds, seed=seed)
                plain_proba = fit.head(torch.from_numpy(f_dev)).softmax(1).detach().numpy()
                acc = float((plain_proba.argmax(1) == y_dev).mean())
                scores.setdefault("probe (CV C)", []).append(acc)
                start = {k: v.detach().clone() for k, v in bb.state_dict().items()}
                for per in [None if p == "all" else int(p) for p in args.pairs.split(",")]:
                    bb = create_backbone("pack:minilm-l6")
                    cfg = ContrastiveConfig(pairs_per_example=per)
                    t0 = time.perf_counter()
                    pairs, targets = make_pairs(y_tr, per, cfg.max_pairs, seed)
                    torch.manual_seed(seed)
                    params, lr, _ = _trainable(bb, cfg)
                    ctx = RunContext(seed=seed, cache_dir=None, use_cache=False, progress=False)
                    train_pairs(bb, tr_texts, pairs, targets, params, lr, cfg, ctx)
                    secs.setdefault(f"contrastive {per or 'all'}/ex", []).append(time.perf_counter() - t0)
                    g_tr, g_dev = features(bb, tr_texts), features(bb, dev_texts)
                    fit = fit_linear_probe_cv(g_tr, y_tr, len(ds.classes), folds=folds, seed=seed)
                    tuned_proba = fit.head(torch.from_numpy(g_dev)).softmax(1).detach().numpy()
                    acc = float((tuned_proba.argmax(1) == y_dev).mean())
                    scores.setdefault(f"contrastive {per or 'all'}/ex, CV C ({len(pairs)} pairs)", []).append(acc)
                    if args.ensemble:
                        acc = float((((plain_proba + tuned_proba) / 2).argmax(1) == y_dev).mean())
                        scores.setdefault(f"contrastive {per or 'all'}/ex + probe, mean proba", []).append(acc)
                    tuned = {k: v.detach().clone() for k, v in bb.state_dict().items()}
                    for a in [float(x) for x in args.wise.split(",") if x]:
                        bb.load_state_dict({k: (1 - a) * start[k] + a * tuned[k] if start[k].is_floating_point()
                                            else tuned[k] for k in tuned})
                        bb.eval()
                        h_tr, h_dev = features(bb, tr_texts), features(bb, dev_texts)
                        fit = fit_linear_probe_cv(h_tr, y_tr, len(ds.classes), folds=folds, seed=seed)
                        acc = float((fit.head(torch.from_numpy(h_dev)).argmax(1).numpy() == y_dev).mean())
                        scores.setdefault(f"contrastive {per or 'all'}/ex, WiSE a={a:g}", []).append(acc)
                    bb.load_state_dict(tuned)
                    for c in (0.1, 1.0) if args.fixed_c else ():
                        fit = fit_linear_probe_cv(g_tr, y_tr, len(ds.classes), c_grid=(c,), folds=2, seed=seed)
                        acc = float((fit.head(torch.from_numpy(g_dev)).argmax(1).numpy() == y_dev).mean())
                        scores.setdefault(f"contrastive {per or 'all'}/ex, C={c}", []).append(acc)
                    from sklearn.linear_model import LogisticRegression

                    lr_head = LogisticRegression(max_iter=1000).fit(g_tr, y_tr)  # SetFit's head, as it fits it
                    acc = float((lr_head.predict(g_dev) == y_dev).mean())
                    scores.setdefault(f"contrastive {per or 'all'}/ex, sklearn LR", []).append(acc)
                if args.setfit:
                    scores.setdefault("SetFit (defaults)", []).append(setfit(tr_texts, ds.labels, train, dev, seed))
                print(f"{name} {size}/class seed {seed}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in scores.items()),
                      flush=True)
            for k, v in scores.items():
                print(f"| {name} | {size} | {k} | {100 * np.mean(v):.1f} ± {100 * np.std(v) / np.sqrt(len(v)):.1f} |")
            for k, v in secs.items():
                print(f"| {name} | {size} | {k} train s | {np.mean(v):.1f} |", flush=True)


if __name__ == "__main__":
    main()
