"""Bad input, table-driven, across every command: exit code 2, one `error:` line naming the problem, no
traceback, and neither the output folder nor the cache touched (issue 16). Damaged saved models have their own
table in test_bad_models.py, output folders in test_outdir.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from transferkit.cli import app

from .conftest import make_image_folder, make_texts, write_csv

runner = CliRunner()

FIT, CMP, RANK, DIST, ADAPT = "fit {img} --backbone {bb}", "compare {img} --backbone {bb}", "rank {img}", \
    "distill {img} --teacher {bb}", "adapt --source {img} --target {img} --backbone {bb}"
CASES: list[tuple[str, str]] = [
    ("fit {nothing}", "neither an existing folder/file nor a built-in"),
    (FIT + " --strategy nosuch", "Unknown strategy 'nosuch'"),
    (FIT + " --strategy finetune --set epochs=abc", "epochs must be a whole number"),
    (FIT + " --strategy finetune --set lr=fast", "lr must be a number"),
    (FIT + " --strategy finetune --set epochs=1.5", "epochs must be a whole number"),
    (FIT + " --strategy finetune --set batch_size=0", "batch_size"),
    (FIT + " --set c_grid=abc", "c_grid"),
    (FIT + " --strategy finetune --epochs 0", "epochs"),
    (FIT + " --strategy finetune --epochs -2", "epochs"),
    (FIT + " --strategy finetune --lr -1", "lr"),
    (FIT + " --strategy lora --set r=0", "r"),
    (FIT + " --encoding nope-8", "encoding='nope-8'"),
    (FIT + " --val-size 1.5", "val_size must be a fraction"),
    (FIT + " --val-size 0.6 --test-size 0.5", "val_size + test_size"),
    (FIT + " --test-size 0", "test_size must be a fraction"),
    (FIT + " --per-class 1", "per_class must be a whole number of at least 2"),
    (FIT + " --per-class 50", "has only"),
    (FIT + " --max-test 0", "max_test must be a whole number of at least 1"),
    (FIT + " --set nosuch=1", "has no option(s) nosuch"),
    (FIT + " --set novalue", "must be KEY=VALUE"),
    ("fit {img} --backbone nosuch:x", "Unknown backbone source 'nosuch'"),
    ("fit {img} --backbone pack:nope", "Unknown pack 'nope'"),
    ("fit {img} --backbone {nothing}", "is not a local folder"),
    ("fit {img} --backbone timm:resnet18?colour=red", "Unknown option(s) for timm:resnet18"),
    ("fit {img} --backbone {bb}?layer=x", "must be a whole number"),
    ("fit {img} --backbone {bb}?init=zeros", "the only choice is init=random"),
    (FIT + " --scratch-budget nope", "scratch_budget='nope' is not one of"),
    (FIT + " --head svm", "head='svm' is not one of linear, mlp"),
    (FIT + " --head mlp --set mirror=true", "mirror (mirror-image training and test-time augmentation) is for image "
     "classes with the linear head"),
    ("fit {csv} --backbone {bert} --set mirror=true", "mirror (mirror-image training and test-time augmentation) is "
     "for image classes"),
    (FIT + " --strategy finetune --unfreeze top", "is not one of all, last:N, gradual"),
    (FIT + " --top-k 2", "top_k applies only to backbone='auto'"),
    (FIT + " --strategy auto --resume", "resume does not apply to strategy auto"),
    (FIT + " --strategy auto --seeds 0", "seeds must be at least 1"),
    (FIT + " --strategy auto --top-k 2", "top_k does not apply to strategy auto"),
    ("fit {csv} --backbone {bert} --label-column nope", "nope"),
    ("fit {csv} --backbone {bert} --text-column nope", "nope"),
    ("fit {csv} --backbone {bb}", "takes images"),
    ("fit {onecls} --backbone {bert}", "single class"),
    (CMP + " --strategies nosuch", "Unknown strategy 'nosuch'"),
    (CMP + " --strategies a=finetune,a=linear-probe", "given twice"),
    (CMP + " --strategies scratch=finetune", "reserved"),
    (CMP + " --set epochs=3", "write LABEL.KEY"),
    (CMP + " --strategies finetune --set finetune.epochs=abc", "epochs must be a whole number"),
    (CMP + " --strategies finetune --set finetune.nosuch=1", "has no option(s) nosuch"),
    (CMP + " --seeds 0", "at least one seed"),
    (CMP + " --val-size 2", "val_size must be a fraction"),
    (CMP + " --encoding nope", "encoding='nope'"),
    (CMP + " --scratch-budget x", "scratch_budget='x' is not one of"),
    (RANK + " --by nope", "by='nope' is not a score"),
    (RANK + " --max-samples 5", "max_samples must be at least 10"),
    (RANK + " --backbones ,", "No candidate backbones given"),
    (RANK + " --backbones {bb},{bb}", "listed twice"),
    (RANK + " --per-class 1", "per_class must be a whole number of at least 2"),
    (RANK + " --backbones {bb} --seed -1", "seed"),
    (DIST + " --alpha 2", "alpha"),
    (DIST + " --temperature 0", "temperature"),
    (DIST + " --epochs 0", "epochs"),
    (DIST + " --seeds 0", "seeds must be at least 1"),
    (DIST + " --teacher-strategy nosuch", "Unknown strategy 'nosuch'"),
    ("distill {img} --teacher {nothing}", "does not exist: pass a saved model folder"),
    ("fit {duphead} --backbone {bert}", "names the column(s) 'label' more than once"),
    ("fit {extra} --backbone {bert}", "line 3: 1 more field(s) than the header's 2 columns"),
    (ADAPT + " --method mixup", "Unknown adaptation method 'mixup'"),
    (ADAPT + " --method dan", "Did you mean 'dann'"),
    (ADAPT + " --select nope", "select='nope' is not one of"),
    (ADAPT + " --recommend nope", "recommend='nope' is not one of"),
    (ADAPT + " --epochs 0", "epochs must be at least 1"),
    (ADAPT + " --seeds 0", "seeds must be at least 1"),
    ("adapt --source {nothing} --target {img}", "neither an existing folder/file nor a built-in"),
    ("predict {nothing} {img}", "not a saved transferkit model"),
    ("predict {img} {img}", "not a saved transferkit model"),
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory, timm_dir, bert_dir) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad-inputs")
    img = make_image_folder(root / "pics", per_class=6)
    texts, labels = make_texts(8)
    csv = write_csv(root / "texts.csv", [{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)])
    onecls = write_csv(root / "one.csv", [{"text": f"t {i}", "label": "x"} for i in range(8)])
    (root / "dup.csv").write_text("text,label,label\nhello,a,b\nworld,b,a\n")
    (root / "extra.csv").write_text("text,label\nhello,a\nworld,b,oops\nfoo,a\n")
    return {"img": str(img), "csv": str(csv), "onecls": str(onecls), "bb": str(timm_dir), "bert": str(bert_dir),
            "duphead": str(root / "dup.csv"), "extra": str(root / "extra.csv"),
            "nothing": str(root / "no-such-thing")}


def _snapshot(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize(("args", "match"), CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_bad_input_is_one_sentence_exit_2_and_touches_nothing(args, match, paths, tmp_path):
    cache = Path(os.environ["TRANSFERKIT_CACHE"])
    before = _snapshot(cache)
    out = tmp_path / "out"
    argv = args.format(**paths).split()
    if argv[0] != "predict":
        argv += ["--out", str(out), "--quiet"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, (argv, result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert match in err, err
    assert "Traceback" not in result.output
    assert not out.exists()
    assert _snapshot(cache) == before


def test_the_table_is_long_enough():
    assert len(CASES) >= 60
