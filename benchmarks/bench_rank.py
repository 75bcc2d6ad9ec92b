"""Do transferability scores pick the backbone that transfers best? Kendall tau between each score and the
accuracy each candidate actually reaches, and the time of ranking every candidate vs training every candidate.

Per dataset: ``transferkit.rank`` scores every candidate on the training split (cold feature cache, timed), then
``fit(strategy="linear-probe")`` reaches a test accuracy per candidate on the same split (its training features come
from the rank's cache). With ``--finetune-epochs E`` every candidate is also fine-tuned (all blocks, E epochs, no
early stopping) and timed: that is the cost ranking avoids. Candidates: every installed pack of the modality, cuts
of the smallest pack after intermediate blocks, and its random-init control.

With ``--sample-sizes 250,500,1000`` the ranking is also timed cold with ``max_samples`` at each size, and LogME's
tau is recomputed on ``--draws`` stratified subsamples of that size drawn from the same scored rows (their features
come from the full run's cache), against the same accuracies: what scoring fewer samples saves and what it costs.

Run: .venv/bin/python benchmarks/bench_rank.py --data fashion-mnist,digits,tweets,spam [--per-class 100]
     [--finetune-epochs 1 --finetune-data fashion-mnist] [--test 500] [--sample-sizes 250,500,1000 --draws 5]
Every number printed comes from this one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, weightedtau

import transferkit
from bench_verdict import subset
from transferkit.backbones import create_backbone
from transferkit.core.fastpath import cpu_name
from transferkit.core.features import extract_features
from transferkit.data import load_builtin
from transferkit.methods.transferability import METRICS
from transferkit.workflows.rank import _sample, score_features

CANDIDATES = {
    "image": [
        "pack:efficientnet-lite0",
        "pack:efficientnet-lite1",
        "pack:efficientnet-lite2",
        "pack:efficientnet-lite0?layer=4",
        "pack:efficientnet-lite0?layer=5",
        "pack:efficientnet-lite0?layer=6",
        "pack:efficientnet-lite0?init=random",
    ],
    "text": [
        "pack:minilm-l6",
        "pack:mpnet-base",
        "pack:minilm-l6?layer=2",
        "pack:minilm-l6?layer=4",
        "pack:mpnet-base?layer=6",
        "pack:minilm-l6?init=random",
    ],
}


def load(name: str, per_class: int, test: int) -> transferkit.Dataset:
    ds = load_builtin(name)
    return subset(ds, per_class, test) if name == "fashion-mnist" else ds


def taus(scores: list[float | None], accs: list[float]) -> tuple[float, float, int]:
    """(weighted tau, plain tau, candidates) over the candidates that have this score."""
    pairs = [(s, a) for s, a in zip(scores, accs, strict=True) if s is not None]
    if len(pairs) < 3:
        return float("nan"), float("nan"), len(pairs)
    x, y = np.array(pairs).T
    return float(weightedtau(x, y).statistic), float(kendalltau(x, y).statistic), len(pairs)


def run(name: str, args: argparse.Namespace) -> None:
    ds = load(name, args.per_class, args.test)
    specs = CANDIDATES[ds.modality]
    common = {"seed": 0, "per_class": args.per_class, "max_test": args.test}
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        ranked = transferkit.rank(ds, specs, max_samples=None, cache_dir=cache, progress=False, **common)
        rank_s = time.perf_counter() - t0
        accs, ft_accs, ft_s = {}, {}, {}
        for row in ranked.rows:
            if not row.usable:
                continue
            res = transferkit.fit(ds, row.spec, scratch=False, cache_dir=cache, progress=False, **common)
            accs[row.spec] = res.metrics["transfer"]["accuracy"]
            if args.finetune_epochs and name in args.finetune_data.split(","):
                t1 = time.perf_counter()
                res = transferkit.fit(
                    ds,
                    row.spec,
                    "finetune",
                    scratch=False,
                    cache_dir=cache,
                    progress=False,
                    epochs=args.finetune_epochs,
                    patience=None,
                    **common,
                )
                ft_s[row.spec] = time.perf_counter() - t1
                ft_accs[row.spec] = res.metrics["transfer"]["accuracy"]
        full = {}  # with --sample-sizes: the full run's features per candidate, read back from its cache
        for r in ranked.rows if args.sample_sizes else []:
            if r.usable:
                bb = create_backbone(r.spec)
                full[r.spec] = extract_features(bb, ds, ranked.indices, cache_dir=Path(cache), progress=False)[0]
    rows = [r for r in ranked.rows if r.usable]
    print(
        f"\n## {name}: {ranked.n_samples} training samples scored, {len(rows)} candidates, test accuracy on "
        f"up to {args.test} test items (seed 0)\n"
    )
    head = " | ".join(m for m in METRICS)
    tuned = bool(ft_s)
    ft_head = f" | fine-tune {args.finetune_epochs} ep acc % | fine-tune s" if tuned else ""
    print(f"| candidate | {head} | probe acc %{ft_head} | forward s |")
    print("|---" * (3 + len(METRICS) + (2 if tuned else 0)) + "|")
    for r in rows:
        cells = " | ".join("n/a" if r.scores[m] is None else f"{r.scores[m]:.4f}" for m in METRICS)
        ft = f" | {100 * ft_accs[r.spec]:.1f} | {ft_s[r.spec]:.0f}" if tuned else ""
        print(f"| {r.spec} | {cells} | {100 * accs[r.spec]:.1f}{ft} | {r.extract_s:.1f} |")
    for target, label in ((accs, "linear-probe accuracy"), (ft_accs, "fine-tuned accuracy")):
        if not target:
            continue
        print(f"\nKendall tau of each score vs {label} (weighted / plain; all candidates; pretrained only):\n")
        for m in METRICS:
            scores = [r.scores[m] for r in rows]
            w, k, n = taus(scores, [target[r.spec] for r in rows])
            pre = [r for r in rows if not r.control]
            wp, kp, npre = taus([r.scores[m] for r in pre], [target[r.spec] for r in pre])
            print(f"- {m}: {w:+.2f} / {k:+.2f} over {n}; {wp:+.2f} / {kp:+.2f} over {npre}")
    best = max(accs, key=accs.get)
    print(
        f"\nrecommended by LogME: {ranked.recommended} (probe {100 * accs[ranked.recommended]:.1f} %); "
        f"best probe: {best} ({100 * accs[best]:.1f} %); random control last by LogME: "
        f"{ranked.ordered('logme')[-1].endswith('init=random')}"
    )
    print(f"ranking all candidates (cold, wall): {rank_s:.0f} s")
    if ft_s:
        total = sum(ft_s.values())
        print(
            f"fine-tuning all candidates for {args.finetune_epochs} epoch(s): {total:.0f} s = "
            f"{total / rank_s:.1f}x the ranking; at the default 10 epochs (measured time x "
            f"{10 / args.finetune_epochs:g}): {10 / args.finetune_epochs * total / rank_s:.0f}x"
        )
    if args.sample_sizes:
        subsample_study(ds, ranked, full, accs, ft_accs, sum(ft_s.values()) / (args.finetune_epochs or 1), args)


def subsample_study(ds, ranked, full, accs, ft_accs, ft_epoch_s, args) -> None:
    """Cold ranking time at each ``max_samples``, and LogME's tau over ``draws`` subsamples of that size."""
    specs = list(full)
    pos = {int(i): k for k, i in enumerate(ranked.indices)}
    y_all = ds.targets[np.asarray(ranked.indices)]
    full_best = ranked.ordered("logme", controls=False)[0]
    print(
        f"\n### {ds.name}: scoring fewer samples (LogME; {args.draws} stratified draws per size; the full run "
        f"scored {ranked.n_samples})\n"
    )
    cols = "| scored | rank all, cold s | fine-tune epoch / rank | at 10 epochs | tau vs probe (mean, min) |"
    cols += " tau vs fine-tuned (mean, min) |" if ft_accs else ""
    cols += " same pick as full | control last |"
    print(cols)
    print("|---" * cols.count(" |") + "|")
    for size in [int(s) for s in args.sample_sizes.split(",")]:
        with tempfile.TemporaryDirectory() as cold:
            t0 = time.perf_counter()
            transferkit.rank(
                ds,
                specs,
                controls=False,
                max_samples=size,
                cache_dir=cold,
                progress=False,
                seed=0,
                per_class=args.per_class,
                max_test=args.test,
            )
            secs = time.perf_counter() - t0
        probe_t, ft_t, same, last = [], [], 0, 0
        for draw in range(args.draws):
            rows = np.array([pos[int(i)] for i in _sample(np.asarray(ranked.indices), ds.targets, size, 100 + draw)])
            logme = {s: score_features(full[s][rows], y_all[rows], None, ("logme",))[0]["logme"] for s in specs}
            probe_t.append(taus([logme[s] for s in specs], [accs[s] for s in specs])[0])
            if ft_accs:
                ft_t.append(taus([logme[s] for s in specs], [ft_accs[s] for s in specs])[0])
            order = sorted(specs, key=lambda s: -logme[s])
            same += [s for s in order if not s.endswith("init=random")][0] == full_best
            last += order[-1].endswith("init=random")
        ratio = ft_epoch_s / secs if ft_epoch_s else float("nan")
        cells = [
            f"{size}",
            f"{secs:.0f}",
            f"{ratio:.1f}x" if ft_epoch_s else "n/a",
            f"{10 * ratio:.0f}x" if ft_epoch_s else "n/a",
            f"{np.mean(probe_t):+.2f}, {np.min(probe_t):+.2f}",
        ]
        if ft_accs:
            cells.append(f"{np.mean(ft_t):+.2f}, {np.min(ft_t):+.2f}")
        cells += [f"{same}/{args.draws}", f"{last}/{args.draws}"]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist,digits,tweets,spam")
    ap.add_argument("--per-class", type=int, default=100, help="labelled examples per class (train + val)")
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--finetune-epochs", type=int, default=0)
    ap.add_argument("--finetune-data", default="fashion-mnist", help="datasets on which to fine-tune every candidate")
    ap.add_argument("--sample-sizes", default="", help="also rank with max_samples at each of these sizes")
    ap.add_argument("--draws", type=int, default=5, help="subsamples per size for LogME's tau")
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.data.split(","):
        run(name.strip(), args)


if __name__ == "__main__":
    main()
