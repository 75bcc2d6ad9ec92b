"""The one training loop: named parameter groups, warm-up + cosine, early stopping, class weights, checkpoints.

A checkpoint after every epoch holds the weights, optimizer, scheduler, data-order RNG, history and early-stopping
state, so ``resume=True`` after a kill continues and ends exactly where an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .._files import recover, remove_stale_temps, user_mode
from ..errors import TransferkitError
from .progress import progress_bar


@dataclass
class TrainConfig:
    """Options of the training loop. ``metadata`` holds each field's range rules, checked when a strategy config
    that extends this one is built (see ``strategies.base.validate_config``)."""

    epochs: int = field(default=10, metadata={"min": 1})
    """Maximum number of epochs."""
    batch_size: int = field(default=32, metadata={"min": 1})
    """Examples per optimizer step."""
    weight_decay: float = field(default=0.01, metadata={"min": 0})
    """AdamW decoupled weight decay."""
    warmup_frac: float = field(default=0.1, metadata={"min": 0, "max": 1})
    """Fraction of all steps spent warming the learning rate up linearly (then cosine decay to zero)."""
    patience: int | None = field(default=3, metadata={"min": 1})
    """Stop after this many epochs without a better validation accuracy (None: run every epoch)."""
    class_weights: Literal["auto", "on", "off"] = "auto"
    """auto: weight the loss by inverse class frequency when the largest class is > 3x the smallest; on; off."""
    grad_clip: float | None = field(default=1.0, metadata={"gt": 0})
    """Clip the global gradient norm (None: no clipping)."""
    bn_stats: Literal["frozen", "train"] = "frozen"
    """frozen: every BatchNorm normalises with its pretrained running statistics (its scale/shift still train),
    the safe choice for small batches and for LP-FT; train: trainable blocks update them from each batch.
    BatchNorm in frozen blocks always keeps its statistics."""
    regression_loss: Literal["huber", "mse"] = "huber"
    """Loss for a numeric target, on the target standardised over the training split: huber (delta 1 standard
    deviation, robust to a few far-off targets) or mse."""

    def __post_init__(self) -> None:
        from .config import validate_config

        validate_config(self, "training")


@dataclass
class ParamGroup:
    """A named set of parameters with its own peak learning rate."""

    name: str
    params: list[nn.Parameter]
    lr: float


@dataclass
class EpochRecord:
    """One row of the learning curve."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    """Validation accuracy, or for a numeric target validation R^2."""
    lr: dict[str, float]
    seconds: float


@dataclass
class TrainResult:
    """Learning curve and the epoch whose weights were kept."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = -1
    best_val_accuracy: float = -1.0
    resumed_from: int | None = None
    initial_val_accuracy: float | None = None
    """Validation accuracy of the starting weights, when they were a candidate (best_epoch -1: no epoch beat them)."""


Batcher = Callable[[Sequence[Any], bool, torch.Generator], Any]


def class_weight_vector(y: np.ndarray, num_classes: int, mode: str) -> torch.Tensor | None:
    """Inverse-frequency weights (mean 1) when asked, or automatically when classes are imbalanced > 3:1."""
    if mode not in ("auto", "on", "off"):
        raise TransferkitError(f"class_weights={mode!r} is not one of auto, on, off.")
    counts = np.bincount(y, minlength=num_classes).astype(float)
    present = counts[counts > 0]
    if mode == "off" or (mode == "auto" and present.max() <= 3 * present.min()):
        return None
    w = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str, reduction: str = "mean") -> torch.Tensor:
    """Huber (delta 1) or squared error between predictions and targets (both standardised)."""
    if kind == "mse":
        return nn.functional.mse_loss(pred, target, reduction=reduction)
    return nn.functional.huber_loss(pred, target, reduction=reduction, delta=1.0)


def set_batchnorm_eval(model: nn.Module, all_layers: bool = False) -> None:
    """BatchNorm layers keep their running statistics (eval mode): those whose parameters are all frozen, or
    every one with ``all_layers``."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters())
            if all_layers or (params and not any(p.requires_grad for p in params)):
                m.eval()


def _schedule(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


class Trainer:
    """Trains ``model`` (maps a prepared batch to logits) on items + labels; see the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        groups: list[ParamGroup],
        batcher: Batcher,
        config: TrainConfig,
        *,
        seed: int = 0,
        checkpoint_dir: Path | None = None,
        progress: bool = True,
        on_epoch_start: Callable[[int], None] | None = None,
        device: torch.device | None = None,
        identity: dict[str, Any] | None = None,
        on_epoch_end: Callable[[EpochRecord], None] | None = None,
    ) -> None:
        """``identity``: what the run trains on (data hash, splits, backbone, strategy settings), kept in the
        checkpoint; resuming with another one is refused, naming what changed. ``on_epoch_end`` gets each epoch's
        record on the main process (e.g. a TensorBoard writer)."""
        names = [g.name for g in groups]
        if len(set(names)) != len(names):
            raise ValueError(f"parameter group names must be unique: {names}")
        self.model, self.groups, self.batcher, self.config = model, groups, batcher, config
        self.seed, self.checkpoint_dir, self.progress = seed, checkpoint_dir, progress
        self.on_epoch_start = on_epoch_start or (lambda epoch: None)
        self.device = device or torch.device("cpu")
        self.identity = identity or {}
        self.on_epoch_end = on_epoch_end

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device)
        return {k: v.to(self.device) for k, v in batch.items()}

    def _evaluate(self, items: Sequence[Any], y: torch.Tensor, gen: torch.Generator) -> tuple[float, float]:
        """(mean loss, accuracy) on ``items``; for a numeric target (float ``y``) (mean loss, R^2)."""
        self.model.eval()
        regression = y.is_floating_point()
        loss, correct, sse = 0.0, 0, 0.0
        with torch.inference_mode():
            for start in range(0, len(items), 64):
                logits = self.model(self._to_device(self.batcher(items[start : start + 64], False, gen))).float()
                yb = y[start : start + 64].to(self.device)
                if regression:
                    loss += float(regression_loss(logits[:, 0], yb, self.config.regression_loss, "sum"))
                    sse += float(((logits[:, 0] - yb) ** 2).sum())
                else:
                    loss += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
                    correct += int((logits.argmax(1) == yb).sum())
        if regression:
            total = float(((y - y.mean()) ** 2).sum())
            return loss / len(items), 1.0 - sse / total if total > 0 else 0.0
        return loss / len(items), correct / len(items)

    def fit(
        self,
        train_items: Sequence[Any],
        train_y: np.ndarray,
        val_items: Sequence[Any],
        val_y: np.ndarray,
        num_classes: int,
        resume: bool = False,
        stop_after: int | None = None,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        initial_val_accuracy: float | None = None,
        regression: bool = False,
    ) -> TrainResult:
        """Train, keep the best validation epoch's weights in ``model``, and return the learning curve.

        ``stop_after`` ends the run after that many epochs of this call (to test resuming; a kill does the same).
        ``loss(logits, indices)`` replaces the (class-weighted) cross-entropy; ``indices`` index ``train_items``
        (distillation looks up cached teacher logits with them; its unlabelled items carry the label -1).
        ``initial_val_accuracy`` (the starting weights' validation accuracy, already known) makes the starting weights
        a candidate, kept unless an epoch is strictly better: LP-FT whose fine-tune never beats its own linear probe
        returns the probe (``best_epoch`` -1).
        ``regression``: the targets are numbers (the model's one output is fitted to them with ``regression_loss``,
        epochs kept by validation R^2); pass them standardised.
        """
        cfg = self.config
        if cfg.bn_stats not in ("frozen", "train"):
            raise TransferkitError(f"bn_stats={cfg.bn_stats!r} is not one of frozen, train.")
        self.model.to(self.device)
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        if regression:
            yt, yv = torch.from_numpy(train_y).float(), torch.from_numpy(val_y).float()
        else:
            yt, yv = torch.from_numpy(train_y).long(), torch.from_numpy(val_y).long()
        if loss is None and regression:

            def loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
                return regression_loss(logits[:, 0], yt[idx].to(self.device), cfg.regression_loss)
        elif loss is None:
            weights = class_weight_vector(train_y, num_classes, cfg.class_weights)
            ce = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(self.device))

            def loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
                return ce(logits, yt[idx].to(self.device))
        opt = torch.optim.AdamW(
            [{"params": g.params, "lr": g.lr, "name": g.name} for g in self.groups], weight_decay=cfg.weight_decay
        )
        steps_per_epoch = math.ceil(len(train_items) / cfg.batch_size)
        total = cfg.epochs * steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(total, int(cfg.warmup_frac * total)))
        dist = Distributed.from_env()
        result = TrainResult()
        if regression:  # R^2 has no floor: the first epoch must be a candidate however badly it scores
            result.best_val_accuracy = -math.inf
        best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        start_epoch = 0
        if resume and self.checkpoint_dir is not None:
            recover(self.checkpoint_dir)
        if resume and self.checkpoint_dir is not None and (self.checkpoint_dir / "trainer.json").is_file():
            start_epoch, best_state = self._load_checkpoint(opt, sched, gen, result)
            result.resumed_from = start_epoch
        elif initial_val_accuracy is not None:
            result.best_val_accuracy = result.initial_val_accuracy = float(initial_val_accuracy)
        for epoch in range(start_epoch, cfg.epochs):
            started = result.best_epoch >= 0 or result.initial_val_accuracy is not None
            if cfg.patience is not None and epoch - result.best_epoch > cfg.patience and started:
                break
            if stop_after is not None and epoch - start_epoch >= stop_after:
                break
            t0 = time.perf_counter()
            self.on_epoch_start(epoch)
            forward = dist.wrap(self.model)  # DDP over the parameters trainable this epoch (plain model alone)
            self.model.train()
            set_batchnorm_eval(self.model, all_layers=cfg.bn_stats == "frozen")
            order = torch.randperm(len(train_items), generator=gen)
            running, seen = 0.0, 0
            with progress_bar(
                f"epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch, enabled=self.progress and dist.is_main
            ) as bar:
                for global_idx in order.split(cfg.batch_size):
                    idx = dist.shard(global_idx)  # this process's part of the global batch
                    if idx is None:
                        continue
                    batch = self._to_device(self.batcher([train_items[int(i)] for i in idx], True, gen))
                    opt.zero_grad(set_to_none=True)
                    step_loss = loss(forward(batch).float(), idx)
                    dist.backward(step_loss)
                    if cfg.grad_clip is not None:
                        nn.utils.clip_grad_norm_([p for g in self.groups for p in g.params], cfg.grad_clip)
                    opt.step()
                    sched.step()
                    running += float(step_loss.detach()) * len(idx)
                    seen += len(idx)
                    bar.advance()
            val_loss, val_acc = self._evaluate(val_items, yv, gen)
            rec = EpochRecord(
                epoch + 1,
                running / seen,
                val_loss,
                val_acc,
                {pg["name"]: pg["lr"] for pg in opt.param_groups},
                time.perf_counter() - t0,
            )
            result.history.append(rec)
            if self.on_epoch_end is not None and dist.is_main:
                self.on_epoch_end(rec)
            if self.progress and dist.is_main:
                from .progress import console

                score = f"val R^2 {val_acc:.3f}" if regression else f"val accuracy {val_acc:.2%}"
                console.print(f"epoch {rec.epoch}: train loss {rec.train_loss:.4f}, val loss {val_loss:.4f}, {score}")
            if val_acc > result.best_val_accuracy:
                result.best_epoch, result.best_val_accuracy = epoch, val_acc
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            if self.checkpoint_dir is not None and dist.is_main:
                self._save_checkpoint(epoch + 1, opt, sched, gen, result, best_state)
            dist.barrier()
        self.model.load_state_dict(best_state)
        return result

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(
        self,
        next_epoch: int,
        opt: torch.optim.Optimizer,
        sched: Any,
        gen: torch.Generator,
        result: TrainResult,
        best_state: dict[str, torch.Tensor],
    ) -> None:
        """Atomically replace ``checkpoint_dir`` with the state after ``next_epoch`` epochs."""
        from safetensors.torch import save_file

        assert self.checkpoint_dir is not None
        target = self.checkpoint_dir
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)  # what a killed run left half-written
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        os.chmod(tmp, user_mode(directory=True))  # mkdtemp makes it 0700
        try:
            save_file(_contiguous(self.model.state_dict()), str(tmp / "model.safetensors"))
            save_file(_contiguous(best_state), str(tmp / "best.safetensors"))
            torch.save(
                {
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                },
                tmp / "state.pt",
            )
            meta = {
                "next_epoch": next_epoch,
                "groups": [g.name for g in self.groups],
                "best_epoch": result.best_epoch,
                "best_val_accuracy": result.best_val_accuracy,
                "initial_val_accuracy": result.initial_val_accuracy,
                "history": [asdict(r) for r in result.history],
                "config": asdict(self.config),
                "seed": self.seed,
                "identity": self.identity,
            }
            (tmp / "trainer.json").write_text(json.dumps(meta, indent=2))
            for f in tmp.iterdir():  # safetensors writes its files 0600
                os.chmod(f, user_mode())
            old = target.with_name(f".{target.name}.old")
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _load_checkpoint(
        self, opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator, result: TrainResult
    ) -> tuple[int, dict[str, torch.Tensor]]:
        from safetensors.torch import load_file

        assert self.checkpoint_dir is not None
        where = self.checkpoint_dir
        try:
            meta = json.loads((where / "trainer.json").read_text())
            if not isinstance(meta, dict):
                raise ValueError("not an object")
            changed = self._changes(meta)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TransferkitError(
                f"The checkpoint in {where} is damaged (trainer.json: {type(e).__name__}: {e}); start over without "
                "--resume (or with --overwrite)."
            ) from None
        if changed:
            raise TransferkitError(
                f"The checkpoint in {where} was made with other settings: {'; '.join(changed)}. Resume with what the "
                "interrupted run used, or start over without --resume (or with --overwrite)."
            )
        self.on_epoch_start(max(0, meta["next_epoch"] - 1))  # the freezing state the optimizer was saved in
        try:
            self.model.load_state_dict(load_file(str(where / "model.safetensors"), device=str(self.device)))
            state = torch.load(where / "state.pt", map_location=self.device, weights_only=True)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            best = load_file(str(where / "best.safetensors"), device=str(self.device))
            result.history = [EpochRecord(**r) for r in meta["history"]]
            result.best_epoch, result.best_val_accuracy = meta["best_epoch"], meta["best_val_accuracy"]
        except Exception as e:  # truncated or foreign files: safetensors, torch's weights-only unpickler, shapes
            raise TransferkitError(
                f"The checkpoint in {where} is damaged or not transferkit's ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:160] if str(e) else 'unreadable'}); start over without --resume (or with "
                "--overwrite)."
            ) from None
        result.initial_val_accuracy = meta.get("initial_val_accuracy")
        return meta["next_epoch"], best

    def _changes(self, meta: dict[str, Any]) -> list[str]:
        """What differs between the checkpoint's run and this one, in words (empty: the same run)."""
        changed = []
        saved = meta.get("identity", {})
        for key, now in self.identity.items():
            then = saved.get(key)
            if isinstance(then, dict) and isinstance(now, dict):  # a setting an older version did not record
                now = {k: v for k, v in now.items() if k in then}
            if key in saved and then != now:
                changed.append(f"{key} ({_short(then)} then, {_short(now)} now)")
        if meta["seed"] != self.seed:
            changed.append(f"seed ({meta['seed']} then, {self.seed} now)")
        if meta["groups"] != [g.name for g in self.groups]:
            changed.append(f"set of trained parts ({', '.join(meta['groups'])} then)")
        ours = asdict(self.config)
        saved = {**{f.name: f.default for f in fields(self.config)}, **meta["config"]}  # older ones lack new fields
        keys = sorted(k for k in set(ours) | set(saved) if saved.get(k) != ours.get(k))
        if keys:
            changed.append("training settings: " + ", ".join(
                f"{k} {_short(saved.get(k))} then, {_short(ours.get(k))} now" for k in keys
            ))
        return changed


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


class Distributed:
    """Data-parallel plumbing through accelerate when launched with several processes (``accelerate launch``);
    a no-op in a single process, so single-process runs stay bit-for-bit reproducible.

    Each global batch is split across processes (same global batch size and schedule as one process). The model is
    wrapped in DDP afresh whenever the set of trainable parameters changes (gradual unfreezing), so DDP never
    waits for gradients of frozen parameters ("unused parameters") nor misses newly unfrozen ones.
    """

    def __init__(self, accelerator: Any | None) -> None:
        self.acc = accelerator
        self.world = accelerator.num_processes if accelerator else 1
        self.rank = accelerator.process_index if accelerator else 0
        self.is_main = self.rank == 0
        self._wrapped: tuple[frozenset[int], Any] | None = None

    @classmethod
    def from_env(cls) -> Distributed:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls(None)
        from accelerate import Accelerator

        return cls(Accelerator(cpu=not torch.cuda.is_available()))

    def wrap(self, model: nn.Module) -> Callable[[Any], torch.Tensor]:
        if self.acc is None:
            return model
        trainable = frozenset(id(p) for p in model.parameters() if p.requires_grad)
        if self._wrapped is None or self._wrapped[0] != trainable:
            self._wrapped = (trainable, self.acc.prepare_model(model))
        return self._wrapped[1]

    def shard(self, idx: torch.Tensor) -> torch.Tensor | None:
        if self.world == 1:
            return idx
        if len(idx) < self.world:  # a last batch too small to split: every process skips it
            return None
        return idx[self.rank :: self.world]

    def backward(self, loss: torch.Tensor) -> None:
        if self.acc is None:
            loss.backward()
        else:
            self.acc.backward(loss)

    def barrier(self) -> None:
        if self.acc is not None:
            self.acc.wait_for_everyone()


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a multi-process launch."""
    return int(os.environ.get("RANK", "0")) == 0


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}
