"""``finetune``: train the backbone too: all blocks, the last N, or gradually from the top; LP-FT optional.

Discriminative learning rates: the backbone learns at ``backbone_lr_mult`` x the head's rate, and with
``layer_decay`` each block further from the head at a further ``layer_decay`` x less. BatchNorm layers in frozen
blocks keep their running statistics.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backbones.base import Backbone
from ..core.config import validate_config
from ..core.heads import fit_linear_probe, fit_ridge, linear_head
from ..core.model import TransferModel
from ..core.training import ParamGroup, TrainConfig
from ..data.dataset import Dataset, Splits
from ..errors import TransferkitError
from .base import RunContext, StrategyResult, TargetScale, register_strategy, split_features, train_and_predict


def parse_unfreeze(value: str, n_blocks: int | None = None) -> tuple[str, int]:
    """('all', n) | ('last', N) | ('gradual', n) from the ``unfreeze`` option, or a clear error. Without
    ``n_blocks`` (when a config is built, before the backbone is known) only the syntax is checked and n is 0."""
    if value in ("all", "gradual"):
        return value, n_blocks or 0
    if value.startswith("last:"):
        try:
            n = int(value.split(":", 1)[1])
        except ValueError:
            n = -1
        if n_blocks is None and n < 1:
            raise TransferkitError(f"unfreeze={value!r}: N must be a whole number of at least 1 (blocks).")
        if n_blocks is not None and not 1 <= n <= n_blocks:
            raise TransferkitError(f"unfreeze={value!r}: N must be a whole number from 1 to {n_blocks} (blocks).")
        return "last", n
    raise TransferkitError(f"unfreeze={value!r} is not one of all, last:N, gradual.")


@dataclass
class FinetuneConfig(TrainConfig):
    """Options of the finetune strategy (plus those of the training loop)."""

    epochs: int = field(default=5, metadata={"min": 1})
    """Maximum number of epochs (the ladder in BENCHMARKS.md measured 5 at 100 labels per class)."""
    unfreeze: str = field(default="all", metadata={"check": parse_unfreeze})
    """all | last:N (only the last N blocks) | gradual (head alone first, then one more block from the top per
    epoch)."""
    lr: float = field(default=1e-3, metadata={"min": 0})
    """Peak learning rate of the head (0 changes no weight: with LP-FT the probe is then what is kept)."""
    backbone_lr_mult: float = field(default=0.1, metadata={"min": 0})
    """Backbone learning rate = lr x this (discriminative learning rate)."""
    layer_decay: float | None = field(default=None, metadata={"gt": 0, "max": 1})
    """If set (e.g. 0.8), block k from the top learns at a further layer_decay**k x (layer-wise decay)."""
    keep_margin: float = field(default=1.0, metadata={"min": 0})
    """With LP-FT: the fine-tune is kept only if it beats the probe on validation by more than ``keep_margin``
    standard errors of their paired difference (items only it gets right minus items only the probe gets right,
    over the square root of their sum); 0: any gain on validation."""
    lp_ft: bool = True
    """LP-FT: fit the linear probe on frozen features first and start fine-tuning from that head; the probe is then
    a candidate too, and is what is kept (refit on train + val, as ``linear-probe`` does) unless a fine-tuned epoch
    beats it on validation by ``keep_margin``. Off: a fresh random head."""
    augment: bool | None = None
    """Random resized crops and flips for images during training (None: on for classes, off for a numeric target,
    where a flip or crop can change the very quantity to predict, e.g. an angle or a position)."""

    tta: bool = False
    """Test-time augmentation for images: average each test image's logits with its mirror image's (saved with
    the model, so ``predict`` does the same); not for numeric targets. Off by default: benchmarks/dev_tta.py
    measured it within the noise after augmented training (+0.3 to +0.5 points) at twice the prediction cost."""

    def __post_init__(self) -> None:
        validate_config(self, "finetune")


def clearly_better(only_a: int, only_b: int, margin: float) -> bool:
    """A beats B on the same items by more than ``margin`` standard errors of the paired difference (McNemar's
    statistic: items only A gets right minus items only B gets right, over the square root of their sum)."""
    return only_a - only_b > margin * math.sqrt(only_a + only_b)


def clearly_lower(errors_a: np.ndarray, errors_b: np.ndarray, margin: float, floor: float = 0.005) -> bool:
    """A's per-item errors are lower than B's on the same items by more than ``margin`` standard errors of their
    paired difference, and by at least ``floor`` x B's mean error (the cached features and a live forward pass
    differ by float rounding of one sign, which alone would pass a paired test)."""
    a, b = np.asarray(errors_a, dtype=np.float64), np.asarray(errors_b, dtype=np.float64)
    d = b - a
    if d.mean() <= floor * b.mean():
        return False
    return len(d) < 2 or bool(d.mean() > margin * d.std(ddof=1) / math.sqrt(len(d)))


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def unfreeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(True)


class Finetune:
    name = "finetune"
    Config = FinetuneConfig
    numeric_targets = True
    """Trains a regression head on a numeric target too."""

    def run(
        self, backbone: Backbone, ds: Dataset, splits: Splits, config: FinetuneConfig, ctx: RunContext
    ) -> StrategyResult:
        blocks = backbone.blocks()
        mode, n = parse_unfreeze(config.unfreeze, len(blocks))
        torch.manual_seed(ctx.seed)
        y = ds.targets
        regression = ds.task == "regression"
        score = "val_r2" if regression else "val_accuracy"
        augment = (not regression) if config.augment is None else config.augment
        if config.tta and (regression or backbone.modality != "image"):
            raise TransferkitError("tta (mirror-image test-time augmentation) is for image classes only.")
        t0 = time.perf_counter()
        info: dict[str, Any] = {"unfreeze": config.unfreeze, "augment": augment}
        head = linear_head(backbone.feature_dim, 1 if regression else len(ds.classes))
        stats: dict[str, float] = {}
        probe = None
        feats: dict[str, Any] = {}
        if config.lp_ft:
            feats, _ = split_features(backbone, ds, splits, ctx, ("train", "val"), stats=stats, label="LP-FT ")
            fit_args = (feats["train"], y[splits.train], feats["val"], y[splits.val])
            probe = (fit_ridge(*fit_args, refit_on_val=False) if regression
                     else fit_linear_probe(*fit_args, len(ds.classes), refit_on_val=False))
            head = probe.head
            info[f"probe_{score}"] = probe.val_accuracy
        t_lp = time.perf_counter() - t0
        model = TransferModel(backbone, head, [] if regression else ds.classes, ds.task)
        model.tta = config.tta  # predict_proba (the keep decision, the test split) uses it; training does not
        start = {k: v.detach().clone() for k, v in model.state_dict().items()} if probe is not None else None
        if regression and probe is not None:  # training works in standardised units (a fresh head starts in them)
            TargetScale.of(y[splits.train]).to_standard_units(head)
        groups = self._groups(backbone, blocks, head, mode, n, config)
        top_first = list(range(len(blocks)))[::-1]

        def on_epoch_start(epoch: int) -> None:
            """Set requires_grad for this epoch (a function of the epoch alone, so resume repeats it)."""
            freeze(backbone)
            if mode == "all":
                unfreeze(backbone)
            elif mode == "last":
                for i in top_first[:n]:
                    unfreeze(blocks[i])
            else:  # gradual: epoch 0 head only, then one more block from the top each epoch
                for i in top_first[:epoch]:
                    unfreeze(blocks[i])
                if epoch > len(blocks):
                    unfreeze(backbone)
            for m in backbone.unused_modules():
                freeze(m)
            unfreeze(head)

        def batcher(items: list[Any], train: bool, gen: torch.Generator) -> Any:
            return backbone.prepare(items, augment=train and augment, generator=gen)

        held_out: dict[str, np.ndarray] = {}  # the kept model's validation probabilities, where known

        def before_test(result: Any) -> None:
            """A fine-tune that did not clearly beat its probe on validation gives way to the probe, refit like
            linear-probe (on train + val), on the pretrained backbone."""
            if probe is None or start is None:
                return
            y_val = y[splits.val]
            if regression:
                reason = keep_regression(result)
                if reason is None:
                    return
            elif result.best_epoch >= 0:
                with torch.no_grad():
                    probe_right = probe.head(torch.from_numpy(feats["val"])).argmax(1).numpy() == y_val
                held_out["val"] = np.asarray(model.predict_proba(ds.take(splits.val)))
                ft_right = held_out["val"].argmax(1) == y_val
                only_ft, only_probe = int((ft_right & ~probe_right).sum()), int((probe_right & ~ft_right).sum())
                info["val_paired"] = {"only_finetune_right": only_ft, "only_probe_right": only_probe}
                if clearly_better(only_ft, only_probe, config.keep_margin):
                    return
                reason = (
                    f"the best fine-tuned epoch beat the linear probe on validation by {only_ft - only_probe} items "
                    f"({only_ft} only it got right, {only_probe} only the probe), within {config.keep_margin:g} "
                    "standard error(s) of no difference"
                )
            else:
                reason = f"no fine-tuned epoch beat the linear probe on validation ({probe.val_accuracy:.2%})"
            model.load_state_dict(start)
            fit_args = (feats["train"], y[splits.train], feats["val"], y_val)
            refit = fit_ridge(*fit_args) if regression else fit_linear_probe(*fit_args, len(ds.classes))
            with torch.no_grad():
                head.load_state_dict(refit.head.state_dict())
            if refit.val_logits is not None and not regression:  # held out: before the refit on train + val
                held_out["val"] = torch.from_numpy(refit.val_logits).softmax(1).numpy()
            info["kept"] = "linear-probe"
            info["kept_reason"] = (
                f"{reason}; the saved model is the probe (refit on train + val), the backbone unchanged"
            )

        def keep_regression(result: Any) -> str | None:
            """None if the fine-tune clearly lowered the probe's per-item validation squared error, else why not."""
            assert probe is not None and probe.val_logits is not None
            if result.best_epoch < 0:
                return f"no fine-tuned epoch beat the ridge probe's validation R^2 ({probe.val_accuracy:.3f})"
            y_val = y[splits.val]
            ft_err = (model.predict_values(ds.take(splits.val)) - y_val) ** 2
            probe_err = (probe.val_logits[:, 0] - y_val) ** 2
            info["val_paired"] = {"finetune_mse": float(ft_err.mean()), "probe_mse": float(probe_err.mean())}
            if clearly_lower(ft_err, probe_err, config.keep_margin):
                return None
            return (
                f"the best fine-tuned epoch's validation squared error ({ft_err.mean():.4g}) was not lower than the "
                f"ridge probe's ({probe_err.mean():.4g}) by more than {config.keep_margin:g} standard error(s) of "
                "their paired difference (and 0.5 %)"
            )

        test_out, train_info, timings = train_and_predict(
            model,
            groups,
            batcher,
            config,
            ds,
            splits,
            ctx,
            on_epoch_start=on_epoch_start,
            initial_val_accuracy=probe.val_accuracy if probe is not None else None,
            before_test=before_test,
        )
        if info.get("kept") == "linear-probe" and regression:
            info["kept_reason"] = info["kept_reason"].replace("the probe (refit", "the ridge probe (refit")
        if info.get("kept") != "linear-probe":
            backbone.mark_changed()
            info["kept"] = "finetune"
        info.update(train_info, blocks=len(blocks), cache_saved_s=stats.get("saved_s", 0.0))
        if info["kept"] == "linear-probe" and probe is not None:  # the kept model's score is what selection sees
            info[f"finetune_{score}"], info[score] = info[score], probe.val_accuracy
        if probe is not None:  # the LP stage's extraction of train and val
            info["work"]["forward"] += len(splits.train) + len(splits.val)
        timings["lp_s"] = t_lp
        if regression:
            return StrategyResult(model=model, test_proba=np.empty((len(test_out), 0)), info=info,
                                  timings=timings, test_values=test_out)
        return StrategyResult(model=model, test_proba=test_out, info=info, timings=timings,
                              val_proba=held_out.get("val"))

    @staticmethod
    def _groups(
        backbone: Backbone, blocks: list[nn.Module], head: nn.Module, mode: str, n: int, config: FinetuneConfig
    ) -> list[ParamGroup]:
        """Named groups: head, block.K for each block that may train (K from the top), and the rest ('stem')."""
        groups = [ParamGroup("head", list(head.parameters()), config.lr)]
        base = config.lr * config.backbone_lr_mult
        in_blocks: set[int] = set()
        trainable = range(len(blocks)) if mode != "last" else range(len(blocks) - n, len(blocks))
        for i in reversed(trainable):
            depth = len(blocks) - 1 - i
            lr = base * (config.layer_decay**depth if config.layer_decay else 1.0)
            params = list(blocks[i].parameters())
            in_blocks.update(id(p) for p in params)
            groups.append(ParamGroup(f"block.{depth}", params, lr))
        in_blocks.update(id(p) for m in backbone.unused_modules() for p in m.parameters())
        if mode != "last":
            rest = [p for p in backbone.parameters() if id(p) not in in_blocks]
            if rest:
                lr = base * (config.layer_decay ** len(blocks) if config.layer_decay else 1.0)
                groups.append(ParamGroup("stem", rest, lr))
        return groups


register_strategy(Finetune())
