"""TransferModel (predict, label map, timm-style forward) and save/load as safetensors + JSON."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit
from transferkit import DataError, Prediction, TransferkitError, TransferModel, create_backbone, from_folder
from transferkit.core.heads import MLPHead, linear_head

from .conftest import run_fresh_python

CLASSES = ["blue", "green", "red"]


def _image_model(head: str = "linear") -> TransferModel:
    torch.manual_seed(0)
    bb = create_backbone("timm:test_efficientnet?pretrained=false")
    h = MLPHead(bb.feature_dim, 3, hidden=8) if head == "mlp" else linear_head(bb.feature_dim, 3)
    return TransferModel(bb, h, CLASSES).eval()


@pytest.fixture
def text_model(bert_backbone) -> TransferModel:
    torch.manual_seed(1)
    return TransferModel(bert_backbone, linear_head(bert_backbone.feature_dim, 2), ["neg", "pos"]).eval()


@pytest.fixture
def images(image_folder) -> list[str]:
    ds = from_folder(image_folder)
    return [ds.items[i] for i in (0, 9, 17)]


TEXTS = ["good film", "the plot was very boring and the ending was bad", "nice music"]

# ---------------------------------------------------------------- the model


def test_predict_proba_and_predict(images):
    model = _image_model()
    proba = model.predict_proba(images, batch_size=2)
    assert proba.shape == (3, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    preds = model.predict(images)
    assert all(isinstance(p, Prediction) and p.label in CLASSES for p in preds)
    for p, row in zip(preds, proba, strict=True):
        assert p.label == CLASSES[int(row.argmax())]
        assert p.probability == pytest.approx(float(row.max()), rel=1e-5)
        assert list(p.probabilities) == CLASSES
    # a single path is one input; arrays work like files
    assert model.predict_proba(images[0]).shape == (1, 3)
    from PIL import Image

    arr = np.asarray(Image.open(images[1]).convert("RGB"))
    np.testing.assert_allclose(model.predict_proba([arr]), proba[1:2], rtol=1e-4, atol=1e-6)


def test_predict_matches_forward_on_prepared_batch(text_model):
    batch = text_model.backbone.prepare(TEXTS)
    with torch.no_grad():
        logits = text_model(batch)
        feats = text_model.forward_features(batch)
    torch.testing.assert_close(text_model.forward_head(feats), logits)
    torch.testing.assert_close(text_model.forward_head(feats, pre_logits=True), feats)
    np.testing.assert_allclose(text_model.predict_proba(TEXTS), torch.softmax(logits, -1).numpy(), rtol=1e-4, atol=1e-6)


def test_predict_one_image_array(images):
    from PIL import Image

    arr = np.asarray(Image.open(images[0]).convert("RGB"))
    assert _image_model().predict_proba(arr).shape == (1, 3)


def test_mlp_pre_logits():
    model = _image_model("mlp")
    feats = torch.randn(2, model.backbone.feature_dim)
    hidden = model.forward_head(feats, pre_logits=True)
    assert hidden.shape == (2, 8)
    torch.testing.assert_close(model.head[-1](hidden), model.forward_head(feats))


def test_reset_head():
    model = _image_model("mlp")
    feats = torch.randn(2, model.backbone.feature_dim)
    model.reset_head(5, ["a", "b", "c", "d", "e"])
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 5
    assert model.forward_head(feats).shape == (2, 5) and model.classes == ["a", "b", "c", "d", "e"]
    model.reset_head(2)
    assert model.classes == ["0", "1"]


def test_head_and_classes_must_agree(timm_backbone):
    with pytest.raises(ValueError, match="head outputs and number of classes differ"):
        TransferModel(timm_backbone, linear_head(timm_backbone.feature_dim, 2), CLASSES)


def test_bad_predict_inputs(text_model):
    with pytest.raises(DataError, match="predict got no inputs"):
        text_model.predict([])
    with pytest.raises(DataError, match="Input 1 is not a non-empty text"):
        text_model.predict(["fine", "   "])
    with pytest.raises(DataError, match="Input 0 is not a non-empty text"):
        text_model.predict([42])


def test_label_indices(text_model):
    np.testing.assert_array_equal(text_model.label_indices(["pos", "neg", "pos"]), [1, 0, 1])
    with pytest.raises(
        DataError,
        match=r"new\.csv has label\(s\) 'meh', 'so-so' that the model was not trained "
        r"on; it knows 'neg', 'pos'",
    ):
        text_model.label_indices(["pos", "so-so", "meh"], where="new.csv")


# ---------------------------------------------------------------- save / load


def _assert_no_pickle(folder: Path) -> None:
    files = sorted(p.name for p in folder.iterdir())
    assert all(name.endswith((".json", ".safetensors")) for name in files), files
    for p in folder.glob("*.safetensors"):
        raw = p.read_bytes()
        header_len = int.from_bytes(raw[:8], "little")
        assert raw[8:9] == b"{" and json.loads(raw[8 : 8 + header_len])  # a safetensors header, not a pickle
    assert not any(p.read_bytes()[:2] in (b"\x80\x02", b"\x80\x04", b"PK") for p in folder.iterdir())


def test_image_model_round_trip(tmp_path, images):
    model = _image_model()
    before = model.predict_proba(images)
    path = model.save(tmp_path / "m")
    assert path == tmp_path / "m"
    assert sorted(p.name for p in path.iterdir()) == [
        "backbone.safetensors",
        "head.safetensors",
        "transferkit.json",
    ]
    _assert_no_pickle(path)
    cfg = json.loads((path / "transferkit.json").read_text())
    assert cfg["backbone"]["spec"] == "timm:test_efficientnet?pretrained=false"
    assert cfg["backbone"]["weights_saved"] is True  # random init: the weights must travel
    assert cfg["classes"] == CLASSES and cfg["head"]["type"] == "linear"
    assert cfg["preprocess"]["kind"] == "image"
    loaded = transferkit.load(path)
    assert loaded.classes == CLASSES and not loaded.training
    np.testing.assert_allclose(loaded.predict_proba(images), before, rtol=1e-5, atol=1e-6)


def test_text_model_round_trip_keeps_pretrained_weights_out(tmp_path, text_model):
    before = text_model.predict_proba(TEXTS)
    path = text_model.save(tmp_path / "m")
    assert sorted(p.name for p in path.iterdir()) == ["head.safetensors", "transferkit.json"]
    _assert_no_pickle(path)
    loaded = transferkit.load(path)
    np.testing.assert_allclose(loaded.predict_proba(TEXTS), before, rtol=1e-5, atol=1e-6)


def test_mlp_head_round_trip(tmp_path, images):
    model = _image_model("mlp")
    before = model.predict_proba(images)
    loaded = transferkit.load(model.save(tmp_path / "m"))
    assert isinstance(loaded.head, MLPHead)
    np.testing.assert_allclose(loaded.predict_proba(images), before, rtol=1e-5, atol=1e-6)


def test_round_trip_in_a_fresh_process(tmp_path, images, text_model):
    image_model = _image_model()
    image_model.save(tmp_path / "img")
    text_model.save(tmp_path / "txt")
    expected = {
        "img": image_model.predict_proba(images).tolist(),
        "txt": text_model.predict_proba(TEXTS).tolist(),
    }
    script = textwrap.dedent(f"""
        import json, sys
        import transferkit
        out = {{
            "img": transferkit.load({str(tmp_path / "img")!r}).predict_proba({images!r}).tolist(),
            "txt": transferkit.load({str(tmp_path / "txt")!r}).predict_proba({TEXTS!r}).tolist(),
        }}
        json.dump(out, sys.stdout)
    """)
    got = run_fresh_python(script, tmp_path)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6)


def test_load_never_unpickles(tmp_path, images, monkeypatch):
    path = _image_model().save(tmp_path / "m")

    def refuse(*args, **kwargs):
        raise AssertionError("load() must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert transferkit.load(path).predict_proba(images).shape == (3, 3)


def test_load_refuses_a_folder_without_config(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "head.safetensors").write_bytes(b"")
    with pytest.raises(TransferkitError, match=r"is not a saved transferkit model \(no transferkit\.json in it\)"):
        transferkit.load(tmp_path / "m")
    with pytest.raises(TransferkitError, match="is not a saved transferkit model"):
        transferkit.load(tmp_path / "missing")


def _edit_config(path: Path, edit) -> None:
    cfg = json.loads((path / "transferkit.json").read_text())
    edit(cfg)
    (path / "transferkit.json").write_text(json.dumps(cfg))


def test_load_refuses_a_newer_format(tmp_path):
    path = _image_model().save(tmp_path / "m")
    _edit_config(path, lambda c: c.update(format_version=99, transferkit_version="9.0"))
    with pytest.raises(TransferkitError, match=r"saved by a newer transferkit \(9\.0\)"):
        transferkit.load(path)


def test_load_detects_tampered_preprocessing(tmp_path, text_model):
    path = _image_model().save(tmp_path / "img")
    _edit_config(path, lambda c: c["preprocess"].update(input_size=[3, 224, 224]))
    with pytest.raises(
        TransferkitError,
        match=r"the preprocessing of .* differs from the one the model was "
        r"trained with.*silently wrong",
    ):
        transferkit.load(path)
    path = text_model.save(tmp_path / "txt")
    _edit_config(path, lambda c: c["preprocess"].update(max_length=8))
    with pytest.raises(TransferkitError, match="preprocessing"):
        transferkit.load(path)


def test_load_detects_changed_backbone_weights(tmp_path, text_model):
    path = text_model.save(tmp_path / "txt")
    _edit_config(path, lambda c: c["backbone"].update(fingerprint="0" * 24))
    with pytest.raises(
        TransferkitError,
        match=r"the weights of hf:.* installed here differ from those the model "
        r"was trained with",
    ):
        transferkit.load(path)


def test_load_detects_tampered_saved_backbone(tmp_path):
    from safetensors.torch import load_file, save_file

    path = _image_model().save(tmp_path / "m")
    weights = load_file(str(path / "backbone.safetensors"))
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = weights[name] + 0.5
    save_file(weights, str(path / "backbone.safetensors"))
    with pytest.raises(TransferkitError, match="differ from those the model was trained with"):
        transferkit.load(path)


def test_save_overwrites_atomically(tmp_path, images):
    a, b = _image_model(), _image_model("mlp")
    a.save(tmp_path / "m")
    b.save(tmp_path / "m")
    assert isinstance(transferkit.load(tmp_path / "m").head, MLPHead)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp folders left behind


def test_failed_save_leaves_the_old_model_and_no_temp_folder(tmp_path, images, monkeypatch):
    import safetensors.torch

    old = _image_model()
    old.save(tmp_path / "m")
    expected = old.predict_proba(images)
    real_save = safetensors.torch.save_file
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", fail_on_second)
    with pytest.raises(OSError, match="No space left"):
        _image_model("mlp").save(tmp_path / "m")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    np.testing.assert_allclose(transferkit.load(tmp_path / "m").predict_proba(images), expected, rtol=1e-5)


def test_saved_files_follow_the_users_umask(tmp_path):
    import os
    import stat

    from transferkit.backbones.scratch import create_scratch_backbone
    from transferkit.core.heads import linear_head
    from transferkit.core.model import TransferModel

    model = TransferModel(create_scratch_backbone("cnn", {}), linear_head(64, 2), ["a", "b"])
    old = os.umask(0o022)
    try:
        path = model.save(tmp_path / "m")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()} == {0o644}
