"""The from-scratch control: a small model from random init on the same splits as the transfer run.

Images: the better on validation of ``SmallCNN`` (32 or 64 px, translation augmentation, best validation epoch kept)
and logistic regression on the leading principal components of raw pixels (which, unlike a CNN, does not care
whether pixels keep their neighbours).
Texts: TF-IDF (word 1-2 grams) + logistic regression with C chosen on validation, refit on train + val.
A numeric target's control (``regression_control``) runs the same CNN with one linear output (``regressor``).

The CNN's budget is a number of epochs, fixed or derived from a work budget in FLOPs (the transfer run's own cost,
counted the same way on every machine) or, optionally, from seconds. Its learning rate decays per epoch by a
constant factor, so a run of N epochs is the first N epochs of any longer run: the control is cached once per data,
split, seed and configuration (``<cache>/control/``) and a later run with another budget reuses or extends it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .._files import merge_json, read_json_dict
from ..backbones.base import load_image
from ..backbones.scratch import SmallCNN
from ..core.progress import progress_bar
from ..data.dataset import Dataset, Splits
from .control_cache import CONTROL_VERSION, ControlCache, control_key

if TYPE_CHECKING:
    from ..core.model import TransferModel


@dataclass
class ScratchConfig:
    """Options of the from-scratch control. The budget is ``work_budget`` if set, else ``time_budget_s`` if set,
    else the fixed ``epochs``."""

    epochs: int = 40
    """CNN epochs of the fixed budget; the epoch with the best validation accuracy is kept."""
    lr: float = 2e-3
    """AdamW learning rate of the CNN in its first epoch."""
    lr_decay: float = 0.95
    """Per-epoch learning-rate factor (epoch e trains at lr x lr_decay**e, whatever the budget)."""
    batch_size: int = 64
    """CNN batch size."""
    work_budget: float | None = None
    """FLOPs the control may spend (forward = 1 unit, training step = 3 per example; validation every epoch and
    the test prediction included): the CNN gets the whole epochs that fit, at least one, at most ``max_epochs``."""
    time_budget_s: float | None = None
    """Seconds for the whole control (decoding, pixel model, CNN epochs as measured when they were trained): the CNN
    gets the epochs that fit, at least one, at most ``max_epochs``. Depends on this machine's speed."""
    max_epochs: int = 100
    """Cap on CNN epochs under a work or time budget."""
    work_fraction: float = 0.5
    """Share of ``work_budget`` the CNN's epochs may use: the rest pays for decoding and the pixel model, and on a
    CPU a small CNN's FLOP costs more time than a backbone's (about 1.2x here, BENCHMARKS.md), so that the control
    does not take longer than the run it checks."""


@dataclass
class ControlResult:
    """Test predictions of the control plus what it was."""

    test_pred: np.ndarray
    description: str
    trainable_parameters: int
    wall_s: float
    info: dict[str, Any] = field(default_factory=dict)
    stored_weights: dict[str, torch.Tensor] | Callable[[], dict[str, torch.Tensor] | None] | None = field(
        default=None, repr=False)
    """The weights, or how to read them from the control cache when asked (most runs never need them)."""

    @property
    def weights(self) -> dict[str, torch.Tensor] | None:
        """The image classes' control as weights (see ``control_model``): the small CNN's state at its best
        validation epoch, or the pixel model's mean, principal directions and head."""
        if callable(self.stored_weights):
            self.stored_weights = self.stored_weights()
        return self.stored_weights


def _image_tensor(ds: Dataset, indices: np.ndarray, size: int) -> torch.Tensor:
    from PIL import Image

    out = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
    for j, i in enumerate(indices):
        im = load_image(ds.items[int(i)]).resize((size, size), Image.BILINEAR)
        out[j] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
    return out


def _norm(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - 0.5) / 0.5


def _shift(x: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (reflect padding + random crop), per batch."""
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    return padded[..., dy : dy + h, dx : dx + w]


def _pick_size(ds: Dataset, indices: np.ndarray) -> int:
    sample = [load_image(ds.items[int(i)]).size for i in indices[:16]]
    return 32 if max(max(s) for s in sample) <= 40 else 64


_SHAPE: dict[tuple[int, int], tuple[float, int]] = {}


def _cnn_shape(size: int, num_classes: int, store: Path | None = None) -> tuple[float, int]:
    """(forward FLOPs for one image of ``size`` px, parameter count) of the control CNN: counted once, on a model
    built off the caller's random stream, and kept in ``store`` (the cache's ``flops.json``) when given: the
    FLOP counter imports torch._dynamo, a second a rerun need not pay."""
    key = (size, num_classes)
    name = f"SmallCNN(32)/{size}px/{num_classes}/v{CONTROL_VERSION}"
    known = read_json_dict(store).get(name) if store is not None else None
    if isinstance(known, list) and len(known) == 2:
        return float(known[0]), int(known[1])
    if key not in _SHAPE:
        from torch.utils.flop_counter import FlopCounterMode

        with torch.random.fork_rng(devices=[]):
            model = SmallCNN(num_classes).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, size, size))
        _SHAPE[key] = (float(counter.get_total_flops()), sum(p.numel() for p in model.parameters()))
    if store is not None:
        with contextlib.suppress(OSError):  # a count not kept is counted again next time
            merge_json(store, name, list(_SHAPE[key]))
    return _SHAPE[key]


def cnn_flops(size: int, num_classes: int, store: Path | None = None) -> float:
    """Forward FLOPs of the control CNN for one image of ``size`` px (counted, not estimated)."""
    return _cnn_shape(size, num_classes, store)[0]


def epochs_for_work(
    work: float, splits: Splits, size: int, num_classes: int, max_epochs: int, store: Path | None = None
) -> int:
    """Whole CNN epochs that fit ``work`` FLOPs (3 units per training example, 1 per validation example per epoch,
    the test prediction once); at least 1, at most ``max_epochs``."""
    f = cnn_flops(size, num_classes, store)
    per_epoch = f * (3 * len(splits.train) + len(splits.val))
    left = work - f * len(splits.test)
    return int(min(max_epochs, max(1, left // per_epoch)))


# ---------------------------------------------------------------------------------------------------- the models


class _CNNRun:
    """The control CNN as a resumable run: epoch e always trains at lr x decay**e on the seed's data order.
    ``regressor``: one output trained with the Huber loss (delta 1) on a standardised target, not cross-entropy."""

    def __init__(
        self, num_classes: int, seed: int, config: ScratchConfig, state: dict[str, Any] | None, regressor: bool = False
    ) -> None:
        self.config, self.regressor = config, regressor
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = SmallCNN(num_classes)
            self.rng = torch.get_rng_state()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=5e-4)
        self.gen = torch.Generator().manual_seed(seed)
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.gen.set_state(state["generator"])
            self.rng = state["torch_rng"]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices, or the regressor's (standardised) values."""
        self.model.eval()
        with torch.no_grad():
            out = torch.cat([self.model(_norm(b)) for b in x.split(256)])
        return out[:, 0] if self.regressor else out.argmax(1)

    def train_epoch(self, epoch: int, x: torch.Tensor, y: torch.Tensor) -> None:
        for g in self.opt.param_groups:
            g["lr"] = self.config.lr * self.config.lr_decay**epoch
        size = x.shape[-1]
        self.model.train()
        with torch.random.fork_rng(devices=[]):  # dropout draws from a stream of its own, saved with the state
            torch.set_rng_state(self.rng)
            for idx in torch.randperm(len(y), generator=self.gen).split(self.config.batch_size):
                self.opt.zero_grad()
                xb = _shift(_norm(x[idx]), self.gen, pad=max(2, size // 16))
                out = self.model(xb)
                if self.regressor:
                    loss = nn.functional.huber_loss(out[:, 0], y[idx], delta=1.0)
                else:
                    loss = nn.functional.cross_entropy(out, y[idx])
                loss.backward()
                self.opt.step()
            self.rng = torch.get_rng_state()

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "generator": self.gen.get_state(),
            "torch_rng": self.rng,
        }


def train_scratch_pixels(ds: Dataset, splits: Splits, xs: dict[str, torch.Tensor], seed: int) -> dict[str, Any]:
    """Multinomial logistic regression on raw pixels (C chosen on validation, refit on train + val)."""
    from ..core.heads import fit_linear_probe

    t0 = time.perf_counter()
    flat = {p: x.reshape(len(x), -1).double() / 255.0 for p, x in xs.items()}
    # raw pixels are nearly collinear (grey images repeat each value in three channels): on them L-BFGS crawled for
    # 17 s on 380 images; their leading principal components keep what a linear model can use, in about 1 s per
    # count tried (the count is chosen on validation, like C)
    mean = flat["train"].mean(0)
    _, _, vh = torch.linalg.svd(flat["train"] - mean, full_matrices=False)
    y = ds.targets
    best = None
    for k in sorted({min(c, vh.shape[0]) for c in (32, 128)}):
        proj = {p: ((x - mean) @ vh[:k].T).float().numpy() for p, x in flat.items()}
        fit = fit_linear_probe(proj["train"], y[splits.train], proj["val"], y[splits.val], len(ds.classes), seed=seed)
        if best is None or fit.val_accuracy > best[1].val_accuracy:
            best = (k, fit, proj)
    assert best is not None
    k, fit, flat = best
    with torch.no_grad():
        pred = fit.head(torch.from_numpy(flat["test"])).argmax(1).numpy()
    return {
        # popped before the record is written (JSON): the cache keeps them with the CNN's state (control_model)
        "weights": {"mean": mean.float(), "proj": vh[:k].float().contiguous(),
                    "head.weight": fit.head.weight.detach().clone(), "head.bias": fit.head.bias.detach().clone()},
        "test_pred": pred.tolist(),
        "val_accuracy": fit.val_accuracy,
        "C": fit.chosen["C"],
        "components": k,
        "trainable_parameters": sum(p.numel() for p in fit.head.parameters()) + k * int(mean.numel()),
        "seconds": time.perf_counter() - t0,
    }


def _target_epochs(
    config: ScratchConfig, record: dict[str, Any], splits: Splits, num_classes: int, store: Path | None
) -> int | None:
    """Epochs this budget buys; None under a time budget whose cached epochs do not tell yet."""
    if config.work_budget is not None:
        work = config.work_budget * config.work_fraction
        return epochs_for_work(work, splits, record["input_px"], num_classes, config.max_epochs, store)
    if config.time_budget_s is None:
        return config.epochs
    spent = record["decode_s"] + record["pixels"]["seconds"]
    for e, seconds in enumerate(record["epoch_s"]):
        spent += seconds
        if spent > config.time_budget_s:
            return max(1, e)
    return None if len(record["epoch_s"]) < config.max_epochs else config.max_epochs


def _image_control(
    ds: Dataset,
    splits: Splits,
    seed: int,
    config: ScratchConfig,
    progress: bool,
    cache_root: Path | None,
    regressor: bool = False,
) -> ControlResult:
    """The better on validation of pixel model and cached CNN; ``regressor``: ridge and one output, scored by R^2."""
    t0 = time.perf_counter()
    size = _pick_size(ds, splits.train)
    settings = {
        k: v for k, v in asdict(config).items() if k in ("lr", "lr_decay", "batch_size")
    } | {"input_px": size, "model": "SmallCNN(32)"}
    if regressor:
        from .regression_control import cnn_target, ridge_pixels

        settings["target"] = "huber(1) on standardised values"
        (y, score, stored), pixel_model, key, n_classes = cnn_target(ds, splits), ridge_pixels, "val_r2", 1
    else:
        y = torch.from_numpy(ds.targets)
        pixel_model, key, n_classes = train_scratch_pixels, "val_accuracy", len(ds.classes)
        score, stored = (lambda p: float((p == y[splits.val]).float().mean())), (lambda p: p.tolist())
    cache = ControlCache(cache_root, control_key(ds, splits, seed, settings))
    flops_store = cache_root / "flops.json" if cache_root is not None else None
    record = cache.read()
    status = "hit" if record is not None else "miss"
    xs: dict[str, torch.Tensor] | None = None
    pixel_weights: dict[str, torch.Tensor] | None = None  # the pixel model's, when it was fitted in this call

    def decoded() -> dict[str, torch.Tensor]:
        nonlocal xs
        if xs is None:
            xs = {p: _image_tensor(ds, getattr(splits, p), size) for p in ("train", "val", "test")}
        return xs

    if record is None:
        td = time.perf_counter()
        decoded()
        decode_s = time.perf_counter() - td
        pixels = pixel_model(ds, splits, decoded(), seed)
        pixel_weights = pixels.pop("weights", None)
        record = {
            "input_px": size,
            "decode_s": decode_s,
            "pixels": pixels,
            key: [],
            "epoch_s": [],
            "test_pred": {},
        }
    target = _target_epochs(config, record, splits, n_classes, flops_store)
    trained = len(record[key])
    snapshots: dict[str, dict[str, torch.Tensor]] | None = None  # the weights of every new best epoch, by epoch
    if target is None or target > trained:
        if status == "hit":
            status = "extended"
        state = cache.state() if trained else None
        snapshots = dict(state.get("best", {})) if state is not None else {}
        if state is not None:
            pixel_weights = state.get("pixels")
        run = _CNNRun(n_classes, seed, config, state, regressor)
        x = decoded()
        total = target if target is not None else config.max_epochs
        with progress_bar("scratch CNN epochs", total, enabled=progress) as bar:
            bar.advance(trained)
            epoch = trained
            while epoch < total:
                te = time.perf_counter()
                run.train_epoch(epoch, x["train"], y[splits.train])
                acc = score(run.predict(x["val"]))
                # a new best (or the first epoch: an R^2 can start below -1) keeps its test predictions
                if acc > max(record[key], default=-1.0) or not record["test_pred"]:
                    record["test_pred"][str(epoch)] = stored(run.predict(x["test"]))
                    snapshots[str(epoch)] = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
                record[key].append(acc)
                record["epoch_s"].append(time.perf_counter() - te)
                epoch += 1
                bar.advance()
                if target is None:
                    target = _target_epochs(config, record, splits, n_classes, flops_store)
                    if target is not None:
                        total = target
                        bar.set_total(total)
        cache.write(record, {**run.state(), "best": snapshots, **({"pixels": pixel_weights} if pixel_weights else {})})
    assert target is not None
    curve = record[key][:target]
    best_epoch = int(np.argmax(curve))  # the first best: always an epoch whose test predictions were kept
    pixels = record["pixels"]
    pixel_name = pixels.get("name", f"logistic regression on raw pixels ({size}px)")
    cnn_name = f"small CNN from random init ({size}px{', linear output' if regressor else ''})"
    f, cnn_params = _cnn_shape(size, n_classes, flops_store)
    flops = f * (target * (3 * len(splits.train) + len(splits.val)) + len(splits.test))
    cost_s = record["decode_s"] + pixels["seconds"] + sum(record["epoch_s"][:target])
    common = {
        "cnn_epochs": target,
        "cnn_best_epoch": best_epoch + 1,
        "input_px": size,
        "candidates": {pixel_name: pixels[key], cnn_name: curve[best_epoch]},
        "cache": status,
        "cost_s": cost_s,
        "cnn_flops": flops,
    }
    if config.work_budget is not None:
        common["work_budget_flops"] = config.work_budget
    if config.time_budget_s is not None:
        common["time_budget_s"] = config.time_budget_s
    def stored(pick: Callable[[dict[str, Any]], Any]) -> Any:  # read from state.pt only if someone asks
        return (lambda: pick(cache.state())) if cache.dir is not None else None

    if curve[best_epoch] > pixels[key]:  # the simpler model wins ties
        epoch = str(best_epoch)
        return ControlResult(
            np.asarray(record["test_pred"][epoch]),
            cnn_name,
            cnn_params,
            time.perf_counter() - t0,
            {key: curve[best_epoch], **common},
            snapshots.get(epoch) if snapshots is not None else stored(lambda st: st.get("best", {}).get(epoch)),
        )
    chosen = {k: pixels[k] for k in (("alpha", "components") if regressor else ("C",))}
    return ControlResult(
        np.asarray(pixels["test_pred"]),
        pixel_name,
        int(pixels["trainable_parameters"]),
        time.perf_counter() - t0,
        {key: pixels[key], **chosen, **common},
        None if regressor else pixel_weights if pixel_weights is not None else stored(lambda st: st.get("pixels")),
    )


def _text_control(ds: Dataset, splits: Splits, seed: int, cache_root: Path | None) -> ControlResult:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    cache = ControlCache(cache_root, control_key(ds, splits, seed, {"model": "tfidf-1-2+logreg"}))
    record = cache.read()
    status = "hit"
    if record is None:
        status = "miss"
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=100_000)
        x_train = vec.fit_transform(ds.take(splits.train))
        x_val = vec.transform(ds.take(splits.val))
        y = ds.targets
        best_c, best_acc = 1.0, -1.0
        for c in (0.1, 1.0, 10.0, 100.0):
            clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x_train, y[splits.train])
            acc = float(clf.score(x_val, y[splits.val]))
            if acc > best_acc:
                best_c, best_acc = c, acc
        # like the linear probe: refit on train + val with the chosen C
        pool = np.concatenate([splits.train, splits.val])
        x_pool = vec.fit_transform(ds.take(pool))
        clf = LogisticRegression(C=best_c, max_iter=2000, random_state=seed).fit(x_pool, y[pool])
        record = {
            "test_pred": clf.predict(vec.transform(ds.take(splits.test))).tolist(),
            "trainable_parameters": int(clf.coef_.size + clf.intercept_.size),
            "info": {"C": best_c, "val_accuracy": best_acc, "vocabulary": len(vec.vocabulary_)},
            "seconds": time.perf_counter() - t0,
        }
        cache.write(record, None)
    return ControlResult(
        test_pred=np.asarray(record["test_pred"]),
        description="TF-IDF (1-2 grams) + logistic regression",
        trainable_parameters=record["trainable_parameters"],
        wall_s=time.perf_counter() - t0,
        info={**record["info"], "cache": status, "cost_s": record["seconds"]},
    )


def run_scratch(
    ds: Dataset,
    splits: Splits,
    seed: int = 0,
    config: ScratchConfig | None = None,
    progress: bool = True,
    cache_dir: Path | None = None,
    use_cache: bool = True,
) -> ControlResult:
    """Train (or reuse from the cache) the control for this modality on ``splits`` and predict its test split.

    Texts: TF-IDF + logistic regression, which is not iterative: a budget does not apply. ``cache_dir`` defaults to
    the feature cache's folder; ``use_cache=False`` neither reads nor writes it.
    """
    from ..core.features import default_cache_dir

    config = config or ScratchConfig()
    root = (Path(cache_dir) if cache_dir else default_cache_dir()) if use_cache else None
    if ds.task == "regression":
        from .regression_control import regression_control

        return regression_control(ds, splits, seed, config, progress, root)
    if ds.modality == "text":
        return _text_control(ds, splits, seed, root)
    return _image_control(ds, splits, seed, config, progress, root)


def control_model(control: ControlResult, ds: Dataset) -> TransferModel | str:
    """The control as a saved-and-predicted ``TransferModel``: ``scratch:cnn`` with the CNN's best-epoch weights, or
    ``scratch:pixels`` with the pixel model's projection and head; or a sentence saying why it cannot be one (a text
    control, TF-IDF, is not a network; a numeric target's control is not saved either)."""
    from ..backbones.registry import create_backbone
    from ..core.heads import linear_head
    from ..core.model import TransferModel

    if ds.task == "regression" or ds.modality != "image":
        return f"the control ({control.description}) is not saved as a model for {ds.modality} {ds.task}"
    w = control.weights
    if w is None:
        return f"the control ({control.description}) kept no weights to save"
    size = int(control.info["input_px"])
    if "proj" in w:  # the pixel model: principal components of the raw pixels, then its linear head
        backbone = create_backbone(f"scratch:pixels?size={size}&components={w['proj'].shape[0]}")
        backbone.load_state_dict({"mean": w["mean"], "proj": w["proj"]})
        head_w, head_b = w["head.weight"], w["head.bias"]
    else:
        backbone = create_backbone(f"scratch:cnn?size={size}&width=32")
        prefix = "features."
        backbone.features.load_state_dict({k[len(prefix):]: v for k, v in w.items() if k.startswith(prefix)})
        head_w, head_b = w["head.1.weight"], w["head.1.bias"]
    head = linear_head(backbone.feature_dim, len(ds.classes))
    head.load_state_dict({"weight": head_w, "bias": head_b})
    backbone.mark_changed(full=True)
    backbone.freeze()
    return TransferModel(backbone, head, ds.classes).eval()


SCRATCH_BUDGETS = ("work", "fixed", "matched")


def budget_config(mode: str, work_flops: float | None, cold_s: float) -> ScratchConfig:
    """The control's config for a budget mode: ``work`` (default: the FLOPs the transfer run cost, of which the CNN
    spends ``work_fraction``; the same on every machine), ``fixed`` (its own 40 epochs) or ``matched`` (the seconds
    the transfer run cost cold, on this machine). Texts' control is not iterative: every mode is the same for them."""
    from ..errors import TransferkitError

    if mode not in SCRATCH_BUDGETS:
        raise TransferkitError(f"scratch_budget={mode!r} is not one of {', '.join(SCRATCH_BUDGETS)}.")
    if mode == "work" and work_flops is not None:
        return ScratchConfig(work_budget=work_flops)
    if mode == "matched":
        return ScratchConfig(time_budget_s=cold_s)
    return ScratchConfig()
