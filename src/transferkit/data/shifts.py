"""Domain-shift pairs built reproducibly from the offline data: (labelled source, unlabelled target, labelled target
test), the target halves disjoint.

- ``spam-dated``: SpamAssassin's 2002 groups (easy-ham-1, hard-ham-1, spam-1) -> its later groups (easy-ham-2,
  spam-2): newer spam campaigns and mail, and a different spam share (15 % -> 50 %).
- ``tweets-topics``: airline customer tweets -> tweets on every other topic in the corpus (self-driving cars,
  Apple, DeflateGate, Coachella, ...), 3-class sentiment; the topic decides by a keyword rule.
- ``fashion-shifted``: Fashion-MNIST -> the same garments inverted, at lower contrast, in colour, over patches of
  natural photos (scikit-learn's two sample images), seeded.

``python benchmarks/domain_pairs.py OUT`` writes every pair as files the CLI takes
(``transferkit adapt --source OUT/<pair>/source.csv --target OUT/<pair>/target.csv --target-test ...``; image
pairs as folders of PNGs).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .builtin import load_builtin
from .dataset import Dataset

AIRLINE = re.compile(r"@(united|americanair|usairways|southwestair|jetblue|virginamerica|delta)\b|\bflight", re.I)
Pair = tuple[Dataset, list, Dataset]


def _split_target(items: list, labels: list, n_unlabelled: int, n_test: int, rng: np.random.Generator,
                  name: str, modality: str) -> tuple[list, Dataset]:
    order = rng.permutation(len(items))
    unl = [items[i] for i in order[:n_unlabelled]]
    test = order[n_unlabelled : n_unlabelled + n_test]
    test_items = [items[i] for i in test]
    return unl, Dataset(np.asarray(test_items) if modality == "image" else test_items,
                        [labels[i] for i in test], modality, name=f"{name} (target test)")


def _take(ds: Dataset, idx: np.ndarray, name: str) -> Dataset:
    items = ds.take(idx)
    return Dataset(np.asarray(items) if ds.modality == "image" else items, [ds.labels[i] for i in idx],
                   ds.modality, name=name)


def spam_dated(n_source: int = 2000, n_unlabelled: int = 1000, n_test: int = 1000, seed: int = 0) -> Pair:
    full = load_builtin("spam")
    rng = np.random.default_rng(seed)
    groups = np.asarray(full.groups)
    old = np.flatnonzero(np.isin(groups, ["easy-ham-1", "hard-ham-1", "spam-1"]))
    new = np.flatnonzero(np.isin(groups, ["easy-ham-2", "spam-2"]))
    source = _take(full, np.sort(rng.choice(old, min(n_source, len(old)), replace=False)), "spam 2002")
    unl, test = _split_target(full.take(new), [full.labels[i] for i in new], n_unlabelled, n_test, rng,
                              "spam later", "text")
    return source, unl, test


def tweets_topics(n_source: int = 3000, n_unlabelled: int = 2000, n_test: int = 1000, seed: int = 0) -> Pair:
    full = load_builtin("tweets")
    rng = np.random.default_rng(seed)
    airline = np.array([bool(AIRLINE.search(t)) for t in full.items])
    src_idx = np.flatnonzero(airline)
    other = np.flatnonzero(~airline)
    source = _take(full, np.sort(rng.choice(src_idx, n_source, replace=False)), "airline tweets")
    unl, test = _split_target(full.take(other), [full.labels[i] for i in other], n_unlabelled, n_test, rng,
                              "other tweets", "text")
    return source, unl, test


def shift_images(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Grey 28x28 garments -> inverted, lower-contrast, tinted RGB garments over natural-photo patches."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [p[::4, ::4].astype(np.float32) for p in load_sample_images().images]  # coarser texture at 28 px
    h, w = x.shape[1:3]
    out = np.empty((len(x), h, w, 3), dtype=np.uint8)
    for i, img in enumerate(x.astype(np.float32)):
        photo = photos[rng.integers(len(photos))]
        r, c = rng.integers(photo.shape[0] - h), rng.integers(photo.shape[1] - w)
        bg = photo[r : r + h, c : c + w]
        alpha = np.clip(img / 64.0, 0, 1)[..., None]  # where the garment is
        tint = rng.uniform(0.6, 1.0, 3)
        garment = (60 + 0.6 * (255 - img))[..., None] * tint  # inverted, contrast 0.6
        out[i] = np.clip(alpha * garment + (1 - alpha) * bg, 0, 255).astype(np.uint8)
    return out


def fashion_shifted(per_class: int = 300, n_unlabelled: int = 2000, n_test: int = 1000, seed: int = 0) -> Pair:
    full = load_builtin("fashion-mnist")
    rng = np.random.default_rng(seed)
    y = full.targets
    split = np.asarray(full.split)
    train = np.flatnonzero(split == "train")
    chosen = np.concatenate([rng.choice(train[y[train] == c], per_class, replace=False)
                             for c in range(len(full.classes))])
    source = _take(full, np.sort(chosen), "fashion-mnist")
    # the target comes from other images (the rest of train for unlabelled, the test split for the test)
    rest = np.setdiff1d(train, chosen)
    unl_idx = rng.choice(rest, n_unlabelled, replace=False)
    test_idx = rng.choice(np.flatnonzero(split == "test"), n_test, replace=False)
    unl = list(shift_images(full.items[unl_idx], seed + 1))
    test = Dataset(shift_images(full.items[test_idx], seed + 2), [full.labels[i] for i in test_idx], "image",
                   name="fashion-mnist shifted (target test)")
    return source, unl, test


PAIRS = {"spam-dated": spam_dated, "tweets-topics": tweets_topics, "fashion-shifted": fashion_shifted}


def write_pair(name: str, out: Path) -> None:
    """The pair as CSV files (texts) or PNG folders (images) under ``out/name``."""
    import csv

    source, unl, test = PAIRS[name]()
    root = out / name
    root.mkdir(parents=True, exist_ok=True)
    if source.modality == "text":
        for fname, rows in (("source.csv", zip(source.items, source.labels, strict=True)),
                            ("target.csv", ((t, None) for t in unl)),
                            ("target_test.csv", zip(test.items, test.labels, strict=True))):
            with open(root / fname, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["text", "label"] if fname != "target.csv" else ["text"])
                writer.writerows([t, lab] if lab is not None else [t] for t, lab in rows)
        return
    from PIL import Image

    for part, ds in (("source", source), ("target_test", test)):
        for i, (img, label) in enumerate(zip(ds.items, ds.labels, strict=True)):
            folder = root / part / re.sub(r"[^\w-]+", "_", label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:05d}.png")
    (root / "target").mkdir(exist_ok=True)
    for i, img in enumerate(unl):
        Image.fromarray(img).save(root / "target" / f"{i:05d}.png")

