"""``distill``: a student (the backbone of the run, plus a new head) learns from a saved teacher's soft targets.

loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * cross-entropy(labels)
(Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015). The teacher runs once: its logits
come from its cached features (``features.extract_features``), never from a forward pass per epoch. Unlabelled
items, when given, are labelled by the teacher and teach through the soft term alone. ``alpha=0`` is the
hard-label control: the same student, schedule and budget, no teacher.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backbones.base import Backbone
from ..core.config import validate_config
from ..core.heads import linear_head
from ..core.model import TransferModel
from ..core.training import ParamGroup, TrainConfig
from ..data.dataset import Dataset, Splits
from ..errors import TransferkitError
from .base import RunContext, StrategyResult, register_strategy, train_and_predict


@dataclass
class DistillConfig(TrainConfig):
    """Options of the distill strategy (plus those of the training loop)."""

    teacher: str | Path = field(default="", metadata={
        "nonempty": True,
        "message": "distill needs a teacher: the folder of a saved transferkit model (got teacher={value!r})",
    })
    """Folder of a saved transferkit model trained on the same classes (required)."""
    temperature: float = field(default=4.0, metadata={"gt": 0})
    """Softmax temperature T of the soft targets (the soft term is scaled by T^2)."""
    alpha: float = field(default=0.7, metadata={"min": 0, "max": 1})
    """Weight of the soft-target term; 1 - alpha goes to cross-entropy on the labels (0: no teacher at all)."""
    unlabelled: Any = None
    """Extra inputs without labels for the teacher to label: a folder, CSV/JSONL, built-in name or list."""
    unlabelled_column: str | None = None
    """Text (or image-path) column of an unlabelled CSV/JSONL file."""
    lr: float = field(default=3e-3, metadata={"gt": 0})
    """Peak learning rate of the head."""
    backbone_lr_mult: float = field(default=1.0, metadata={"min": 0})
    """Student backbone learning rate = lr x this (1 for a student from scratch; ~0.1 for a pretrained one)."""
    augment: bool = False
    """Training augmentation; off by default because the cached teacher logits belong to the unaugmented inputs."""

    def __post_init__(self) -> None:
        validate_config(self, "distill")


def teacher_logits(
    teacher: TransferModel, ds: Dataset, indices: np.ndarray, ctx: RunContext, stats: dict[str, Any]
) -> np.ndarray:
    """The teacher's logits for ``ds`` items at ``indices``, from its (cached) features and its head."""
    from ..core.features import extract_features

    feats, _ = extract_features(
        teacher.backbone,
        ds,
        indices,
        cache_dir=ctx.cache_dir,
        use_cache=ctx.use_cache,
        progress=ctx.progress,
        description="teacher features",
        stats=stats,
    )
    head = teacher.head.cpu().eval()
    with torch.inference_mode():
        return head(torch.from_numpy(feats)).float().numpy()


def kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """Mean over the batch of alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE for labelled rows
    (label >= 0) and T^2 * KL alone for unlabelled rows (label -1)."""
    t = temperature
    kl = nn.functional.kl_div(
        nn.functional.log_softmax(student / t, dim=1),
        nn.functional.log_softmax(teacher / t, dim=1),
        reduction="none",
        log_target=True,
    ).sum(1) * (t * t)
    labelled = labels >= 0
    ce = torch.zeros_like(kl)
    if labelled.any():
        ce[labelled] = nn.functional.cross_entropy(student[labelled], labels[labelled], reduction="none")
    per_row = torch.where(labelled, alpha * kl + (1 - alpha) * ce, kl)
    return per_row.mean()


class Distill:
    name = "distill"
    Config = DistillConfig

    def run(
        self, backbone: Backbone, ds: Dataset, splits: Splits, config: DistillConfig, ctx: RunContext
    ) -> StrategyResult:
        from ..core.export import load
        from ..data.sources import load_unlabelled, unlabelled_dataset

        teacher = load(config.teacher)
        if list(teacher.classes) != list(ds.classes):
            raise TransferkitError(
                f"The teacher {config.teacher} predicts {teacher.classes}, but the data has classes {ds.classes}."
            )
        if teacher.backbone.modality != ds.modality:
            raise TransferkitError(f"The teacher takes {teacher.backbone.modality}s; the data holds {ds.modality}s.")
        t0 = time.perf_counter()
        stats: dict[str, Any] = {}
        extra: list[Any] = []
        soft = teacher_logits(teacher, ds, splits.train, ctx, stats)
        if config.unlabelled is not None and config.alpha > 0:  # the control (alpha 0) never sees teacher labels
            extra = load_unlabelled(config.unlabelled, ds.modality, config.unlabelled_column)
            if len(extra) < 2:
                raise TransferkitError("Unlabelled data must hold at least 2 inputs.")
            pool = unlabelled_dataset(extra, ds, f"{ds.name} (unlabelled)")
            soft = np.concatenate([soft, teacher_logits(teacher, pool, np.arange(len(extra)), ctx, stats)])
        teacher_s = time.perf_counter() - t0
        soft_t = torch.from_numpy(soft)
        labels = torch.from_numpy(np.concatenate([ds.targets[splits.train], np.full(len(extra), -1)])).long()
        del teacher

        torch.manual_seed(ctx.seed)
        head = linear_head(backbone.feature_dim, len(ds.classes))
        model = TransferModel(backbone, head, ds.classes)
        for p in backbone.parameters():
            p.requires_grad_(True)
        for m in backbone.unused_modules():
            for p in m.parameters():
                p.requires_grad_(False)
        groups = [
            ParamGroup("backbone", [p for p in backbone.parameters() if p.requires_grad],
                       config.lr * config.backbone_lr_mult),
            ParamGroup("head", list(head.parameters()), config.lr),
        ]

        def batcher(items: list[Any], train: bool, gen: torch.Generator) -> Any:
            return backbone.prepare(items, augment=train and config.augment, generator=gen)

        def loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            dev = logits.device
            return kd_loss(logits, soft_t[idx].to(dev), labels[idx].to(dev), config.temperature, config.alpha)

        test_proba, info, timings = train_and_predict(
            model, groups, batcher, config, ds, splits, ctx, extra_items=extra, loss=loss
        )
        backbone.mark_changed()
        info.update(
            teacher=str(config.teacher),
            temperature=config.temperature,
            alpha=config.alpha,
            unlabelled=len(extra),
            cache_saved_s=stats.get("saved_s", 0.0),
            teacher_logits_s=stats.get("extract_s", 0.0),
        )
        timings["teacher_s"] = teacher_s
        return StrategyResult(model=model, test_proba=test_proba, info=info, timings=timings)


register_strategy(Distill())
