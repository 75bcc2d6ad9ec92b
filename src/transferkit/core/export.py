"""Save/load a TransferModel as safetensors + JSON: backbone spec, changed weights, head, labels, preprocessing.

Loading never unpickles: weights come from safetensors, everything else from JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .._files import user_mode
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
    if path.exists():  # replace only a model folder transferkit wrote, and nothing else that is in it
        foreign = sorted(p.name for p in path.iterdir() if p.name not in MODEL_FILES) if path.is_dir() else [path.name]
        if foreign:
            raise TransferkitError(
                f"{path} holds {', '.join(foreign[:3])}, which transferkit did not write: the model is not saved "
                "over it; choose another folder."
            )
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
        **(extra or {}),
    }
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    os.chmod(tmp, user_mode(directory=True))  # mkdtemp makes it 0700
    try:
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
        for f in tmp.iterdir():  # safetensors writes its files 0600
            os.chmod(f, user_mode())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def load(path: str | Path) -> TransferModel:
    """Load a model saved by ``TransferModel.save``; checks the backbone's weights and preprocessing match."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_file = path / CONFIG
    if not cfg_file.is_file():
        raise TransferkitError(f"{path} is not a saved transferkit model (no {CONFIG} in it).")
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise TransferkitError(f"{path} was saved by a newer transferkit ({cfg.get('transferkit_version')}).")
    bcfg = cfg["backbone"]
    backbone = create_backbone(bcfg["spec"])
    if bcfg["weights_saved"]:
        backbone.load_state_dict(load_file(str(path / "backbone.safetensors")))
        backbone.mark_changed()
    saved_pre = preprocess_from_dict(cfg["preprocess"])
    if saved_pre != backbone.preprocess:
        raise TransferkitError(
            f"{path}: the preprocessing of {bcfg['spec']} here ({backbone.preprocess}) differs from the one the "
            f"model was trained with ({saved_pre}); predictions would be silently wrong."
        )
    if backbone.fingerprint() != bcfg["fingerprint"]:
        raise TransferkitError(
            f"{path}: the weights of {bcfg['spec']} installed here differ from those the model was trained with "
            "(a different pack or model version); retrain or install the original version."
        )
    if bcfg.get("adapter"):
        from ..backbones.adapters import inject_lora

        inject_lora(backbone, bcfg["adapter"])
        saved = load_file(str(path / "adapter.safetensors"))
        result = backbone.load_state_dict(saved, strict=False)
        missing = [k for k in result.missing_keys if "lora_" in k]
        if missing or result.unexpected_keys:
            raise TransferkitError(f"{path}: the adapter weights do not fit {bcfg['spec']} ({missing[:3]}).")
        backbone.mark_changed(full=False)
    head = build_head(cfg["head"])
    head.load_state_dict(load_file(str(path / "head.safetensors")))
    return TransferModel(backbone, head, cfg["classes"]).eval()
