"""transferkit detect: detectors fitted on normal data only, thresholded on held-out normal data, scored on a
labelled test set for the report only, saved and predicted with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import transferkit
from transferkit import TransferkitError
from transferkit.data import Dataset
from transferkit.methods.anomaly import Detector, detection_metrics, fit_detector

from .conftest import NEGATIVE, NEUTRAL, POSITIVE, TIMM_SPEC, make_timm_folder
from .test_cli import assert_clean_failure, invoke

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 200)}


def _patches(n_train: int = 12, n_test: int = 6, seed: int = 0) -> Dataset:
    """Noisy colour patches of three classes, with a test split."""
    rng = np.random.default_rng(seed)
    items, labels, split = [], [], []
    for part, n in (("train", n_train), ("test", n_test)):
        for name, rgb in COLOURS.items():
            for _ in range(n):
                items.append(np.clip(np.array(rgb) + rng.normal(0, 30, (24, 24, 3)), 0, 255).astype(np.uint8))
                labels.append(name)
                split.append(part)
    return Dataset(items, labels, "image", name="patches", split=split)


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Saved random weights: the same backbone in every run (a random-init spec draws new weights each time)."""
    return str(make_timm_folder(tmp_path_factory.mktemp("bb") / "timm"))


def _strict_json(path: Path) -> dict:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_detectors_score_the_unusual_higher_and_threshold_at_the_target_rate():
    rng = np.random.default_rng(0)
    normal = rng.normal(0, 1, (400, 8)) + 5
    odd = rng.normal(0, 1, (50, 8)) * 3 - 5
    for name in ("knn", "mahalanobis"):
        det = fit_detector(name, normal[:300])
        det.calibrate(det.raw(normal[300:]), 0.1)
        z_val = det.score(normal[300:])
        assert abs(np.median(z_val)) < 1e-6  # standardised on the held-out normal data
        assert np.mean(z_val > det.threshold) == pytest.approx(0.1, abs=0.011)
        m = detection_metrics(det.score(np.concatenate([normal[300:], odd])), np.r_[np.zeros(100), np.ones(50)],
                              det.threshold)
        assert m["auroc"] > 0.95 and m["recall"] > 0.9 and m["fpr"] == pytest.approx(0.1, abs=0.011)
    knn = fit_detector("knn", normal, k=5)
    assert knn.params == {"k": 5} and knn.arrays["bank"].shape == (400, 8)
    with pytest.raises(TransferkitError, match="both normal and anomalous"):
        detection_metrics(np.zeros(3), np.zeros(3), 0.0)
    with pytest.raises(TransferkitError, match="at least 2 normal examples"):
        fit_detector("knn", normal[:1])


def test_unknown_and_missing_pyod_detectors_are_one_sentence(monkeypatch):
    from transferkit.methods.anomaly import check_detector

    with pytest.raises(TransferkitError, match=r"^Unknown detector 'lof': use knn, mahalanobis, or pyod:<Class>"):
        check_detector("lof")
    monkeypatch.setitem(__import__("sys").modules, "pyod", None)  # as if pyod were not installed
    with pytest.raises(TransferkitError, match=r"pyod:ECOD needs pyod: pip install 'transferkit\[detect\]'"):
        check_detector("pyod:ECOD")


def test_detect_fits_on_the_normal_class_only_saves_and_predicts(tmp_path):
    ds = _patches()
    res = transferkit.detect(ds, TIMM_SPEC, normal="red", seeds=2, out=tmp_path / "run", progress=False)
    assert len(res.runs) == 2 * 2 * 2  # seeds x (transfer, control) x (knn, mahalanobis)
    m = res.meta
    assert (m["n_normal"], m["n_test"], m["n_test_anomalies"]) == (12, 18, 12)
    assert m["n_fit"] + m["n_val"] == 12 and m["saved"] == "knn"
    assert all(0 <= r["auroc"] <= 1 and 0 <= r["fpr"] <= 1 for r in res.runs)
    assert set(res.verdicts) == {"knn", "mahalanobis"}
    record = _strict_json(tmp_path / "run" / "detect.json")
    assert record["summary"][0]["detector"] == "knn" and "AUROC" in record["verdicts"]["knn"]["text"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "raw pixels" in report and "saved detector: knn" in report and "Highest-scoring test items" in report
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Score histogram" in page and "Highest-scoring test items" in page and "AUROC" in page
    (tmp_path / "run" / "report.html").unlink()
    rebuilt = invoke("report", tmp_path / "run")
    assert rebuilt.exit_code == 0 and (tmp_path / "run" / "report.html").read_text() == page
    det = transferkit.load_detector(tmp_path / "run" / "model")
    test_items = [ds.items[i] for i, s in enumerate(ds.split) if s == "test"]
    scores = det.score(test_items)
    top = next(r["top"] for r in res.runs if "top" in r)
    np.testing.assert_allclose(sorted(scores, reverse=True)[:3], [t["score"] for t in top[:3]], rtol=1e-4, atol=1e-4)
    verdicts = det.predict(test_items)
    assert {p.verdict for p in verdicts} <= {"normal", "anomaly"}
    assert all((p.verdict == "anomaly") == (p.score > det.detector.threshold) for p in verdicts)


def test_test_labels_play_no_part_in_the_saved_detector(tmp_path, spec):
    ds = _patches()
    flipped = _patches()
    test = [i for i, s in enumerate(flipped.split) if s == "test"]
    labels = list(flipped.labels)
    perm = np.random.default_rng(1).permutation(test)
    for i, j in zip(test, perm, strict=True):
        labels[i] = ds.labels[j]
    flipped = Dataset(flipped.items, labels, "image", name="patches", split=flipped.split)
    a = transferkit.detect(ds, spec, normal="red", seeds=1, out=tmp_path / "a", progress=False)
    b = transferkit.detect(flipped, spec, normal="red", seeds=1, out=tmp_path / "b", progress=False)
    assert a.detector.detector.to_dict() == b.detector.detector.to_dict()
    for k, v in a.detector.detector.arrays.items():
        np.testing.assert_array_equal(v, b.detector.detector.arrays[k])
    assert (tmp_path / "a" / "model" / "detector.safetensors").read_bytes() == (
        tmp_path / "b" / "model" / "detector.safetensors").read_bytes()
    assert [r["auroc"] for r in a.runs] != [r["auroc"] for r in b.runs]  # only the report moved


def test_cli_detect_on_a_flat_folder_of_normal_images_then_predict(tmp_path):
    ds = _patches(n_train=10, n_test=4)
    normal = tmp_path / "normal"
    normal.mkdir()
    rows = ["image,label"]
    for i, (item, lab, part) in enumerate(zip(ds.items, ds.labels, ds.split, strict=True)):
        if part == "train" and lab == "blue":
            Image.fromarray(item).save(normal / f"{i}.png")
        elif part == "test":
            Image.fromarray(item).save(tmp_path / f"t{i}.png")
            rows.append(f"t{i}.png,{'normal' if lab == 'blue' else 'anomaly'}")
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    result = invoke("detect", normal, "--test", tmp_path / "test.csv", "--backbone", TIMM_SPEC, "--seeds", "2",
                    "--fpr", "0.1", "--out", out, "--quiet")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "AUROC" in result.output and "saved detector to" in result.output
    record = _strict_json(out / "detect.json")
    assert record["n_normal"] == 10 and record["rate"] == 0.1 and record["n_test_anomalies"] == 8
    predicted = invoke("predict", out / "model", tmp_path / "t0.png" if (tmp_path / "t0.png").exists() else
                       next(tmp_path.glob("t*.png")))
    assert predicted.exit_code == 0, predicted.output
    name, score, verdict = predicted.output.strip().split("\t")
    assert float(score) == float(score) and verdict in ("normal", "anomaly")
    written = invoke("predict", out / "model", *map(str, sorted(tmp_path.glob("t*.png"))), "--output",
                     tmp_path / "scores.csv")
    assert written.exit_code == 0, written.output
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert lines[0] == "input,score,verdict" and len(lines) == 1 + 12
    again = invoke("detect", normal, "--test", tmp_path / "test.csv", "--backbone", TIMM_SPEC, "--out", out)
    assert_clean_failure(again, "holds an earlier run; pass --overwrite")


def test_text_detection_against_tfidf(bert_dir):
    rng = np.random.default_rng(0)
    normal = [" ".join(rng.choice(POSITIVE + NEUTRAL, size=6)) for _ in range(30)]
    test = [" ".join(rng.choice(POSITIVE + NEUTRAL, size=6)) for _ in range(10)] + [
        " ".join(rng.choice(NEGATIVE, size=6)) for _ in range(10)]
    test_ds = Dataset(test, ["normal"] * 10 + ["anomaly"] * 10, "text", name="mixed")
    res = transferkit.detect(normal, f"hf:{bert_dir}", test=test_ds, seeds=2, progress=False)
    assert res.meta["modality"] == "text" and res.meta["n_test"] == 20
    assert "TF-IDF" in res.table()
    control = [r for r in res.runs if r["features"] == "control" and r["detector"] == "knn"]
    assert min(r["auroc"] for r in control) > 0.9  # no word in common: as far as TF-IDF can be
    assert res.detector.predict(["good film"])[0].verdict in ("normal", "anomaly")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fpr", "0.1", "--contamination", "0.1"], "Give --fpr or --contamination, not both"),
        (["--fpr", "0.7"], "--fpr must be between 0 and 0.5, got 0.7"),
        (["--detectors", "knn,lof"], "Unknown detector 'lof'"),
        (["--detectors", "knn,knn"], "one or more distinct detectors"),
        (["--normal", "purple"], "--normal purple: not a class of"),
        (["--seeds", "0"], "seeds must be at least 1"),
        (["--k", "0"], "k must be at least 1"),
    ],
)
def test_cli_detect_refuses_bad_options(args, message, image_folder, tmp_path):
    result = invoke("detect", image_folder, "--backbone", TIMM_SPEC, "--out", tmp_path / "run", "--quiet", *args)
    assert_clean_failure(result, message)
    assert not (tmp_path / "run").exists()


def test_cli_detect_refuses_unclear_data(tmp_path, image_folder):
    result = invoke("detect", "fashion-mnist-small", "--out", tmp_path / "a", "--quiet")
    assert_clean_failure(result, "is a labelled dataset: name its normal class(es) with --normal")
    (tmp_path / "odd.csv").write_text("text,label\na good film,maybe\na bad film,normal\n")
    (tmp_path / "normal.csv").write_text("text\n" + "\n".join(f"a fine film {i}" for i in range(8)) + "\n")
    result = invoke("detect", tmp_path / "normal.csv", "--test", tmp_path / "odd.csv", "--out", tmp_path / "b")
    assert_clean_failure(result, "labels maybe that say neither normal nor anomaly")
    result = invoke("detect", image_folder, "--normal", "red", "--test", tmp_path / "normal.csv",
                    "--backbone", TIMM_SPEC, "--out", tmp_path / "c")
    assert_clean_failure(result, "normal.csv has no label column 'label'")
    (tmp_path / "notes.md").write_text("# notes\n")
    result = invoke("detect", tmp_path / "notes.md", "--out", tmp_path / "d")
    assert_clean_failure(result, "notes.md: expected a folder of images or a .csv/.jsonl file")


def test_a_damaged_detector_is_one_sentence(tmp_path):
    res = transferkit.detect(_patches(), TIMM_SPEC, normal="red", seeds=1, out=tmp_path / "run", progress=False)
    model = tmp_path / "run" / "model"
    cfg = json.loads((model / "detector.json").read_text())
    cfg["detector"]["scale"] = -1
    (model / "detector.json").write_text(json.dumps(cfg))
    with pytest.raises(TransferkitError, match="its scale not positive"):
        transferkit.load_detector(model)
    (model / "detector.json").write_text("{")
    with pytest.raises(TransferkitError, match="is not a readable detector"):
        transferkit.load_detector(model)
    assert isinstance(res.detector.detector, Detector)


def test_a_pyod_detector_saves_as_features_and_refits_on_load(tmp_path, spec):
    ds = _patches()
    res = transferkit.detect(ds, spec, normal="red", detectors="pyod:ECOD,knn", seeds=1, out=tmp_path / "run",
                             progress=False)
    assert res.meta["saved"] == "pyod:ECOD" and {r["detector"] for r in res.runs} == {"pyod:ECOD", "knn"}
    det = transferkit.load_detector(tmp_path / "run" / "model")
    assert det.detector.name == "pyod:ECOD" and det.detector._model is None  # nothing unpickled: refitted on use
    test_items = [ds.items[i] for i, s in enumerate(ds.split) if s == "test"]
    np.testing.assert_allclose(det.score(test_items), res.detector.score(test_items), rtol=1e-5, atol=1e-5)


def test_held_out_knn_ratio_is_lower_where_normal_neighbourhoods_hold():
    from transferkit.methods.anomaly import held_out_knn_ratio

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (5, 16)) * 4
    clustered = np.repeat(centres, 40, axis=0) + rng.normal(0, 0.3, (200, 16))
    scattered = rng.normal(0, 1, (200, 16))
    assert held_out_knn_ratio(clustered) < 0.5 * held_out_knn_ratio(scattered)
    assert held_out_knn_ratio(clustered, seed=1) == pytest.approx(held_out_knn_ratio(clustered, seed=1))


def test_backbone_auto_picks_the_lowest_ratio_without_labels(tmp_path, spec, monkeypatch):
    other = str(make_timm_folder(tmp_path / "other", seed=1))
    monkeypatch.setattr("transferkit.workflows.rank.default_candidates", lambda modality, controls=True: [spec, other])
    res = transferkit.detect(_patches(), "auto", normal="red", seeds=1, progress=False)
    choice = res.meta["backbone_choice"]
    assert set(choice) == {spec, other} and res.meta["backbone"] == min(choice, key=choice.get)
    assert any(n.startswith("backbone chosen without labels") for n in res.meta["notes"])


def test_a_loaded_detector_checks_its_state_and_takes_one_image(tmp_path, spec):
    ds = _patches()
    res = transferkit.detect(ds, spec, normal="red", detectors="knn", seeds=1, out=tmp_path / "run", progress=False)
    model = tmp_path / "run" / "model"
    det = transferkit.load_detector(model)
    one = ds.items[-1]
    assert len(det.predict(one)) == 1 and det.score(one)[0] == pytest.approx(res.detector.score([one])[0], abs=1e-5)
    cfg = json.loads((model / "detector.json").read_text())
    for k in (0, 10_000, "2"):
        cfg["detector"]["params"]["k"] = k
        (model / "detector.json").write_text(json.dumps(cfg))
        with pytest.raises(TransferkitError, match=r"the knn detector has k=.* outside 1\.\.\d+; it is damaged"):
            transferkit.load_detector(model)
    cfg["detector"]["params"]["k"] = 2
    cfg["detector"]["threshold"] = float("inf")
    (model / "detector.json").write_text(json.dumps(cfg))
    with pytest.raises(TransferkitError, match="standardisation or threshold is not finite"):
        transferkit.load_detector(model)
    cfg["kind"] = "model"
    (model / "detector.json").write_text(json.dumps(cfg))
    with pytest.raises(TransferkitError, match="is not a detector this transferkit reads"):
        transferkit.load_detector(model)


def test_a_pyod_detector_that_refits_differently_is_refused(tmp_path, spec):
    res = transferkit.detect(_patches(), spec, normal="red", detectors="pyod:IForest", seeds=1, out=tmp_path / "r",
                             progress=False)
    det = transferkit.load_detector(tmp_path / "r" / "model")  # seeded: refits to the same forest
    x = res.detector.features(_patches().items[:5])
    np.testing.assert_allclose(det.detector.raw(x), res.detector.detector.raw(x), rtol=1e-6)
    det = transferkit.load_detector(tmp_path / "r" / "model")
    det.detector.params["random_state"] += 1  # as a detector that does not refit alike would
    with pytest.raises(TransferkitError, match="scores differently from when it was saved"):
        det.detector.raw(x)


def test_contamination_max_test_and_word_labels_with_normal(tmp_path, spec):
    ds = _patches(n_train=12, n_test=10)
    res = transferkit.detect(ds, spec, normal="red", contamination=0.1, max_test=12, seeds=1, progress=False)
    assert res.meta["rate_kind"] == "contamination" and res.meta["n_test"] == 12
    assert res.meta["n_test_anomalies"] == 8 and any("capped at 12" in n for n in res.meta["notes"])
    assert "contamination rate 0.1" in " ".join(res.lines())
    words = Dataset([ds.items[i] for i, s in enumerate(ds.split) if s == "test"],
                    ["normal" if lab == "red" else "anomaly" for lab, s in zip(ds.labels, ds.split, strict=True)
                     if s == "test"], "image", name="words")
    both = transferkit.detect(ds, spec, normal="red", test=words, seeds=1, progress=False)
    assert both.meta["n_test_anomalies"] == 20  # the words decide: no test label names the class
    assert any("own test split (30 items) is not used: --test replaces it" in n for n in both.meta["notes"])
    with pytest.raises(TransferkitError, match="--fpr must be between 0 and 0.5, got 0"):
        transferkit.detect(ds, spec, normal="red", fpr=0.0, progress=False)
