"""Rebuild src/transferkit/data/embedded/fashion-mnist-small.npz from Debian's dataset-fashion-mnist.

100 train + 200 test images per class, drawn with a fixed seed from the official train/test splits.
Fashion-MNIST is (c) Zalando SE, MIT licence.
"""

from pathlib import Path

import numpy as np

from transferkit.data.builtin import FASHION_CLASSES, FASHION_DIR, _fashion_load

OUT = Path(__file__).resolve().parents[1] / "src/transferkit/data/embedded/fashion-mnist-small.npz"


def main() -> None:
    ds = _fashion_load(FASHION_DIR)
    rng = np.random.default_rng(20261129)
    y, split = ds.targets, np.array(ds.split)
    idx, parts = [], []
    for part, n in (("train", 100), ("test", 200)):
        for c in range(10):
            members = np.where((y == c) & (split == part))[0]
            idx += list(np.sort(rng.choice(members, n, replace=False)))
            parts += [part] * n
    idx = np.array(idx)
    # labels as Fashion-MNIST numbers them (FASHION_CLASSES), not as ds.targets does (sorted names)
    labels = np.array([FASHION_CLASSES.index(ds.labels[i]) for i in idx], dtype=np.uint8)
    np.savez_compressed(OUT, images=np.asarray(ds.items)[idx], labels=labels, split=np.array(parts))
    print(f"wrote {OUT} ({len(idx)} images)")


if __name__ == "__main__":
    main()
