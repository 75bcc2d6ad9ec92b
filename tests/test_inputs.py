"""Data as users have it: train/ val/ test/ folders, a ``split`` column, ``--test`` / ``--val``, DataFrames, Hugging
Face datasets and arrays; a given test set is used for no choice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import transferkit
from transferkit.data.dataset import make_splits
from transferkit.data.sources import load_data
from transferkit.data.spec import DataSpec
from transferkit.errors import DataError

from .conftest import TIMM_SPEC, make_image_folder, make_texts, write_csv
from .test_cli import assert_clean_failure, invoke


def _texts(n: int, seed: int = 0) -> list[dict[str, str]]:
    texts, labels = make_texts(n, seed=seed)
    return [{"text": t, "label": lab} for t, lab in zip(texts, labels, strict=True)]


# -------------------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("val_name", ["val", "valid", "validation"])
def test_train_val_test_folders_are_used_as_given(val_name, tmp_path):
    root = tmp_path / "photos"
    make_image_folder(root / "train", per_class=6, seed=0)
    make_image_folder(root / val_name, per_class=2, seed=1)
    make_image_folder(root / "test", per_class=3, seed=2)
    ds = load_data(root)
    assert ds.layout == f"train/, {val_name}/, test/ folders"
    s = make_splits(ds, seed=5)
    assert s.given == ("val", "test") and s.to_dict() == {"train": 18, "val": 6, "test": 9, "given": ["val", "test"]}
    assert {ds.items[i].split("/")[-3] for i in s.val} == {val_name}
    assert {ds.items[i].split("/")[-3] for i in s.test} == {"test"}
    assert make_splits(ds, seed=9).test.tolist() == s.test.tolist()  # no seed draws a given part


def test_a_train_and_test_layout_splits_validation_off_training(tmp_path):
    root = tmp_path / "photos"
    make_image_folder(root / "train", per_class=8)
    make_image_folder(root / "test", per_class=2, seed=3)
    s = make_splits(load_data(root))
    assert s.given == ("test",) and len(s.test) == 6 and len(s.train) + len(s.val) == 24


def test_classes_named_like_splits_are_classes(tmp_path):
    root = tmp_path / "odd"
    make_image_folder(root, per_class=4, classes={"train": (200, 0, 0), "test": (0, 200, 0)})
    ds = load_data(root)
    assert ds.classes == ["test", "train"] and ds.split is None and ds.layout == ""


def test_a_split_column(tmp_path):
    rows = [{**r, "split": "train"} for r in _texts(10)] + [{**r, "split": "valid"} for r in _texts(3, 1)]
    rows += [{**r, "split": "Test"} for r in _texts(4, 2)]
    ds = load_data(write_csv(tmp_path / "s.csv", rows))
    s = make_splits(ds)
    assert s.given == ("val", "test") and (len(s.train), len(s.val), len(s.test)) == (20, 6, 8)
    bad = write_csv(tmp_path / "bad.csv", [{**rows[0], "split": "holdout"}, *rows[1:]])
    with pytest.raises(DataError, match=r"bad.csv, line 2: split 'holdout' is not one of train, val"):
        load_data(bad)
    only_test = write_csv(tmp_path / "t.csv", [{**r, "split": "test"} for r in rows])
    with pytest.raises(DataError, match="marks no row 'train'"):
        load_data(only_test)


# -------------------------------------------------------------------------------------------- --test / --val


@pytest.fixture
def text_parts(tmp_path) -> dict[str, Path]:
    return {
        "train": write_csv(tmp_path / "train.csv", _texts(12)),
        "val": write_csv(tmp_path / "val.csv", _texts(3, seed=1)),
        "test": write_csv(tmp_path / "test.csv", _texts(5, seed=2)),
    }


def test_given_test_and_val_files_are_used_as_they_are(text_parts):
    ds = DataSpec(test=text_parts["test"], val=text_parts["val"]).load(text_parts["train"])
    s = make_splits(ds, per_class=4)  # few-shot: N per class of the training data, the given parts untouched
    assert (len(s.train), len(s.val), len(s.test)) == (8, 6, 10) and s.given == ("val", "test")
    assert [ds.items[i] for i in s.test] == [r["text"] for r in _texts(5, seed=2)]


def test_a_given_test_set_plays_no_part_in_any_choice(text_parts, bert_dir, tmp_path):
    """Flipping every label of the given test file changes the test metrics and nothing else."""
    flipped = write_csv(tmp_path / "flipped.csv",
                        [{**r, "label": {"pos": "neg", "neg": "pos"}[r["label"]]} for r in _texts(5, seed=2)])
    runs = {}
    for name, test in (("right", text_parts["test"]), ("flipped", flipped)):
        runs[name] = transferkit.fit(str(text_parts["train"]), f"hf:{bert_dir}", test=str(test), out=tmp_path / name,
                                     scratch=False, progress=False)
    a, b = (runs[k].record for k in ("right", "flipped"))
    assert a["strategy_info"]["chosen"] == b["strategy_info"]["chosen"]
    assert a["strategy_info"]["val_accuracy"] == b["strategy_info"]["val_accuracy"]
    assert (tmp_path / "right/model/head.safetensors").read_bytes() == (
        tmp_path / "flipped/model/head.safetensors").read_bytes()
    assert a["metrics"]["transfer"]["accuracy"] + b["metrics"]["transfer"]["accuracy"] == pytest.approx(1.0)
    assert a["data"]["splits"]["given"] == ["test"] and "Splits as given (--test" in (
        tmp_path / "right/report.md").read_text()


def test_given_parts_are_checked(text_parts, tmp_path, image_folder):
    unseen = write_csv(tmp_path / "unseen.csv", [{"text": "the odd one", "label": "neutral"}, *_texts(2)])
    with pytest.raises(DataError, match=r"class\(es\) 'neutral' that the training data does not have"):
        DataSpec(test=unseen).load(text_parts["train"])
    with pytest.raises(DataError, match="already has its own test split"):
        DataSpec(test=text_parts["test"]).load("fashion-mnist-small")
    with pytest.raises(DataError, match="holds images"):
        DataSpec(test=text_parts["test"]).load(image_folder)
    r = invoke("fit", text_parts["train"], "--test", tmp_path / "missing.csv", "--out", tmp_path / "o")
    assert_clean_failure(r, "missing.csv")
    assert not (tmp_path / "o").exists()


def test_the_cli_takes_test_and_val(text_parts, bert_dir, tmp_path):
    out = tmp_path / "cli"
    r = invoke("fit", text_parts["train"], "--backbone", f"hf:{bert_dir}", "--test", text_parts["test"], "--val",
               text_parts["val"], "--no-scratch", "--quiet", "--out", out)
    assert r.exit_code == 0, (r.output, r.exception)
    assert "Splits as given (--val" in r.output
    record = json.loads((out / "run.json").read_text())
    assert record["data"]["splits"] == {"train": 24, "val": 6, "test": 10, "given": ["val", "test"]}


# -------------------------------------------------------------------------------------------- Python objects


def test_a_dataframe(tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(_texts(8))
    ds = load_data(df)
    assert ds.modality == "text" and len(ds) == 16 and ds.classes == ["neg", "pos"]
    df.loc[3, "text"] = None
    with pytest.raises(DataError, match=r"the DataFrame, row 4: column 'text' is empty"):
        load_data(df)
    split = pd.DataFrame([{**r, "split": "test" if i % 4 < 2 else "train"} for i, r in enumerate(_texts(8))])
    assert make_splits(load_data(split)).given == ("test",)


def test_hugging_face_datasets_and_their_splits():
    datasets = pytest.importorskip("datasets")
    texts, labels = make_texts(8)
    feats = datasets.Features({"text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["neg", "pos"])})
    train = datasets.Dataset.from_dict({"text": texts, "label": [int(x == "pos") for x in labels]}, features=feats)
    ds = load_data(train)
    assert ds.labels == labels  # class-label integers read as their names
    texts2, labels2 = make_texts(3, seed=4)
    test = datasets.Dataset.from_dict({"text": texts2, "label": [int(x == "pos") for x in labels2]}, features=feats)
    both = load_data(datasets.DatasetDict({"train": train, "test": test}))
    s = make_splits(both)
    assert s.given == ("test",) and [both.items[i] for i in s.test] == texts2
    with pytest.raises(DataError, match="no 'train' split"):
        load_data(datasets.DatasetDict({"test": test}))


def test_image_arrays_as_a_tuple_and_urls_refused(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (12, 16, 16, 3), dtype=np.uint8)
    ds = load_data((x, ["a", "b"] * 6))
    assert ds.modality == "image" and len(ds) == 12
    csv = write_csv(tmp_path / "urls.csv", [{"image": "https://example.com/cat.jpg", "label": "cat"}])
    with pytest.raises(DataError, match=r"urls.csv, line 2: image https://example.com/cat.jpg is a URL"):
        load_data(csv)


def test_reading_files_imports_neither_pandas_nor_datasets(text_parts):
    code = ("import sys; from transferkit.data.spec import DataSpec; "
            f"DataSpec(test={str(text_parts['test'])!r}).load({str(text_parts['train'])!r}); "
            "print([m for m in ('pandas', 'datasets') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_fit_on_a_folder_layout_end_to_end(tmp_path):
    root = tmp_path / "photos"
    make_image_folder(root / "train", per_class=6)
    make_image_folder(root / "test", per_class=2, seed=7)
    res = transferkit.fit(str(root), TIMM_SPEC, scratch=False, progress=False)
    assert res.record["data"]["layout"] == "train/, test/ folders"
    assert res.record["data"]["splits"]["test"] == 6


def test_with_a_given_test_set_and_few_labels_c_is_chosen_by_cross_validation(text_parts, bert_dir, tmp_path):
    spec = f"hf:{bert_dir}"
    cv = transferkit.fit(str(text_parts["train"]), spec, test=str(text_parts["test"]), scratch=False, progress=False)
    info = cv.record["strategy_info"]
    assert info["selection"].startswith("5-fold cross-validation") and info["chosen"]["folds"] == 5
    held = transferkit.fit(str(text_parts["train"]), spec, test=str(text_parts["test"]), val=str(text_parts["val"]),
                           scratch=False, progress=False)
    assert held.record["strategy_info"]["selection"] == "the validation split"


def test_cross_validated_probe_uses_every_row_once_out_of_fold():
    from transferkit.core.heads import fit_linear_probe_cv

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 12)
    x = rng.normal(size=(36, 8)) + 3 * np.eye(3)[y] @ rng.normal(size=(3, 8))
    fit = fit_linear_probe_cv(x, y, 3, folds=4)
    assert fit.val_logits is not None and fit.val_logits.shape == (36, 3)
    assert fit.val_accuracy == pytest.approx(float((fit.val_logits.argmax(1) == y).mean()))
    assert fit.val_accuracy > 0.8 and fit.chosen["folds"] == 4
    import torch

    with torch.no_grad():  # the final head is fitted on every row
        assert float((fit.head(torch.from_numpy(x).float()).argmax(1).numpy() == y).mean()) >= fit.val_accuracy
