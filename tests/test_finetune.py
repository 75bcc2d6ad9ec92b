"""The finetune strategy and the training loop: freezing, parameter groups, BatchNorm, class weights, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import transferkit
from transferkit import TransferkitError, create_backbone, from_arrays
from transferkit.core.training import ParamGroup, TrainConfig, Trainer, class_weight_vector, set_batchnorm_eval
from transferkit.data import make_splits
from transferkit.strategies import STRATEGIES, RunContext, make_config
from transferkit.strategies.finetune import parse_unfreeze

from .conftest import TIMM_SPEC


def _shades(n: int = 12):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(0, 60, (n, 24, 24, 3)), rng.integers(190, 255, (n, 24, 24, 3))])
    return from_arrays(x.astype(np.uint8), ["dark"] * n + ["light"] * n, name="shades")


def _run(options: dict, seed: int = 0, ds=None, **ctx):
    torch.manual_seed(123)  # the random-init backbone is the same in every call
    bb = create_backbone(TIMM_SPEC)
    ds = ds if ds is not None else _shades()
    splits = make_splits(ds, seed=0)
    strat = STRATEGIES.get("finetune")
    # the mechanics of training are tested from a random head; LP-FT (the default) has tests of its own
    cfg = make_config(strat, {"batch_size": 8, "lr": 0.01, "lp_ft": False, **options})
    return bb, strat.run(bb, ds, splits, cfg, RunContext(seed=seed, progress=False, **ctx))


def test_parse_unfreeze():
    assert parse_unfreeze("all", 5) == ("all", 5)
    assert parse_unfreeze("last:2", 5) == ("last", 2)
    assert parse_unfreeze("gradual", 5) == ("gradual", 5)
    with pytest.raises(TransferkitError, match=r"N must be a whole number from 1 to 5"):
        parse_unfreeze("last:9", 5)
    with pytest.raises(TransferkitError, match=r"N must be a whole number"):
        parse_unfreeze("last:x", 5)
    with pytest.raises(TransferkitError, match=r"is not one of all, last:N, gradual"):
        parse_unfreeze("top", 5)


def test_last_n_trains_only_the_last_blocks_and_head():
    bb, result = _run({"unfreeze": "last:2", "epochs": 2})
    blocks = bb.blocks()
    trainable = {id(p) for p in result.model.parameters() if p.requires_grad}
    top = {id(p) for b in blocks[-2:] for p in b.parameters()} | {id(p) for p in result.model.head.parameters()}
    assert trainable == top
    assert result.info["param_groups"] == ["head", "block.0", "block.1"]
    assert result.info["trainable_parameters"] == sum(p.numel() for p in result.model.parameters() if p.requires_grad)


def test_frozen_blocks_do_not_change_and_trained_ones_do():
    torch.manual_seed(123)
    before = {k: v.clone() for k, v in create_backbone(TIMM_SPEC).state_dict().items()}
    bb, _ = _run({"unfreeze": "last:1", "epochs": 2})
    after = bb.state_dict()
    top = {id(p) for p in bb.blocks()[-1].parameters()}
    params = dict(bb.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    for k in changed:  # only parameters of the last block (and no running stats: bn_stats=frozen by default)
        assert k in params and id(params[k]) in top, k


def test_source_classifier_stays_frozen():
    bb, result = _run({"unfreeze": "all", "epochs": 1})
    for m in bb.unused_modules():
        assert all(not p.requires_grad for p in m.parameters())
    assert result.info["trainable_parameters"] < sum(p.numel() for p in result.model.parameters())


def test_discriminative_and_layer_wise_learning_rates():
    bb = create_backbone(TIMM_SPEC)
    strat = STRATEGIES.get("finetune")
    cfg = make_config(strat, {"lr": 1e-2, "backbone_lr_mult": 0.1, "layer_decay": 0.5})
    head = nn.Linear(bb.feature_dim, 2)
    groups = strat._groups(bb, bb.blocks(), head, "all", len(bb.blocks()), cfg)
    lrs = {g.name: g.lr for g in groups}
    assert lrs["head"] == pytest.approx(1e-2)
    assert lrs["block.0"] == pytest.approx(1e-3)
    assert lrs["block.1"] == pytest.approx(5e-4)
    assert lrs["block.2"] == pytest.approx(2.5e-4)
    assert lrs["stem"] < min(v for k, v in lrs.items() if k.startswith("block."))
    names = [p for g in groups for p in g.params]
    assert len({id(p) for p in names}) == len(names), "a parameter sits in two groups"


def test_gradual_unfreezing_adds_one_block_per_epoch():
    seen = []
    bb = create_backbone(TIMM_SPEC)
    blocks = bb.blocks()
    from transferkit.core import training as tr

    real_trainer = tr.Trainer

    class Spy(real_trainer):
        def __init__(self, *a, **kw):
            inner = kw["on_epoch_start"]

            def hook(epoch):
                inner(epoch)
                seen.append([any(p.requires_grad for p in b.parameters()) for b in blocks])

            kw["on_epoch_start"] = hook
            super().__init__(*a, **kw)

    tr.Trainer = Spy
    try:
        ds = _shades()
        strat = STRATEGIES.get("finetune")
        cfg = make_config(strat, {"unfreeze": "gradual", "epochs": 3, "patience": None, "batch_size": 8})
        strat.run(bb, ds, make_splits(ds, seed=0), cfg, RunContext(progress=False))
    finally:
        tr.Trainer = real_trainer
    assert [sum(s) for s in seen] == [0, 1, 2]
    assert seen[1][-1] and not seen[1][0]  # from the top


def test_batchnorm_eval_rules():
    m = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.BatchNorm2d(2))
    for p in m[1].parameters():
        p.requires_grad_(False)
    m.train()
    set_batchnorm_eval(m)
    assert not m[1].training and m[2].training
    m.train()
    set_batchnorm_eval(m, all_layers=True)
    assert not m[1].training and not m[2].training


def test_class_weights_only_when_imbalanced():
    assert class_weight_vector(np.array([0, 0, 1, 1, 1]), 2, "auto") is None
    w = class_weight_vector(np.array([0] * 8 + [1] * 2), 2, "auto")
    assert w is not None and w[1] > w[0] and float(w.mean()) == pytest.approx(1.0)
    assert class_weight_vector(np.array([0] * 8 + [1] * 2), 2, "off") is None
    assert class_weight_vector(np.array([0, 1]), 2, "on") is not None
    with pytest.raises(TransferkitError, match="class_weights='maybe' is not one of auto, on, off"):
        class_weight_vector(np.array([0, 1]), 2, "maybe")


def test_bad_bn_stats_is_a_clear_error():
    with pytest.raises(TransferkitError, match="bn_stats='sometimes' is not one of frozen, train"):
        _run({"epochs": 1, "bn_stats": "sometimes"})


def _linear_trainer(model: nn.Linear, epochs: int, patience: int) -> Trainer:
    """A Trainer for a linear model on tensor items (the loop's own logic, no backbone)."""
    return Trainer(
        model,
        [ParamGroup("head", list(model.parameters()), 0.5)],
        lambda items, train, gen: torch.stack(items),
        TrainConfig(epochs=epochs, batch_size=8, patience=patience),
        progress=False,
    )


def test_early_stopping_restores_the_best_epoch():
    torch.manual_seed(0)
    x = torch.randn(40, 4)
    y = (x[:, 0] > 0).long().numpy()
    model = nn.Linear(4, 2)
    trainer = _linear_trainer(model, epochs=30, patience=2)
    result = trainer.fit(list(x[:30]), y[:30], list(x[30:]), y[30:], 2)
    assert len(result.history) < 30  # stopped early
    assert len(result.history) - 1 - result.best_epoch == 2  # the best epoch, then `patience` epochs without gain
    with torch.no_grad():
        acc = float((model(x[30:]).argmax(1).numpy() == y[30:]).mean())
    assert acc == pytest.approx(result.best_val_accuracy)


def test_resume_after_interruption_ends_exactly_like_an_uninterrupted_run(tmp_path):
    opts = {"epochs": 4, "patience": None, "unfreeze": "gradual"}
    _, full = _run(opts, seed=3)
    ck = tmp_path / "checkpoint"
    _, first = _run(opts, seed=3, checkpoint_dir=ck, stop_after=2)
    assert len(first.info["learning_curve"]) == 2 and (ck / "trainer.json").is_file()
    assert not list(tmp_path.glob(".checkpoint.*")), "temporary checkpoint folders left behind"
    _, resumed = _run(opts, seed=3, checkpoint_dir=ck, resume=True)
    assert resumed.info["resumed_from_epoch"] == 2

    def curve(r):
        return [{k: v for k, v in rec.items() if k != "seconds"} for rec in r.info["learning_curve"]]

    assert curve(resumed) == curve(full)  # the first two epochs come from the checkpoint, the rest are rerun
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    assert resumed.test_pred.tolist() == full.test_pred.tolist()


def test_resume_with_other_settings_is_refused(tmp_path):
    ck = tmp_path / "checkpoint"
    _run({"epochs": 3, "patience": None}, checkpoint_dir=ck, stop_after=1)
    with pytest.raises(TransferkitError, match=r"was made with other settings"):
        _run({"epochs": 3, "patience": None, "unfreeze": "last:1"}, checkpoint_dir=ck, resume=True)


def test_checkpoint_holds_no_pickle(tmp_path):
    ck = tmp_path / "checkpoint"
    _run({"epochs": 2}, checkpoint_dir=ck, stop_after=1)
    state = torch.load(ck / "state.pt", weights_only=True)  # would raise on arbitrary objects
    assert set(state) == {"optimizer", "scheduler", "generator", "torch_rng"}


def test_fit_finetune_saves_backbone_weights_and_round_trips(image_folder, tmp_path):
    result = transferkit.fit(
        image_folder,
        TIMM_SPEC,
        "finetune",
        out=tmp_path / "run",
        epochs=2,
        batch_size=4,
        scratch=False,
        progress=False,
    )
    assert (tmp_path / "run" / "model" / "backbone.safetensors").is_file()
    assert not (tmp_path / "run" / "checkpoint").exists()  # removed once the run finished
    items = transferkit.from_folder(image_folder).items[:4]
    loaded = transferkit.load(tmp_path / "run" / "model")
    np.testing.assert_allclose(loaded.predict_proba(items), result.model.predict_proba(items), rtol=1e-5, atol=1e-6)
    assert result.record["strategy_info"]["learning_curve"], "learning curve missing from run.json"


def test_fit_resume_needs_an_output_folder(image_folder):
    with pytest.raises(TransferkitError, match=r"resume needs the output folder"):
        transferkit.fit(image_folder, TIMM_SPEC, "finetune", resume=True, progress=False)


def test_starting_weights_are_kept_unless_an_epoch_beats_them():
    torch.manual_seed(0)
    x = torch.randn(40, 4)
    y = (x[:, 0] > 0).long().numpy()

    def run(initial: float) -> tuple[nn.Linear, torch.Tensor, object]:
        torch.manual_seed(1)
        model = nn.Linear(4, 2)
        start = model.weight.detach().clone()
        trainer = _linear_trainer(model, epochs=6, patience=2)
        return model, start, trainer.fit(list(x[:30]), y[:30], list(x[30:]), y[30:], 2, initial_val_accuracy=initial)

    model, start, result = run(1.0)  # nothing beats a perfect start: it is kept, and patience ends the run
    assert result.best_epoch == -1 and result.initial_val_accuracy == 1.0
    assert len(result.history) == 2 and torch.equal(model.weight, start)  # `patience` epochs without gain
    model, start, result = run(0.0)
    assert result.best_epoch >= 0 and not torch.equal(model.weight, start)


def test_lp_ft_is_the_default_and_gives_way_to_the_probe(tmp_path):
    from transferkit.strategies.finetune import FinetuneConfig

    assert FinetuneConfig().lp_ft is True
    ds = _shades()
    splits = make_splits(ds, seed=0)
    torch.manual_seed(123)
    bb = create_backbone(TIMM_SPEC)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    ft = STRATEGIES.get("finetune")
    # a learning rate of zero changes nothing, so no epoch can beat the probe it started from
    res = ft.run(bb, ds, splits, make_config(ft, {"lr": 0.0, "epochs": 2, "batch_size": 8}), RunContext(progress=False))
    assert res.info["kept"] == "linear-probe" and "no fine-tuned epoch beat the linear probe" in res.info["kept_reason"]
    assert res.info["best_epoch"] == 0 and not bb.weights_changed
    assert all(torch.equal(before[k], v) for k, v in bb.state_dict().items())
    # what is kept is exactly the linear-probe strategy's model
    torch.manual_seed(123)
    bb2 = create_backbone(TIMM_SPEC)
    lp = STRATEGIES.get("linear-probe")
    probe = lp.run(bb2, ds, splits, make_config(lp, {}), RunContext(progress=False))
    assert np.array_equal(res.test_pred, probe.test_pred)
    assert torch.allclose(res.model.head.weight, probe.model.head.weight, atol=1e-5)
    out = transferkit.fit(ds, TIMM_SPEC, "finetune", lr=0.0, epochs=1, batch_size=8, progress=False, out=tmp_path / "r")
    assert "gave way to the linear probe" in (tmp_path / "r" / "report.md").read_text()
    assert out.record["strategy_info"]["kept"] == "linear-probe"


def test_a_fine_tune_within_the_margin_gives_way_to_the_probe(monkeypatch):
    import dataclasses

    from transferkit.strategies import finetune as ft_module

    real = ft_module.fit_linear_probe

    def probe_scored_zero(*args, **kwargs):  # every fine-tuned epoch then "beats" the probe on raw accuracy
        fit = real(*args, **kwargs)
        return dataclasses.replace(fit, val_accuracy=0.0) if kwargs.get("refit_on_val") is False else fit

    monkeypatch.setattr(ft_module, "fit_linear_probe", probe_scored_zero)
    ds = _shades()
    splits = make_splits(ds, seed=0)
    torch.manual_seed(123)
    bb = create_backbone(TIMM_SPEC)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    ft = STRATEGIES.get("finetune")
    cfg = make_config(ft, {"lr": 0.05, "epochs": 1, "batch_size": 8, "keep_margin": 1e9})
    res = ft.run(bb, ds, splits, cfg, RunContext(progress=False))
    assert res.info["best_epoch"] == 1 and "val_paired" in res.info and res.info["kept"] == "linear-probe"
    assert "standard error(s) of no difference" in res.info["kept_reason"] and not bb.weights_changed
    assert all(torch.equal(before[k], v) for k, v in bb.state_dict().items())  # the pretrained backbone is back


def test_clearly_better_is_a_paired_margin():
    from transferkit.strategies.finetune import clearly_better

    assert clearly_better(10, 2, 1.0)  # +8 > sqrt(12)
    assert not clearly_better(6, 3, 1.0)  # +3 < sqrt(9)
    assert clearly_better(6, 3, 0.0) and not clearly_better(3, 3, 0.0)  # margin 0: any gain; a tie is no gain
    assert not clearly_better(0, 0, -1.0)  # no item differs: nothing to prefer the fine-tune for


def test_resume_on_other_data_or_classes_is_refused_by_name(tmp_path):
    ck = tmp_path / "checkpoint"
    _run({"epochs": 3, "patience": None}, checkpoint_dir=ck, stop_after=1)
    other = _shades()
    other.items[0] = 255 - other.items[0]  # the same classes, one image changed
    with pytest.raises(TransferkitError, match=r"other settings: data \("):
        _run({"epochs": 3, "patience": None}, ds=other, checkpoint_dir=ck, resume=True)
    renamed = from_arrays(_shades().items, ["night"] * 12 + ["day"] * 12, name="shades")
    with pytest.raises(TransferkitError, match=r"classes \("):
        _run({"epochs": 3, "patience": None}, ds=renamed, checkpoint_dir=ck, resume=True)


@pytest.mark.parametrize(
    ("name", "keep"), [("trainer.json", 20), ("model.safetensors", 50), ("state.pt", 30), ("best.safetensors", 0)]
)
def test_a_damaged_checkpoint_is_one_sentence(tmp_path, name, keep):
    ck = tmp_path / "checkpoint"
    _run({"epochs": 3, "patience": None}, checkpoint_dir=ck, stop_after=1)
    data = (ck / name).read_bytes()
    (ck / name).write_bytes(data[:keep])
    with pytest.raises(TransferkitError, match=r"checkpoint in .* is damaged"):
        _run({"epochs": 3, "patience": None}, checkpoint_dir=ck, resume=True)


def test_a_kill_while_writing_a_checkpoint_leaves_nothing_behind_after_resume(tmp_path):
    ck = tmp_path / "checkpoint"
    _run({"epochs": 3, "patience": None}, checkpoint_dir=ck, stop_after=1)
    (tmp_path / ".checkpoint.tmp-abc").mkdir()  # a half-written checkpoint of a killed run
    (tmp_path / ".checkpoint.tmp-abc" / "model.safetensors").write_bytes(b"half")
    ck.rename(tmp_path / ".checkpoint.old")  # killed between moving the last good one aside and the new one in
    _, resumed = _run({"epochs": 3, "patience": None}, checkpoint_dir=ck, resume=True)
    assert resumed.info["resumed_from_epoch"] == 1  # the last good checkpoint was put back and continued
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_tta_averages_each_image_with_its_mirror_and_travels_with_the_model(tmp_path):
    bb, res = _run({"epochs": 1, "tta": True})
    model = res.model
    ds = _shades()
    test = ds.take(make_splits(ds, seed=0).test)
    assert model.tta
    model.tta = False
    plain = model._outputs(test, 64)
    batch = bb.prepare(test)
    with torch.no_grad():
        mirror = model(batch.flip(-1)).numpy()
    model.tta = True
    np.testing.assert_allclose(model._outputs(test, 64), (plain + mirror) / 2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.test_proba, model.predict_proba(test), rtol=1e-5, atol=1e-6)
    again = transferkit.load(model.save(tmp_path / "m"))
    assert again.tta
    np.testing.assert_allclose(again.predict_proba(test), model.predict_proba(test), rtol=1e-5, atol=1e-6)
    with pytest.raises(TransferkitError, match="tta .* is for image classes only"):
        _run({"epochs": 1, "tta": True}, ds=transferkit.Dataset(
            [np.full((24, 24, 3), v, np.uint8) for v in range(0, 240, 10)],
            [f"{v}.5" for v in range(24)], "image", task="regression"))
