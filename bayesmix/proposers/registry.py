"""Proposers and recommenders by name.

Each name maps to (module, attribute): a class or factory built with the user's options,
imported only when asked for (as ``bayesmix.laws`` does), so that reading the names (the
study config, the CLI) imports neither JAX nor torch. A new proposer is one file and one
line here.
"""

from __future__ import annotations

import importlib
from typing import Any

from bayesmix.acquisition.base import ProposalError
from bayesmix.proposers.base import Proposer, Recommender

_PROPOSERS = {
    "bayesmix": ("bayesmix.proposers.bayesian", "BayesMixProposer"),
    "dirichlet-swarm": ("bayesmix.proposers.swarms", "OlmixSwarm"),
    "random-swarm": ("bayesmix.proposers.swarms", "regmix_swarm"),
    "uniform": ("bayesmix.proposers.swarms", "UniformSwarm"),
    "entropy": ("bayesmix.proposers.swarms", "EntropySwarm"),
    "d-optimal": ("bayesmix.proposers.designs", "DOptimalDesign"),
}
_RECOMMENDERS = {
    "posterior-optimum": ("bayesmix.proposers.recommenders", "PosteriorOptimum"),
    "olmix": ("bayesmix.proposers.recommenders", "OlmixRecommender"),
    "regmix": ("bayesmix.proposers.recommenders", "RegMixRecommender"),
}
PROPOSERS = tuple(_PROPOSERS)
RECOMMENDERS = tuple(_RECOMMENDERS)
# The proposers that need no posterior: the first batch comes from one of them.
POSTERIOR_FREE = ("dirichlet-swarm", "random-swarm", "uniform", "entropy", "d-optimal")


def get_proposer(name: str, **options: Any) -> Proposer:
    """The proposer registered under ``name``, built with ``options``."""
    return _build("proposer", _PROPOSERS, name, options)


def get_recommender(name: str, **options: Any) -> Recommender:
    """The recommender registered under ``name``, built with ``options``."""
    return _build("recommender", _RECOMMENDERS, name, options)


def _build(kind: str, registry: dict[str, tuple[str, str]], name: str, options: Any) -> Any:
    if name not in registry:
        raise ProposalError(f"unknown {kind} {name!r}; choose one of {', '.join(registry)}")
    module, attribute = registry[name]
    factory = getattr(importlib.import_module(module), attribute)
    try:
        return factory(**options)
    except TypeError as exc:
        raise ProposalError(f"{kind} {name!r}: {exc}") from None
