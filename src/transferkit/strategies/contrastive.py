"""``contrastive``: SetFit-style tuning of a text encoder on pairs, then a linear probe on its features.

Pairs of training texts from the same class are pulled together and pairs from different classes apart (cosine
similarity regressed on 1 / 0, SetFit's ``CosineSimilarityLoss``). The tuned encoder is kept only if a linear probe
on its features clearly beats the plain probe on the pretrained features on validation; otherwise the pretrained
weights come back and the saved model is the plain probe.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backbones.adapters import adapter_parameters, default_targets, inject_lora
from ..backbones.base import Backbone
from ..core.config import validate_config
from ..core.heads import C_GRID, HeadFit, _threads_for, fit_linear_probe, fit_linear_probe_cv
from ..core.model import TransferModel
from ..data.dataset import Dataset, Splits
from ..errors import TransferkitError
from .base import RunContext, StrategyResult, register_strategy, split_features
from .finetune import clearly_better, freeze, unfreeze
from .linear_probe import cv_folds


@dataclass
class ContrastiveConfig:
    """Options of the contrastive strategy."""

    pairs_per_example: int | None = field(default=None, metadata={"min": 1})
    """For each training text, this many partners from its own class and as many from other classes; None (default):
    every distinct pair of training texts, the fewer kind (same class or not) repeated to balance them, as SetFit
    does (with over ``4 * max_pairs`` distinct pairs, 20 partners each are drawn instead)."""
    max_pairs: int = field(default=8000, metadata={"min": 2})
    """At most this many pairs in all (a seeded, still balanced, subsample)."""
    epochs: int = field(default=1, metadata={"min": 1})
    """Passes over the pairs."""
    batch_size: int = field(default=16, metadata={"min": 1})
    """Pairs per optimizer step."""
    lr: float = field(default=2e-5, metadata={"min": 0})
    """Peak learning rate of the whole encoder (0 changes no weight: the plain probe is then what is kept)."""
    warmup_frac: float = field(default=0.1, metadata={"min": 0, "max": 1})
    """Fraction of the steps spent warming the learning rate up linearly (then linear decay to zero)."""
    weight_decay: float = field(default=0.01, metadata={"min": 0})
    """AdamW decoupled weight decay."""
    adapters: bool = False
    """Train LoRA adapters on the attention projections instead of the whole encoder."""
    r: int = field(default=8, metadata={"min": 1})
    """With adapters: rank of each adapter."""
    alpha: int = field(default=16, metadata={"min": 1})
    """With adapters: LoRA scaling numerator (the update is scaled by alpha / r)."""
    adapter_lr: float = field(default=1e-3, metadata={"min": 0})
    """With adapters: their peak learning rate (``lr`` is for the whole encoder)."""
    keep_margin: float = field(default=1.0, metadata={"min": 0})
    """The tuned encoder is kept only if its probe beats the plain probe on validation by more than this many
    standard errors of their paired difference (as finetune's LP-FT); 0: any gain on validation."""
    c_grid: tuple[float, ...] = field(default=C_GRID, metadata={"gt": 0, "nonempty": True})
    """L2 strengths (inverse) tried for both linear probes."""

    def __post_init__(self) -> None:
        validate_config(self, "contrastive")


SAMPLED_PARTNERS = 20
"""Partners per text when every distinct pair would be too many (``pairs_per_example=None``)."""


def make_pairs(
    labels: np.ndarray, per_example: int | None, max_pairs: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of positions into ``labels`` (P, 2) and their targets (P,) float32: 1 same class, 0 different.

    ``per_example=None``: every distinct pair, the fewer kind repeated (seeded) until both kinds are as many, at
    most ``max_pairs`` in all (a seeded subsample of each kind); over ``4 * max_pairs`` distinct pairs, as
    ``per_example=SAMPLED_PARTNERS``. An int: each position gets that many partners from its own class (never
    itself) and as many from other classes, each drawn as a window of a seeded permutation (distinct partners while
    the class is large enough, then every partner equally often); positives and negatives balanced (the smaller
    count of both) and capped at ``max_pairs``. Shuffled either way.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    n_all = len(labels) * (len(labels) - 1) // 2
    if per_example is None and n_all <= 4 * max_pairs:
        return _all_pairs(labels, max_pairs, rng)
    per_example = per_example or SAMPLED_PARTNERS
    pos: list[np.ndarray] = []
    neg: list[np.ndarray] = []
    offsets = np.arange(per_example)
    for c in np.unique(labels):
        members, others = np.flatnonzero(labels == c), np.flatnonzero(labels != c)
        m = len(members)
        if m >= 2:  # partner k of member i: i + 1 + (start + k) mod (m - 1) along a permutation, never i itself
            perm = rng.permutation(members)
            start = rng.integers(0, m - 1, size=(m, 1))
            step = 1 + (start + offsets) % (m - 1)
            partners = perm[(np.arange(m)[:, None] + step) % m]
            pos.append(np.stack([np.repeat(perm, per_example), partners.ravel()], 1))
        if len(others):
            perm_o = rng.permutation(others)
            start = rng.integers(0, len(others), size=(m, 1))
            partners = perm_o[(start + offsets) % len(others)]
            neg.append(np.stack([np.repeat(members, per_example), partners.ravel()], 1))
    p = np.concatenate(pos) if pos else np.empty((0, 2), dtype=np.int64)
    q = np.concatenate(neg) if neg else np.empty((0, 2), dtype=np.int64)
    n = min(len(p), len(q), max_pairs // 2)
    if n == 0:
        raise TransferkitError(
            "contrastive needs at least two training texts of one class and texts of another class to make pairs."
        )
    pairs = np.concatenate([p[rng.choice(len(p), n, replace=False)], q[rng.choice(len(q), n, replace=False)]])
    targets = np.concatenate([np.ones(n, np.float32), np.zeros(n, np.float32)])
    order = rng.permutation(2 * n)
    return pairs[order], targets[order]


def pair_count(n: int, n_classes: int, config: ContrastiveConfig) -> int:
    """How many pairs ``make_pairs`` makes from ``n`` training texts of ``n_classes`` balanced classes."""
    if config.pairs_per_example is None and n * (n - 1) // 2 <= 4 * config.max_pairs:
        m = n / max(n_classes, 1)
        same = n_classes * m * (m - 1) / 2
        return int(min(2 * max(same, n * (n - 1) / 2 - same), 2 * (config.max_pairs // 2)))
    per = config.pairs_per_example or SAMPLED_PARTNERS
    return int(min(2 * per * n, 2 * (config.max_pairs // 2)))


def _all_pairs(labels: np.ndarray, max_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    p, q = np.stack([i[same], j[same]], 1), np.stack([i[~same], j[~same]], 1)
    if len(p) == 0 or len(q) == 0:
        raise TransferkitError(
            "contrastive needs at least two training texts of one class and texts of another class to make pairs."
        )
    n = min(max(len(p), len(q)), max_pairs // 2)

    def take(kind: np.ndarray) -> np.ndarray:  # each pair once while there are enough, then repeated evenly
        reps = -(-n // len(kind))
        return np.concatenate([kind[rng.permutation(len(kind))] for _ in range(reps)])[:n]

    pairs = np.concatenate([take(p), take(q)])
    targets = np.concatenate([np.ones(n, np.float32), np.zeros(n, np.float32)])
    order = rng.permutation(2 * n)
    return pairs[order], targets[order]


def remove_adapters(backbone: Backbone) -> None:
    """Unwrap every LoRA layer back into the pretrained layer it wraps: the backbone is as it was before
    ``inject_lora`` (weights, parameter names, fingerprint)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = backbone.model
    for name in [n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, getattr(parent, child).get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    backbone.adapter, backbone.base_fingerprint = None, None
    backbone.mark_changed(full=False)  # the fingerprint is recomputed, from the pretrained weights


def pair_loss(backbone: Backbone, a: list[str], b: list[str], target: torch.Tensor, device: torch.device) -> Any:
    """Mean squared error between the cosine similarity of each pair's pooled embeddings and its target.

    A text in the batch more than once is embedded once (few labelled texts make many repeats: up to half the
    work)."""
    unique = list(dict.fromkeys(a + b))
    at = {t: k for k, t in enumerate(unique)}
    emb = backbone(backbone.to_device(backbone.prepare(unique), device))
    left, right = torch.tensor([at[t] for t in a]), torch.tensor([at[t] for t in b])
    cos = nn.functional.cosine_similarity(emb[left.to(emb.device)], emb[right.to(emb.device)], dim=-1)
    return nn.functional.mse_loss(cos, target.to(device))


def train_pairs(
    backbone: Backbone, texts: list[str], pairs: np.ndarray, targets: np.ndarray, params: list[nn.Parameter],
    lr: float, config: ContrastiveConfig, ctx: RunContext,
) -> list[float]:
    """AdamW with linear warm-up and decay over shuffled batches of pairs; the mean loss of each epoch."""
    from ..core.features import default_device
    from ..core.progress import progress_bar

    device = default_device()
    backbone.to(device).train()
    gen = torch.Generator().manual_seed(ctx.seed)
    per_epoch = math.ceil(len(pairs) / config.batch_size)
    total, warmup = per_epoch * config.epochs, int(config.warmup_frac * per_epoch * config.epochs)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else (total - s) / max(1, total - warmup)
    )
    target_t = torch.from_numpy(targets)
    curve = []
    work = 2.0 * config.batch_size * backbone.num_parameters()  # one thread for tiny encoders (see _threads_for)
    bar_args = (f"contrastive pairs ({backbone.spec})", len(pairs) * config.epochs)
    with progress_bar(*bar_args, enabled=ctx.progress) as bar, _threads_for(work):
        for _ in range(config.epochs):
            order, losses = torch.randperm(len(pairs), generator=gen).numpy(), []
            for k in range(0, len(order), config.batch_size):
                batch = order[k : k + config.batch_size]
                loss = pair_loss(backbone, [texts[i] for i in pairs[batch, 0]], [texts[i] for i in pairs[batch, 1]],
                                 target_t[batch], device)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                losses.append(float(loss.detach()) * len(batch))
                bar.advance(len(batch))
            curve.append(sum(losses) / len(order))
    backbone.eval()
    return curve


class Contrastive:
    name = "contrastive"
    Config = ContrastiveConfig

    def run(
        self, backbone: Backbone, ds: Dataset, splits: Splits, config: ContrastiveConfig, ctx: RunContext
    ) -> StrategyResult:
        if backbone.modality != "text":
            raise TransferkitError(
                f"contrastive tunes text encoders on pairs of texts; {backbone.spec} takes images: use linear-probe, "
                "finetune or lora."
            )
        if ds.task == "regression":
            raise TransferkitError(
                f"contrastive pairs texts by class, but {ds.name} has a numeric target (regression): use "
                "linear-probe, finetune or lora."
            )
        y = ds.targets
        n_classes = len(ds.classes)
        folds = cv_folds(y[np.concatenate([splits.train, splits.val])], splits)
        # with a given test set and few labels every label trains (as the probe's cross-validation does)
        fit_idx = np.concatenate([splits.train, splits.val]) if folds else np.asarray(splits.train)
        t0 = time.perf_counter()
        stats: dict[str, Any] = {}
        plain_feats, _ = split_features(backbone, ds, splits, ctx, stats=stats, label="plain ")
        plain = self._probe(plain_feats, y, splits, folds, n_classes, config, ctx.seed)
        t1 = time.perf_counter()

        pairs, targets = make_pairs(y[fit_idx], config.pairs_per_example, config.max_pairs, ctx.seed)
        torch.manual_seed(ctx.seed)
        params, lr, start = _trainable(backbone, config)
        curve = train_pairs(backbone, ds.take(fit_idx), pairs, targets, params, lr, config, ctx)
        t2 = time.perf_counter()

        # the cache is keyed by the pretrained weights' fingerprint: tuned features must never be written under it
        tuned_feats, _ = split_features(backbone, ds, splits, replace(ctx, use_cache=False), label="tuned ")
        tuned = self._probe(tuned_feats, y, splits, folds, n_classes, config, ctx.seed)
        t3 = time.perf_counter()

        info: dict[str, Any] = {
            "adapters": config.adapters,
            **({"target_modules": backbone.adapter["target_modules"]} if backbone.adapter else {}),
            "pairs": len(pairs),
            "loss_curve": curve,
            "probe_val_accuracy": plain.val_accuracy,
            "tuned_parameters": sum(p.numel() for p in params),
            "cache_saved_s": stats.get("saved_s", 0.0),
        }
        if folds:  # no item is held out of the encoder's training: nothing can check it
            keep = True
            info["selection"] = f"{folds}-fold cross-validation on train + val for both probes' C (few labels)"
            info["kept_reason"] = (
                f"few labels and a given test set: every one of the {len(fit_idx)} labelled texts trained the encoder, "
                "so no validation split could check it; the tuned encoder is kept by default (benchmarks/"
                "dev_fewshot.py measured it level with the probe at 8 and ahead at 16 labelled texts per class)"
            )
            val_accuracy = float("nan")  # its cross-validation ran on features the encoder was tuned on
        else:
            only_tuned, only_plain = _paired(tuned, plain, y[splits.val])
            info["contrastive_val_accuracy"] = tuned.val_accuracy
            info["val_paired"] = {"only_contrastive_right": only_tuned, "only_probe_right": only_plain}
            paired = (f"{only_tuned} validation items only its probe got right, {only_plain} only the plain probe; "
                      f"a margin of {config.keep_margin:g} standard error(s) of their difference")
            keep = clearly_better(only_tuned, only_plain, config.keep_margin)
            info["kept_reason"] = (
                f"the tuned encoder clearly beat the plain probe ({paired} was passed)" if keep else
                f"the tuned encoder did not clearly beat the plain probe ({paired} was not passed); the saved model "
                "is the plain probe (refit on train + val), the backbone unchanged"
            )
            val_accuracy = tuned.val_accuracy if keep else plain.val_accuracy
        if keep:
            kept, feats, fit = "contrastive", tuned_feats, tuned
            backbone.mark_changed(full=not config.adapters)
        else:
            kept, feats, fit = "linear-probe", plain_feats, plain
            if start is None:
                remove_adapters(backbone)
            else:
                backbone.load_state_dict(start)
            backbone.freeze()
        with torch.no_grad():
            test_proba = fit.head(torch.from_numpy(feats["test"])).softmax(1).numpy()
        model = TransferModel(backbone, fit.head, ds.classes).eval()
        model.to(next(backbone.parameters()).device)
        assert fit.val_logits is not None
        n_all = len(splits.train) + len(splits.val) + len(splits.test)
        info.update(
            kept=kept,
            chosen=fit.chosen,
            val_accuracy=val_accuracy,
            trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
            work={"forward": 2 * n_all, "train": 2 * len(pairs) * config.epochs},
        )
        return StrategyResult(
            model=model,
            test_proba=test_proba,
            info=info,
            timings={"probe_s": t1 - t0, "train_s": t2 - t1, "tuned_probe_s": t3 - t2},
            val_proba=None if folds else torch.from_numpy(fit.val_logits).softmax(1).numpy(),
        )

    @staticmethod
    def _probe(feats: dict[str, np.ndarray], y: np.ndarray, splits: Splits, folds: int, n_classes: int,
               config: ContrastiveConfig, seed: int) -> HeadFit:
        """The linear probe on these features: C on the validation split, or by cross-validation over train + val."""
        if folds:
            pool = np.concatenate([feats["train"], feats["val"]])
            return fit_linear_probe_cv(pool, y[np.concatenate([splits.train, splits.val])], n_classes,
                                       c_grid=config.c_grid, folds=folds, seed=seed)
        return fit_linear_probe(feats["train"], y[splits.train], feats["val"], y[splits.val], n_classes,
                                c_grid=config.c_grid, seed=seed)


def _trainable(
    backbone: Backbone, config: ContrastiveConfig
) -> tuple[list[nn.Parameter], float, dict[str, torch.Tensor] | None]:
    """Make the encoder (or LoRA adapters injected into it) trainable: the parameters, their learning rate, and a
    copy of the pretrained weights to restore (None with adapters: they are removed instead)."""
    if config.adapters:
        targets = default_targets(backbone)
        inject_lora(backbone, {"r": config.r, "alpha": config.alpha, "dropout": 0.1, "target_modules": targets,
                               "fan_in_fan_out": "c_attn" in targets})  # GPT-2's Conv1D stores weights transposed
        freeze(backbone)
        params = adapter_parameters(backbone)
        for p in params:
            p.requires_grad_(True)
        return params, config.adapter_lr, None
    start = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    unfreeze(backbone)
    for m in backbone.unused_modules():  # e.g. BERT's pooler: never feeds the pooled features
        freeze(m)
    return [p for p in backbone.parameters() if p.requires_grad], config.lr, start


def _paired(a: HeadFit, b: HeadFit, y_val: np.ndarray) -> tuple[int, int]:
    """Validation items only probe A gets right, and only probe B (held-out logits, before any refit)."""
    assert a.val_logits is not None and b.val_logits is not None
    a_right, b_right = a.val_logits.argmax(1) == y_val, b.val_logits.argmax(1) == y_val
    return int((a_right & ~b_right).sum()), int((b_right & ~a_right).sum())


register_strategy(Contrastive())
