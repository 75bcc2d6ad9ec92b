"""One SetFit run with its defaults, as a user would write it: train on a CSV, score a test CSV.

Run: python benchmarks/peers/setfit_run.py MODEL_FOLDER train.csv test.csv
Prints one JSON line: {"accuracy": ..., "train_s": ..., "predict_s": ...}. Needs the bench extra (setfit).
"""

from __future__ import annotations

import csv
import json
import sys
import time


def read(path: str) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        csv.field_size_limit(2**31 - 1)  # long emails: over the default 128 KiB a field
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def main() -> None:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    folder, train_csv, test_csv, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    texts, labels = read(train_csv)
    test_texts, test_labels = read(test_csv)
    t0 = time.perf_counter()
    model = SetFitModel.from_pretrained(folder)
    trainer = Trainer(model=model, args=TrainingArguments(seed=seed),
                      train_dataset=Dataset.from_dict({"text": texts, "label": labels}))
    trainer.train()
    t1 = time.perf_counter()
    pred = model.predict(test_texts)
    acc = sum(str(p) == t for p, t in zip(pred, test_labels, strict=True)) / len(test_labels)
    print(json.dumps({"accuracy": acc, "train_s": t1 - t0, "predict_s": time.perf_counter() - t1}))


if __name__ == "__main__":
    main()
