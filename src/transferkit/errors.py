"""Exceptions that carry one clear sentence for the user."""

from __future__ import annotations


class TransferkitError(ValueError):
    """Base class: bad input or configuration, with a message that says what and how to fix."""


class DataError(TransferkitError):
    """The data given cannot be used (missing file, bad column, corrupt image, ...)."""


class BackboneUnavailableError(TransferkitError):
    """A backbone spec is valid but its weights cannot be had here (pack not installed, hub offline)."""


class NotFittedError(TransferkitError):
    """A model was used before it was trained or loaded."""
