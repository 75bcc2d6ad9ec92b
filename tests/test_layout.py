"""The house rule: workflows -> strategies -> methods -> core -> backbones / data -> errors and friends.

Every import inside the package (top-level or inside a function, relative or absolute) may only reach its own
layer or a lower one; backbones and data do not import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import transferkit

PACKAGE = Path(transferkit.__file__).parent
LAYERS = {
    "errors": 0, "registry": 0, "_files": 0, "_version": 0, "_images": 0, "_labels": 0, "onnx_runtime": 0,
    "backbones": 1, "data": 1,
    "core": 2,
    "methods": 3,
    "strategies": 4,
    "workflows": 5,
    "cli": 6, "__init__": 6,
}


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return parts


def _imports(path: Path) -> list[tuple[int, list[str]]]:
    """(line, target module parts inside the package) for every import in ``path``."""
    parts = _module_name(path)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + (node.module.split(".") if node.module else [])
                if not node.module:  # from . import a, b: each name is a submodule
                    found += [(node.lineno, target + [a.name]) for a in node.names]
                    continue
                found.append((node.lineno, target))
            elif node.module and node.module.split(".")[0] == "transferkit":
                found.append((node.lineno, node.module.split(".")[1:]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "transferkit"]
    return found


def _layer(parts: list[str]) -> tuple[int, str]:
    top = parts[0] if parts else "__init__"
    assert top in LAYERS, f"{'.'.join(parts)} belongs to no layer: add it to LAYERS in {__file__}"
    return LAYERS[top], top


def test_every_module_belongs_to_a_layer_and_imports_only_downwards():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40
    bad = []
    for path in files:
        own, own_top = _layer(_module_name(path))
        for line, target in _imports(path):
            if not target:
                continue
            theirs, their_top = _layer(target)
            sideways = own == theirs == 1 and own_top != their_top
            if theirs > own or sideways:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {'.'.join(target)}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_the_package_root_holds_only_the_api_and_the_foundations():
    root = sorted(p.stem for p in PACKAGE.glob("*.py"))
    # foundations without torch (the image loader, the label mapping) and the ONNX runner built only on them
    assert root == ["__init__", "_files", "_images", "_labels", "_version", "cli", "errors", "onnx_runtime",
                    "registry"]
