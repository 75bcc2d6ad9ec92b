"""Choosing the image recipe's test-time augmentation and training augmentation on a development split.

For each image set, bench_peers.py's test images (seed 1234) are set aside untouched; a disjoint development set
(seed 4321: 600 images, or fewer where the set is small) is drawn from what is left, and N training images per
class are drawn from the rest with seeds 100, 101, ... (not bench_peers' seeds).
Every variant is scored on the development images only.

On EfficientNet-Lite0's frozen features, a linear probe (C by 5-fold cross-validation over the training images):
- plain: the probe as fit runs it;
- +TTA: each development image's logits averaged with its mirror image's (what ``tta=true`` does at predict);
- mirror-trained: the training features of each image and of its mirror image (same C as plain);
- augment-trained: the training features plus one draw of the fine-tune's training augmentation per image
  (random resized crop + flip, the backbone's ``prepare(augment=True)``; same C as plain).

Run: .venv/bin/python benchmarks/dev_tta.py [--data fashion-mnist,digits] [--size 50] [--seeds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    from transferkit import create_backbone
    from transferkit.core.heads import fit_linear_probe_cv
    from transferkit.data import load_builtin

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist,digits")
    ap.add_argument("--size", type=int, default=50, help="training images per class")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--backbone", default="pack:efficientnet-lite0")
    ap.add_argument("--test", type=int, default=600, help="bench_peers' test-set size (set aside)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    bb = create_backbone(args.backbone).build()
    bb.eval()

    @torch.inference_mode()
    def feats(items: list, mode: str, seed: int = 0) -> np.ndarray:
        out = []
        gen = torch.Generator().manual_seed(seed)
        for i in range(0, len(items), 32):
            x = bb.prepare(items[i : i + 32], augment=mode == "augment", generator=gen)
            out.append(bb(x.flip(-1) if mode == "mirror" else x).float().numpy())
        return np.concatenate(out)

    def logits(head: torch.nn.Module, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return head(torch.from_numpy(x).float()).numpy()

    variants = ("plain", "+TTA", "mirror-trained", "mirror-trained +TTA", "augment-trained", "augment-trained +TTA")
    print(f"| data | per class | {' | '.join(variants)} |")
    print("|---|---|" + "---|" * len(variants))
    for name in args.data.split(","):
        t0 = time.perf_counter()
        ds = load_builtin(name)
        split = np.asarray(ds.split or ["train"] * len(ds))
        official_test = np.flatnonzero(split == "test")
        rng = np.random.default_rng(1234)  # bench_peers' image test set, set aside
        test = rng.choice(official_test if len(official_test) else np.arange(len(ds)),
                          size=min(args.test, len(ds) // 3), replace=False)
        pool = np.setdiff1d(np.arange(len(ds)), test)
        if len(official_test):
            pool = np.intersect1d(pool, np.flatnonzero(split == "train"))
        k = len(ds.classes)  # a small set (digits) keeps half again the training draw's size out of the dev set
        dev_size = min(600, len(pool) - (3 * args.size * k) // 2)
        dev = np.sort(np.random.default_rng(4321).choice(pool, size=dev_size, replace=False))
        pool = np.setdiff1d(pool, dev)
        y_dev = ds.targets[dev]
        dev_items = [ds.items[int(i)] for i in dev]
        x_dev, x_dev_m = feats(dev_items, "plain"), feats(dev_items, "mirror")
        acc: dict[str, list[float]] = {v: [] for v in variants}
        for seed in range(100, 100 + args.seeds):
            r = np.random.default_rng(seed)
            y_pool = ds.targets[pool]
            train = np.concatenate([r.choice(pool[y_pool == c], size=args.size, replace=False)
                                    for c in range(len(ds.classes))])
            y = ds.targets[train]
            items = [ds.items[int(i)] for i in train]
            x, x_m, x_a = feats(items, "plain"), feats(items, "mirror"), feats(items, "augment", seed)
            plain = fit_linear_probe_cv(x, y, k, folds=5, seed=seed)
            c = (plain.chosen["C"],)
            heads = {"plain": plain.head,
                     "mirror-trained": fit_linear_probe_cv(np.concatenate([x, x_m]), np.concatenate([y, y]), k,
                                                           c_grid=c, folds=2, seed=seed).head,
                     "augment-trained": fit_linear_probe_cv(np.concatenate([x, x_a]), np.concatenate([y, y]), k,
                                                            c_grid=c, folds=2, seed=seed).head}
            for label, head in heads.items():
                lo, lo_m = logits(head, x_dev), logits(head, x_dev_m)
                acc[label].append(float((lo.argmax(1) == y_dev).mean()))
                tta = "+TTA" if label == "plain" else f"{label} +TTA"
                acc[tta].append(float(((lo + lo_m).argmax(1) == y_dev).mean()))
            diffs = {v: 100 * (acc[v][-1] - acc["plain"][-1]) for v in variants[1:]}
            print(f"<!-- {name} seed {seed}: plain {100 * acc['plain'][-1]:.1f} %, C={c[0]:g}; "
                  + "; ".join(f"{v} {d:+.1f}" for v, d in diffs.items()) + " -->", flush=True)
        cells = []
        for v in variants:
            a = 100 * np.asarray(acc[v])
            d = a - 100 * np.asarray(acc["plain"])
            se = a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else float("nan")
            extra = "" if v == "plain" else f" (paired {d.mean():+.1f} ± {d.std(ddof=1) / np.sqrt(len(d)):.1f})"
            cells.append(f"{a.mean():.1f} ± {se:.1f}{extra}")
        print(f"| {name} | {args.size} | {' | '.join(cells)} |", flush=True)
        print(f"<!-- {name}: {time.perf_counter() - t0:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
