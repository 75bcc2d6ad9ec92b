"""``transferkit export --onnx`` and ``predict --onnx``: one graph per saved model, checked against PyTorch, run
with onnxruntime and no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from transferkit import TransferModel, create_backbone
from transferkit.cli import app
from transferkit.core.heads import linear_head
from transferkit.core.onnx_export import CHECK_TEXTS, export_onnx
from transferkit.errors import TransferkitError
from transferkit.onnx_runtime import OnnxModel

from .conftest import write_csv

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
runner = CliRunner()


def _model(backbone, classes=("a", "b", "c"), seed: int = 0) -> TransferModel:
    torch.manual_seed(seed)
    model = TransferModel(backbone, linear_head(backbone.feature_dim, len(classes)), list(classes))
    torch.nn.init.normal_(model.head.weight, std=2.0)  # probabilities far from uniform, so a mismatch shows
    return model


def test_an_image_model_with_tta_and_temperature_matches_pytorch(timm_dir, tmp_path):
    model = _model(create_backbone(str(timm_dir)))
    model.tta, model.temperature = True, 1.7
    result = model.to_onnx(tmp_path / "m.onnx")
    assert result.files == [tmp_path / "m.onnx", tmp_path / "m.onnx.json"] and result.checked == 15
    assert result.max_abs_diff <= 1e-4
    assert "ONNX parity on 15 real inputs: largest probability difference" in result.sentence()
    meta = json.loads((tmp_path / "m.onnx.json").read_text())
    assert meta["tta"] is True and meta["temperature"] == 1.7 and meta["classes"] == ["a", "b", "c"]
    assert meta["preprocess"]["input_size"] == list(model.backbone.preprocess.input_size)
    assert meta["parity"]["max_abs_diff"] == result.max_abs_diff
    onnx = OnnxModel(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 40), (17, 90), (300, 120))]
    for batch in (photos[:1], photos):  # a batch size the graph was not traced with
        np.testing.assert_allclose(onnx.predict_proba(batch), model.predict_proba(batch), atol=1e-4)
    assert [p["label"] for p in onnx.predict(photos)] == [p.label for p in model.predict(photos)]
    assert not list(tmp_path.glob(".m.onnx.tmp-*"))


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_text_models_encoder_and_decoder_match_pytorch_with_padding_and_truncation(kind, bert_dir, gpt2_dir,
                                                                                    tmp_path):
    backbone = create_backbone(f"hf:{bert_dir if kind == 'bert' else gpt2_dir}?max_length=16")
    model = _model(backbone, ("neg", "pos"))
    result = export_onnx(model, tmp_path / "t.onnx")
    assert (tmp_path / "t.tokenizer.json").is_file() and result.max_abs_diff <= 1e-4
    onnx = OnnxModel(tmp_path / "t.onnx")
    texts = ["good", "a b c " * 30, *CHECK_TEXTS[:3]]
    np.testing.assert_allclose(onnx.predict_proba(texts), model.predict_proba(texts), atol=1e-4)
    ids = onnx.inputs(texts)["input_ids"]
    assert ids.shape[1] == 16  # truncated as the backbone truncates


def test_lora_is_merged_into_the_graph_and_the_saved_model_keeps_its_adapters(bert_dir, tmp_path):
    from transferkit.backbones.adapters import inject_lora

    backbone = create_backbone(str(bert_dir))
    inject_lora(backbone, {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["query", "value"]})
    torch.manual_seed(1)
    for n, p in backbone.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)  # trained adapters are not zero: merging must move the weights
    model = _model(backbone, ("neg", "pos"))
    before = model.predict_proba(list(CHECK_TEXTS))
    result = export_onnx(model, tmp_path / "lora.onnx")
    meta = json.loads((tmp_path / "lora.onnx.json").read_text())
    assert meta["lora_layers_merged"] == 4 and result.max_abs_diff <= 1e-4  # 2 layers x (query, value)
    np.testing.assert_allclose(model.predict_proba(list(CHECK_TEXTS)), before, atol=1e-6)  # the original: unmerged
    assert any("lora_" in n for n, _ in model.named_parameters())


def test_a_regression_model_exports_its_values(bert_dir, tmp_path):
    backbone = create_backbone(str(bert_dir))
    torch.manual_seed(0)
    model = TransferModel(backbone, linear_head(backbone.feature_dim, 1), [], task="regression")
    result = model.to_onnx(tmp_path / "r.onnx")
    onnx = OnnxModel(tmp_path / "r.onnx")
    np.testing.assert_allclose(onnx.predict_values(list(CHECK_TEXTS)), model.predict_values(list(CHECK_TEXTS)),
                               rtol=1e-4, atol=1e-5)
    assert "largest value difference (relative to the values' spread)" in result.sentence()
    assert result.max_abs_diff <= 1e-4 and onnx.predict(["ok"])[0]["value"] == pytest.approx(
        float(model.predict_values(["ok"])[0]), abs=1e-5)


def test_a_failed_parity_check_writes_nothing(timm_dir, tmp_path, monkeypatch):
    from transferkit.core import onnx_export

    monkeypatch.setattr(onnx_export, "parity", lambda *a: 0.25)
    with pytest.raises(TransferkitError, match=r"ONNX export refused: onnxruntime differs from PyTorch by 2\.50e-01 "
                                               r"on 15 inputs \(at most 1e-04 allowed\); nothing was written\."):
        export_onnx(_model(create_backbone(str(timm_dir))), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory, text_csv, bert_dir) -> Path:
    out = tmp_path_factory.mktemp("onnx-cli") / "run"
    result = runner.invoke(app, ["fit", str(text_csv), "--backbone", str(bert_dir), "--out", str(out), "--quiet",
                                 "--no-scratch"])
    assert result.exit_code == 0, result.output
    return out / "model"


def test_cli_export_then_predict_onnx_gives_the_same_answers(text_model_dir, tmp_path):
    out = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(text_model_dir), "--onnx", str(out), "good fun film", "bad plot"])
    assert result.exit_code == 0, result.output
    assert "ONNX parity on 2 real inputs" in result.stdout and f"wrote {out}" in result.stdout
    texts = ["good fun film", "bad boring plot", "fun"]
    torch_rows = runner.invoke(app, ["predict", str(text_model_dir), *texts, "--json"]).stdout.splitlines()
    onnx_run = runner.invoke(app, ["predict", "--onnx", str(out), *texts, "--json"])
    assert onnx_run.exit_code == 0, onnx_run.output
    ours, theirs = ([json.loads(r) for r in rows] for rows in (torch_rows, onnx_run.stdout.splitlines()))
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    assert max(abs(a["probability"] - b["probability"]) for a, b in zip(ours, theirs, strict=True)) <= 1e-4
    labelled = write_csv(tmp_path / "l.csv", [{"text": "great fun", "label": "pos"}, {"text": "awful", "label": "neg"}])
    scored = runner.invoke(app, ["predict", "--onnx", str(out), "--file", str(labelled)])
    assert scored.exit_code == 0 and "% (2 rows)" in " ".join(scored.stderr.split())


def test_predict_onnx_imports_neither_torch_nor_transformers(text_model_dir, tmp_path):
    out = tmp_path / "m.onnx"
    assert runner.invoke(app, ["export", str(text_model_dir), "--onnx", str(out)]).exit_code == 0
    script = (
        "import sys\n"
        "from transferkit.cli import main\n"
        f"sys.argv = ['transferkit', 'predict', '--onnx', {str(out)!r}, 'good fun film', '--json']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in ('torch', 'transformers', 'timm') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert json.loads(lines[0])["label"] in ("pos", "neg") and lines[-1] == "LOADED []"


def _fails(result, match: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "error: " in result.stderr and match in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.output


def test_bad_export_and_onnx_predict_inputs_exit_2(text_model_dir, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_text("mine")
    _fails(runner.invoke(app, ["export", str(text_model_dir), "--onnx", str(out)]), "exists; pass --overwrite")
    assert out.read_text() == "mine"
    _fails(runner.invoke(app, ["export", str(text_model_dir), "--onnx", str(tmp_path / "m.txt")]),
           "must end in .onnx")
    _fails(runner.invoke(app, ["export", str(text_model_dir), "--onnx", str(tmp_path / "no" / "m.onnx")]),
           "that folder does not exist (create it first)")
    _fails(runner.invoke(app, ["predict", "--onnx", str(out), "x"]), "has no m.onnx.json beside it")
    _fails(runner.invoke(app, ["predict", str(out), "x"]), "is an ONNX file: add --onnx")
    _fails(runner.invoke(app, ["predict", "--onnx", str(tmp_path / "ghost.onnx"), "x"]), "ghost.onnx does not exist")
