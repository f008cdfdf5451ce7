"""Data-mixing laws as NumPyro models, chosen by name.

The package imports lazily: ``bayesmix.laws.formulas`` (numpy / torch formulas used by the
proxy and acquisition code) must not pull in JAX and NumPyro.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bayesmix.laws.base import Law

_LAZY = {
    "Law": "bayesmix.laws.base",
    "LawData": "bayesmix.laws.base",
    "LawError": "bayesmix.laws.base",
    "LawSettings": "bayesmix.laws.base",
    "Prior": "bayesmix.laws.base",
}
_LAWS = {
    "bimix": ("bayesmix.laws.bimix", "BiMix"),
    "bimix-cross": ("bayesmix.laws.bimix", "BiMixCross"),
    "loglinear": ("bayesmix.laws.loglinear", "LogLinear"),
}
LAW_NAMES = tuple(_LAWS)


def get_law(name: str) -> Law:
    """The law registered under ``name`` ("bimix", "bimix-cross", "loglinear")."""
    from bayesmix import jax_setup  # noqa: F401  (XLA flags and float64 before any computation)
    from bayesmix.laws.base import LawError

    if name not in _LAWS:
        raise LawError(f"unknown law {name!r}; choose one of {', '.join(_LAWS)}")
    module, cls = _LAWS[name]
    return getattr(importlib.import_module(module), cls)()


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bayesmix.laws' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [*_LAZY, "LAW_NAMES", "get_law"]
