"""The contrastive strategy: SetFit-style pair tuning of a text encoder, kept only where its probe clearly wins."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import transferkit
from transferkit import TransferkitError, create_backbone, from_arrays
from transferkit.core.features import extract_features
from transferkit.data import Dataset, make_splits
from transferkit.strategies import STRATEGIES, RunContext, make_config
from transferkit.strategies import contrastive as ctr
from transferkit.strategies.contrastive import make_pairs

from .conftest import NEGATIVE, NEUTRAL, POSITIVE, TIMM_SPEC, make_texts, run_fresh_python
from .test_cli import invoke

FAST = {"pairs_per_example": 4, "lr": 1e-3, "c_grid": (0.1, 1.0)}


def _diluted(n: int = 50, k: int = 6):
    """One sentiment word among ``k`` neutral ones: mean pooling of the random encoder drowns it (the plain probe
    is weak), pairs teach the encoder to weigh it."""
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for _ in range(n):
        for c, pool in (("pos", POSITIVE), ("neg", NEGATIVE)):
            words = [*rng.choice(NEUTRAL, size=k), rng.choice(pool)]
            rng.shuffle(words)
            texts.append(" ".join(str(w) for w in words))
            labels.append(c)
    return from_arrays(texts, labels, name="diluted")


def _texts():
    return from_arrays(*make_texts(10), name="texts")


def _run(spec: str, ds, seed: int = 0, **options):
    strat = STRATEGIES.get("contrastive")
    bb = create_backbone(spec)
    splits = make_splits(ds, seed=0)
    result = strat.run(bb, ds, splits, make_config(strat, {**FAST, **options}), RunContext(seed=seed, progress=False))
    return bb, splits, result


def test_pairs_are_balanced_seeded_and_capped():
    labels = np.array([0] * 6 + [1] * 4 + [2] * 5)
    pairs, targets = make_pairs(labels, 3, 10_000, seed=0)
    assert len(pairs) == 2 * 3 * len(labels) and targets.sum() == len(pairs) / 2  # 3 + 3 per text, balanced
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    assert (same == (targets == 1)).all() and (pairs[:, 0] != pairs[:, 1]).all()
    for i in range(len(labels)):  # each text: 3 distinct partners of its class, 3 of others
        mine = pairs[pairs[:, 0] == i]
        assert len(mine) == 6 and len(set(mine[same[pairs[:, 0] == i], 1])) == 3
    again, _ = make_pairs(labels, 3, 10_000, seed=0)
    other, _ = make_pairs(labels, 3, 10_000, seed=1)
    assert np.array_equal(pairs, again) and not np.array_equal(pairs, other)
    capped, capped_t = make_pairs(labels, 3, 10, seed=0)
    assert len(capped) == 10 and capped_t.sum() == 5
    with pytest.raises(TransferkitError, match="two training texts of one class"):
        make_pairs(np.array([0, 1]), 3, 100, seed=0)


def _spy_pairs(monkeypatch) -> dict:
    """Records (under "texts") every text that the pairs tuning the encoder are made of."""
    seen = {}
    real = ctr.train_pairs

    def spy(backbone, texts, pairs, targets, *args, **kwargs):
        seen["texts"] = {texts[i] for i in pairs.ravel()}
        return real(backbone, texts, pairs, targets, *args, **kwargs)

    monkeypatch.setattr(ctr, "train_pairs", spy)
    return seen


def test_pairs_come_from_the_training_split_only(bert_dir, monkeypatch):
    seen = _spy_pairs(monkeypatch)
    ds = _texts()
    _, splits, result = _run(f"hf:{bert_dir}", ds, max_pairs=50)
    assert seen["texts"] <= set(ds.take(splits.train)) and result.info["pairs"] == 50
    assert result.info["work"]["train"] == 2 * 50  # two texts per pair, one epoch


def test_loss_falls_and_a_clearly_better_encoder_is_kept_and_round_trips(bert_dir, cache_dir, tmp_path):
    ds = _diluted()
    spec = f"hf:{bert_dir}"
    bb, splits, result = _run(spec, ds, pairs_per_example=8, lr=3e-3, epochs=3)
    info = result.info
    assert info["loss_curve"][-1] < 0.5 * info["loss_curve"][0]
    assert info["kept"] == "contrastive", info["kept_reason"]
    assert info["val_accuracy"] == info["contrastive_val_accuracy"] > info["probe_val_accuracy"]
    assert (result.test_pred == ds.targets[splits.test]).mean() >= 0.9
    assert info["trainable_parameters"] == sum(p.numel() for p in result.model.parameters() if p.requires_grad)
    assert json.loads(json.dumps(info)) == info
    pretrained = create_backbone(spec)
    assert bb.weights_changed and bb.fingerprint() != pretrained.fingerprint()
    # the tuned features were not cached: the cache holds the plain ones, under the pretrained key
    assert len(list((cache_dir / "features").glob("*.safetensors"))) == 3
    cached, hit = extract_features(pretrained, ds, splits.train, progress=False)
    assert hit and np.allclose(cached, extract_features(pretrained, ds, splits.train, use_cache=False,
                                                        progress=False)[0], atol=1e-6)
    path = result.model.save(tmp_path / "m")
    assert (path / "backbone.safetensors").exists()
    items = ds.take(splits.test)
    want = result.model.predict_proba(items)
    np.testing.assert_allclose(transferkit.load(path).predict_proba(items), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(want, result.test_proba, rtol=1e-4, atol=1e-5)
    fresh = run_fresh_python(
        f"import json, transferkit; m = transferkit.load({str(path)!r}); "
        f"print(json.dumps(m.predict_proba({items!r}).tolist()))", tmp_path
    )
    np.testing.assert_allclose(np.array(fresh), want, rtol=1e-5, atol=1e-6)


def test_with_lr_zero_the_plain_probe_is_kept_on_the_pretrained_weights(bert_dir, tmp_path):
    spec = f"hf:{bert_dir}"
    before = create_backbone(spec).state_dict()
    bb, _, result = _run(spec, _texts(), lr=0.0)
    assert result.info["kept"] == "linear-probe" and "plain probe" in result.info["kept_reason"]
    assert result.info["val_paired"] == {"only_contrastive_right": 0, "only_probe_right": 0}
    assert result.info["val_accuracy"] == result.info["probe_val_accuracy"]
    assert not bb.weights_changed and bb.state_dict().keys() == before.keys()
    for k, v in before.items():
        torch.testing.assert_close(bb.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert result.info["trainable_parameters"] == sum(p.numel() for p in result.model.head.parameters())
    assert sorted(p.name for p in result.model.save(tmp_path / "m").iterdir()) == [
        "head.safetensors", "transferkit.json"]


def test_a_fixed_seed_repeats_the_tuning_exactly(bert_dir, monkeypatch):
    monkeypatch.setattr(ctr, "clearly_better", lambda *a: True)  # keep the tuned encoder, to compare it
    a = _run(f"hf:{bert_dir}", _texts(), seed=3)[0].state_dict()
    b = _run(f"hf:{bert_dir}", _texts(), seed=3)[0].state_dict()
    c = _run(f"hf:{bert_dir}", _texts(), seed=4)[0].state_dict()
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, rtol=0, atol=0, msg=k)
    assert any(not torch.equal(c[k], v) for k, v in a.items())


@pytest.mark.parametrize("kept", [True, False])
def test_adapters_train_only_adapter_parameters(kept, bert_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(ctr, "clearly_better", lambda *a: kept)
    spec = f"hf:{bert_dir}"
    pretrained = create_backbone(spec)
    before = pretrained.state_dict()
    bb, splits, result = _run(spec, _texts(), adapters=True, r=4, alpha=8, adapter_lr=1e-2)
    state = bb.state_dict()
    base = {k.replace(".base_layer.", "."): v for k, v in state.items() if "lora_" not in k}
    assert base.keys() == before.keys() and not bb.weights_changed
    for k, v in before.items():  # the pretrained weights are untouched either way
        torch.testing.assert_close(base[k], v, rtol=0, atol=0, msg=k)
    lora = {k: v for k, v in state.items() if "lora_" in k}
    files = sorted(p.name for p in result.model.save(tmp_path / "m").iterdir())
    if kept:
        assert result.info["tuned_parameters"] == sum(v.numel() for v in lora.values())
        assert result.info["target_modules"] == ["query", "value"]
        assert any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # B starts at zero: it trained
        trainable = [n for n, p in result.model.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
        assert files == ["adapter.safetensors", "head.safetensors", "transferkit.json"]
    else:  # removed again: the backbone is the pretrained one, names, fingerprint and all
        assert not lora and bb.adapter is None and state.keys() == before.keys()
        assert bb.fingerprint() == pretrained.fingerprint()
        assert files == ["head.safetensors", "transferkit.json"]
    items = _texts().take(splits.test)
    np.testing.assert_allclose(transferkit.load(tmp_path / "m").predict_proba(items),
                               result.model.predict_proba(items), rtol=1e-5, atol=1e-6)


def test_images_and_numeric_targets_are_refused_in_one_sentence(bert_dir):
    images = from_arrays(np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8), ["a", "b"] * 4)
    with pytest.raises(TransferkitError, match=r"^contrastive tunes text encoders .* takes images: use [^.]*\.$"):
        _run(TIMM_SPEC, images)
    scores = Dataset([f"text {w} {i}" for i, w in enumerate(POSITIVE * 4)], [str(i * 0.5) for i in range(24)], "text",
                     task="regression")
    with pytest.raises(TransferkitError, match=r"^contrastive pairs texts by class, .*numeric target[^.]*\.$"):
        _run(f"hf:{bert_dir}", scores)


def test_cli_fit_and_compare_take_contrastive(text_csv, bert_dir, tmp_path):
    spec = f"hf:{bert_dir}"
    out = tmp_path / "fit"
    result = invoke("fit", text_csv, "--backbone", spec, "--strategy", "contrastive", "--set", "pairs_per_example=2",
                    "--set", "lr=0.001", "--out", out, "--quiet", "--no-scratch")
    assert result.exit_code == 0, (result.output, result.exception)
    assert (out / "model" / "transferkit.json").exists()
    record = json.loads((out / "run.json").read_text())
    assert record["strategy_info"]["kept"] in ("contrastive", "linear-probe")
    assert transferkit.load(out / "model").predict(["a very good film"])[0].label in ("pos", "neg")
    out = tmp_path / "compare"
    result = invoke("compare", text_csv, "--backbone", spec, "--strategies", "linear-probe,contrastive", "--seeds",
                    "1", "--set", "contrastive.pairs_per_example=2", "--out", out, "--quiet")
    assert result.exit_code == 0, (result.output, result.exception)
    runs = json.loads((out / "compare.json").read_text())["runs"]
    assert {r.get("strategy") for r in runs} >= {"linear-probe", "contrastive"}


def _given_test(n_train: int = 8, n_test: int = 6) -> Dataset:
    """Texts with a split column: the test set is given, the labels few (the cross-validation regime)."""
    texts, labels = make_texts(n_train + n_test)
    split = ["test" if i >= 2 * n_train else "train" for i in range(len(texts))]
    return Dataset(texts, labels, "text", name="given", split=split)


@pytest.mark.parametrize(("per_class", "n_classes", "want"), [(8, 3, 384), (16, 3, 1536), (8, 2, 128)])
def test_by_default_every_distinct_pair_is_used_and_the_fewer_kind_repeated(per_class, n_classes, want):
    labels = np.repeat(np.arange(n_classes), per_class)
    pairs, targets = make_pairs(labels, None, 8000, seed=0)
    assert len(pairs) == want == ctr.pair_count(len(labels), n_classes, ctr.ContrastiveConfig())
    assert targets.sum() == len(pairs) / 2
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    assert (same == (targets == 1)).all() and (pairs[:, 0] < pairs[:, 1]).all()
    distinct = {tuple(p) for p in pairs}
    n = len(labels)
    assert len(distinct) == n * (n - 1) // 2  # every pair of texts at least once
    counts = np.unique([hash(tuple(p)) for p in pairs[same]], return_counts=True)[1]
    assert counts.max() - counts.min() <= 1  # the repeated kind evenly
    big = np.repeat([0, 1], 200)  # 79,800 distinct pairs: 20 sampled partners a text, capped
    assert len(make_pairs(big, None, 8000, seed=0)[0]) == 8000 == ctr.pair_count(400, 2, ctr.ContrastiveConfig())


def test_pair_loss_embeds_a_repeated_text_once(bert_dir):
    bb = create_backbone(f"hf:{bert_dir}")
    seen = []
    real = bb.prepare
    bb.prepare = lambda texts: seen.append(list(texts)) or real(texts)
    a, b = ["good film", "bad film", "good film"], ["bad film", "a plot", "a plot"]
    target = torch.tensor([0.0, 1.0, 0.0])
    loss = ctr.pair_loss(bb, a, b, target, torch.device("cpu"))
    assert seen == [["good film", "bad film", "a plot"]]
    bb.prepare = real
    emb = bb(bb.prepare(a + b))
    want = torch.nn.functional.mse_loss(torch.nn.functional.cosine_similarity(emb[:3], emb[3:], dim=-1), target)
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)


def test_with_a_given_test_set_and_few_labels_every_label_tunes_the_encoder(bert_dir, monkeypatch):
    seen = _spy_pairs(monkeypatch)
    ds = _given_test()
    strat = STRATEGIES.get("contrastive")
    splits = make_splits(ds, seed=0)
    assert len(splits.val) > 0 and "test" in splits.given
    result = strat.run(create_backbone(f"hf:{bert_dir}"), ds, splits, make_config(strat, FAST),
                       RunContext(seed=0, progress=False))
    info = result.info
    assert seen["texts"] == set(ds.take(np.concatenate([splits.train, splits.val])))
    assert not seen["texts"] & set(ds.take(splits.test))
    assert info["kept"] == "contrastive" and "kept by default" in info["kept_reason"]
    assert info["selection"].startswith("5-fold cross-validation on train + val")
    assert np.isnan(info["val_accuracy"]) and result.val_proba is None
    assert "val_paired" not in info and "contrastive_val_accuracy" not in info


def test_auto_keeps_contrastive_by_default_with_a_given_test_set_and_few_labels(bert_dir, tmp_path):
    res = transferkit.fit(_given_test(), f"hf:{bert_dir}", "auto", budget="1h", seeds=1, progress=False,
                          out=tmp_path / "auto", pairs_per_example=2)
    assert list(res.compare.meta["strategies"]) == ["linear-probe", "contrastive"]
    assert res.record["chosen"]["label"] == "contrastive"
    assert res.record["chosen"]["by"].startswith("with few labels and a given test set, contrastive")
    lines = res.compare.choice_lines()
    assert lines[0].startswith("kept `contrastive`: with few labels") and len(lines) == 1
    assert any("every label trains (the probe's C by 5-fold cross-validation)" in n
               for n in res.record["compare"]["auto_plan"])
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not standard JSON")

    record = json.loads((tmp_path / "auto" / "run.json").read_text(), parse_constant=refuse)
    assert record["compare"]["val_accuracy_mean"]["contrastive"] is None  # no validation score exists
    report = (tmp_path / "auto" / "report.md").read_text()
    assert "kept `contrastive`" in report and "nan" not in report.lower()


@pytest.mark.parametrize("strategy", ["contrastive", "auto"])
def test_cli_refuses_calibrate_when_contrastive_trains_on_every_label(strategy, bert_dir, tmp_path):
    from .test_cli import assert_clean_failure

    ds = _given_test()
    path = tmp_path / "given.csv"
    path.write_text("text,label,split\n" + "".join(
        f"{t},{lab},{s}\n" for t, lab, s in zip(ds.items, ds.labels, ds.split, strict=True)))
    result = invoke("fit", path, "--backbone", f"hf:{bert_dir}", "--strategy", strategy, "--calibrate",
                    "--out", tmp_path / "out", "--quiet")
    assert_clean_failure(result, "--calibrate fits a temperature on held-out validation texts")
    assert not (tmp_path / "out").exists()
