"""Distillation: the loss, a teacher that runs once, unlabelled data, the scratch-CNN student, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit
from transferkit import create_backbone
from transferkit.data import load_data
from transferkit.errors import DataError, TransferkitError
from transferkit.strategies.distill import kd_loss

from .conftest import make_image_folder

STUDENT = "scratch:cnn?size=16&width=8"


def test_kd_loss_limits_and_hand_value() -> None:
    s = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert kd_loss(s, t, y, 2.0, 0.0) == pytest.approx(float(ce))
    assert kd_loss(t, t, y, 2.0, 1.0) == pytest.approx(0.0, abs=1e-7)
    # hand value of row 0 at T=2, alpha=1: T^2 * sum p_t log(p_t / p_s) with p = softmax(logits / 2)
    pt = np.exp([0.5, 0.0]) / np.exp([0.5, 0.0]).sum()
    ps = np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum()
    expected = 4 * float((pt * np.log(pt / ps)).sum())
    assert kd_loss(s[:1], t[:1], y[:1], 2.0, 1.0) == pytest.approx(expected, rel=1e-5)
    # an unlabelled row (-1) learns from the soft term alone, whatever alpha says
    assert kd_loss(s[:1], t[:1], torch.tensor([-1]), 2.0, 0.3) == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(float(kd_loss(s, t, torch.tensor([-1, -1]), 4.0, 0.5)))


def test_scratch_cnn_backbone(image_folder: Path) -> None:
    bb = create_backbone("scratch:cnn")
    assert bb.spec == "scratch:cnn?size=32&width=32" and not bb.pretrained and bb.feature_dim == 128
    assert create_backbone("scratch:cnn").fingerprint() == bb.fingerprint()  # seeded init
    x = load_data(str(image_folder)).take(range(3))
    assert bb.embed(x).shape == (3, 128)
    for spec, message in [
        ("scratch:mlp", "Unknown scratch network 'mlp'"),
        ("scratch:cnn?depth=3", "Unknown option"),
        ("scratch:cnn?size=4", "size must be 8-512"),
    ]:
        with pytest.raises(TransferkitError, match=message):
            create_backbone(spec)


@pytest.fixture
def teacher_dir(timm_dir: Path, image_folder: Path, tmp_path: Path) -> Path:
    transferkit.fit(str(image_folder), str(timm_dir), scratch=False, progress=False, out=tmp_path / "teacher")
    return tmp_path / "teacher" / "model"


def test_distilled_student_trains_saves_and_predicts(
    teacher_dir: Path, image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transferkit.core.export as export

    seen = {"items": 0}
    original = export.load

    def counting_load(path):  # the teacher's backbone counts every item it embeds
        model = original(path)
        forward = model.backbone.forward

        def counted(x):
            seen["items"] += len(x)
            return forward(x)

        model.backbone.forward = counted
        return model

    monkeypatch.setattr(export, "load", counting_load)
    res = transferkit.fit(
        str(image_folder), STUDENT, "distill", teacher=str(teacher_dir), epochs=3, patience=None,
        scratch=False, progress=False, out=tmp_path / "student", use_cache=False,
    )
    info = res.record["strategy_info"]
    assert info["epochs_run"] == 3 and info["temperature"] == 4.0 and info["alpha"] == 0.7
    n_train = res.record["data"]["splits"]["train"]
    assert seen["items"] == n_train  # the teacher ran once over the training items, not once per epoch
    monkeypatch.setattr(export, "load", original)
    student = transferkit.load(tmp_path / "student" / "model")
    items = load_data(str(image_folder)).take(range(4))
    assert np.allclose(student.predict_proba(items), res.model.predict_proba(items), atol=1e-6)


def test_unlabelled_items_join_only_the_distilled_run(teacher_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    pool = make_image_folder(tmp_path / "pool", per_class=3, seed=7)
    common = dict(teacher=str(teacher_dir), epochs=1, scratch=False, progress=False, unlabelled=str(pool))
    res = transferkit.fit(str(image_folder), STUDENT, "distill", **common)
    assert res.record["strategy_info"]["unlabelled"] == 9
    control = transferkit.fit(str(image_folder), STUDENT, "distill", alpha=0.0, **common)
    assert control.record["strategy_info"]["unlabelled"] == 0


def test_distill_bad_input(teacher_dir: Path, image_folder: Path, text_csv: Path, tmp_path: Path) -> None:
    def run(data=str(image_folder), **kw):
        return transferkit.fit(data, STUDENT, "distill", scratch=False, progress=False, epochs=1, **kw)

    with pytest.raises(TransferkitError, match="distill needs a teacher"):
        run()
    with pytest.raises(TransferkitError, match="alpha must lie between 0 and 1"):
        run(teacher=str(teacher_dir), alpha=1.5)
    with pytest.raises(TransferkitError, match="temperature must be positive"):
        run(teacher=str(teacher_dir), temperature=0)
    other = make_image_folder(tmp_path / "other", per_class=4, classes={"cat": (1, 2, 3), "dog": (200, 2, 3)})
    with pytest.raises(TransferkitError, match="The teacher .* predicts"):
        run(data=str(other), teacher=str(teacher_dir))
    with pytest.raises(DataError, match="neither an existing folder/file"):
        run(teacher=str(teacher_dir), unlabelled=str(tmp_path / "missing"))
    from transferkit.data.sources import load_unlabelled

    with pytest.raises(DataError, match="unlabelled texts come as a CSV/JSONL"):
        load_unlabelled(str(image_folder), "text")
    assert len(load_unlabelled(str(text_csv), "text", "text")) == 24


def test_distill_with_controls_over_seeds(timm_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    res = transferkit.distill(str(image_folder), str(timm_dir), STUDENT, seeds=2, epochs=1, progress=False,
                              out=tmp_path / "d")
    assert len(res.runs) == 2 and [r["seed"] for r in res.runs] == [0, 1]
    roles = [r["role"] for r in res.summary()]
    assert roles == ["teacher", "student (hard labels)", "student (distilled)"]
    sizes = res.sizes
    assert sizes["student (distilled)"]["parameters"] < sizes["teacher"]["parameters"]
    assert all(s["samples_s"] > 0 for s in sizes.values())
    assert any(w in res.verdict_line() for w in ("distillation helps", "no clear difference", "distillation hurts"))
    saved = json.loads((tmp_path / "d" / "distill.json").read_text())
    assert saved["student"] == STUDENT and len(saved["runs"]) == 2 and "retained" in saved
    assert transferkit.load(tmp_path / "d" / "model").backbone.spec == "scratch:cnn?size=16&width=8"


def test_distill_from_a_saved_teacher_and_the_cli(teacher_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    from .test_cli import assert_clean_failure, invoke

    r = invoke("distill", image_folder, "--teacher", teacher_dir, "--student", STUDENT, "--seeds", "1",
               "--epochs", "1", "--quiet", "--out", tmp_path / "cli")
    assert r.exit_code == 0, r.output
    assert "retained" in r.output and (tmp_path / "cli" / "report.md").is_file()
    assert_clean_failure(
        invoke("distill", image_folder, "--teacher", tmp_path, "--seeds", "1", "--quiet"),
        "is neither a saved transferkit model",
    )


def test_distill_sweep_chooses_t_and_alpha_on_validation(teacher_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    from transferkit.workflows.distill import SWEEP_ALPHAS, SWEEP_TEMPERATURES

    res = transferkit.distill(str(image_folder), str(teacher_dir), STUDENT, seeds=1, epochs=1, progress=False,
                              sweep=True, out=tmp_path / "s")
    distilled = res.runs[0]["student (distilled)"]
    grid = distilled["sweep"]
    assert len(grid) == len(SWEEP_TEMPERATURES) * len(SWEEP_ALPHAS)
    best = max(grid, key=lambda g: g["val_accuracy"])  # the first best on validation wins
    assert (distilled["temperature"], distilled["alpha"]) == (best["temperature"], best["alpha"])
    assert "sweep" not in res.runs[0]["student (hard labels)"]  # the control is not swept
    assert res.swept().startswith("T and alpha chosen on validation") and "seed 0: T" in res.swept()
    assert res.swept() in (tmp_path / "s" / "report.md").read_text()
    assert transferkit.load(tmp_path / "s" / "model").backbone.spec == STUDENT
