"""Backbone variants for ranking (layer cuts, random-init controls) and ``rank`` / ``fit(backbone="auto")``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit
from transferkit import create_backbone
from transferkit.data import load_data, make_splits
from transferkit.errors import TransferkitError
from transferkit.workflows.rank import RankRow, _warnings

from .conftest import make_timm_folder
from .test_cli import assert_clean_failure, invoke


def test_layer_cut_of_a_timm_model(timm_dir: Path, image_folder: Path) -> None:
    full = create_backbone(str(timm_dir))
    cut = create_backbone(f"{timm_dir}?layer=2")
    assert cut.spec.endswith("?layer=2") and cut.depth == 2
    stage2 = full.model.blocks[1]
    out_chs = [m for m in stage2.modules() if isinstance(m, torch.nn.Conv2d)][-1].out_channels
    assert cut.feature_dim == out_chs != full.feature_dim
    items = load_data(str(image_folder)).take(range(4))
    assert cut.embed(items).shape == (4, out_chs)
    assert full.source_head() is not None and cut.source_head() is None
    assert cut.fingerprint() != full.fingerprint()


def test_layer_cut_of_a_transformer(bert_dir: Path, text_csv: Path) -> None:
    full = create_backbone(str(bert_dir))
    cut = create_backbone(f"{bert_dir}?layer=1")
    assert len(cut.blocks()) == 1 and len(full.blocks()) == 2
    texts = load_data(str(text_csv)).take(range(3))
    a, b = full.embed(texts), cut.embed(texts)
    assert a.shape == b.shape and not torch.allclose(a, b)
    assert cut.source_head() is None


def test_random_init_control_is_seeded_and_different(tmp_path: Path) -> None:
    folder = make_timm_folder(tmp_path / "t", seed=5)  # not timm's seed-0 init, which the control draws
    pre = create_backbone(str(folder))
    r1 = create_backbone(f"{folder}?init=random")
    r2 = create_backbone(f"{folder}?init=random")
    assert not r1.pretrained and r1.spec.endswith("?init=random")
    assert r1.fingerprint() == r2.fingerprint() != pre.fingerprint()
    before = pre.state_dict()
    changed = [k for k, v in r1.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    weights = [k for k, v in pre.state_dict().items() if k.endswith("weight") and v.dim() > 1]
    assert set(weights) <= set(changed)


def test_saved_model_of_a_cut_backbone_round_trips(timm_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    res = transferkit.fit(str(image_folder), f"{timm_dir}?layer=2", scratch=False, progress=False, out=tmp_path / "r")
    loaded = transferkit.load(tmp_path / "r" / "model")
    items = load_data(str(image_folder)).take(range(5))
    assert loaded.backbone.spec == res.model.backbone.spec
    assert np.allclose(loaded.predict_proba(items), res.model.predict_proba(items), atol=1e-6)


@pytest.mark.parametrize(
    "suffix,message",
    [("?layer=9", r"layer=9 is out of range; it has \d stages"), ("?layer=two", "must be a whole number"),
     ("?init=zeros", "the only choice is init=random")],
)
def test_bad_variant_options(timm_dir: Path, suffix: str, message: str) -> None:
    with pytest.raises(TransferkitError, match=message):
        create_backbone(f"{timm_dir}{suffix}")


def test_rank_scores_every_candidate_on_the_training_split(timm_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    specs = [str(timm_dir), f"{timm_dir}?layer=2", f"{timm_dir}?init=random"]
    res = transferkit.rank(str(image_folder), specs, progress=False, out=tmp_path)
    assert {r.spec for r in res.rows} == {create_backbone(s).spec for s in specs}
    full = next(r for r in res.rows if r.spec == str(timm_dir.resolve()))
    assert all(full.scores[m] is not None for m in ("logme", "leep", "nce", "hscore"))
    cut = next(r for r in res.rows if "layer=2" in r.spec)
    assert cut.scores["leep"] is None and "no source classifier" in cut.note
    assert next(r for r in res.rows if "init=random" in r.spec).control
    assert res.recommended != f"{timm_dir.resolve()}?init=random"
    assert res.ordered()[0] == res.rows[0].spec  # rows come sorted best-first by LogME
    splits = make_splits(load_data(str(image_folder)), seed=0)
    assert set(res.indices) <= set(splits.train.tolist()) and res.n_samples == len(splits.train)
    saved = json.loads((tmp_path / "rank.json").read_text())
    assert saved["recommended"] == res.recommended and len(saved["rows"]) == 3
    assert "Recommended" in (tmp_path / "report.md").read_text()


def test_rank_reports_unusable_candidates_and_bad_options(timm_dir: Path, bert_dir: Path, image_folder: Path) -> None:
    # the hub is off in tests: a hub name is reported as unavailable, the other candidates still run
    res = transferkit.rank(str(image_folder), [str(timm_dir), str(bert_dir), "timm:resnet18"], progress=False)
    notes = {r.spec: r.note for r in res.rows}
    assert any("skipped: takes texts" in n for n in notes.values())
    assert notes["timm:resnet18"].startswith("unavailable: timm:resnet18 needs pretrained weights")
    assert res.recommended == str(timm_dir.resolve())
    assert any("timm:resnet18 was not scored" in w for w in res.warnings)
    with pytest.raises(TransferkitError, match="Unknown pack 'no-such'"):  # a typo stops the run
        transferkit.rank(str(image_folder), [str(timm_dir), "pack:no-such"], progress=False)
    with pytest.raises(TransferkitError, match="by='best' is not a score"):
        transferkit.rank(str(image_folder), [str(timm_dir)], by="best", progress=False)
    with pytest.raises(TransferkitError, match="listed twice"):
        transferkit.rank(str(image_folder), [str(timm_dir), str(timm_dir)], progress=False)
    with pytest.raises(TransferkitError, match="max_samples must be at least 10"):
        transferkit.rank(str(image_folder), [str(timm_dir)], max_samples=3, progress=False)


def test_rank_by_leep_needs_a_source_head(bert_dir: Path, text_csv: Path) -> None:
    with pytest.raises(TransferkitError, match="needs a source classifier"):
        transferkit.rank(str(text_csv), [str(bert_dir)], by="leep", progress=False)


def test_rank_subsamples_stratified(bert_dir: Path, text_csv: Path) -> None:
    res = transferkit.rank(str(text_csv), [str(bert_dir)], max_samples=10, progress=False)
    ds = load_data(str(text_csv))
    assert res.n_samples == 10 and len(set(ds.targets[res.indices])) == 2


def test_warning_when_the_control_outranks_a_pretrained_candidate() -> None:
    rows = [
        RankRow("pack:a", False, scores={"logme": -1.0}),
        RankRow("pack:a?init=random", True, scores={"logme": -0.5}),
        RankRow("pack:b", False, scores={"logme": 0.2}),
    ]
    (w,) = _warnings(rows, "logme")
    assert "pack:a?init=random scores at least as high as pack:a " in w and "pack:b" not in w
    assert "negative transfer" in w


def test_fit_auto_trains_the_best_ranked(
    monkeypatch: pytest.MonkeyPatch, timm_dir: Path, image_folder: Path, tmp_path: Path
) -> None:
    other = make_timm_folder(tmp_path / "other", seed=3)
    monkeypatch.setattr("transferkit.workflows.rank.default_candidates", lambda *a, **k: [str(timm_dir), str(other)])
    res = transferkit.fit(str(image_folder), "auto", top_k=2, scratch=False, progress=False)
    rank = res.record["rank"]
    assert rank["top_k"] == 2 and len(rank["val_accuracy"]) == 2
    chosen = max(rank["val_accuracy"], key=rank["val_accuracy"].get)
    assert rank["chosen"] == chosen == res.record["backbone"] == res.model.backbone.spec
    with pytest.raises(TransferkitError, match="top_k applies only to backbone='auto'"):
        transferkit.fit(str(image_folder), str(timm_dir), top_k=2, scratch=False, progress=False)


def test_cli_rank(timm_dir: Path, image_folder: Path, tmp_path: Path) -> None:
    r = invoke("rank", image_folder, "--backbones", f"{timm_dir},{timm_dir}?layer=1", "--quiet", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert "Recommended" in r.output and (tmp_path / "rank.json").is_file()
    bad = invoke("rank", image_folder, "--backbones", str(timm_dir), "--by", "accuracy", "--quiet")
    assert_clean_failure(bad, "by='accuracy' is not a score")


def test_pool_candidates_name_cuts_and_a_control() -> None:
    from transferkit.backbones.packs import PACKS
    from transferkit.workflows.rank import default_candidates

    if not PACKS["efficientnet-lite0"].installed():
        pytest.skip("the efficientnet-lite0 pack is not installed")
    pool = default_candidates("image", pool=True)
    assert "pack:efficientnet-lite0?layer=5" in pool and pool[-1].endswith("?init=random")
    assert np.all([s.startswith("pack:") for s in pool])


def test_compare_auto_backbone_uses_the_ranking(
    monkeypatch: pytest.MonkeyPatch, timm_dir: Path, image_folder: Path
) -> None:
    from transferkit.workflows.compare import compare

    monkeypatch.setattr("transferkit.workflows.rank.default_candidates", lambda *a, **k: [str(timm_dir)])
    res = compare(str(image_folder), "auto", ["linear-probe"], seeds=1, progress=False, scratch_budget="fixed")
    assert res.meta["backbone"] == str(timm_dir.resolve())
    assert res.meta["auto_plan"][0].startswith(f"backbone auto: {timm_dir.resolve()}")
