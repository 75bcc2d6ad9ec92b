"""A small name -> factory registry with did-you-mean errors (in the spirit of timm's model registry)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import TransferkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; a duplicate or unknown name raises with the list of known names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise TransferkitError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered as ``name``."""
        try:
            return self._items[name]
        except KeyError:
            raise TransferkitError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = sorted(self._items)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"Unknown {self.kind} {name!r}.{hint} Known: {', '.join(known)}."

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> tuple[str, ...]:
        """The registered names in registration order (the order a listing shows them in)."""
        return tuple(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())
