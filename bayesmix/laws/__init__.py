"""Data-mixing laws as NumPyro models, chosen by name."""

from __future__ import annotations

from bayesmix import jax_setup  # noqa: F401  (XLA flags and float64 before any computation)
from bayesmix.laws.base import Law, LawData, LawError, LawSettings, Prior
from bayesmix.laws.bimix import BiMix, BiMixCross
from bayesmix.laws.loglinear import LogLinear

LAWS: dict[str, type] = {"bimix": BiMix, "bimix-cross": BiMixCross, "loglinear": LogLinear}


def get_law(name: str) -> Law:
    """The law registered under ``name`` ("bimix", "bimix-cross", "loglinear")."""
    try:
        return LAWS[name]()
    except KeyError:
        raise LawError(f"unknown law {name!r}; choose one of {', '.join(LAWS)}") from None


__all__ = ["LAWS", "Law", "LawData", "LawError", "LawSettings", "Prior", "get_law"]
