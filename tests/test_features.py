"""Feature extraction and the on-disk feature cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from transferkit import TransferkitError, create_backbone, from_arrays, from_folder
from transferkit.core.features import cache_key, default_cache_dir, extract_features

from .conftest import TIMM_SPEC, make_bert_folder, make_image_folder, make_texts, write_png


def _cache_files(cache: Path) -> list[Path]:
    return sorted((cache / "features").glob("*")) if (cache / "features").exists() else []


def test_default_cache_dir_follows_the_environment(cache_dir):
    assert default_cache_dir() == cache_dir


def test_extraction_shape_and_cache_round_trip(timm_backbone, image_folder, cache_dir):
    ds = from_folder(image_folder)
    idx = [0, 3, 9, 17, 23]
    feats, cached = extract_features(timm_backbone, ds, idx, batch_size=2, progress=False)
    assert feats.shape == (5, timm_backbone.feature_dim) and feats.dtype == np.float32
    assert cached is False and np.isfinite(feats).all()
    files = _cache_files(cache_dir)
    assert len(files) == 1 and files[0].suffix == ".safetensors"

    again, cached = extract_features(timm_backbone, ds, idx, batch_size=4, progress=False)
    assert cached is True
    np.testing.assert_array_equal(again, feats)
    # the cached rows are the features of those very items, in order
    np.testing.assert_allclose(timm_backbone.embed(ds.take(idx)).cpu().numpy(), feats, rtol=1e-4, atol=1e-5)
    assert not [p for p in (cache_dir / "features").iterdir() if p.name.startswith(".tmp-")]


def test_explicit_cache_dir_and_no_cache(timm_backbone, image_folder, tmp_path, cache_dir):
    ds = from_folder(image_folder)
    extract_features(timm_backbone, ds, [0, 1], cache_dir=tmp_path / "mine", progress=False)
    assert len(_cache_files(tmp_path / "mine")) == 1 and not _cache_files(cache_dir)
    _, cached = extract_features(timm_backbone, ds, [0, 1], use_cache=False, progress=False)
    assert cached is False and not _cache_files(cache_dir)


def test_progress_bar_does_not_change_results(timm_backbone, image_folder):
    ds = from_folder(image_folder)
    a, _ = extract_features(timm_backbone, ds, [0, 1, 2], use_cache=False, progress=True)
    b, _ = extract_features(timm_backbone, ds, [0, 1, 2], use_cache=False, progress=False)
    np.testing.assert_array_equal(a, b)


def _corrupt_payload(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-8:] = bytes(8 * [0x7F])  # change the last feature values: the header stays valid
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize("corrupt", [_corrupt_payload, _truncate], ids=["bad-checksum", "truncated"])
def test_corrupted_cache_file_is_ignored_and_rewritten(timm_backbone, image_folder, cache_dir, corrupt):
    ds = from_folder(image_folder)
    feats, _ = extract_features(timm_backbone, ds, [0, 1, 2], progress=False)
    [path] = _cache_files(cache_dir)
    corrupt(path)
    again, cached = extract_features(timm_backbone, ds, [0, 1, 2], progress=False)
    assert cached is False
    np.testing.assert_allclose(again, feats, rtol=1e-5, atol=1e-6)
    from safetensors.numpy import load_file

    np.testing.assert_array_equal(load_file(str(path))["features"], again)  # rewritten
    assert extract_features(timm_backbone, ds, [0, 1, 2], progress=False)[1] is True


def test_garbage_cache_file_is_ignored_and_rewritten(timm_backbone, image_folder, cache_dir):
    ds = from_folder(image_folder)
    feats, _ = extract_features(timm_backbone, ds, [0, 1], progress=False)
    [path] = _cache_files(cache_dir)
    path.write_bytes(b"this is not a safetensors file at all")
    again, cached = extract_features(timm_backbone, ds, [0, 1], progress=False)
    assert cached is False
    np.testing.assert_allclose(again, feats, rtol=1e-5, atol=1e-6)


def test_cache_key_changes_with_data(timm_backbone, tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=2)
    ds = from_folder(root)
    key = cache_key(timm_backbone, ds, [0, 1, 2])
    assert cache_key(timm_backbone, ds, [0, 1, 2]) == key
    assert cache_key(timm_backbone, ds, [0, 1, 3]) != key
    assert cache_key(timm_backbone, ds, [1, 0, 2]) != key
    write_png(Path(ds.items[1]), (1, 2, 3), np.random.default_rng(9))  # same file name, new content
    assert cache_key(timm_backbone, from_folder(root), [0, 1, 2]) != key


def test_changed_data_is_not_served_from_cache(timm_backbone, tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=2)
    ds = from_folder(root)
    first, _ = extract_features(timm_backbone, ds, [0, 1], progress=False)
    write_png(Path(ds.items[0]), (250, 250, 250), np.random.default_rng(1))
    second, cached = extract_features(timm_backbone, from_folder(root), [0, 1], progress=False)
    assert cached is False
    assert not np.allclose(first[0], second[0])
    np.testing.assert_allclose(first[1], second[1], rtol=1e-5, atol=1e-6)


def test_cache_key_changes_with_backbone(timm_backbone, bert_dir, tmp_path):
    import torch

    ds = from_arrays(np.zeros((3, 8, 8), np.uint8), ["a", "b", "a"])
    key = cache_key(timm_backbone, ds, [0, 1])
    assert cache_key(create_backbone(TIMM_SPEC), ds, [0, 1]) != key  # other random weights
    clone = create_backbone(TIMM_SPEC)
    clone.load_state_dict(timm_backbone.state_dict())
    clone._fingerprint = None
    assert cache_key(clone, ds, [0, 1]) == key
    with torch.no_grad():
        next(clone.parameters()).add_(1e-3)
    clone._fingerprint = None
    assert cache_key(clone, ds, [0, 1]) != key
    texts = from_arrays(["good film", "bad film"], ["p", "n"])
    a = cache_key(create_backbone(str(bert_dir)), texts, [0, 1])
    assert cache_key(create_backbone(f"hf:{bert_dir}?max_length=8"), texts, [0, 1]) != a  # preprocessing
    other = make_bert_folder(tmp_path / "bert-seed1", seed=1)
    assert cache_key(create_backbone(str(other)), texts, [0, 1]) != a


def test_cache_key_changes_with_tokenizer(bert_dir, tmp_path):
    from transformers import BertTokenizerFast

    folder = tmp_path / "bert"
    shutil.copytree(bert_dir, folder)
    texts = from_arrays(["good film", "bad film"], ["p", "n"])
    before = create_backbone(str(folder))
    key = cache_key(before, texts, [0, 1])
    vocab = (folder / "vocab.txt").read_text().split()
    i, j = vocab.index("good"), vocab.index("bad")
    vocab[i], vocab[j] = vocab[j], vocab[i]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    after = create_backbone(str(folder))
    assert not np.allclose(before.embed(["good film"]).cpu().numpy(), after.embed(["good film"]).cpu().numpy())
    assert cache_key(after, texts, [0, 1]) != key


def test_modality_mismatch(timm_backbone):
    with pytest.raises(TransferkitError, match=r"takes images but .* holds texts"):
        extract_features(timm_backbone, from_arrays(["a", "b"], ["x", "y"]), [0, 1], progress=False)


def test_texts_are_batched_sorted_by_length(bert_backbone, monkeypatch):
    texts, labels = make_texts(10, classes=("pos", "neg", "neutral"))
    ds = from_arrays(texts, labels)
    calls: list[list[int]] = []
    real_prepare = bert_backbone.prepare

    def spy(items, **kw):
        calls.append([len(t) for t in items])
        return real_prepare(items, **kw)

    monkeypatch.setattr(bert_backbone, "prepare", spy)
    feats, _ = extract_features(bert_backbone, ds, range(len(ds)), batch_size=7, use_cache=False, progress=False)
    assert [len(c) for c in calls] == [7, 7, 7, 7, 2]
    flat = [n for c in calls for n in c]
    assert flat == sorted(len(t) for t in texts)
    # rows come back in the caller's order: same as embedding each text on its own
    monkeypatch.undo()
    one_by_one = np.concatenate([bert_backbone.embed([t]).cpu().numpy() for t in texts])
    np.testing.assert_allclose(feats, one_by_one, rtol=1e-4, atol=1e-5)


def test_images_keep_their_order(timm_backbone, monkeypatch, image_folder):
    ds = from_folder(image_folder)
    seen: list[str] = []
    real_prepare = timm_backbone.prepare
    monkeypatch.setattr(timm_backbone, "prepare", lambda items, **kw: (seen.extend(items), real_prepare(items))[1])
    idx = [20, 3, 11, 0]
    extract_features(timm_backbone, ds, idx, batch_size=3, use_cache=False, progress=False)
    assert seen == ds.take(idx)


def test_bad_image_leaves_no_cache_behind(timm_backbone, tmp_path, cache_dir):
    root = make_image_folder(tmp_path / "d", per_class=2)
    (root / "red" / "bad.png").write_bytes(b"nope")
    ds = from_folder(root)
    with pytest.raises(Exception, match=r"bad\.png"):
        extract_features(timm_backbone, ds, range(len(ds)), progress=False)
    assert not _cache_files(cache_dir)


def test_cache_hit_reports_the_extraction_time_it_saved(timm_backbone, image_folder, cache_dir):
    ds = from_folder(image_folder)
    cold: dict[str, float] = {}
    extract_features(timm_backbone, ds, [0, 1, 2], progress=False, stats=cold)
    assert cold["extract_s"] > 0 and "saved_s" not in cold
    warm: dict[str, float] = {}
    _, cached = extract_features(timm_backbone, ds, [0, 1, 2], progress=False, stats=warm)
    # the cold run's seconds travel in the cache file's metadata (rounded to ms)
    assert cached and warm["saved_s"] == warm["extract_s"] == pytest.approx(cold["extract_s"], abs=1e-3)
