"""Distillation with its control: teacher, the student on hard labels alone, and the distilled student (plus
unlabelled data the teacher labels), mean and 95 % CI over seeds, size and CPU throughput; and the epoch time of
distillation with cached teacher logits vs running the teacher live every epoch.

Pairs: Fashion-MNIST, EfficientNet-Lite0 (linear probe) -> scratch CNN at 32 px; tweets, mpnet-base (linear probe)
-> the first two layers of MiniLM-L6. Every number printed comes from this one run.

Run: .venv/bin/python benchmarks/bench_distill.py [--pairs image,text] [--seeds 3] [--per-class 100]
     [--unlabelled 2000] [--epochs 20,4] [--sweep]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

import transferkit
from transferkit.backbones import create_backbone
from transferkit.core.fastpath import cpu_name
from transferkit.core.features import extract_features
from transferkit.data import Dataset, load_builtin

PAIRS = {
    "image": ("fashion-mnist", "pack:efficientnet-lite0", "scratch:cnn?size=32", {}),
    "text": ("tweets", "pack:mpnet-base", "pack:minilm-l6?layer=2", {"backbone_lr_mult": 0.1, "lr": 1e-3}),
}


def pools(name: str, per_class: int, unlabelled: int, test: int) -> tuple[Dataset, list]:
    """Disjoint parts of one corpus: test items (its test split when it has one), a labelled pool of
    3 x per_class per class (seeds draw their labelled items from it), and unlabelled training items."""
    full = load_builtin(name)
    rng = np.random.default_rng(123)
    y = full.targets
    split = np.array(full.split) if full.split is not None else None
    order = rng.permutation(len(full))
    if split is not None:
        test_idx = [i for i in order if split[i] == "test"][:test]
        rest = [i for i in order if split[i] != "test"]
    else:
        test_idx, rest = list(order[:test]), list(order[test:])
    pool = []
    for c in range(len(full.classes)):
        pool += [i for i in rest if y[i] == c][: 3 * per_class]
    used = set(pool)
    extra = [full.items[int(i)] for i in rest if i not in used][:unlabelled]
    keep = sorted(pool + test_idx)
    is_test = set(test_idx)
    items = [full.items[int(i)] for i in keep]
    ds = Dataset(np.asarray(items) if full.modality == "image" else items, [full.labels[int(i)] for i in keep],
                 full.modality, name=name, split=["test" if i in is_test else "train" for i in keep])
    return ds, extra


def live_ratio(teacher: str, student_epoch_s: float, ds: Dataset, n: int) -> tuple[float, float]:
    """(seconds one teacher pass over n training items takes, (student epoch + that pass) / student epoch)."""
    bb = create_backbone(teacher)
    extract_features(bb, ds, range(min(16, n)), use_cache=False, progress=False)  # warm-up
    t0 = time.perf_counter()
    extract_features(bb, ds, range(n), use_cache=False, progress=False)
    teacher_s = time.perf_counter() - t0
    return teacher_s, (student_epoch_s + teacher_s) / student_epoch_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default="image,text")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--unlabelled", type=int, default=2000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--epochs", default="20,4", help="student epochs for the image and the text pair")
    ap.add_argument("--sweep", action="store_true", help="choose T and alpha per seed on validation")
    args = ap.parse_args()
    epochs = dict(zip(("image", "text"), (int(e) for e in args.epochs.split(",")), strict=True))
    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for pair in args.pairs.split(","):
        name, teacher, student, opts = PAIRS[pair]
        ds, extra = pools(name, args.per_class, args.unlabelled, args.test)
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            res = transferkit.distill(
                ds, teacher, student, seeds=args.seeds, epochs=epochs[pair],
                per_class=args.per_class, max_test=args.test, cache_dir=cache, progress=False, unlabelled=extra or None,
                student_options=opts or None, sweep=args.sweep,
            )
            wall = time.perf_counter() - t0
        print(f"\n## {name}: {teacher} (linear probe) -> {student}, {args.per_class} labelled per class, "
              f"{len(extra)} unlabelled, {epochs[pair]} student epochs, T={res.temperature}, alpha={res.alpha}, "
              f"{args.seeds} seeds ({wall:.0f} s)\n")
        print(res.table())
        print(f"\n{res.verdict_line()}")
        print(f"accuracy retained (distilled / teacher): {100 * res.retained():.1f} %")
        if res.swept():
            print(res.swept())
        s, t = res.sizes["student (distilled)"], res.sizes["teacher"]
        print(f"student vs teacher on this CPU: {s['samples_s'] / t['samples_s']:.1f}x the samples/s, "
              f"{t['parameters'] / s['parameters']:.1f}x fewer parameters")
        per_seed = [(r["seed"], round(100 * r["teacher"]["accuracy"], 1), round(100 * r["student (hard labels)"]
                     ["accuracy"], 1), round(100 * r["student (distilled)"]["accuracy"], 1)) for r in res.runs]
        print(f"per seed (seed, teacher, hard labels, distilled): {per_seed}")
        # epoch time: cached teacher logits (what distill does) vs the teacher run live on every batch
        n_train = int(0.8 * args.per_class * len(ds.classes))  # labelled training items per seed
        n_items = n_train + len(extra)
        epoch_s = statistics.median(r["student (distilled)"]["epoch_s"] for r in res.runs)
        teacher_s, ratio = live_ratio(teacher, epoch_s, ds if not extra else _pool(ds, extra), n_items)
        print(f"epoch time: {epoch_s:.1f} s with cached teacher logits (median epoch of the distilled runs, "
              f"validation included) vs {epoch_s + teacher_s:.1f} s with the teacher live over the {n_items} "
              f"training items ({teacher_s:.1f} s per pass): {ratio:.1f}x")


def _pool(ds: Dataset, extra: list) -> Dataset:
    items = list(ds.items) + list(extra)
    labels = list(ds.labels) + [ds.classes[i % len(ds.classes)] for i in range(len(extra))]
    return Dataset(np.asarray(items) if ds.modality == "image" else items, labels, ds.modality, name="pool")


if __name__ == "__main__":
    main()
