"""Optimal mixtures already computed, kept per fitted posterior.

A study asks for a posterior's optimum twice per batch: for the recommendation, then for
the per-draw optima that Thompson sampling and optimum-variance start from. Each costs
seconds to minutes, so both read ``OPTIMA``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Mapping
from typing import Any


class OptimaCache:
    """Values computed for a fitted object (a ``Posterior`` or a ``LawAverage``), by key.

    Keyed by the object's identity: posteriors are mutable dataclasses, so not hashable. An
    object's entries are dropped when it is garbage-collected (``weakref.finalize``), so a
    new object at the same address starts empty.
    """

    def __init__(self) -> None:
        self._entries: dict[int, dict[Hashable, Any]] = {}

    def get(self, fitted: Any, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value for (fitted, key), computed by ``compute()`` the first time."""
        entries = self._entries.get(id(fitted))
        if entries is None:
            entries = self._entries[id(fitted)] = {}
            weakref.finalize(fitted, self._entries.pop, id(fitted), None)
        if key not in entries:
            entries[key] = compute()
        return entries[key]

    def clear(self, fitted: Any = None) -> None:
        """Forget what was computed for ``fitted`` (for every object when None)."""
        if fitted is None:
            self._entries.clear()
        else:
            self._entries.pop(id(fitted), None)


OPTIMA = OptimaCache()


def settings_key(
    weights: Mapping[str, float] | None, step: float | None, constraints: Any, *rest: Any
) -> tuple[Any, ...]:
    """A hashable key for an optimum's settings (weights and constraints are mappings)."""
    return (repr(sorted((weights or {}).items())), step, repr(constraints), *rest)


def posterior_optimum(
    posterior: Any,
    weights: Mapping[str, float] | None,
    step: float | None,
    constraints: Any,
    max_draws: int | None,
    *,
    ci: float = 0.9,
    strict: bool = False,
    model_size: float | None = None,
) -> Any:
    """``posterior.optimal_mixture(...)``, computed once per posterior and settings."""
    return OPTIMA.get(
        posterior,
        settings_key(weights, step, constraints, max_draws, ci, strict, model_size),
        lambda: posterior.optimal_mixture(
            weights=weights,
            step=step,
            constraints=constraints,
            ci=ci,
            max_draws=max_draws,
            strict=strict,
            model_size=model_size,
        ),
    )
