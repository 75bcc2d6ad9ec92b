"""Save/load a TransferModel as safetensors + JSON: backbone spec, changed weights, head, labels, preprocessing.

Loading never unpickles: weights come from safetensors, everything else from JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .._files import atomic_folder, check_replaceable
from .._version import __version__
from ..backbones import create_backbone
from ..backbones.base import preprocess_from_dict
from ..errors import TransferkitError
from .model import TransferModel, build_head, head_config

FORMAT_VERSION = 1
CONFIG = "transferkit.json"
MODEL_FILES = frozenset({CONFIG, "head.safetensors", "backbone.safetensors", "adapter.safetensors"})
"""Everything a saved model folder holds."""


def save_model(model: TransferModel, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the model to folder ``path`` atomically (a temp folder renamed into place)."""
    from safetensors.torch import save_file

    path = Path(path)
    check_replaceable(path, MODEL_FILES, "model")  # only a model folder transferkit wrote is replaced
    path.parent.mkdir(parents=True, exist_ok=True)
    bb = model.backbone
    save_backbone = not bb.pretrained or bb.weights_changed
    cfg = {
        "format_version": FORMAT_VERSION,
        "transferkit_version": __version__,
        "backbone": {
            "spec": bb.spec,
            "modality": bb.modality,
            "feature_dim": bb.feature_dim,
            "fingerprint": bb.base_fingerprint if bb.adapter is not None else bb.fingerprint(),
            "weights_saved": save_backbone,
            "adapter": bb.adapter,
        },
        "preprocess": bb.preprocess.to_dict(),
        "head": head_config(model.head),
        "classes": model.classes,
        "task": model.task,
        "temperature": float(model.temperature),
        "tta": bool(model.tta),
        **(extra or {}),
    }
    def write(tmp: Path) -> None:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()},
            str(tmp / "head.safetensors"),
        )
        state = (  # a probe's unchanged backbone is not read (a deferred one stays unbuilt)
            {k: v.detach().cpu().contiguous() for k, v in bb.state_dict().items()}
            if save_backbone or bb.adapter is not None
            else {}
        )
        if save_backbone:  # the base weights under their own names (adapters, if any, go to their own file)
            base = {k.replace(".base_layer.", "."): v for k, v in state.items() if "lora_" not in k}
            save_file(base, str(tmp / "backbone.safetensors"))
        if bb.adapter is not None:
            save_file({k: v for k, v in state.items() if "lora_" in k}, str(tmp / "adapter.safetensors"))
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2))

    atomic_folder(path, write)  # a killed run's half-written temp folder is removed first
    return path


def load(path: str | Path) -> TransferModel:
    """Load a model saved by ``TransferModel.save``. The folder is checked against the format before anything is
    built (its JSON, every tensor's name, shape and finiteness), and the backbone's weights and preprocessing must
    match the ones it was trained with; any problem is one sentence naming the file."""
    path = Path(path)
    cfg = _read_config(path)
    bcfg = cfg["backbone"]
    head = build_head(cfg["head"])
    head.load_state_dict(_tensors(path / "head.safetensors", head.state_dict()))
    backbone = create_backbone(bcfg["spec"])
    if bcfg["weights_saved"]:
        backbone.load_state_dict(_tensors(path / "backbone.safetensors", backbone.state_dict()))
        backbone.mark_changed()
    try:
        saved_pre = preprocess_from_dict(cfg["preprocess"])
    except (KeyError, TypeError, ValueError) as e:
        raise TransferkitError(f"{path / CONFIG}: its preprocessing is malformed ({type(e).__name__}: {e}).") from None
    if saved_pre != backbone.preprocess:
        raise TransferkitError(
            f"{path}: the preprocessing of {bcfg['spec']} here ({backbone.preprocess}) differs from the one the "
            f"model was trained with ({saved_pre}); predictions would be silently wrong."
        )
    if backbone.feature_dim != cfg["head"]["in_features"]:
        raise TransferkitError(
            f"{path}: its head takes {cfg['head']['in_features']} features but {bcfg['spec']} gives "
            f"{backbone.feature_dim}."
        )
    if backbone.fingerprint() != bcfg["fingerprint"]:
        raise TransferkitError(
            f"{path}: the weights of {bcfg['spec']} installed here differ from those the model was trained with "
            "(a different pack or model version); retrain or install the original version."
        )
    if bcfg.get("adapter"):
        from ..backbones.adapters import inject_lora

        inject_lora(backbone, bcfg["adapter"])
        want = {k: v for k, v in backbone.state_dict().items() if "lora_" in k}
        backbone.load_state_dict(_tensors(path / "adapter.safetensors", want), strict=False)
        backbone.mark_changed(full=False)
    model = TransferModel(backbone, head, cfg["classes"], cfg.get("task", "classification")).eval()
    model.temperature = float(cfg.get("temperature", 1.0))
    model.tta = bool(cfg.get("tta", False))
    return model


def _read_config(path: Path) -> dict[str, Any]:
    """``transferkit.json`` of ``path``, checked against the format: one sentence per kind of damage."""
    cfg_file = path / CONFIG
    if not path.is_dir():
        raise TransferkitError(f"{path} is not a saved transferkit model folder.")
    if not cfg_file.is_file():
        raise TransferkitError(f"{path} is not a saved transferkit model (no {CONFIG} in it).")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TransferkitError(
            f"{cfg_file} is not readable JSON ({type(e).__name__}: {e}); the model is damaged."
        ) from None

    def bad(what: str) -> TransferkitError:
        return TransferkitError(f"{cfg_file}: {what}; the model is damaged or was not saved by transferkit.")

    if not isinstance(cfg, dict):
        raise bad(f"it holds a {type(cfg).__name__}, not an object")
    version = cfg.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad("format_version is not a whole number")
    if version > FORMAT_VERSION:
        raise TransferkitError(f"{path} was saved by a newer transferkit ({cfg.get('transferkit_version')}).")
    b, h, classes = cfg.get("backbone"), cfg.get("head"), cfg.get("classes")
    if not isinstance(b, dict) or not isinstance(b.get("spec"), str) or not isinstance(b.get("fingerprint"), str):
        raise bad("its backbone entry (spec, fingerprint) is missing or malformed")
    if not isinstance(b.get("weights_saved"), bool) or not isinstance(b.get("adapter"), dict | None):
        raise bad("its backbone entry (weights_saved, adapter) is malformed")
    if not isinstance(cfg.get("preprocess"), dict):
        raise bad("its preprocess entry is missing")
    if not isinstance(h, dict) or h.get("type") not in ("linear", "mlp"):
        raise bad("its head entry is missing or of an unknown type")
    dims = ("in_features", "num_classes") + (("hidden",) if h["type"] == "mlp" else ())
    if not all(isinstance(h.get(k), int) and not isinstance(h.get(k), bool) and h[k] >= 1 for k in dims):
        raise bad(f"its head's sizes ({', '.join(dims)}) are not positive whole numbers")
    task = cfg.get("task", "classification")
    if task not in ("classification", "regression"):
        raise bad(f"its task ({task!r}) is neither classification nor regression")
    names = isinstance(classes, list) and all(isinstance(c, str) for c in classes)
    if not names or len(set(classes)) < len(classes):
        raise bad("its classes are not a list of distinct names")
    if task == "regression" and (classes or h["num_classes"] != 1):
        raise bad("a regression model has one output and no classes")
    if task == "classification" and len(classes) != h["num_classes"]:
        raise bad(f"it names {len(classes)} classes but its head has {h['num_classes']} outputs")
    t = cfg.get("temperature", 1.0)
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
        raise bad(f"its temperature ({t!r}) is not a positive number")
    tta = cfg.get("tta", False)
    if not isinstance(tta, bool) or (tta and (task == "regression" or cfg["preprocess"].get("kind") != "image")):
        raise bad(f"its tta ({tta!r}) is not true or false, or is true for a model that is not an image classifier")
    return cfg


def _tensors(file: Path, expected: dict[str, Any]) -> dict[str, Any]:
    """The tensors of a safetensors file, checked to be exactly ``expected``'s names and shapes, and finite."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not file.is_file():
        raise TransferkitError(f"{file} is missing; the model is damaged.")
    try:
        got = load_file(str(file))
    except (OSError, ValueError, SafetensorError) as e:
        raise TransferkitError(f"{file} is not a readable safetensors file ({e}); the model is damaged.") from None
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or extra:
        raise TransferkitError(
            f"{file} does not fit the model: " + "; ".join(
                part for part in (f"missing {', '.join(missing[:3])}" if missing else "",
                                  f"unexpected {', '.join(extra[:3])}" if extra else "") if part
            ) + "."
        )
    for name, t in got.items():
        if tuple(t.shape) != tuple(expected[name].shape):
            raise TransferkitError(
                f"{file}: {name} has shape {tuple(t.shape)}, the model needs {tuple(expected[name].shape)}."
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise TransferkitError(f"{file}: {name} holds NaN or infinite values; the model is unusable.")
    return got
