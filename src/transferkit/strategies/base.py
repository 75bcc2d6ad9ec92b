"""The Strategy protocol and registry: what trains, on what, and what the result is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..backbones.base import Backbone
from ..core.config import check_options
from ..core.model import TransferModel
from ..data.dataset import Dataset, Splits
from ..errors import TransferkitError
from ..registry import Registry


@dataclass
class RunContext:
    """What every strategy gets besides its own config."""

    seed: int = 0
    cache_dir: Path | None = None
    use_cache: bool = True
    progress: bool = True
    checkpoint_dir: Path | None = None
    """Where a training strategy checkpoints every epoch (None: no checkpoints)."""
    resume: bool = False
    """Continue from the checkpoint in checkpoint_dir when there is one."""
    stop_after: int | None = None
    """End training after this many epochs of this call (tests use it to simulate a kill)."""
    log_dir: Path | None = None
    """Where a training strategy writes TensorBoard scalars (None: nowhere)."""


@dataclass
class StrategyResult:
    """A trained model plus its test-set class probabilities and what the strategy chose."""

    model: TransferModel
    test_proba: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    val_proba: np.ndarray | None = None
    """Validation probabilities, where the strategy has them for free (else None: ``predict_proba`` gives them)."""
    test_values: np.ndarray | None = None
    """A regression model's predicted test values (``test_proba`` is then empty)."""

    @property
    def test_pred(self) -> np.ndarray:
        """The predicted class of every test item."""
        return np.asarray(self.test_proba).argmax(1)


class Strategy(Protocol):
    """``run(backbone, data, splits, config, ctx) -> StrategyResult``; ``Config`` is its dataclass."""

    name: str
    Config: type

    def run(self, backbone: Backbone, ds: Dataset, splits: Splits, config: Any, ctx: RunContext) -> StrategyResult: ...


STRATEGIES: Registry[Strategy] = Registry("strategy")


def register_strategy(strategy: Strategy) -> Strategy:
    """Register a strategy object under its ``name``."""
    return STRATEGIES.register(strategy.name)(strategy)


def make_config(strategy: Strategy, options: dict[str, Any]) -> Any:
    """The strategy's config dataclass from keyword options, checked before it is built (see ``check_options``);
    an unknown option names the known ones."""
    known = {f.name for f in fields(strategy.Config)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TransferkitError(
            f"Strategy {strategy.name!r} has no option(s) {', '.join(unknown)}; its options are "
            f"{', '.join(sorted(known))}."
        )
    return strategy.Config(**check_options(strategy.Config, options, strategy.name))


def split_features(
    backbone: Backbone,
    ds: Dataset,
    splits: Splits,
    ctx: RunContext,
    parts: tuple[str, ...] = ("train", "val", "test"),
    *,
    batch_size: int | None = None,
    stats: dict[str, Any] | None = None,
    label: str = "",
    mirror: bool = False,
) -> tuple[dict[str, np.ndarray], bool]:
    """Frozen-backbone features of each split in ``parts`` (through the feature cache; ``mirror``: of the mirror
    images), and whether all of them came from it; ``stats`` accumulates the extraction seconds (see
    ``extract_features``)."""
    from ..core.features import extract_features

    feats, hits = {}, []
    for part in parts:
        feats[part], hit = extract_features(
            backbone, ds, getattr(splits, part), batch_size=batch_size, cache_dir=ctx.cache_dir,
            use_cache=ctx.use_cache, progress=ctx.progress, description=f"{label}{part} features", stats=stats,
            mirror=mirror,
        )
        hits.append(hit)
    return feats, all(hits)


def cold_cost(wall_s: float, info: dict[str, Any]) -> float:
    """What a run cost cold: its wall time plus the extraction time a feature-cache hit saved it."""
    return wall_s + float(info.get("cache_saved_s", 0.0))


def work_flops(
    backbone: Backbone, info: dict[str, Any], splits: Splits, cache_dir: Path | None = None, use_cache: bool = True
) -> float | None:
    """What a run cost in FLOPs of ``backbone`` (forward 1 unit, training step 3 per item), from the item passes
    the strategy reports in ``info["work"]`` (else one forward pass over every split); None for texts."""
    from ..core.features import default_cache_dir

    root = (Path(cache_dir) if cache_dir else default_cache_dir()) if use_cache else None
    per_item = backbone.flops_per_item(root)
    if per_item is None:
        return None
    n_all = len(splits.train) + len(splits.val) + len(splits.test)
    work = info.get("work", {"forward": n_all, "train": 0})
    return per_item * (work["forward"] + 3 * work["train"])


def config_dict(config: Any) -> dict[str, Any]:
    return asdict(config)


StrategyFactory = Callable[[], Strategy]


def run_identity(model: TransferModel, ds: Dataset, splits: Splits, config: Any) -> dict[str, Any]:
    """What a training run is about, for its checkpoint: a resume on other data, splits, backbone or strategy
    settings is refused by name."""
    import hashlib

    def digest(idx: np.ndarray) -> str:
        return hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]

    return {
        "data": ds.content_hash(),
        "classes": list(ds.classes),
        "splits": {k: digest(getattr(splits, k)) for k in ("train", "val", "test")},
        "backbone": model.backbone.spec,
        "strategy settings": {
            k: v for k, v in asdict(config).items() if isinstance(v, str | int | float | bool | None)
        },
    }


def train_and_predict(
    model: TransferModel,
    groups: list[Any],
    batcher: Callable[..., Any],
    config: Any,
    ds: Dataset,
    splits: Splits,
    ctx: RunContext,
    on_epoch_start: Callable[[int], None] | None = None,
    extra_items: list[Any] | None = None,
    loss: Callable[..., Any] | None = None,
    initial_val_accuracy: float | None = None,
    before_test: Callable[[Any], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any], dict[str, float]]:
    """Run the training loop on the train/val splits, then predict the test split.

    A numeric target (``ds.task == "regression"``) trains the model's one output on the target standardised over
    the training split: the head must come in standardised units (see ``TargetScale``) and leaves in the target's,
    before ``before_test``; the returned test array then holds predicted values (N,), and the learning curve's
    ``val_accuracy`` is validation R^2.

    ``extra_items`` join the training items with label -1 (unlabelled; only a custom ``loss`` can use them).
    ``initial_val_accuracy`` makes the starting weights a candidate (see ``Trainer.fit``); ``before_test`` gets the
    ``TrainResult`` once every choice is made, before the test split is predicted.
    Returns (test class probabilities, info for run.json incl. the learning curve, timings).
    """
    import time

    from ..core.features import default_device
    from ..core.progress import TensorBoardLog
    from ..core.training import TrainConfig, Trainer, is_main_process

    t0 = time.perf_counter()
    train_cfg = TrainConfig(**{k: v for k, v in asdict(config).items() if k in TrainConfig.__dataclass_fields__})
    log = TensorBoardLog(ctx.log_dir) if ctx.log_dir is not None and is_main_process() else None
    trainer = Trainer(
        model,
        groups,
        batcher,
        train_cfg,
        seed=ctx.seed,
        checkpoint_dir=ctx.checkpoint_dir,
        progress=ctx.progress,
        on_epoch_start=on_epoch_start,
        device=default_device(),
        identity=run_identity(model, ds, splits, config),
        on_epoch_end=log,
    )
    regression = ds.task == "regression"
    y = ds.targets
    scale = TargetScale.of(y[splits.train]) if regression else None
    if scale is not None:
        y = scale.standardise(y)
    items, train_y = ds.take(splits.train), y[splits.train]
    if extra_items:
        items = list(items) + list(extra_items)
        train_y = np.concatenate([train_y, np.full(len(extra_items), -1, dtype=train_y.dtype)])
    try:
        result = trainer.fit(
            items,
            train_y,
            ds.take(splits.val),
            y[splits.val],
            len(ds.classes),
            resume=ctx.resume,
            stop_after=ctx.stop_after,
            loss=loss,
            initial_val_accuracy=initial_val_accuracy,
            regression=regression,
        )
    finally:
        if log is not None:
            log.close()
    if scale is not None:
        scale.to_target_units(model.head)
    if before_test is not None:
        before_test(result)
    model.eval()
    t1 = time.perf_counter()
    test = ds.take(splits.test)
    test_out = np.asarray(model.predict_values(test) if regression else model.predict_proba(test))
    info = {
        "best_epoch": result.best_epoch + 1,  # 0: the starting weights (see initial_val_accuracy)
        ("val_r2" if regression else "val_accuracy"): result.best_val_accuracy,
        "epochs_run": len(result.history),
        "resumed_from_epoch": result.resumed_from,
        "learning_curve": [asdict(r) for r in result.history],
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "param_groups": [g.name for g in groups],
        # item passes through the model (a training step counts as one train pass): the control's work budget
        "work": {
            "forward": len(result.history) * len(splits.val) + len(splits.test),
            "train": len(result.history) * len(items),
        },
    }
    if scale is not None:
        info["target_scale"] = {"mean": scale.mean, "std": scale.std}
    return test_out, info, {"train_s": t1 - t0, "predict_test_s": time.perf_counter() - t1}


@dataclass(frozen=True)
class TargetScale:
    """A numeric target's mean and standard deviation over the training split: fine-tuning (and its checkpoints)
    work in standardised units, the saved model in the target's own."""

    mean: float
    std: float

    @classmethod
    def of(cls, y: np.ndarray) -> TargetScale:
        return cls(float(np.mean(y)), float(np.std(y)) or 1.0)

    def standardise(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y, dtype=np.float64) - self.mean) / self.std

    def to_standard_units(self, head: Any) -> None:
        """Make a linear head that outputs the target output it standardised."""
        with torch.no_grad():
            head.bias.sub_(self.mean).div_(self.std)
            head.weight.div_(self.std)

    def to_target_units(self, head: Any) -> None:
        """Make a linear head that outputs the standardised target output the target itself."""
        with torch.no_grad():
            head.weight.mul_(self.std)
            head.bias.mul_(self.std).add_(self.mean)
