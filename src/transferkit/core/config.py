"""Config dataclasses that check themselves when built: each field against its type annotation (int, float, bool,
str, Literal[...], X | None, tuple[X, ...], any class, nested) and the rules in its ``field(metadata=...)``:

- ``min`` / ``max``: value >= min / value <= max; ``gt`` / ``lt``: value > gt / value < lt (each number of a tuple);
- ``nonempty``: not None and not of length 0; ``check``: a function of the value that raises TransferkitError;
- ``message``: the phrase said instead of the generic one when a rule or a Literal's choices fail (str.format
  fields: name, value, choices).

A config's ``__post_init__`` calls ``validate_config``; every bad option is named in one sentence.
"""

from __future__ import annotations

import difflib
import math
import numbers
import types
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ..errors import TransferkitError

_HINTS: dict[type, dict[str, Any]] = {}


class _Mismatch(Exception):
    """A value does not fit a type annotation."""


class _Problem(Exception):
    """One bad option: the phrase that says so."""


def validate_config(config: Any, strategy: str) -> None:
    """Check every field of a config dataclass instance (its ``__post_init__`` calls this); lists given for tuple
    fields become tuples. Raises one ``TransferkitError`` naming every bad option."""
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    for name, value in check_options(type(config), values, strategy).items():
        if value is not values[name]:
            object.__setattr__(config, name, value)


def check_options(cls: type, options: Mapping[str, Any], strategy: str) -> dict[str, Any]:
    """``options`` (names of ``cls``'s fields) checked against the fields' types and rules, lists made tuples where
    the field is a tuple; a ``TransferkitError`` says what is wrong with each bad one and what it should be."""
    hints = _type_hints(cls)
    meta = {f.name: f.metadata for f in fields(cls)}
    checked: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in options.items():
        try:
            checked[name] = _check_option(name, value, hints.get(name, Any), meta.get(name, {}))
        except _Problem as e:
            problems.append(str(e))
    if problems:
        raise TransferkitError(f"Strategy {strategy!r}: {'; '.join(problems)}.")
    return checked


def _type_hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        try:
            _HINTS[cls] = get_type_hints(cls)
        except (NameError, TypeError):  # an annotation that cannot be resolved is not checked
            _HINTS[cls] = {}
    return _HINTS[cls]


def _check_option(name: str, value: Any, tp: Any, rules: Mapping[str, Any]) -> Any:
    """``value`` conformed to ``tp`` and checked against ``rules``, or ``_Problem`` with the phrase."""
    message = rules.get("message")
    choices = _choices(tp)

    def say(generic: str) -> _Problem:
        text = message.format(name=name, value=value, choices=", ".join(choices)) if message else generic
        close = difflib.get_close_matches(value, choices, n=1) if isinstance(value, str) and choices else []
        return _Problem(text + (f" (did you mean {close[0]!r}?)" if close else ""))

    if rules.get("nonempty") and (value is None or (hasattr(value, "__len__") and len(value) == 0)):
        raise say(f"{name} must not be empty, got {_show(value)}")
    try:
        out = _conform(value, tp)
    except _Mismatch:
        if choices:
            raise say(f"{name}={_show(value)} is not one of {', '.join(choices)}") from None
        raise _Problem(f"{name} must be {_describe(tp)}, got {_show(value)}") from None
    bounds = {k: rules[k] for k in ("min", "gt", "max", "lt") if k in rules}
    if bounds:
        numbers_in = [v for v in (out if isinstance(out, tuple) else (out,)) if _is_number(v)]
        if not all(_within(v, bounds) for v in numbers_in):
            which = "values" if isinstance(out, tuple) else ""
            raise say(f"{name}{' ' + which if which else ''} must {_bounds_phrase(bounds)}, got {_show(value)}")
    if rules.get("check") is not None and out is not None:
        try:
            rules["check"](out)
        except TransferkitError as e:
            raise _Problem(str(e).rstrip(".")) from None
    return out


def _conform(value: Any, tp: Any) -> Any:
    """``value`` as an instance of annotation ``tp`` (a list or tuple becomes a tuple), or ``_Mismatch``."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if tp is None or tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Mismatch
    if origin is Union or origin is types.UnionType:
        for a in sorted(args, key=lambda a: a is not type(None)):  # None first: it fits only None
            try:
                return _conform(value, a)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_conform(v, args[0]) for v in value)
        if args and len(args) != len(value):
            raise _Mismatch
        return tuple(_conform(v, a) for a, v in zip(args, value, strict=True)) if args else tuple(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if _is_number(value) and not math.isnan(value):
            return value
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value  # another typing construct: not checked


def _choices(tp: Any) -> list[str]:
    """The string choices of a ``Literal`` annotation (also inside ``X | None``); empty for other types."""
    if get_origin(tp) is Literal:
        return [str(a) for a in get_args(tp)]
    if get_origin(tp) in (Union, types.UnionType):
        return [c for a in get_args(tp) for c in _choices(a)]
    return []


def _describe(tp: Any, plural: bool = False) -> str:
    """What an annotation expects, in words: 'a whole number', 'a list of numbers or None', ..."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is None or tp is type(None):
        return "None"
    if origin is Literal:
        return f"one of {', '.join(str(a) for a in args)}"
    if origin is Union or origin is types.UnionType:
        return " or ".join(_describe(a, plural) for a in args)
    if origin is tuple:
        items = args[0] if len(args) == 2 and args[1] is Ellipsis else Any
        return ("lists of " if plural else "a list of ") + _describe(items, plural=True)
    words = {bool: ("true or false", "true/false values"), int: ("a whole number", "whole numbers"),
             float: ("a number", "numbers"), str: ("a string", "strings"), Any: ("anything", "values")}
    if tp in words:
        return words[tp][plural]
    name = getattr(tp, "__name__", str(tp))
    return f"{name} values" if plural else f"a {name}"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _within(v: float, bounds: Mapping[str, float]) -> bool:
    checks = {"min": lambda b: v >= b, "gt": lambda b: v > b, "max": lambda b: v <= b, "lt": lambda b: v < b}
    return all(checks[k](b) for k, b in bounds.items())


def _bounds_phrase(bounds: Mapping[str, float]) -> str:
    """'be positive', 'be at least 1', 'lie between 0 and 1', 'be above 0 and at most 1', ..."""
    if "min" in bounds and "max" in bounds:
        return f"lie between {bounds['min']:g} and {bounds['max']:g}"
    lower = upper = ""
    if "gt" in bounds:
        lower = "positive" if bounds["gt"] == 0 else f"above {bounds['gt']:g}"
    elif "min" in bounds:
        lower = f"at least {bounds['min']:g}"
    if "lt" in bounds:
        upper = f"below {bounds['lt']:g}"
    elif "max" in bounds:
        upper = f"at most {bounds['max']:g}"
    if lower == "at least 0" and not upper:
        return "not be negative"
    return "be " + " and ".join(p for p in (lower, upper) if p)


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
