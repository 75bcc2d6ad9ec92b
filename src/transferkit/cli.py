"""The ``transferkit`` command: every command is a thin wrapper over a library call."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .data.spec import DataSpec, SplitSpec
from .errors import TransferkitError
from .methods.adaptation_methods import ADAPTING
from .methods.anomaly import BUILTIN as BUILTIN_DETECTORS
from .methods.anomaly import KNN_K


def _plain_help(cls: type) -> type:
    """``cls`` whose ``--help`` row shows no ``<bool>``, like every other flag here."""

    class Plain(cls):  # type: ignore[misc, valid-type]
        def get_help_option(self, ctx: Any) -> Any:
            option = super().get_help_option(ctx)
            if option is not None:
                option.metavar = ""
            return option

    Plain.__name__ = f"Plain{cls.__name__}"
    return Plain


_Command = _plain_help(typer.core.TyperCommand)

app = typer.Typer(
    cls=_plain_help(typer.core.TyperGroup),
    add_completion=False,
    no_args_is_help=True,
    help="Transfer learning on your own images and texts, compared honestly with scratch.",
)


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def _report_path(out: Path) -> None:
    typer.echo(f"report: {out / 'report.html'} (and report.md)")


def _out(out: Path | None, default: Path, overwrite: bool = False, resume: bool = False) -> Path:
    """The run's folder: ``--out`` as given (the library checks it), or ``default``; a default that is taken (by
    an earlier run, or by anything else) gives way to a fresh name unless the run replaces or resumes it."""
    from .core.outdir import fresh_out, is_run_folder

    if out is not None:
        return out
    if (overwrite or resume) and (is_run_folder(default) or not default.exists()):
        return default
    chosen = fresh_out(default)
    if chosen != default:
        typer.echo(f"{default} is taken: writing this run to {chosen} (--overwrite replaces an earlier run there).",
                   err=True)
    return chosen


def _cli_type(hint: Any) -> Any:
    """The type the command line reads a spec field as: a path where the library takes any data object."""
    return Path | None if hint is Any else hint


def data_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command the shared data options, generated from the fields of ``DataSpec`` and ``SplitSpec`` (their
    ``help`` metadata), plus ``--quiet``; the command receives them built and validated as ``reading: DataSpec``,
    ``split: SplitSpec``, ``quiet: bool`` and ``overwrite: bool``."""
    import functools
    import inspect
    from dataclasses import fields
    from typing import get_type_hints

    groups = {"reading": DataSpec, "split": SplitSpec}
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name not in groups]
    added = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=f.default,
            annotation=Annotated[
                _cli_type(get_type_hints(cls)[f.name]),
                typer.Option(help=f.metadata["help"], metavar="" if get_type_hints(cls)[f.name] is bool else None),
            ],
        )
        for cls in groups.values()
        for f in fields(cls)
    ]
    added.append(
        inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False,
                          annotation=Annotated[bool, typer.Option(metavar="", help="No progress bars.")])
    )
    added.append(
        inspect.Parameter("overwrite", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option(
        metavar="", help="Replace the earlier run in --out (a folder transferkit did not write is "
                               "never replaced).")])
    )
    own = [p for p in own if p.name not in ("quiet", "overwrite")]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        try:
            built = {
                name: cls(**{f.name: kwargs.pop(f.name) for f in fields(cls)}) for name, cls in groups.items()
            }
        except TransferkitError as e:
            _fail(e)
            return
        command(**kwargs, **built)

    wrapper.__signature__ = inspect.Signature([*own, *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
    return wrapper


@app.command(cls=_Command)
def backbones() -> None:
    """List the backbones usable here, and why the others are not."""
    from rich.table import Table

    from .backbones import list_backbones
    from .core.progress import out_console as console

    table = Table(title="backbones")
    for col in ("spec", "modality", "available", "note"):
        table.add_column(col)
    for b in list_backbones():
        table.add_row(b.spec, b.modality, "yes" if b.available else "no", b.note)
    console.print(table)


@app.command(cls=_Command)
def datasets() -> None:
    """List the built-in datasets, whether each is installed, and how to install it."""
    from rich.table import Table

    from .core.progress import out_console as console
    from .data import DATASETS

    table = Table(title="built-in datasets")
    for col in ("name", "modality", "installed", "description", "licence", "install"):
        table.add_column(col)
    for d in DATASETS.values():
        table.add_row(d.name, d.modality, "yes" if d.available() else "no", d.description, d.licence, d.install)
    console.print(table)


@app.command(cls=_Command)
@data_options
def fit(
    data: Annotated[str, typer.Argument(help="Image folder, CSV/JSONL file, or built-in dataset name.")],
    backbone: Annotated[
        str | None,
        typer.Option(help="Backbone spec (default: the offline pack for the data); auto: the best by `rank`."),
    ] = None,
    strategy: Annotated[str, typer.Option(help="Training strategy.")] = "linear-probe",
    top_k: Annotated[
        int, typer.Option(help="With --backbone auto: train the K best-ranked and keep the best on validation.")
    ] = 1,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/<data name>).")] = None,
    head: Annotated[str | None, typer.Option(help="linear-probe head: linear or mlp.")] = None,
    unfreeze: Annotated[str | None, typer.Option(help="finetune: all, last:N or gradual.")] = None,
    epochs: Annotated[int | None, typer.Option(help="finetune: maximum epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="finetune: peak learning rate of the head.")] = None,
    lp_ft: Annotated[bool | None, typer.Option(
            "--lp-ft/--no-lp-ft",
            metavar="",
            help="finetune: start from the linear probe's head and keep the probe unless fine-tuning beats it on "
            "validation (default on); --no-lp-ft starts from a random head.",
        ),] = None,
    option: Annotated[
        list[str] | None, typer.Option("--set", help="Any strategy option as KEY=VALUE (repeatable).")
    ] = None,
    resume: Annotated[bool, typer.Option(metavar="", help="Continue an interrupted run from OUT/checkpoint.")] = False,
    log: Annotated[str, typer.Option(
        help="Also write each epoch's scalars: none, or tensorboard (to OUT/tensorboard; needs the tensorboard "
        "package)."
    )] = "none",
    calibrate: Annotated[bool, typer.Option(
        metavar="", help="Fit a temperature on validation so probabilities match accuracy (saved with the model).",
    )] = False,
    seeds: Annotated[
        int, typer.Option(help="With --strategy auto: seeds per rung (--seed, --seed + 1, ...).")
    ] = 3,
    budget: Annotated[str, typer.Option(help="With --strategy auto: time budget, e.g. 10m.")] = "10m",
    scratch: Annotated[bool, typer.Option(metavar="", help="Also train the from-scratch control.")] = True,
    scratch_budget: Annotated[
        str,
        typer.Option(
            help="work: scratch's CNN gets half the FLOPs the transfer run cost (reproducible on any machine); "
            "fixed: its own 40-epoch schedule; matched: the seconds the transfer run cost on this machine."
        ),
    ] = "work",
    cache: Annotated[bool, typer.Option(metavar="", help="Use the on-disk feature cache.")] = True,
    *,
    reading: DataSpec,
    split: SplitSpec,
    quiet: bool,
    overwrite: bool,
) -> None:
    """Train on DATA with a pretrained backbone, compare with scratch, save model + report."""
    from .workflows.fit import fit as run_fit
    from .workflows.fit import print_result

    try:
        name = Path(data).stem if Path(data).exists() else data
        given = {"head": head, "unfreeze": unfreeze, "epochs": epochs, "lr": lr, "lp_ft": lp_ft}
        options = {k: v for k, v in given.items() if v is not None} | parse_options(option or [])
        result = run_fit(
            data,
            backbone,
            strategy,
            out=_out(out, Path("runs") / name, overwrite, resume),
            overwrite=overwrite,
            scratch=scratch,
            scratch_budget=scratch_budget,
            use_cache=cache,
            **reading.kwargs(),
            **split.kwargs(),
            progress=not quiet,
            resume=resume,
            calibrate=calibrate,
            log=log,
            top_k=top_k,
            seeds=seeds,
            budget=budget,
            **options,
        )
    except TransferkitError as e:
        _fail(e)
        return
    if result.compare is not None:
        from .workflows.compare import print_compare

        print_compare(result.compare)
    else:
        print_result(result)
    typer.echo(f"saved model to {result.out / 'model'}")
    _report_path(result.out)


@app.command(cls=_Command)
@data_options
def compare(
    data: Annotated[str, typer.Argument(help="Image folder, CSV/JSONL file, or built-in dataset name.")],
    strategies: Annotated[
        str,
        typer.Option(
            help="Comma-separated strategies, 'auto', or LABEL=STRATEGY variants, e.g. "
            "linear-probe,lp-ft=finetune,full=finetune (then --set lp-ft.lp_ft=true)."
        ),
    ] = "linear-probe",
    seeds: Annotated[int, typer.Option(help="Number of seeds (each its own split).")] = 3,
    backbone: Annotated[str | None, typer.Option(help="Backbone spec (default: the pack for the data).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/<data name>-compare).")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--set", help="LABEL.KEY=VALUE, e.g. finetune.epochs=3 (repeatable).")
    ] = None,
    budget: Annotated[str, typer.Option(help="With --strategies auto: time budget, e.g. 10m.")] = "10m",
    scratch_budget: Annotated[
        str,
        typer.Option(
            help="work: scratch gets the FLOPs of the costliest transfer run of each seed (reproducible); fixed: its "
            "own 40-epoch schedule; matched: the seconds of the costliest run on this machine."
        ),
    ] = "work",
    log: Annotated[str, typer.Option(
        help="Also write each epoch's scalars: none, or tensorboard (to OUT/tensorboard; needs the tensorboard "
        "package)."
    )] = "none",
    *,
    reading: DataSpec,
    split: SplitSpec,
    quiet: bool,
    overwrite: bool,
) -> None:
    """Strategies x seeds vs the scratch control: mean and 95% CI, and whether transfer helped."""
    from .workflows.compare import compare as run_compare
    from .workflows.compare import parse_variants, print_compare

    try:
        names = [s.strip() for s in strategies.split(",") if s.strip()]
        labels = ["auto"] if names == ["auto"] else list(parse_variants(names))
        per_strategy: dict[str, dict[str, Any]] = {}
        for key, value in parse_options(option or []).items():
            strat, dot, field = key.partition(".")
            if not dot or strat not in labels:
                raise TransferkitError(f"--set {key}=...: write LABEL.KEY with a label from {', '.join(labels)}.")
            per_strategy.setdefault(strat, {})[field] = value
        name = Path(data).stem if Path(data).exists() else data
        res = run_compare(
            data,
            backbone,
            names,
            seeds,
            out=(target := _out(out, Path("runs") / f"{name}-compare", overwrite)),
            overwrite=overwrite,
            options=per_strategy,
            **reading.kwargs(),
            **split.kwargs(),
            progress=not quiet,
            budget=budget,
            scratch_budget=scratch_budget,
            log=log,
        )
    except TransferkitError as e:
        _fail(e)
        return
    print_compare(res)
    _report_path(target)


@app.command(cls=_Command)
@data_options
def distill(
    data: Annotated[str, typer.Argument(help="Image folder, CSV/JSONL file, or built-in dataset name.")],
    teacher: Annotated[
        str, typer.Option(help="A saved model folder, or a backbone spec trained per seed (--teacher-strategy).")
    ],
    student: Annotated[
        str, typer.Option(help="Student spec: scratch:cnn, pack:minilm-l6?layer=2, ...; auto picks by modality.")
    ] = "auto",
    seeds: Annotated[int, typer.Option(help="Number of seeds (each its own split).")] = 3,
    temperature: Annotated[float, typer.Option(help="Softmax temperature T of the soft targets.")] = 4.0,
    alpha: Annotated[float, typer.Option(help="Weight of the soft-target term (1 - alpha on the labels).")] = 0.7,
    epochs: Annotated[int, typer.Option(help="Student epochs (the hard-label control gets the same).")] = 10,
    unlabelled: Annotated[
        str | None, typer.Option(help="Unlabelled inputs the teacher labels: image folder or CSV/JSONL.")
    ] = None,
    unlabelled_column: Annotated[str | None, typer.Option(help="Text/image column of the unlabelled file.")] = None,
    teacher_strategy: Annotated[str, typer.Option(help="How a teacher spec is trained.")] = "linear-probe",
    sweep: Annotated[
        bool, typer.Option(
        metavar="", help="Try T in 1,2,4,8 x alpha in 0.5,0.9 per seed; keep the best on validation.")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/<data name>-distill).")] = None,
    *,
    reading: DataSpec,
    split: SplitSpec,
    quiet: bool,
    overwrite: bool,
) -> None:
    """Distil a teacher into a small student; compare with the same student on hard labels, over seeds."""
    from .workflows.distill import distill as run_distill
    from .workflows.distill import print_distill

    try:
        name = Path(data).stem if Path(data).exists() else data
        res = run_distill(
            data,
            teacher,
            student,
            seeds=seeds,
            temperature=temperature,
            alpha=alpha,
            epochs=epochs,
            unlabelled=unlabelled,
            unlabelled_column=unlabelled_column,
            teacher_strategy=teacher_strategy,
            sweep=sweep,
            **reading.kwargs(),
            **split.kwargs(),
            progress=not quiet,
            out=_out(out, Path("runs") / f"{name}-distill", overwrite),
            overwrite=overwrite,
        )
    except TransferkitError as e:
        _fail(e)
        return
    print_distill(res)
    typer.echo(f"saved the distilled student to {res.out / 'model'}")
    _report_path(res.out)


@app.command(cls=_Command)
@data_options
def adapt(
    source: Annotated[str, typer.Option(help="Labelled source data: image folder, CSV/JSONL file or built-in name.")],
    target: Annotated[
        str, typer.Option(help="Unlabelled target inputs: image folder, CSV/JSONL file or built-in name.")
    ],
    target_test: Annotated[
        str | None, typer.Option(help="Labelled target data, used only to report target accuracy at the end.")
    ] = None,
    method: Annotated[str, typer.Option(help=f"Comma-separated, of: {', '.join(ADAPTING)}.")] = ",".join(ADAPTING),
    backbone: Annotated[str | None, typer.Option(help="Backbone spec (default: the offline pack).")] = None,
    select: Annotated[
        str, typer.Option(help="Label-free model selection: dev, im (information maximisation), source-val.")
    ] = "dev",
    recommend: Annotated[
        str,
        typer.Option(help="How the method to use is chosen: reverse (beats source-only's reverse validation on "
                     "every seed, else source-only) or criterion (best mean selection criterion)."),
    ] = "reverse",
    seeds: Annotated[int, typer.Option(help="Number of seeds (each its own source split).")] = 3,
    epochs: Annotated[int, typer.Option(help="Adapter epochs; each epoch is a candidate checkpoint.")] = 30,
    max_target: Annotated[int | None, typer.Option(help="Use at most N unlabelled target inputs.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/<source name>-adapt).")] = None,
    target_column: Annotated[
        str | None, typer.Option(help="Text/image column of the unlabelled target file (default: as the source).")
    ] = None,
    *,
    reading: DataSpec,
    split: SplitSpec,
    quiet: bool,
    overwrite: bool,
) -> None:
    """Adapt a source-trained model to an unlabelled target domain; compare each method with source-only."""
    from .workflows.adapt import adapt as run_adapt
    from .workflows.adapt import print_adapt

    try:
        src = Path(source)
        name = f"{src.resolve().parent.name}-{src.stem}" if src.is_file() else src.name if src.exists() else source
        res = run_adapt(
            source,
            target,
            target_test,
            backbone=backbone,
            methods=[m for m in method.split(",") if m.strip()],
            select=select,
            recommend=recommend,
            seeds=seeds,
            epochs=epochs,
            max_target=max_target,
            target_column=target_column,
            **reading.kwargs(),
            **split.kwargs(),
            progress=not quiet,
            out=_out(out, Path("runs") / f"{name}-adapt", overwrite),
            overwrite=overwrite,
        )
    except TransferkitError as e:
        _fail(e)
        return
    print_adapt(res)
    typer.echo(f"saved the {res.recommended()} model to {res.out / 'model'}")
    _report_path(res.out)


@app.command(cls=_Command)
@data_options
def rank(
    data: Annotated[str, typer.Argument(help="Image folder, CSV/JSONL file, or built-in dataset name.")],
    backbones: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated candidate specs (e.g. pack:efficientnet-lite0,pack:efficientnet-lite0?layer=5); "
            "'pool': every installed pack plus intermediate depths; default: the installed packs."
        ),
    ] = None,
    by: Annotated[str, typer.Option(help="Score that picks the recommendation: logme, leep, nce or hscore.")] = "logme",
    controls: Annotated[bool, typer.Option(
        metavar="", help="Add a random-init control, which should rank last.")] = True,
    max_samples: Annotated[int, typer.Option(help="Score at most N training samples (stratified).")] = 500,
    probe: Annotated[bool, typer.Option(
        metavar="", help="Also fit a linear probe on 3/4 of the scored samples and report its accuracy on the rest.",
    )] = False,
    out: Annotated[Path | None, typer.Option(help="Output folder for rank.json / report.md.")] = None,
    *,
    reading: DataSpec,
    split: SplitSpec,
    quiet: bool,
    overwrite: bool,
) -> None:
    """Score candidate backbones on DATA (LogME, LEEP, NCE, H-score) from one forward pass each; no training."""
    from .workflows.rank import print_rank
    from .workflows.rank import rank as run_rank

    try:
        name = Path(data).stem if Path(data).exists() else data
        res = run_rank(
            data,
            backbones,
            by=by,
            controls=controls,
            max_samples=max_samples,
            probe=probe,
            **reading.kwargs(),
            **split.kwargs(),
            progress=not quiet,
            out=(target := _out(out, Path("runs") / f"{name}-rank", overwrite)),
            overwrite=overwrite,
        )
    except TransferkitError as e:
        _fail(e)
        return
    print_rank(res)
    _report_path(target)


@app.command(cls=_Command)
def detect(
    data: Annotated[str, typer.Argument(
        help="Normal examples: an image folder, a CSV/JSONL of texts, or (with --normal) labelled data or a built-in "
        "dataset name.")],
    normal: Annotated[str | None, typer.Option(
        help="Comma-separated normal class(es) of a labelled DATA: only they are fitted on; its other classes (and "
        "its test split, the default test set) are what the detector must flag.")] = None,
    test: Annotated[Path | None, typer.Option(
        help="Labelled test data (folder or CSV/JSONL): normal / anomaly labels, or class names with --normal; "
        "read for the report only.")] = None,
    fpr: Annotated[float | None, typer.Option(
        help="Threshold: the share of held-out normal data flagged (default 0.05).")] = None,
    contamination: Annotated[float | None, typer.Option(
        help="Threshold from the expected share of anomalies in the normal data instead of --fpr.")] = None,
    detectors: Annotated[str, typer.Option(
        help="Comma-separated: knn, mahalanobis, pyod:<Class> (with pyod installed); the first is saved.")
    ] = ",".join(BUILTIN_DETECTORS),
    k: Annotated[int, typer.Option(help="knn: neighbours the score averages over.")] = KNN_K,
    backbone: Annotated[str | None, typer.Option(
        help="Backbone spec (default: the offline pack for the data); auto: the installed pack whose features hold "
        "the normal data tightest (held-out kNN distance ratio, no labels).")] = None,
    seeds: Annotated[int, typer.Option(help="Seeds (each a different fit / threshold split of the normal data).")
                     ] = 3,
    seed: Annotated[int, typer.Option(help="First seed.")] = 0,
    max_test: Annotated[int | None, typer.Option(help="Score at most N test items (stratified).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/<data name>-detect).")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column of a CSV/JSONL file.")] = None,
    image_column: Annotated[str | None, typer.Option(help="Image-path column of a CSV/JSONL file.")] = None,
    label_column: Annotated[str, typer.Option(help="Label column of a CSV/JSONL file.")] = "label",
    encoding: Annotated[str, typer.Option(help="Text encoding of a CSV/JSONL file.")] = "utf-8",
    cache: Annotated[bool, typer.Option(metavar="", help="Use the on-disk feature cache.")] = True,
    quiet: Annotated[bool, typer.Option(metavar="", help="No progress bars.")] = False,
    overwrite: Annotated[bool, typer.Option(metavar="", help="Replace the earlier run in --out.")] = False,
) -> None:
    """Fit anomaly detectors on normal data only (pretrained features vs raw inputs), save one for `predict`."""
    from .workflows.detect import detect as run_detect
    from .workflows.detect import print_detect

    try:
        name = Path(data).stem if Path(data).exists() else data
        res = run_detect(
            data, backbone, normal=normal, test=test, fpr=fpr, contamination=contamination, detectors=detectors,
            k=k, seeds=seeds, seed=seed, max_test=max_test,
            out=(target := _out(out, Path("runs") / f"{name}-detect", overwrite)), overwrite=overwrite,
            use_cache=cache, progress=not quiet, text_column=text_column, label_column=label_column,
            image_column=image_column, encoding=encoding,
        )
    except TransferkitError as e:
        _fail(e)
        return
    print_detect(res)
    typer.echo(f"saved detector to {target / 'model'}")
    typer.echo(f"report: {target / 'report.md'}")


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> options; values are read as JSON when they parse (numbers, true, null, lists)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise TransferkitError(f"--set {pair!r} must be KEY=VALUE, e.g. --set layer_decay=0.8.")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@app.command(cls=_Command)
def predict(
    model_dir: Annotated[Path, typer.Argument(
        help="A saved model folder (e.g. runs/photos/model), or with --onnx an exported .onnx file.")],
    inputs: Annotated[list[str] | None, typer.Argument(help="Image files/folders, or texts.")] = None,
    file: Annotated[Path | None, typer.Option(help="CSV/JSONL of inputs (with labels: also scores).")] = None,
    text_column: Annotated[str | None, typer.Option(help="Input column of --file.")] = None,
    label_column: Annotated[str, typer.Option(help="Label column of --file, if any.")] = "label",
    encoding: Annotated[str, typer.Option(help="Encoding of --file.")] = "utf-8",
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="One JSON object per line.")] = False,
    output: Annotated[Path | None, typer.Option(
        help="Write every prediction (input, label, probability, each class's probability) to this .csv/.jsonl file."
    )] = None,
    overwrite: Annotated[bool, typer.Option(metavar="", help="Replace an existing --output file.")] = False,
    quiet: Annotated[bool, typer.Option(metavar="", help="No progress bar.")] = False,
    onnx: Annotated[bool, typer.Option("--onnx", metavar="", help=(
        "MODEL_DIR is an .onnx file written by `transferkit export`: run it with onnxruntime (torch is not imported)."
    ))] = False,
) -> None:
    """Label + probability for each input with a saved model (streamed: inputs of any number)."""
    from .core.progress import console
    from .workflows.predict import check_output, collect_inputs, predict_stream

    def show(row: dict[str, Any]) -> None:
        keys = (("input", "value") if "value" in row else ("input", "score", "verdict") if "score" in row else
                ("input", "label", "probability"))
        if as_json:
            sys.stdout.write(json.dumps({k: row[k] for k in keys}) + "\n")
            return
        name = row["input"] if len(row["input"]) <= 60 else row["input"][:57] + "..."
        said = (f"{row['value']:.6g}" if "value" in row else f"{row['score']:.3f}\t{row['verdict']}" if "score" in row
                else f"{row['label']}\t{row['probability']:.4f}")
        sys.stdout.write(f"{name}\t{said}\n")

    try:
        target = check_output(output, overwrite) if output is not None else None
        if onnx:
            from .onnx_runtime import OnnxModel

            model: Any = OnnxModel(model_dir)
        else:
            from .core.export import load
            from .methods.detector import is_detector, load_detector

            if model_dir.suffix == ".onnx" and model_dir.is_file():
                raise TransferkitError(f"{model_dir} is an ONNX file: add --onnx to run it with onnxruntime.")
            model = load_detector(model_dir) if is_detector(model_dir) else load(model_dir)
        items, names, labels = collect_inputs(model, inputs or [], file, text_column, label_column, encoding)
        if not items:
            raise TransferkitError("Nothing to predict: pass inputs or --file.")
        truth = None
        if labels is not None and model.task == "detection":
            typer.echo(f"note: the labels in {file} are not scored here; transferkit detect --test scores a "
                       "labelled set (AUROC, FPR, recall).", err=True)
        if labels is not None and model.task != "detection":
            truth = model.target_values(labels, str(file)) if model.task == "regression" else model.label_indices(
                labels, where=str(file))
        summary = predict_stream(model, items, names, truth, target, None if target else show,
                                 progress=not quiet and (target is not None or len(items) > 256))
    except TransferkitError as e:
        _fail(e)
        return
    if target is not None:
        typer.echo(f"wrote {summary['rows']} predictions to {target}")
    if "accuracy" in summary:
        console.print(f"accuracy on {file}: {summary['accuracy']:.2%} ({summary['rows']} rows)")
    if "mae" in summary:
        console.print(f"on {file}: MAE {summary['mae']:.4g}, RMSE {summary['rmse']:.4g} ({summary['rows']} rows)")


@app.command(cls=_Command)
def export(
    model_dir: Annotated[Path, typer.Argument(help="A saved model folder (e.g. runs/photos/model).")],
    onnx: Annotated[Path, typer.Option("--onnx", help="The ONNX file to write (its description and, for texts, "
                                       "tokenizer are written beside it).")],
    inputs: Annotated[list[str] | None, typer.Argument(
        help="Images/folders or texts for the parity check (default: built-in real examples).")] = None,
    file: Annotated[Path | None, typer.Option(help="CSV/JSONL of inputs for the parity check.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Input column of --file.")] = None,
    encoding: Annotated[str, typer.Option(help="Encoding of --file.")] = "utf-8",
    overwrite: Annotated[bool, typer.Option(metavar="", help="Replace an existing ONNX file.")] = False,
) -> None:
    """Export a saved model as one ONNX graph (LoRA merged), after checking it against PyTorch on real inputs."""
    from .core.export import load
    from .core.onnx_export import export_onnx
    from .workflows.predict import collect_inputs

    try:
        model = load(model_dir)
        check = None
        if inputs or file is not None:
            check, _, _ = collect_inputs(model, inputs or [], file, text_column, "label", encoding)
        result = export_onnx(model, onnx, check_inputs=check, overwrite=overwrite)
    except TransferkitError as e:
        _fail(e)
        return
    typer.echo(result.sentence())
    for path in result.files:
        typer.echo(f"wrote {path}")


@app.command(cls=_Command)
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (the --out of fit, compare, rank, distill or adapt).")],
) -> None:
    """Rebuild RUN_DIR/report.html from the run record in it."""
    from .workflows.html import write_html

    try:
        path = write_html(run_dir)
    except TransferkitError as e:
        _fail(e)
        return
    except OSError as e:
        _fail(TransferkitError(f"{run_dir}/report.html cannot be written ({e.strerror or e})."))
        return
    typer.echo(f"report: {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
