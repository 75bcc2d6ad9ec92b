"""The Backbone contract: a pretrained network that knows its own preprocessing and embeds a batch."""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from .._images import load_image
from ..errors import TransferkitError

Modality = Literal["image", "text"]


@dataclass(frozen=True)
class ImagePreprocess:
    """How an image becomes a tensor for this backbone (timm's data config)."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"
    kind: ClassVar[str] = "image"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def transform(self) -> Any:
        """A callable PIL.Image -> float tensor (C, H, W)."""
        from timm.data import create_transform

        return create_transform(
            input_size=self.input_size,
            mean=self.mean,
            std=self.std,
            interpolation=self.interpolation,
            crop_pct=self.crop_pct,
            crop_mode=self.crop_mode,
            is_training=False,
        )


@dataclass(frozen=True)
class TextPreprocess:
    """How a text becomes token ids for this backbone and how token states become one vector."""

    tokenizer: str = ""
    max_length: int = 256
    pooling: Literal["mean", "cls", "last"] = "mean"
    normalize: bool = False
    kind: ClassVar[str] = "text"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


Preprocess = ImagePreprocess | TextPreprocess


class BatchImageTransform:
    """A per-image transform run batch-wise: PIL steps (resize, crop) per image, then one uint8 -> float
    conversion and one normalisation for the whole batch, already channels-last.

    Same values as stacking the per-image transform (the same elementwise float ops), without two tiny tensor ops
    per image, which on a busy CPU can cost as much as the network itself. Unrecognised pipelines run per image.
    """

    def __init__(self, transform: Any) -> None:
        self.transform = transform
        steps = list(getattr(transform, "transforms", []))
        names = [type(t).__name__ for t in steps]
        self.batched = len(steps) >= 2 and names[-2] in ("ToTensor", "MaybeToTensor") and names[-1] == "Normalize"
        if self.batched:
            self.pil_steps = steps[:-2]
            norm = steps[-1]
            self.mean = torch.as_tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
            self.std = torch.as_tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: Sequence[Any]) -> torch.Tensor:
        """RGB PIL images -> float (B, C, H, W) in channels_last memory format."""
        if not self.batched:
            return torch.stack([self.transform(im) for im in images]).contiguous(memory_format=torch.channels_last)
        arrays = []
        for im in images:
            for step in self.pil_steps:
                im = step(im)
            arrays.append(np.asarray(im, dtype=np.uint8))
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # NHWC memory = channels_last
        return x.float().div_(255).sub_(self.mean).div_(self.std)


def prepare_images(
    transform: BatchImageTransform,
    items: Sequence[Any],
    augment: bool,
    generator: torch.Generator | None,
    scale: tuple[float, float] = (0.6, 1.0),
) -> torch.Tensor:
    """Raw image items -> a float batch, with training augmentation (crop area ``scale``) when asked."""
    x = transform([load_image(it) for it in items])
    if augment:
        x = augment_images(x, generator if generator is not None else torch.Generator(), scale=scale)
    return x


def preprocess_from_dict(d: dict[str, Any]) -> Preprocess:
    """Inverse of ``Preprocess.to_dict``."""
    d = dict(d)
    kind = d.pop("kind")
    if kind == "image":
        for key in ("input_size", "mean", "std"):
            d[key] = tuple(d[key])
        return ImagePreprocess(**d)
    return TextPreprocess(**d)


class Backbone(nn.Module):
    """A pretrained feature extractor: ``forward(batch) -> (B, feature_dim)``.

    Subclasses implement ``prepare`` (raw items -> model inputs), ``forward`` and ``blocks()`` (the stages from
    input to output, for later unfreezing).
    """

    def __init__(
        self, spec: str, modality: Modality, feature_dim: int, preprocess: Preprocess, pretrained: bool = True
    ) -> None:
        super().__init__()
        self.spec = spec
        self.modality: Modality = modality
        self.feature_dim = feature_dim
        self.preprocess = preprocess
        self.pretrained = pretrained
        self.depth: int | None = None
        """Blocks kept when the backbone was cut after a block (``layer=``), else None."""
        self.weights_changed = False
        self.adapter: dict[str, Any] | None = None
        """Config of injected low-rank adapters (``backbones.adapters``), or None."""
        self.base_fingerprint: str | None = None
        """Fingerprint of the pretrained weights before adapters were injected."""
        self._fingerprint: str | None = None

    # -- deferred weights: a backbone known from its stored description, built on first real use -------------------

    _deferred: ClassVar[tuple[str, ...]] = ()
    """Attributes a deferred instance lacks until it is built (e.g. the network and its image transform)."""

    @classmethod
    def deferred(cls, spec: str, desc: dict[str, Any], build: Callable[[], Backbone]) -> Backbone:
        """An instance described by ``desc`` (``describe()`` of a built one) whose network ``build`` makes on first
        use: the forward pass, ``prepare``, ``blocks``, ``state_dict``, ``.to()``, or any attribute in ``_deferred``.
        Until then it costs no import and no weight loading; its fingerprint, size and FLOP key come from ``desc``."""
        obj = cls.__new__(cls)
        Backbone.__init__(
            obj, spec, desc["modality"], int(desc["feature_dim"]), preprocess_from_dict(desc["preprocess"]),
            bool(desc["pretrained"]),
        )
        obj._fingerprint = str(desc["fingerprint"])
        obj._described = dict(desc)
        obj._pending = build
        return obj

    @property
    def is_built(self) -> bool:
        """False while a deferred backbone's network has not been made."""
        return self.__dict__.get("_pending") is None

    def build(self) -> Backbone:
        """Make a deferred backbone's network now (a no-op for a built one); checks it matches its description."""
        pending = self.__dict__.get("_pending")
        if pending is None:
            return self
        real = pending()
        if real.fingerprint() != self._fingerprint or type(real) is not type(self):
            raise TransferkitError(
                f"{self.spec}: its weights no longer match the description cached for them; delete "
                "backbones.json in the cache folder and rerun."
            )
        self.__dict__["_pending"] = None
        for name in self._deferred:
            setattr(self, name, getattr(real, name))
        for m in self.children():
            m.train(self.training)
            if self.__dict__.get("_frozen"):
                m.requires_grad_(False)
        return self

    def __getattr__(self, name: str) -> Any:
        if name in type(self)._deferred and self.__dict__.get("_pending") is not None:
            self.build()
            return getattr(self, name)
        return super().__getattr__(name)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Backbone:  # .to(), .cuda(), .float(), ...
        self.build()
        return super()._apply(fn, *args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self.build()
        return super().state_dict(*args, **kwargs)

    def named_parameters(self, *args: Any, **kwargs: Any) -> Any:  # also parameters()
        self.build()
        return super().named_parameters(*args, **kwargs)

    def named_buffers(self, *args: Any, **kwargs: Any) -> Any:  # also buffers()
        self.build()
        return super().named_buffers(*args, **kwargs)

    def freeze(self) -> None:
        """No weight takes gradients (also those of a deferred backbone, which this does not build)."""
        self.__dict__["_frozen"] = True
        if self.is_built:
            for p in self.parameters():
                p.requires_grad_(False)

    def describe(self) -> dict[str, Any]:
        """What ``deferred`` needs to stand in for this backbone without building it."""
        return {
            "modality": self.modality,
            "feature_dim": self.feature_dim,
            "preprocess": self.preprocess.to_dict(),
            "pretrained": self.pretrained,
            "fingerprint": self.fingerprint(),
            "arch_key": self._arch_key(),
            "num_parameters": self.num_parameters(),
        }

    def mark_changed(self, full: bool = True) -> None:
        """Record that training changed weights (all of them, or only adapters): a saved model then carries
        them, and the fingerprint is recomputed."""
        self.weights_changed = self.weights_changed or full
        self._fingerprint = None

    def prepare(
        self, items: Sequence[Any], augment: bool = False, generator: torch.Generator | None = None
    ) -> Any:  # pragma: no cover - abstract
        """Raw items -> model inputs; ``augment`` applies training augmentation drawn from ``generator``."""
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:  # pragma: no cover - abstract
        """The stages from input to output (fine-tuning unfreezes them from the top)."""
        raise NotImplementedError

    def flops_per_item(self, cache_dir: Path | None = None) -> float | None:
        """Forward FLOPs for one image at the preprocessing size (counted once by torch's FLOP counter, in eval
        mode); None for texts, whose cost depends on their length. With ``cache_dir`` the count is kept in
        ``flops.json`` there, keyed by the architecture (parameter names and shapes) and the input size."""
        if not isinstance(self.preprocess, ImagePreprocess):
            return None
        if getattr(self, "_flops", None) is not None:
            return self._flops

        from .._files import merge_json, read_json_dict

        key = self._arch_key()
        store = cache_dir / "flops.json" if cache_dir is not None else None
        known = read_json_dict(store) if store is not None else {}
        if isinstance(known.get(key), float):
            self._flops = known[key]
            return self._flops
        from torch.utils.flop_counter import FlopCounterMode

        self.build()
        was_training = self.training
        self.eval()
        param = next(self.parameters())
        x = torch.zeros((1, *self.preprocess.input_size), dtype=param.dtype, device=param.device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            self(x)
        self.train(was_training)
        self._flops = float(counter.get_total_flops())
        if store is not None:
            with contextlib.suppress(OSError):  # a count not kept is counted again next time
                merge_json(store, key, self._flops)
        return self._flops

    def _arch_key(self) -> str:
        """Parameter names and shapes plus the input size: keys the FLOP count (a deferred backbone knows it)."""
        described = self.__dict__.get("_described")
        if described is not None and self.__dict__.get("_pending") is not None:
            return str(described["arch_key"])
        import json

        sig = hashlib.sha256(json.dumps(self.preprocess.input_size).encode())
        for name, t in self.state_dict().items():
            sig.update(f"{name}:{tuple(t.shape)};".encode())
        return sig.hexdigest()[:24]

    def unused_modules(self) -> list[nn.Module]:
        """Modules that never feed the features (e.g. the source classifier): always frozen when fine-tuning."""
        return []

    def source_head(self) -> nn.Module | None:
        """The backbone's own classifier from its features to source-class logits (e.g. ImageNet), or None."""
        return None

    def fresh_state(self, seed: int) -> dict[str, torch.Tensor] | None:
        """State dict of the same architecture freshly initialised by its own initialiser, or None if unknown."""
        return None

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` blocks, so features come from that depth (pooled as usual)."""
        raise TransferkitError(f"{self.spec} cannot be cut after a block (layer=): its blocks are not known.")

    def reinitialize(self, seed: int = 0) -> None:
        """Replace every weight by a fresh random draw (seeded): the random-init control of this architecture.

        Subclasses draw with the architecture's own initialiser (``fresh_state``); this generic version resets
        every module that has ``reset_parameters`` (PyTorch defaults) and draws bare parameters from N(0, 0.02).
        """
        fresh = self.fresh_state(seed)
        own = self.state_dict()
        if fresh is not None and all(k in fresh and fresh[k].shape == v.shape for k, v in own.items()):
            self.load_state_dict({k: fresh[k] for k in own})
            self.pretrained = False
            self._fingerprint = None
            return
        covered: set[int] = set()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for m in self.modules():
                reset = getattr(m, "reset_parameters", None)
                if callable(reset):
                    reset()
                    covered.update(id(p) for p in m.parameters(recurse=False))
            for p in self.parameters():  # bare parameters (e.g. position embeddings) no module resets
                if id(p) not in covered:
                    nn.init.normal_(p, std=0.02)
        self.pretrained = False
        self._fingerprint = None

    def to_device(self, batch: Any, device: torch.device) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(device)
        return {k: v.to(device) for k, v in batch.items()}

    @torch.inference_mode()
    def embed(self, items: Sequence[Any]) -> torch.Tensor:
        """Features for raw items, in eval mode and without gradients."""
        self.eval()
        device = next(self.parameters()).device
        return self(self.to_device(self.prepare(items), device)).float()

    def fingerprint(self) -> str:
        """Hash of the spec, the preprocessing and every weight: keys the feature cache."""
        if self._fingerprint is None:
            h = hashlib.sha256(self.spec.encode())
            h.update(repr(sorted(self.preprocess.to_dict().items())).encode())
            for name, t in self.state_dict().items():
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:24]
        return self._fingerprint

    def num_parameters(self) -> int:
        if self.__dict__.get("_pending") is not None:
            return int(self._described["num_parameters"])
        return sum(p.numel() for p in self.parameters())


def augment_images(
    x: torch.Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.6, 1.0), hflip: bool = True
) -> torch.Tensor:
    """Random resized crop (area ``scale``, aspect 3/4..4/3) and horizontal flip of a (B, C, H, W) batch.

    Every random draw comes from ``generator`` so a resumed run sees the same augmentation.
    """
    b, _, h, w = x.shape
    out = torch.empty_like(x)
    r = torch.rand((b, 4), generator=generator)
    for i in range(b):
        area = scale[0] + (scale[1] - scale[0]) * float(r[i, 0])
        aspect = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * float(r[i, 1]))
        ch = max(1, min(h, round(h * math.sqrt(area / aspect))))
        cw = max(1, min(w, round(w * math.sqrt(area * aspect))))
        top = int(float(r[i, 2]) * (h - ch + 1))
        left = int(float(r[i, 3]) * (w - cw + 1))
        crop = x[i : i + 1, :, top : top + ch, left : left + cw]
        out[i] = torch.nn.functional.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0]
    if hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        out[flip] = out[flip].flip(-1)
    return out
