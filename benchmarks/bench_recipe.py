"""The widely copied feature-extraction recipe as a plain-PyTorch peer, against transferkit on the same data.

The recipe: a frozen backbone inside the model, global average pooling, Dense(1024, relu), Dense(classes, softmax),
Adam 1e-3, batch 128, validation split 0.1, early stopping on validation loss with patience 3, up to 40 epochs.
The frozen backbone therefore runs again over every image in every epoch. Here the backbone is the same as ours
(EfficientNet-Lite0 from the offline pack, eval mode, same preprocessing at 224 px) and the data is Fashion-MNIST
with the same seeded train / validation (10 %) / test split for both.

transferkit runs ``fit(strategy="linear-probe")`` (logistic regression) and ``head="mlp"``, with a cold feature
cache (empty folder) and then warm (the same folder again). Every number printed comes from this one run.

Run: .venv/bin/python benchmarks/bench_recipe.py [--per-class 100] [--test 1000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import transferkit
from bench_verdict import subset
from transferkit.backbones import create_backbone
from transferkit.core.fastpath import cpu_name
from transferkit.data import Dataset, load_builtin, make_splits


class RecipeModel(nn.Module):
    """Frozen backbone -> global average pooling -> Dense(1024, relu) -> Dense(classes)."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.backbone = create_backbone("pack:efficientnet-lite0")
        self.backbone.requires_grad_(False)
        self.dense = nn.Sequential(nn.Linear(self.backbone.feature_dim, 1024), nn.ReLU(), nn.Linear(1024, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.backbone.eval()  # frozen: BatchNorm in inference mode, as Keras does for trainable=False
        with torch.no_grad():
            f = self.backbone(x)  # forward_features + global average pooling
        return self.dense(f)


def recipe(ds: Dataset, seed: int, val_size: float) -> tuple[float, float, int]:
    """Train and test the recipe; returns (test accuracy, seconds, epochs run)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    splits = make_splits(ds, seed=seed, val_size=val_size)
    model = RecipeModel(len(ds.classes))
    prep = model.backbone.prepare
    opt = torch.optim.Adam(model.dense.parameters(), lr=1e-3)
    y = torch.from_numpy(ds.targets)
    train, val = splits.train, splits.val
    best_loss, bad, epochs = float("inf"), 0, 0
    gen = torch.Generator().manual_seed(seed)
    for _ in range(40):
        epochs += 1
        model.dense.train()
        for idx in torch.randperm(len(train), generator=gen).split(128):
            batch = train[idx.numpy()]
            loss = nn.functional.cross_entropy(model(prep(ds.take(batch))), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.dense.eval()
        with torch.no_grad():
            val_loss = sum(
                nn.functional.cross_entropy(model(prep(ds.take(b))), y[b], reduction="sum").item()
                for b in np.array_split(val, max(1, len(val) // 128))
            ) / len(val)
        if val_loss < best_loss:
            best_loss, bad = val_loss, 0
        else:
            bad += 1
            if bad >= 3:  # Keras EarlyStopping(patience=3), weights of the last epoch kept (its default)
                break
    with torch.no_grad():
        parts = np.array_split(splits.test, max(1, len(splits.test) // 128))
        pred = torch.cat([model(prep(ds.take(b))).argmax(1) for b in parts])
    acc = float((pred == y[splits.test]).float().mean())
    return acc, time.perf_counter() - t0, epochs


def ours(ds: Dataset, seed: int, val_size: float, cache: Path, head: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    res = transferkit.fit(ds, "pack:efficientnet-lite0", seed=seed, val_size=val_size, scratch=False,
                          cache_dir=cache, progress=False, head=head)
    return res.metrics["transfer"]["accuracy"], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=100, help="labelled training images per class")
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_name()}, torch {torch.__version__}, {threads} threads\n")
    full = subset(load_builtin("fashion-mnist"), args.per_class, args.test)
    train_pool = [i for i, s in enumerate(full.split) if s == "train"]
    rows: dict[str, list[tuple[float, float]]] = {k: [] for k in ("recipe", "probe cold", "probe warm", "mlp warm")}
    epochs = []
    for seed in range(args.seeds):
        # per seed: per_class labelled images per class from the pool, plus the fixed test images
        rng = np.random.default_rng(seed)
        keep = []
        for c in range(len(full.classes)):
            keep += list(rng.choice([i for i in train_pool if full.targets[i] == c], args.per_class, replace=False))
        keep += [i for i, s in enumerate(full.split) if s == "test"]
        keep = np.sort(np.array(keep))
        ds = Dataset(np.asarray(full.items)[keep], [full.labels[i] for i in keep], "image", name="fashion-mnist",
                     split=[full.split[i] for i in keep])
        with tempfile.TemporaryDirectory() as cache:
            rows["probe cold"].append(ours(ds, seed, 0.1, Path(cache), "linear"))
            rows["probe warm"].append(ours(ds, seed, 0.1, Path(cache), "linear"))
            rows["mlp warm"].append(ours(ds, seed, 0.1, Path(cache), "mlp"))
        acc, secs, ep = recipe(ds, seed, 0.1)
        rows["recipe"].append((acc, secs))
        epochs.append(ep)
        print(f"seed {seed}: " + ", ".join(f"{k} {100 * v[-1][0]:.1f} % in {v[-1][1]:.1f} s" for k, v in rows.items())
              + f" (recipe epochs: {ep})", flush=True)
    print(f"\nFashion-MNIST, {args.per_class} labelled per class (10 % of them validation), {args.test} test, "
          f"EfficientNet-Lite0 at 224 px, seeds 0..{args.seeds - 1}\n")
    print("| run | test accuracy % (mean) | wall s (median) | recipe time / this |")
    print("|---|---|---|---|")
    base = statistics.median(s for _, s in rows["recipe"])
    for k, v in rows.items():
        med = statistics.median(s for _, s in v)
        print(f"| {k} | {100 * statistics.mean(a for a, _ in v):.1f} | {med:.1f} | {base / med:.1f}x |")
    print(f"\nrecipe epochs before early stopping: {epochs}")


if __name__ == "__main__":
    main()
