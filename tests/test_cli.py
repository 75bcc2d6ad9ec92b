"""The ``transferkit`` command: listings, fit, predict, and bad input -> exit 2 with one ``error:`` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from transferkit.cli import app

from .conftest import TIMM_SPEC, make_image_folder, write_csv

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_failure(result, match: str) -> None:
    """Exit code 2, one ``error:`` message naming the problem, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "error: " in result.stderr and match in result.stderr, result.stderr
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def image_data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("cli-images") / "colours", per_class=6)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, timm_dir, image_data) -> Path:
    """One CLI fit on a tiny image folder, shared by the predict tests."""
    out = tmp_path_factory.mktemp("cli-run") / "run"
    result = invoke("fit", image_data, "--backbone", str(timm_dir), "--out", out, "--quiet", "--seed", "1")
    assert result.exit_code == 0, (result.output, result.exception)
    return out


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, text_csv, bert_dir) -> Path:
    out = tmp_path_factory.mktemp("cli-text") / "run"
    result = invoke("fit", text_csv, "--backbone", bert_dir, "--out", out, "--quiet", "--no-scratch")
    assert result.exit_code == 0, (result.output, result.exception)
    return out


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for cmd in ("backbones", "datasets", "fit", "predict", "detect"):
        assert cmd in result.output


def test_backbones_lists_packs_and_says_why_not():
    result = invoke("backbones")
    assert result.exit_code == 0
    for spec in ("pack:efficientnet-lite0", "pack:minilm-l6", "timm:<name>", "hf:<repo-or-folder>"):
        assert spec in result.stdout
    assert "hub not reachable here" in result.stdout


def test_datasets_lists_builtins_and_how_to_install():
    result = invoke("datasets")
    assert result.exit_code == 0
    for name in ("fashion-mnist-small", "digits", "tweets", "spam"):
        assert name in result.stdout
    assert "ships with transferkit" in result.stdout


def test_fit_writes_model_report_and_record(image_run):
    assert (image_run / "model" / "transferkit.json").is_file()
    record = json.loads((image_run / "run.json").read_text())
    assert set(record["metrics"]) == {"transfer", "scratch"} and record["seed"] == 1
    assert "| model | accuracy |" in (image_run / "report.md").read_text()


def test_fit_prints_the_comparison(tmp_path, timm_dir, cache_dir):
    root = make_image_folder(tmp_path / "pics", per_class=5)
    args = ["--out", tmp_path / "o", "--quiet", "--no-scratch", "--head", "mlp", "--no-cache"]
    result = invoke("fit", root, "--backbone", timm_dir, *args)
    assert result.exit_code == 0, result.output
    assert "test set" in result.stdout and "linear-probe" in result.stdout
    assert f"saved model to {tmp_path / 'o' / 'model'}" in result.stdout
    assert "No scratch control was run." in result.stdout
    assert json.loads((tmp_path / "o" / "run.json").read_text())["config"]["head"] == "mlp"
    assert not (cache_dir / "features").exists()  # --no-cache


def test_fit_default_out_is_runs_slash_data_name(tmp_path, timm_dir, monkeypatch):
    root = make_image_folder(tmp_path / "pics", per_class=5)
    monkeypatch.chdir(tmp_path)
    result = invoke("fit", root, "--backbone", timm_dir, "--quiet", "--no-scratch")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "pics" / "model" / "transferkit.json").is_file()


def test_predict_images_and_folders(image_run, image_data):
    images = sorted(str(p) for p in image_data.rglob("*.png"))
    result = invoke("predict", image_run / "model", images[0], images[-1], "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["input"] for r in rows] == [images[0], images[-1]]
    assert all(r["label"] in ("blue", "green", "red") and 0 < r["probability"] <= 1 for r in rows)
    whole = invoke("predict", image_run / "model", image_data)
    assert whole.exit_code == 0
    lines = whole.stdout.splitlines()
    assert len(lines) == len(images) and all(len(line.split("\t")) == 3 for line in lines)


def test_predict_texts_and_scored_file(text_run, tmp_path):
    result = invoke("predict", text_run / "model", "good fun film", "bad boring plot")
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [
        "good fun film",
        "bad boring plot",
    ]
    labelled = write_csv(
        tmp_path / "new.csv", [{"text": "great fun", "label": "pos"}, {"text": "awful plot", "label": "neg"}]
    )
    result = invoke("predict", text_run / "model", "--file", labelled)
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())  # rich wraps long lines
    assert f"accuracy on {labelled}: " in said and "% (2 rows)" in said
    unlabelled = write_csv(tmp_path / "bare.csv", [{"text": "great fun"}, {"text": "awful plot"}])
    result = invoke("predict", text_run / "model", "--file", unlabelled, "--json")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["input"] for line in result.stdout.splitlines()] == ["great fun", "awful plot"]


def test_predict_scored_file_with_one_label(text_run, tmp_path):
    path = write_csv(
        tmp_path / "pos.csv", [{"text": "great fun", "label": "pos"}, {"text": "nice music", "label": "pos"}]
    )
    result = invoke("predict", text_run / "model", "--file", path)
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- bad input


def test_fit_missing_data(tmp_path):
    assert_clean_failure(
        invoke("fit", tmp_path / "nope", "--out", tmp_path / "o", "--quiet"),
        "is neither an existing folder/file nor a built-in dataset",
    )
    assert not (tmp_path / "o").exists()


def test_fit_folder_without_classes(tmp_path):
    (tmp_path / "flat").mkdir()
    assert_clean_failure(
        invoke("fit", tmp_path / "flat", "--backbone", TIMM_SPEC, "--quiet"), "has no class subfolders"
    )


def test_fit_corrupt_image(tmp_path, timm_dir):
    root = make_image_folder(tmp_path / "d", per_class=5)
    (root / "blue" / "broken.jpg").write_bytes(b"\x00garbage")
    result = invoke("fit", root, "--backbone", timm_dir, "--out", tmp_path / "o", "--quiet")
    assert_clean_failure(result, "broken.jpg")
    assert not (tmp_path / "o").exists()


def test_fit_bad_backbone_and_strategy(image_folder, tmp_path):
    assert_clean_failure(invoke("fit", image_folder, "--backbone", "timn:resnet18", "--quiet"), "Did you mean 'timm'?")
    assert_clean_failure(
        invoke("fit", image_folder, "--backbone", "timm:resnet18", "--quiet"),
        "needs pretrained weights from the Hugging Face hub",
    )
    assert_clean_failure(
        invoke("fit", image_folder, "--backbone", TIMM_SPEC, "--strategy", "finetuned", "--quiet"),
        "Unknown strategy 'finetuned'",
    )


def test_fit_bad_csv(tmp_path, bert_dir):
    path = tmp_path / "t.csv"
    path.write_text("review,label\ngood,pos\n,neg\n")
    assert_clean_failure(invoke("fit", path, "--backbone", bert_dir, "--quiet"), "t.csv, line 3")
    assert_clean_failure(
        invoke("fit", path, "--backbone", bert_dir, "--label-column", "y", "--quiet"),
        "its columns are review, label",
    )


def test_fit_per_class_too_large(image_folder, timm_dir):
    assert_clean_failure(
        invoke("fit", image_folder, "--backbone", timm_dir, "--per-class", "50", "--quiet"), "per_class=50"
    )


def test_fit_bad_spec_option_value(text_csv, bert_dir):
    assert_clean_failure(
        invoke("fit", text_csv, "--backbone", f"hf:{bert_dir}?max_length=lots", "--quiet"), "max_length"
    )


def test_predict_not_a_model(tmp_path):
    (tmp_path / "m").mkdir()
    assert_clean_failure(invoke("predict", tmp_path / "m", "x.png"), "is not a saved transferkit model")


def test_predict_missing_image_and_no_inputs(image_run, tmp_path):
    assert_clean_failure(invoke("predict", image_run / "model", tmp_path / "ghost.png"), "ghost.png does not exist")
    assert_clean_failure(invoke("predict", image_run / "model"), "Nothing to predict")


def test_predict_unknown_label_in_file(text_run, tmp_path):
    path = write_csv(tmp_path / "new.csv", [{"text": "great", "label": "pos"}, {"text": "meh", "label": "neutral"}])
    assert_clean_failure(
        invoke("predict", text_run / "model", "--file", path),
        "has label(s) 'neutral' that the model was not trained on",
    )


def test_subprocess_exit_code_and_stderr(tmp_path):
    """The installed entry point: exit 2, one line on stderr, nothing from deep inside."""
    exe = Path(sys.executable).with_name("transferkit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "transferkit.cli"]
    proc = subprocess.run(
        [*cmd, "fit", str(tmp_path / "missing"), "--quiet"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


DATA_OPTIONS = ("--text-column", "--label-column", "--image-column", "--encoding", "--seed", "--val-size",
                "--test-size", "--per-class", "--max-test", "--dedupe", "--quiet", "--overwrite")


@pytest.mark.parametrize("command", ["fit", "compare", "distill", "adapt", "rank"])
def test_every_data_command_takes_the_same_data_options(command):
    from typer.main import get_command

    cmd = get_command(app).commands[command]
    names = {opt for p in cmd.params for opt in p.opts}
    assert set(DATA_OPTIONS) <= names, sorted(set(DATA_OPTIONS) - names)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--encoding", "nope-8"], "encoding='nope-8'"),
        (["--val-size", "1.5"], "val_size must be a fraction"),
        (["--val-size", "0.6", "--test-size", "0.5"], "val_size + test_size"),
        (["--per-class", "1"], "per_class must be a whole number of at least 2"),
        (["--max-test", "0"], "max_test must be a whole number of at least 1"),
    ],
)
@pytest.mark.parametrize("command", ["fit", "compare", "rank"])
def test_bad_data_options_fail_before_any_work(command, args, match, image_data, tmp_path):
    result = invoke(command, image_data, *args, "--out", tmp_path / "out")
    assert_clean_failure(result, match)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["fit", "compare", "distill", "adapt", "rank", "predict", None])
def test_help_shows_no_type_on_plain_flags(command):
    result = runner.invoke(app, [*([command] if command else []), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and ("--quiet" in result.output or command in ("predict", None))
    assert "--help" in result.output and "<bool>" not in result.output


@pytest.fixture(scope="module")
def duplicated_csv(tmp_path_factory) -> Path:
    """24 distinct texts, three of them twice more: six duplicate rows."""
    from .conftest import make_texts

    texts, labels = make_texts(12)
    rows = [{"text": t, "label": lab} for t, lab in zip(texts, labels, strict=True)]
    return write_csv(tmp_path_factory.mktemp("dups") / "dups.csv", rows + rows[:3] + rows[:3])


@pytest.mark.parametrize("command", ["fit", "compare", "distill", "adapt", "rank"])
def test_every_command_says_how_many_duplicates_it_left_out(command, duplicated_csv, bert_dir, tmp_path):
    out = tmp_path / "out"
    spec = f"hf:{bert_dir}"
    extra = {
        "fit": ["--backbone", spec, "--no-scratch"],
        "compare": ["--backbone", spec, "--strategies", "linear-probe", "--seeds", "1"],
        "distill": ["--teacher", spec, "--student", spec, "--seeds", "1", "--epochs", "1"],
        "adapt": ["--backbone", spec, "--seeds", "1", "--epochs", "1", "--method", "coral"],
        "rank": ["--backbones", spec, "--no-controls"],
    }[command]
    data = ["--source", duplicated_csv, "--target", duplicated_csv] if command == "adapt" else [duplicated_csv]
    result = invoke(command, *data, *extra, "--quiet", "--out", out)
    assert result.exit_code == 0, (result.output, result.exception)
    said = "6 duplicate item(s) were left out before splitting"
    assert said in result.output and said in (out / "report.md").read_text()
    name = {"fit": "run", "compare": "compare"}.get(command, command)
    record = json.loads((out / f"{name}.json").read_text())
    if command == "rank":
        assert any(said in w for w in record["warnings"])
    else:
        assert (record["data"]["duplicates"] if command == "fit" else record["duplicates"]) == 6


def test_predict_streams_to_a_csv_or_jsonl_file(text_run, tmp_path, monkeypatch):
    import csv as csvlib

    import transferkit.workflows.predict as streaming
    from transferkit.core.model import TransferModel

    from .conftest import make_texts

    texts, labels = make_texts(15)  # 30 rows in chunks of 7: no call sees more than one chunk
    data = write_csv(tmp_path / "many.csv", [{"text": t, "label": lab} for t, lab in zip(texts, labels, strict=True)])
    monkeypatch.setattr(streaming, "CHUNK", 7)
    seen: list[int] = []
    original = TransferModel.predict_proba
    monkeypatch.setattr(TransferModel, "predict_proba", lambda self, items, **kw: seen.append(len(items))
                        or original(self, items, **kw))
    out = tmp_path / "preds.csv"
    r = invoke("predict", text_run / "model", "--file", data, "--output", out, "--quiet")
    assert r.exit_code == 0, (r.output, r.exception)
    assert max(seen) == 7 and sum(seen) == 30 and f"wrote 30 predictions to {out}" in r.stdout
    rows = list(csvlib.DictReader(out.open()))
    assert [row["input"] for row in rows] == texts and [row["true_label"] for row in rows] == labels
    assert set(rows[0]) == {"input", "label", "probability", "true_label", "p(neg)", "p(pos)"}
    assert all(abs(float(r["p(neg)"]) + float(r["p(pos)"]) - 1) < 1e-5 for r in rows)
    assert all(r["label"] == max(("neg", "pos"), key=lambda c: float(r[f"p({c})"])) for r in rows)
    jl = tmp_path / "preds.jsonl"
    assert invoke("predict", text_run / "model", "good fun", "--output", jl, "--quiet").exit_code == 0
    assert set(json.loads(jl.read_text())["probabilities"]) == {"neg", "pos"}
    assert not list(tmp_path.glob(".preds*"))  # no temp file left


@pytest.mark.parametrize(
    ("output", "match"),
    [("exists.csv", "exists; pass --overwrite"), ("preds.txt", "a .csv or .jsonl file"),
     ("nowhere/preds.csv", "does not exist")],
)
def test_predict_output_is_checked_before_any_work(text_run, tmp_path, output, match):
    (tmp_path / "exists.csv").write_text("mine\n")
    assert_clean_failure(invoke("predict", text_run / "model", "good fun", "--output", tmp_path / output), match)
    assert (tmp_path / "exists.csv").read_text() == "mine\n"
    assert invoke("predict", text_run / "model", "good", "--output", tmp_path / "exists.csv", "--overwrite",
                  "--quiet").exit_code == 0
