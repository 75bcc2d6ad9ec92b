"""Output folders: nothing the user wrote is removed or replaced; an earlier run only with --overwrite; a taken
default gives way to a fresh name; bad places fail before any work (issue 16)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from transferkit import TransferkitError
from transferkit.cli import app
from transferkit.core.outdir import check_out, fresh_out

from .test_cli import assert_clean_failure

runner = CliRunner()


def fit(*args: object):
    return runner.invoke(app, ["fit", *[str(a) for a in args], "--quiet", "--no-scratch"])


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from .conftest import make_image_folder

    return make_image_folder(tmp_path_factory.mktemp("out-images") / "pics", per_class=5)


def test_a_folder_the_user_wrote_is_never_written_into(images, timm_dir, tmp_path):
    out = tmp_path / "x"
    (out / "model").mkdir(parents=True)
    (out / "model" / "important.txt").write_text("precious")
    result = fit(images, "--backbone", timm_dir, "--out", out, "--overwrite")
    assert_clean_failure(result, "transferkit did not write")
    assert (out / "model" / "important.txt").read_text() == "precious"
    assert sorted(p.name for p in out.rglob("*")) == ["important.txt", "model"]


def test_an_earlier_run_is_replaced_only_with_overwrite(images, timm_dir, tmp_path):
    out = tmp_path / "run"
    assert fit(images, "--backbone", timm_dir, "--out", out).exit_code == 0
    before = (out / "run.json").read_text()
    assert_clean_failure(fit(images, "--backbone", timm_dir, "--out", out, "--seed", "1"), "--overwrite")
    assert (out / "run.json").read_text() == before
    (out / "model" / "notes.txt").write_text("mine")  # a file of the user's inside the model folder: kept
    assert_clean_failure(fit(images, "--backbone", timm_dir, "--out", out, "--overwrite"), "notes.txt")
    assert (out / "model" / "notes.txt").read_text() == "mine"
    (out / "model" / "notes.txt").unlink()
    assert fit(images, "--backbone", timm_dir, "--out", out, "--overwrite", "--seed", "1").exit_code == 0
    assert (out / "run.json").read_text() != before


def test_a_taken_default_folder_gives_way_to_a_fresh_name(images, timm_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "pics").mkdir(parents=True)
    (tmp_path / "runs" / "pics" / "mine.txt").write_text("x")  # not a run: never written into
    first = fit(images, "--backbone", timm_dir)
    assert first.exit_code == 0 and "writing this run to runs/pics-2" in first.stderr
    second = fit(images, "--backbone", timm_dir)
    assert second.exit_code == 0 and "runs/pics-3" in second.stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["pics", "pics-2", "pics-3"]
    assert sorted(p.name for p in (tmp_path / "runs" / "pics").iterdir()) == ["mine.txt"]


@pytest.mark.parametrize("command", ["fit", "compare", "rank", "distill", "adapt"])
def test_an_out_that_is_a_file_or_under_one_fails_before_any_work(command, images, tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    extra = {"distill": ["--teacher", "pack:efficientnet-lite0"], "adapt": ["--target", str(images)]}.get(command, [])
    data = ["--source", str(images)] if command == "adapt" else [str(images)]
    for out, match in ((a_file, "is a file"), (a_file / "sub", "which is a file")):
        result = runner.invoke(app, [command, *data, *extra, "--out", str(out), "--quiet"])
        assert_clean_failure(result, match)
    assert a_file.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_out_fails_before_any_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(TransferkitError, match="cannot be written"):
            check_out(locked / "run")
    finally:
        locked.chmod(0o700)


def test_fresh_out_and_check_out_by_hand(tmp_path):
    assert fresh_out(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert fresh_out(tmp_path / "empty") == tmp_path / "empty" and check_out(tmp_path / "empty")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoint").mkdir()  # an interrupted run: resumable, replaceable, never silently reused
    assert check_out(tmp_path / "r", resume=True) and check_out(tmp_path / "r", overwrite=True)
    with pytest.raises(TransferkitError, match="--resume"):
        check_out(tmp_path / "r")


def test_every_bad_image_is_reported_at_once_before_any_training(timm_dir, tmp_path):
    import shutil

    from .conftest import make_image_folder

    folder = make_image_folder(tmp_path / "pics", per_class=6)
    classes = sorted(p.name for p in folder.iterdir())
    (folder / classes[0] / "00.png").write_bytes(b"not a png")
    (folder / classes[1] / "03.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    result = runner.invoke(app, ["fit", str(folder), "--backbone", str(timm_dir), "--strategy", "finetune",
                                 "--out", str(out), "--quiet"])
    assert_clean_failure(result, "2 of 18 images cannot be used")
    assert "00.png" in result.stderr and "03.png" in result.stderr and "nothing was trained" in result.stderr
    assert not out.exists()
    shutil.rmtree(folder)
