"""Data-mixing laws as NumPyro models, chosen by name.

The package imports lazily: ``bayesmix.laws.formulas`` (numpy / torch formulas used by the
proxy and acquisition code) must not pull in JAX and NumPyro.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from bayesmix.laws.base import Law
    from bayesmix.laws.noise import Noise

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
    "cross-scaling": ("bayesmix.laws.scaling", "CrossScaling"),
    "additive": ("bayesmix.laws.additive", "Additive"),
}
LAW_NAMES = tuple(_LAWS)
# Observation-noise models (``bayesmix.laws.noise``), chosen by ``LawSettings.noise``.
_NOISES = {
    "correlated": ("bayesmix.laws.noise", "Correlated"),
    "normal": ("bayesmix.laws.noise", "Normal"),
    "student": ("bayesmix.laws.noise", "Student"),
}
NOISE_NAMES = tuple(_NOISES)


def distinct_mixtures(r: np.ndarray) -> int:
    """How many different mixtures the rows of ``r`` (runs x domains) hold, to 1e-6."""
    return len(np.unique(np.round(r, 6), axis=0))


def runs_to_identify(n_domains: int) -> int:
    """Distinct mixtures a law with an exponent per domain for every target needs before it
    cannot pass through every run: twice its M + 1 coefficients per target."""
    return 2 * (n_domains + 1)


def default_law(obs: Any) -> str:
    """The law fitted where none is named.

    - Runs of several model sizes: Shukor et al.'s additive law of mixture, size and tokens
      ("additive"), which predicted held-out RegMix 60M runs from 1M ones better than the
      cross law with a size axis ("cross-scaling"; studies/scaling_laws).
    - Few runs of final losses only (below ``runs_to_identify`` distinct mixtures, one
      evaluation per run) where some training domain has no target of its own and every
      target has one: own-share BiMix ("bimix"). The cross law values a domain no target
      measures only through its cross exponents, which so few runs cannot identify (its
      M + 1 coefficients per target can pass through every run): on the RegMix landscape
      (17 domains, 13 targets) its optimum at 18 runs gave such domains shares no run
      supported and starved measured ones, regret 0.14 against 0.055 by the own-share law,
      which keeps unmeasured domains at their lower bound (studies/study_defaults). Where
      every domain is measured the shrunk cross law is right from m + 1 runs (7-domain cross
      worlds: 0.011 against 0.052), and a run's curve (several evaluations) pins the noise
      where the mixtures cannot (studies/first_batch).
    - Otherwise the cross-domain law under shrinkage ("bimix-cross"), which falls back to
      own-share BiMix where the data show no cross effect and is right on real cross-domain
      data where BiMix is not (DESIGN.md).
    """
    if obs.has_sizes:
        return "additive"
    mixtures = obs.mixtures().to_numpy(dtype=float)
    distinct = distinct_mixtures(mixtures)
    curves = bool((obs.frame.groupby("run_id")["step"].nunique() > 1).any())
    every_target_owned = set(obs.targets) <= set(obs.target_domain)
    unmeasured = set(obs.domains) - set(obs.target_domain.values())
    few = not curves and distinct < runs_to_identify(mixtures.shape[1])
    if few and every_target_owned and unmeasured:
        return "bimix"
    return "bimix-cross"


def get_law(name: str) -> Law:
    """The law registered under ``name`` (one of ``LAW_NAMES``)."""
    from bayesmix import jax_setup  # noqa: F401  (XLA flags and float64 before any computation)
    from bayesmix.laws.base import LawError

    if name not in _LAWS:
        raise LawError(f"unknown law {name!r}; choose one of {', '.join(_LAWS)}")
    module, cls = _LAWS[name]
    return getattr(importlib.import_module(module), cls)()


def register_law(law: type[Law]) -> None:
    """Register a law class (the ``Law`` protocol) under its ``name``, for a law defined
    outside this package: ``fit``, ``get_law`` and saved posteriors then find it by name.
    The class must be importable from its module under its name."""
    global LAW_NAMES
    _LAWS[law.name] = (law.__module__, law.__qualname__)
    LAW_NAMES = tuple(_LAWS)


def get_noise(name: str) -> Noise:
    """The observation-noise model registered under ``name`` (one of ``NOISE_NAMES``)."""
    from bayesmix import jax_setup  # noqa: F401  (XLA flags and float64 before any computation)
    from bayesmix.laws.base import LawError

    if name not in _NOISES:
        raise LawError(f"noise must be one of {', '.join(_NOISES)}, got {name!r}")
    module, cls = _NOISES[name]
    return getattr(importlib.import_module(module), cls)()


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bayesmix.laws' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    *_LAZY,
    "LAW_NAMES",
    "NOISE_NAMES",
    "default_law",
    "distinct_mixtures",
    "runs_to_identify",
    "get_law",
    "get_noise",
    "register_law",
]
