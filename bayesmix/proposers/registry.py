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

# name -> (module, attribute, posterior-free): a posterior-free proposer needs no fitted law,
# so the first batch (no observations yet) comes from one of them.
_PROPOSERS = {
    "bayesmix": ("bayesmix.proposers.bayesian", "BayesMixProposer", False),
    "dirichlet-swarm": ("bayesmix.proposers.swarms", "OlmixSwarm", True),
    "random-swarm": ("bayesmix.proposers.swarms", "regmix_swarm", True),
    "uniform": ("bayesmix.proposers.swarms", "UniformSwarm", True),
    "entropy": ("bayesmix.proposers.swarms", "EntropySwarm", True),
    "d-optimal": ("bayesmix.proposers.designs", "DOptimalDesign", True),
}
_RECOMMENDERS = {
    "posterior-optimum": ("bayesmix.proposers.recommenders", "PosteriorOptimum"),
    "olmix": ("bayesmix.proposers.recommenders", "OlmixRecommender"),
    "regmix": ("bayesmix.proposers.recommenders", "RegMixRecommender"),
}
PROPOSERS = tuple(_PROPOSERS)
RECOMMENDERS = tuple(_RECOMMENDERS)
POSTERIOR_FREE = tuple(name for name, (*_, free) in _PROPOSERS.items() if free)


def get_proposer(name: str, **options: Any) -> Proposer:
    """The proposer registered under ``name``, built with ``options``."""
    return _build("proposer", _PROPOSERS, name, options)


def get_recommender(name: str, **options: Any) -> Recommender:
    """The recommender registered under ``name``, built with ``options``."""
    return _build("recommender", _RECOMMENDERS, name, options)


def _build(kind: str, registry: dict[str, tuple[Any, ...]], name: str, options: Any) -> Any:
    if name not in registry:
        raise ProposalError(f"unknown {kind} {name!r}; choose one of {', '.join(registry)}")
    module, attribute = registry[name][:2]
    factory = getattr(importlib.import_module(module), attribute)
    try:
        return factory(**options)
    except TypeError as exc:
        raise ProposalError(f"{kind} {name!r}: {exc}") from None
