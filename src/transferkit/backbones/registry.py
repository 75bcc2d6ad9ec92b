"""Backbone spec strings (``source:name[?key=value&...]`` or a local folder) -> Backbone."""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TransferkitError
from ..registry import Registry

if TYPE_CHECKING:
    from .base import Backbone

SourceFactory = Callable[[str, dict[str, str]], "Backbone"]
SOURCES: Registry[SourceFactory] = Registry("backbone source")


@dataclass(frozen=True)
class SourceInfo:
    """What a source says about itself: its rows in ``transferkit backbones`` and, for sources that read local
    folders, how it recognises one (``detect``) and builds from it (``from_folder``); folders are offered to the
    sources by ``folder_order`` (lower first; the catch-all last)."""

    rows: Callable[[], list[BackboneInfo]] = lambda: []
    detect: Callable[[Path], bool] | None = None
    from_folder: Callable[[Path], Backbone] | None = None
    folder_order: int = 0
    list_order: int = 50
    """Where the source's rows come in the listing (offline packs first)."""
    identity: Callable[[str], str | None] | None = None
    """Who a name's weights are, without loading them (None for a name whose build cannot be deferred): a source
    that has it may hand back a deferred backbone (``create_backbone(defer_in=...)``)."""


SOURCE_INFO: dict[str, SourceInfo] = {}


def register_source(prefix: str, info: SourceInfo | None = None) -> Callable[[SourceFactory], SourceFactory]:
    """Register a factory for specs that start with ``prefix:``, with what the source says about itself."""
    SOURCE_INFO[prefix] = info or SourceInfo()
    return SOURCES.register(prefix)


def parse_bool(value: str, key: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise TransferkitError(f"Option {key}={value!r} must be true or false.")


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``source:name?k=v&k2=v2`` into (source, name, options)."""
    head, _, query = spec.partition("?")
    source, sep, name = head.partition(":")
    if not sep or not name:
        raise TransferkitError(
            f"Backbone spec {spec!r} is neither a local folder nor of the form source:name "
            f"(sources: {', '.join(SOURCES)}; e.g. pack:efficientnet-lite0, timm:resnet50, hf:bert-base-uncased)."
        )
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq:
            raise TransferkitError(f"Option {part!r} in backbone spec {spec!r} must be key=value.")
        options[key.strip()] = value.strip()
    return source, name, options


GENERIC_OPTIONS = ("layer", "init")
"""Options every source takes: ``layer=N`` cuts the backbone after block N; ``init=random`` re-draws every weight
(seeded), the random-init control of the same architecture."""


def split_generic_options(spec: str) -> tuple[str, dict[str, str]]:
    """Remove the generic options from a spec's query: (spec without them, those options)."""
    head, sep, query = spec.partition("?")
    if not sep:
        return spec, {}
    rest, generic = [], {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        if key.strip() in GENERIC_OPTIONS:
            generic[key.strip()] = value.strip()
        else:
            rest.append(part)
    return head + ("?" + "&".join(rest) if rest else ""), generic


DESCRIPTIONS = "backbones.json"
DESCRIPTION_VERSION = "1"


def create_backbone(spec: str, *, defer_in: Path | None = None) -> Backbone:
    """Build the backbone a spec names: ``pack:...``, ``timm:...``, ``hf:...`` or a local folder, each optionally
    with ``?layer=N`` (features after block N) and/or ``init=random`` (random-init control).

    With ``defer_in`` (a cache folder), an image pack built there before comes back deferred (see
    ``Backbone.deferred``): described by ``backbones.json`` (keyed by its weight file and the library versions),
    built only when its network is used, so a run whose features are all cached never imports timm."""
    if defer_in is not None:
        return _deferred_or_built(spec, Path(defer_in))
    base, generic = split_generic_options(spec)
    backbone = _create(base)
    if not generic:
        return backbone
    suffix = []
    if "layer" in generic:
        try:
            n = int(generic["layer"])
        except ValueError:
            raise TransferkitError(f"layer={generic['layer']!r} in {spec!r} must be a whole number.") from None
        backbone.truncate(n)
        suffix.append(f"layer={n}")
    if "init" in generic:
        if generic["init"] != "random":
            raise TransferkitError(f"init={generic['init']!r} in {spec!r}: the only choice is init=random.")
        backbone.reinitialize(seed=0)
        suffix.append("init=random")
    backbone.spec += ("&" if "?" in backbone.spec else "?") + "&".join(suffix)
    backbone._fingerprint = None
    return backbone


def _deferred_or_built(spec: str, cache_dir: Path) -> Backbone:
    import hashlib
    from importlib import metadata

    from .._files import merge_json, read_json_dict
    from .._version import __version__

    _load_sources()
    source, _, name = spec.partition(":")
    info = SOURCE_INFO.get(source)
    ident = info.identity(name) if info is not None and info.identity is not None and "?" not in spec else None
    if ident is None:
        return create_backbone(spec)
    key = hashlib.sha256(
        f"{DESCRIPTION_VERSION}|{spec}|{ident}|transferkit {__version__}|torch {metadata.version('torch')}".encode()
    ).hexdigest()[:24]
    store = cache_dir / DESCRIPTIONS
    desc = read_json_dict(store).get(key)
    kinds = {cls.__name__: cls for cls in _deferrable()}
    if isinstance(desc, dict) and desc.get("spec") == spec and desc.get("class") in kinds:
        try:
            return kinds[desc["class"]].deferred(spec, desc, lambda: create_backbone(spec))
        except (KeyError, TypeError, ValueError):
            pass  # an unreadable description: build, and describe it again
    backbone = create_backbone(spec)
    with contextlib.suppress(OSError):  # a description not kept only means the next run builds again
        merge_json(store, key, {"spec": spec, "class": type(backbone).__name__, **backbone.describe()}, indent=1)
    return backbone


def _deferrable() -> list[type[Backbone]]:
    """Backbone classes that can stand in for themselves from a description (they name their ``_deferred``)."""
    from .base import Backbone

    found, todo = [], [Backbone]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub._deferred:
                found.append(sub)
    return found


def _load_sources() -> None:
    """Import the built-in source modules: each registers itself (prefix, factory, listing, folder reader)."""
    from . import hf_source, packs, scratch, timm_source  # noqa: F401


def _create(spec: str) -> Backbone:
    _load_sources()

    path = Path(spec).expanduser()
    if ":" not in spec.split("?")[0] or path.is_dir():
        if not path.is_dir():
            raise TransferkitError(
                f"Backbone {spec!r} is not a local folder and has no source prefix "
                f"({', '.join(s + ':' for s in SOURCES)}). Run `transferkit backbones` to see what is available."
            )
        readers = sorted((i for i in SOURCE_INFO.values() if i.from_folder is not None), key=lambda i: i.folder_order)
        for info in readers:
            if info.detect is None or info.detect(path):
                assert info.from_folder is not None
                return info.from_folder(path)
        raise TransferkitError(f"{path} is a folder no backbone source can read.")
    source, name, options = parse_spec(spec)
    if source not in SOURCES:
        raise TransferkitError(SOURCES.unknown_message(source))
    return SOURCES.get(source)(name, options)


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (False under HF_HUB_OFFLINE=1)."""
    import os

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class BackboneInfo:
    """One row of ``transferkit backbones``."""

    spec: str
    modality: str
    available: bool
    note: str


def list_backbones() -> list[BackboneInfo]:
    """What can be used here, as each source describes itself (every offline pack, installed or not and why; the
    hub sources and whether the hub answers), then the options every source takes."""
    _load_sources()

    rows = [row for info in sorted(SOURCE_INFO.values(), key=lambda i: i.list_order) for row in info.rows()]
    rows.append(BackboneInfo("<spec>?layer=N / ?init=random", "any", True, "cut after block N / random-init control"))
    return rows


def hub_note() -> tuple[bool, str]:
    """(hub reachable, the words a listing says about it)."""
    online = hub_reachable()
    return online, "hub reachable" if online else "hub not reachable here: only local folders work"
