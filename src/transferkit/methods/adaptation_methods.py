"""The domain-adaptation methods by name, with their grids (no torch: the command line's help is built from it)."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry


@dataclass(frozen=True)
class AdaptMethod:
    """An adaptation method as the registry knows it: what it does, the hyperparameter its grid tries, and which
    selection criteria cannot see its effect (they score it as the source-only model)."""

    name: str
    description: str
    grid: tuple[float, ...] = (0.0,)
    param: str | None = None
    """Name of the grid's hyperparameter in the report (None: the method has none)."""
    blind_to: frozenset[str] = frozenset()


ADAPTATION_METHODS: Registry[AdaptMethod] = Registry("adaptation method")
for _m in (
    AdaptMethod("source-only", "the adapter trained on source labels alone: the baseline every method must beat"),
    AdaptMethod("dann", "domain-adversarial training (gradient reversal against a domain classifier)",
                (0.3, 1.0, 3.0), "weight"),
    # the CORAL loss is divided by 4 h^2 (h = 256): small in absolute terms, hence the large weights
    AdaptMethod("coral", "CORAL: align the second moments of source and target features", (1e2, 1e3, 1e4), "weight"),
    AdaptMethod("adabn", "standardise target features with target statistics (AdaBN-style)",
                blind_to=frozenset({"dev", "source-val"})),
    AdaptMethod("label-shift", "re-weight the classes by the target prior estimated with EM",
                blind_to=frozenset({"dev", "source-val", "im"})),
    AdaptMethod("self-training", "confident target pseudo-labels, a few rounds from the source-only model",
                (0.9, 0.7), "threshold"),
):
    ADAPTATION_METHODS.register(_m.name)(_m)

METHODS = ADAPTATION_METHODS.names()
"""Every method, the baseline first."""
ADAPTING = METHODS[1:]
"""The methods that adapt (all but the source-only baseline): what ``adapt`` runs by default."""
GRIDS: dict[str, tuple[float, ...]] = {m: ADAPTATION_METHODS.get(m).grid for m in METHODS}
"""Each method's hyperparameter grid: the DANN and CORAL weight, the self-training confidence threshold."""
