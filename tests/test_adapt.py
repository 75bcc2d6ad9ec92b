"""Domain adaptation: the methods' pieces against hand values, the shift diagnostic, label-free selection, the
guarantee that target labels never reach training or selection, the CLI and every bad input."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import transferkit
from transferkit import DataError, TransferkitError, from_arrays
from transferkit.cli import app
from transferkit.methods.adaptation import (
    AdaptSettings,
    coral_loss,
    em_target_prior,
    grad_reverse,
    predict_logits,
    reverse_accuracy,
    to_head,
    train_method,
)
from transferkit.methods.selection import dev_risk, importance_weights, information_maximisation
from transferkit.methods.shift import mmd, proxy_a_distance, shift_diagnostic, shift_words

from .conftest import make_texts, write_csv

# ---------------------------------------------------------------- the pieces, by hand


def test_grad_reverse_is_identity_forward_and_negated_scaled_backward():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x.detach())
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


def test_coral_loss_hand_value_and_zero_for_equal_covariances():
    fs = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # covariance diag(2, 0)
    ft = torch.tensor([[0.0, 1.0], [0.0, -1.0]])  # covariance diag(0, 2)
    assert float(coral_loss(fs, ft)) == pytest.approx((4 + 4) / (4 * 2 * 2))
    assert float(coral_loss(fs, fs + 5.0)) == pytest.approx(0.0)  # a mean shift alone is not CORAL's business


def test_information_maximisation_limits():
    confident_spread = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]]
    assert information_maximisation(confident_spread) == pytest.approx(1.0)
    assert information_maximisation(np.eye(4)[[2] * 8]) == pytest.approx(0.0)  # collapsed onto one class
    assert information_maximisation(np.full((8, 4), 0.25)) == pytest.approx(0.0)  # no confidence at all


def test_dev_risk_hand_values():
    losses = np.array([1.0, 2.0, 3.0, 4.0])
    assert dev_risk(losses, np.ones(4)) == pytest.approx(2.5)  # equal weights: the plain mean loss
    for w in (np.array([0.5, 0.5, 1.5, 1.5]), np.array([0.2, 0.6, 2.0, 3.0])):  # mean 1, and mean 1.45
        wl = w * losses
        eta = -np.cov(wl, w)[0, 1] / np.var(w, ddof=1)
        assert dev_risk(losses, w) == pytest.approx(wl.mean() + eta * w.mean() - eta)
    # the control variate matters when the weights do not average 1: eta (mean(w) - 1) moves the estimate
    w = np.array([0.2, 0.6, 2.0, 3.0])
    assert dev_risk(losses, w) != pytest.approx(float((w * losses).mean()))


def _blobs(n: int, shift: float, seed: int, d: int = 12, classes: int = 3):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(classes, d)) * 1.2
    y = rng.integers(0, classes, n)
    x = centres[y] + rng.normal(size=(n, d))
    x[:, :4] = x[:, :4] * (1 + 1.5 * (shift > 0)) + shift  # the target: first dimensions shifted and stretched
    return x.astype(np.float32), y


def test_shift_diagnostic_tells_no_shift_from_a_large_one():
    xs, _ = _blobs(400, 0.0, 0)
    same, _ = _blobs(400, 0.0, 1)
    far, _ = _blobs(400, 3.0, 2)
    pad_same, err_same = proxy_a_distance(xs, same)
    pad_far, err_far = proxy_a_distance(xs, far)
    assert pad_same < 0.5 and err_same > 0.35
    assert pad_far > 1.8 and err_far < 0.05
    m_same, p_same = mmd(xs, same)
    m_far, p_far = mmd(xs, far)
    assert p_same > 0.05 and p_far < 0.01 and m_far > 10 * abs(m_same)
    diag = shift_diagnostic(xs, far)
    assert diag["large"] and "Large shift" in diag["words"] and "negative transfer" in diag["words"]
    assert "Small shift" in shift_diagnostic(xs, same)["words"]


def test_shift_words_bands():
    assert shift_words(1.9, 0.001).startswith("Large shift")
    assert shift_words(0.8, 0.5).startswith("Moderate shift")
    assert shift_words(0.1, 0.001).startswith("Moderate shift")  # MMD alone can flag it
    assert shift_words(0.1, 0.4).startswith("Small shift")


def test_importance_weights_favour_target_like_source_rows():
    xs, _ = _blobs(300, 0.0, 0)
    xt, _ = _blobs(300, 3.0, 1)
    near, _ = _blobs(50, 1.5, 2)  # halfway to the target
    far, _ = _blobs(50, 0.0, 3)
    w = importance_weights(xs, xt, np.concatenate([near, far]))
    assert w.max() <= 20.0 and w.min() > 0
    assert w[:50].mean() > 3 * w[50:].mean()


def _hidden(trial, x: np.ndarray) -> np.ndarray:
    head = to_head(trial)
    with torch.no_grad():
        return head[1](head[0](torch.from_numpy(x))).numpy()


def _mean_shift():
    xs, ys = _blobs(480, 0.0, 0)
    xv, yv = _blobs(120, 0.0, 1)
    xt, _ = _blobs(480, 0.0, 2)
    xt[:, :4] += 1.5  # the target: a mean shift in four dimensions
    xtest, ytest = _blobs(480, 0.0, 3)
    xtest[:, :4] += 1.5
    return xs, ys, xv, yv, xt, xtest, ytest


def test_each_method_does_what_it_claims_on_a_synthetic_shift():
    torch.set_num_threads(1)
    xs, ys, xv, yv, xt, xtest, ytest = _mean_shift()  # target labels never reach train_method

    def trial(method, weight=None, select="source-val", base=None, epochs=12):
        settings = AdaptSettings(epochs=epochs, grids={} if weight is None else {method: (weight,)})
        return train_method(method, xs, ys, xv, yv, xt, 3, select=select, settings=settings, source_only=base)

    def target_accuracy(t):
        return float((predict_logits(to_head(t), xtest).argmax(1) == ytest).mean())

    base = trial("source-only")
    assert 1 <= base.epoch <= 12 and base.params == {}
    # CORAL shrinks the covariance gap of the adapted features, and that helps here
    coral = trial("coral", 1e3)
    gap = [float(coral_loss(torch.from_numpy(_hidden(t, xs)), torch.from_numpy(_hidden(t, xt)))) for t in (base, coral)]
    assert gap[1] < 0.5 * gap[0], gap
    assert target_accuracy(coral) > target_accuracy(base) + 0.02
    # DANN needs longer (the reversal factor ramps up over training)
    base_long, dann = trial("source-only", epochs=40), trial("dann", 3.0, epochs=40)
    assert target_accuracy(dann) > target_accuracy(base_long) + 0.03
    # self-training with the information-maximisation criterion gains on this shift (no target label used)
    base_im = trial("source-only", select="im")
    st = trial("self-training", select="im", base=base_im)
    assert st.method == "self-training" and st.params["pseudo_labels"] > 0
    assert target_accuracy(st) > target_accuracy(base_im) + 0.03


def test_self_training_records_its_pseudo_labels():
    xs, ys = _blobs(240, 0.0, 0)
    xv, yv = _blobs(60, 0.0, 1)
    xt, _ = _blobs(240, 3.0, 2)
    trial = train_method("self-training", xs, ys, xv, yv, xt, 3, settings=AdaptSettings(epochs=4, rounds=2))
    assert {"threshold", "round", "pseudo_labels"} <= set(trial.params)
    assert 0 <= trial.params["pseudo_labels"] <= 240


def test_reverse_accuracy_rewards_right_target_labels_and_scores_a_collapse_at_its_class_share():
    xs, ys, xv, yv, xt, _, _ = _mean_shift()
    base = train_method("source-only", xs, ys, xv, yv, xt, 3, select="source-val", settings=AdaptSettings(epochs=8))
    prior = np.bincount(ys, minlength=3) / len(ys)
    good = reverse_accuracy(base, xt, xv, yv, prior)
    assert base.reverse_accuracy == pytest.approx(good) and good > 0.8
    order = [1, 2, 0]  # the same model with its classes renamed: every target label wrong
    renamed = dataclasses.replace(base, state={**base.state, "3.weight": base.state["3.weight"][order],
                                               "3.bias": base.state["3.bias"][order]})
    assert reverse_accuracy(renamed, xt, xv, yv, prior) < 0.2
    collapsed = dataclasses.replace(base, state={**base.state, "3.bias": torch.tensor([1e4, -1e4, -1e4])})
    assert reverse_accuracy(collapsed, xt, xv, yv, prior) == pytest.approx(float((yv == 0).mean()))
    # adabn labels the target through the target's own moments; its reverse classifier sees the same inputs as
    # every other method's (source moments), so only the labels differ
    adabn = train_method("adabn", xs, ys, xv, yv, xt, 3, select="source-val", settings=AdaptSettings(epochs=8),
                         source_only=base)
    assert adabn.reverse_accuracy is not None and adabn.reverse_accuracy > 0.8
    assert adabn.describe()["reverse_accuracy"] == adabn.reverse_accuracy


@pytest.mark.parametrize("select", ["dev", "im", "source-val"])
def test_every_selection_criterion_runs(select):
    xs, ys = _blobs(120, 0.0, 0)
    xv, yv = _blobs(40, 0.0, 1)
    xt, _ = _blobs(120, 3.0, 2)
    trial = train_method("coral", xs, ys, xv, yv, xt, 3, select=select, settings=AdaptSettings(epochs=3))
    assert math.isfinite(trial.criterion)
    if select == "source-val":
        assert trial.criterion == trial.source_val_accuracy


# ---------------------------------------------------------------- end to end on a tiny backbone


def _domains(n: int = 16, seed: int = 0):
    """Dark vs light squares (source) and the same classes with a red cast and noise (target)."""
    rng = np.random.default_rng(seed)
    dark = rng.integers(0, 70, (n, 24, 24, 3))
    light = rng.integers(170, 255, (n, 24, 24, 3))
    x = np.concatenate([dark, light]).astype(np.uint8)
    labels = ["dark"] * n + ["light"] * n
    shifted = x.astype(int)
    shifted[..., 0] = np.clip(shifted[..., 0] + 60, 0, 255)
    shifted = np.clip(shifted + rng.integers(-25, 25, shifted.shape), 0, 255).astype(np.uint8)
    return from_arrays(x, labels, name="squares"), from_arrays(shifted, labels, name="red squares")


def test_target_test_labels_never_reach_training_or_selection(timm_dir, cache_dir):
    src, tgt = _domains()
    kw = dict(backbone=str(timm_dir), seeds=2, epochs=4, settings=AdaptSettings(epochs=4, rounds=1),
              methods=["dann", "coral", "adabn", "label-shift", "self-training"], cache_dir=cache_dir, progress=False)
    honest = transferkit.adapt(src, tgt, tgt, **kw)
    # the same target inputs with labels nearly all one class (wrong about half the time, and unbalanced), given as
    # the "unlabelled" target and as the target test
    lies = ["light", "light"] + ["dark"] * (len(tgt) - 2)
    liar_labels = from_arrays(np.asarray(tgt.items), lies, name="red squares")
    liar = transferkit.adapt(src, liar_labels, liar_labels, **kw)

    def chosen(runs):  # every chosen checkpoint and criterion (not the seconds it took)
        return [{m: {k: v for k, v in r.items() if k != "seconds"} for m, r in run["methods"].items()} for run in runs]

    assert chosen(honest.runs) == chosen(liar.runs)
    assert honest.diagnostic == liar.diagnostic and honest.recommended() == liar.recommended()
    lie_y = np.array([src.classes.index(label) for label in lies])
    for seed, (a, b) in enumerate(zip(honest.target_predictions, liar.target_predictions, strict=True)):
        assert a.keys() == b.keys() and all(np.array_equal(a[m], b[m]) for m in a)
        for m in honest.all_methods:  # only the final scoring saw the labels
            assert liar.target_accuracy[m][seed] == pytest.approx(float((a[m] == lie_y).mean()))
            assert honest.target_accuracy[m][seed] == pytest.approx(float((a[m] == tgt.targets).mean()))
    # and a target that is different data from the target test: still no influence of the test labels
    other = from_arrays(np.asarray(tgt.items)[::-1], list(reversed(tgt.labels)), name="reversed")
    one = transferkit.adapt(src, list(src.items), tgt, **kw)
    two = transferkit.adapt(src, list(src.items), other, **kw)
    assert chosen(one.runs) == chosen(two.runs)


def test_adapt_report_and_saved_model(timm_dir, cache_dir, tmp_path):
    src, tgt = _domains()
    res = transferkit.adapt(src, tgt, tgt, backbone=str(timm_dir), methods=["coral"], seeds=2, epochs=3,
                            cache_dir=cache_dir, progress=False, out=tmp_path / "run")
    rows = {r["method"]: r for r in res.summary()}
    assert set(rows) == {"source-only", "coral"}
    assert 0 <= rows["coral"]["low"] <= rows["coral"]["target_accuracy"] <= rows["coral"]["high"] <= 1
    assert rows["coral"]["verdict"].startswith(("coral helps", "coral hurts", "coral: no clear difference from"))
    saved = json.loads((tmp_path / "run" / "adapt.json").read_text())
    assert saved["recommended"] in ("source-only", "coral") and saved["diagnostic"]["proxy_a_distance"] >= 0
    assert saved["recommend"] == "reverse" and saved["recommendation"] == res.recommendation_reason()
    assert all(0 <= r["methods"][m]["reverse_accuracy"] <= 1 for r in saved["runs"] for m in ("source-only", "coral"))
    report = (tmp_path / "run" / "report.md").read_text()
    assert "proxy A-distance" in report and "recommended without target labels" in report
    model = transferkit.load(tmp_path / "run" / "model")
    pred = model.predict(list(tgt.items[:4]))
    assert all(p.label in ("dark", "light") for p in pred)
    assert np.allclose(model.predict_proba(list(tgt.items[:4])), res.model.predict_proba(list(tgt.items[:4])),
                       atol=1e-5)


def test_adapt_without_target_labels_says_accuracy_is_unknown(timm_dir, cache_dir, tmp_path):
    src, tgt = _domains()
    res = transferkit.adapt(src, list(tgt.items), backbone=str(timm_dir), methods=["dann"], seeds=1, epochs=2,
                            cache_dir=cache_dir, progress=False, out=tmp_path / "run")
    assert res.target_accuracy == {} and "target_accuracy" not in res.summary()[0]
    assert "target accuracy is unknown" in (tmp_path / "run" / "report.md").read_text()


def test_fit_with_the_adapt_strategy(timm_dir, cache_dir):
    src, tgt = _domains()
    res = transferkit.fit(src, str(timm_dir), "adapt", target=list(tgt.items), method="self-training", epochs=3,
                          scratch=False, cache_dir=cache_dir, progress=False)
    info = res.record["strategy_info"]
    assert info["method"] == "self-training" and info["select"] == "dev" and info["target_items"] == len(tgt)
    assert res.record["config"]["target"] == f"<list of {len(tgt)} items>"  # run.json keeps the size, not the data
    json.dumps(res.record)


def test_cli_adapt_on_texts(bert_dir, tmp_path):
    texts, labels = make_texts(12)
    rows = [{"text": t, "label": lab} for t, lab in zip(texts, labels, strict=True)]
    source = write_csv(tmp_path / "source.csv", rows)
    texts, labels = make_texts(12, seed=1)  # the target domain: the same classes, shouted, with a new sign-off
    shouted = [t.upper() + " -- SENT FROM MY PHONE" for t in texts]
    target = write_csv(tmp_path / "target.csv", [{"text": t} for t in shouted])
    target_test = write_csv(tmp_path / "target_test.csv",
                            [{"text": t, "label": lab} for t, lab in zip(shouted, labels, strict=True)])
    result = CliRunner().invoke(app, [
        "adapt", "--source", str(source), "--target", str(target), "--target-test", str(target_test),
        "--backbone", f"hf:{bert_dir}", "--method", "coral,self-training", "--seeds", "2", "--epochs", "3",
        "--out", str(tmp_path / "out"), "--quiet", "--recommend", "criterion",
    ])
    assert result.exit_code == 0, result.output
    assert "Shift diagnostic" in result.output and "Recommended without target labels" in result.output
    assert "best mean criterion" in result.output
    saved = json.loads((tmp_path / "out" / "adapt.json").read_text())
    assert saved["methods"] == ["coral", "self-training"] and len(saved["runs"]) == 2
    assert set(saved["target_accuracy"]) == {"source-only", "coral", "self-training"}
    assert saved["recommend"] == "criterion"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ["mixup"]},
         "Unknown adaptation method 'mixup'; choose from dann, coral, adabn, label-shift, self-training"),
        ({"methods": []}, "Name at least one adaptation method"),
        ({"select": "oracle"}, "select='oracle' is not one of dev, im, source-val"),
        ({"recommend": "vote"}, "recommend='vote' is not one of reverse, criterion"),
        ({"seeds": 0}, "seeds must be at least 1"),
        ({"epochs": 0}, "epochs must be at least 1"),
    ],
)
def test_adapt_bad_options(kwargs, message):
    src, tgt = _domains(4)
    with pytest.raises(TransferkitError, match=message):
        transferkit.adapt(src, list(tgt.items), progress=False, **kwargs)


def test_adapt_bad_data(timm_dir, cache_dir):
    src, tgt = _domains(8)
    with pytest.raises(DataError, match="holds 3 inputs; adaptation needs at least 10"):
        transferkit.adapt(src, list(tgt.items[:3]), backbone=str(timm_dir), progress=False)
    odd = from_arrays(np.asarray(tgt.items), ["dark"] * 8 + ["grey"] * 8, name="odd")
    with pytest.raises(DataError, match="target test data has labels the source lacks: grey"):
        transferkit.adapt(src, list(tgt.items), odd, backbone=str(timm_dir), progress=False)
    texts = from_arrays(["a b"] * 16, ["dark", "light"] * 8, name="texts")
    with pytest.raises(DataError, match="target test data holds texts; the source holds images"):
        transferkit.adapt(src, list(tgt.items), texts, backbone=str(timm_dir), progress=False)


def test_adapt_strategy_bad_options(timm_dir, cache_dir):
    src, tgt = _domains(4)
    with pytest.raises(TransferkitError, match="adapt needs unlabelled target data"):
        transferkit.fit(src, str(timm_dir), "adapt", scratch=False, progress=False)
    with pytest.raises(TransferkitError, match="Unknown adaptation method 'mmd'"):
        transferkit.fit(src, str(timm_dir), "adapt", target=list(tgt.items), method="mmd", scratch=False,
                        progress=False)
    with pytest.raises(TransferkitError, match="select='oracle' is not one of"):
        transferkit.fit(src, str(timm_dir), "adapt", target=list(tgt.items), select="oracle", scratch=False,
                        progress=False)


def test_cli_adapt_bad_method_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["adapt", "--source", "x", "--target", "y", "--method", "mixup"])
    assert result.exit_code != 0 and "Unknown adaptation method 'mixup'" in result.output


def test_adabn_standardises_the_target_with_its_own_moments():
    xs, ys = _blobs(240, 0.0, 0)
    xv, yv = _blobs(60, 0.0, 1)
    xt = 2.0 * xs + 3.0  # the same items, every feature rescaled and moved
    trial = train_method("adabn", xs, ys, xv, yv, xt, 3, select="im", settings=AdaptSettings(epochs=3))
    on_target = predict_logits(to_head(trial), xt)
    on_source = predict_logits(to_head(trial, domain="source"), xs)
    assert np.allclose(on_target, on_source, atol=1e-3)
    plain = train_method("source-only", xs, ys, xv, yv, xt, 3, select="im", settings=AdaptSettings(epochs=3))
    assert not np.allclose(predict_logits(to_head(plain), xt), on_source, atol=1e-2)


def test_em_target_prior_recovers_the_class_proportions():
    rng = np.random.default_rng(0)
    y = rng.random(4000) < 0.7  # the target: 30 % class 0, 70 % class 1
    x = rng.normal(size=4000) + 2.0 * y
    lik = np.stack([np.exp(-(x**2) / 2), np.exp(-((x - 2) ** 2) / 2)], 1)
    source_prior = np.array([0.8, 0.2])
    posterior = lik * source_prior  # the Bayes posterior under the source proportions
    posterior /= posterior.sum(1, keepdims=True)
    assert np.allclose(em_target_prior(posterior, source_prior), [0.3, 0.7], atol=0.03)
    one_hot = np.eye(3)[[0, 0, 1, 2]]  # certain predictions: the proportions are the predicted ones
    assert np.allclose(em_target_prior(one_hot, np.full(3, 1 / 3)), [0.5, 0.25, 0.25])


def test_label_shift_moves_only_the_target_logits():
    xs, ys = _blobs(240, 0.0, 0)
    xv, yv = _blobs(60, 0.0, 1)
    xt, yt = _blobs(240, 0.0, 2)
    xt = xt[yt != 0]  # the target lacks class 0 entirely
    trial = train_method("label-shift", xs, ys, xv, yv, xt, 3, settings=AdaptSettings(epochs=5))
    assert trial.target_prior[0] < 0.1 < trial.source_prior[0] and "target_prior" in trial.describe()
    shift = to_head(trial)[3].bias - to_head(trial, domain="source")[3].bias
    expected = np.log(trial.target_prior) - np.log(trial.source_prior)
    assert np.allclose(shift.detach().numpy(), expected, atol=1e-5)


def test_shift_images_is_seeded_and_changes_the_domain():
    from transferkit.data.shifts import AIRLINE, shift_images

    x = np.zeros((4, 28, 28), dtype=np.uint8)
    x[:, 8:20, 8:20] = 200  # a bright garment on black
    a, b = shift_images(x, seed=3), shift_images(x, seed=3)
    assert a.shape == (4, 28, 28, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, shift_images(x, seed=4))
    garment, background = a[:, 10:18, 10:18].mean(), a[:, :4, :4].std()
    assert garment < 120 and background > 0  # inverted garment, textured photo behind it
    assert AIRLINE.search("@united my flight was late") and not AIRLINE.search("self-driving cars, no thanks")


def test_reverse_recommendation_needs_a_win_on_every_seed():
    from transferkit.workflows.adapt import AdaptResult

    def result(reverse: dict[str, list[float]]) -> AdaptResult:
        res = AdaptResult("s", "t", "b", [m for m in reverse if m != "source-only"], "dev", ["a", "b"])
        res.runs = [{"methods": {m: {"reverse_accuracy": v[i], "criterion": 0.0} for m, v in reverse.items()}}
                    for i in range(3)]
        return res

    # dann wins every seed; coral has the higher mean but loses one seed; adabn never wins
    res = result({"source-only": [0.80, 0.80, 0.80], "dann": [0.81, 0.82, 0.81], "coral": [0.95, 0.95, 0.79],
                  "adabn": [0.7, 0.7, 0.7]})
    assert res.recommended() == "dann"
    assert res.recommendation_reason() == (
        "reverse validation 81.3 % vs source-only's 80.0 %, better on every one of 3 seeds"
    )
    tie = result({"source-only": [0.75, 0.75, 0.75], "dann": [0.75, 1.0, 1.0]})  # a tie is not a win
    assert tie.recommended() == "source-only"
    assert tie.recommendation_reason() == (
        "no method's reverse validation beat source-only's on every seed (the best other method on average, dann, "
        "91.7 % vs 75.0 %, beat it on 2 of 3)"
    )
    res.recommend = "criterion"  # the other rule: the best mean criterion among the methods it can see
    for run, crit in zip(res.runs, (0.1, 0.2, 0.3), strict=True):
        run["methods"]["coral"]["criterion"] = crit
        run["methods"]["adabn"]["criterion"] = 1.0  # dev cannot see adabn: its value never counts
    assert res.recommended() == "coral" and "best mean criterion" in res.recommendation_reason()


def test_self_training_falls_back_to_source_only_when_nothing_is_confident_enough():
    xs, ys = _blobs(120, 0.0, 0)
    xv, yv = _blobs(40, 0.0, 1)
    xt, _ = _blobs(120, 3.0, 2)
    settings = AdaptSettings(epochs=3, grids={"self-training": (1.01,)})  # no probability reaches 1.01
    base = train_method("source-only", xs, ys, xv, yv, xt, 3, settings=settings)
    trial = train_method("self-training", xs, ys, xv, yv, xt, 3, settings=settings, source_only=base)
    assert trial.params == {"threshold": 1.01, "round": 0.0, "pseudo_labels": 0.0}
    assert all(torch.equal(trial.state[k], base.state[k]) for k in base.state)


def test_recommendation_by_criterion_skips_methods_the_criterion_cannot_see(timm_dir, cache_dir, tmp_path):
    src, tgt = _domains()
    res = transferkit.adapt(src, list(tgt.items), backbone=str(timm_dir), methods=["adabn", "label-shift"], seeds=1,
                            epochs=2, recommend="criterion", cache_dir=cache_dir, progress=False, out=tmp_path / "r")
    assert not res.scored("adabn") and not res.scored("label-shift") and res.scored("source-only")
    assert res.recommended() == "source-only"
    assert "best mean criterion among the methods `dev` can score" in (tmp_path / "r" / "report.md").read_text()
    assert "n/a (dev cannot see it)" in res.table() and "higher is better" in res.table()
    model = transferkit.load(tmp_path / "r" / "model")  # the saved model is the recommended one
    x = list(tgt.items[:6])
    assert np.allclose(model.predict_proba(x), res.model.predict_proba(x), atol=1e-5)
