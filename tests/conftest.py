"""Shared fixtures: tiny random backbones (timm test models, a 2-layer BERT and GPT-2) and small data.

Every test runs with ``TRANSFERKIT_CACHE`` in a temp folder and the Hugging Face hub switched off, so the
user's cache is never touched and nothing waits on the network.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TIMM_SPEC = "timm:test_efficientnet?pretrained=false"
TIMM_RESNET_SPEC = "timm:test_resnet?pretrained=false"

# A tiny word-level vocabulary: every test text is made of these words (plus a few unknown ones).
WORDS = [
    "good",
    "bad",
    "great",
    "awful",
    "happy",
    "sad",
    "love",
    "hate",
    "movie",
    "film",
    "the",
    "a",
    "is",
    "was",
    "very",
    "not",
    "fun",
    "boring",
    "nice",
    "terrible",
    "plot",
    "actor",
    "scene",
    "story",
    "ending",
    "music",
]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]

POSITIVE = ["good", "great", "happy", "love", "fun", "nice"]
NEGATIVE = ["bad", "awful", "sad", "hate", "boring", "terrible"]
NEUTRAL = ["movie", "film", "plot", "actor", "scene", "story", "ending", "music"]

# (R, G, B) base colour per class: the classes differ in hue and brightness
CLASS_COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (20, 40, 120)}


_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def _forget_hub_answer() -> None:
    from transferkit.backbones import registry

    clear = getattr(registry.hub_reachable, "cache_clear", None)
    if clear is not None:  # hub_reachable may memoise its answer: forget it when the environment changes
        clear()


@pytest.fixture(scope="session", autouse=True)
def _session_env(tmp_path_factory: pytest.TempPathFactory):
    """The same isolation for session/module-scoped fixtures, which run before any function-scoped one."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERKIT_CACHE", str(tmp_path_factory.mktemp("tk-session-cache")))
        for key, value in _OFFLINE_ENV.items():
            mp.setenv(key, value)
        _forget_hub_answer()
        yield
    _forget_hub_answer()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh feature cache per test; the hub is offline (fast, deterministic errors)."""
    cache = tmp_path_factory.mktemp("tk-cache")
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(cache))
    for key, value in _OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)
    _forget_hub_answer()
    return cache


@pytest.fixture
def cache_dir(_isolated_env: Path) -> Path:
    """The TRANSFERKIT_CACHE folder of this test."""
    return _isolated_env


def _save_tokenizer(folder: Path) -> None:
    from transformers import BertTokenizerFast

    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    try:  # transformers >= 5 takes the vocab file as ``vocab``
        tok = BertTokenizerFast(vocab=str(vocab_file))
    except TypeError:  # pragma: no cover - transformers 4.x
        tok = BertTokenizerFast(vocab_file=str(vocab_file))
    assert len(tok.get_vocab()) == len(VOCAB)
    tok.save_pretrained(folder)


def make_bert_folder(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 16-wide random BERT + word-level tokenizer saved as a transformers folder."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(cfg).eval().save_pretrained(folder)
    _save_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bert_folder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random GPT-2 (a decoder: last-token pooling by default) with the same tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2Model

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(VOCAB), n_embd=16, n_layer=2, n_head=2, n_positions=64, bos_token_id=2, eos_token_id=3
    )
    GPT2Model(cfg).eval().save_pretrained(folder)
    _save_tokenizer(folder)
    return folder


def write_png(path: Path, colour: tuple[int, int, int], rng: np.random.Generator, size: int = 32) -> Path:
    from PIL import Image

    base = np.array(colour, dtype=np.float64)
    arr = base + rng.normal(0, 12, size=(size, size, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
    return path


def make_image_folder(
    root: Path, per_class: int = 8, classes: dict[str, tuple[int, int, int]] | None = None, seed: int = 0
) -> Path:
    """``root/<class>/<i>.png``: noisy solid-colour 32x32 images, one colour per class."""
    rng = np.random.default_rng(seed)
    for name, colour in (classes or CLASS_COLOURS).items():
        for i in range(per_class):
            write_png(root / name / f"{i:02d}.png", colour, rng)
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only: 3 classes x 8 images. Tests that change files make their own with ``make_image_folder``."""
    return make_image_folder(tmp_path_factory.mktemp("images") / "colours")


def make_texts(
    n_per_class: int = 12, seed: int = 0, classes: tuple[str, ...] = ("pos", "neg")
) -> tuple[list[str], list[str]]:
    """Short texts of varied length whose words give the class away."""
    rng = np.random.default_rng(seed)
    pools = {"pos": POSITIVE, "neg": NEGATIVE, "neutral": NEUTRAL}
    texts, labels = [], []
    for i in range(n_per_class):
        for c in classes:
            n = 2 + (i * 3 + len(c)) % 7
            words = [str(w) for w in rng.choice(pools[c] + NEUTRAL[:2], size=n)]
            texts.append("the " + " ".join(words))
            labels.append(c)
    return texts, labels


def write_csv(path: Path, rows: list[dict[str, str]], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def text_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts, labels = make_texts(12)
    return write_csv(
        tmp_path_factory.mktemp("texts") / "reviews.csv",
        [{"text": t, "label": lab} for t, lab in zip(texts, labels, strict=True)],
    )


def make_timm_folder(folder: Path, arch: str = "test_efficientnet", seed: int = 0) -> Path:
    """A timm folder as timm pushes to the hub: config.json (with ``architecture``) + model.safetensors."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architecture": arch, "num_classes": model.num_classes}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="session")
def timm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fixed (saved) random test_efficientnet weights: a backbone that is the same at every load."""
    return make_timm_folder(tmp_path_factory.mktemp("timm") / "test-effnet")


@pytest.fixture(scope="session")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fixed random test_vit weights: a tiny backbone with attention (for adapters)."""
    return make_timm_folder(tmp_path_factory.mktemp("vit") / "test-vit", arch="test_vit")


@pytest.fixture
def timm_backbone():
    from transferkit import create_backbone

    return create_backbone(TIMM_SPEC)


@pytest.fixture
def bert_backbone(bert_dir: Path):
    from transferkit import create_backbone

    return create_backbone(str(bert_dir))


def run_fresh_python(script: str, cwd: Path) -> object:
    """Run ``script`` in a fresh interpreter (no state shared with the tests) and return its JSON stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ), cwd=cwd, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
