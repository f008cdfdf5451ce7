"""Proposers (the next proxy runs) and recommenders (the mixture to train on), chosen by name.

    from bayesmix.proposers import ProposalContext, get_proposer, get_recommender
    ctx = ProposalContext(domains, observations=obs, posterior=post, natural=p0, seed=0)
    batch = get_proposer("bayesmix", acquisition="qlognei").propose(ctx, q=8)
    mixture = get_recommender("posterior-optimum").recommend(ctx)

Proposers: "bayesmix" (BoTorch over the law's posterior), "dirichlet-swarm" (Olmix),
"random-swarm" (RegMix), "uniform", "entropy" (BiMix). Recommenders: "posterior-optimum"
(ours), "olmix" (point log-linear law + 0.05 KL to the prior + caps), "regmix" (LightGBM +
simulate-and-pick).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bayesmix.proposers.base import (
    ProposalContext,
    ProposalError,
    Proposer,
    Recommender,
)


def _bayesmix(**options: Any) -> Proposer:
    from bayesmix.proposers.bayesian import BayesMixProposer

    return BayesMixProposer(**options)


def _dirichlet(**options: Any) -> Proposer:
    from bayesmix.proposers.swarms import OlmixSwarm

    return OlmixSwarm(**options)


def _random(**options: Any) -> Proposer:
    from bayesmix.proposers.swarms import regmix_swarm

    return regmix_swarm(**options)


def _uniform(**options: Any) -> Proposer:
    from bayesmix.proposers.swarms import UniformSwarm

    return UniformSwarm(**options)


def _entropy(**options: Any) -> Proposer:
    from bayesmix.proposers.swarms import EntropySwarm

    return EntropySwarm(**options)


def _posterior_optimum(**options: Any) -> Recommender:
    from bayesmix.proposers.recommenders import PosteriorOptimum

    return PosteriorOptimum(**options)


def _olmix(**options: Any) -> Recommender:
    from bayesmix.proposers.recommenders import OlmixRecommender

    return OlmixRecommender(**options)


def _regmix(**options: Any) -> Recommender:
    from bayesmix.proposers.recommenders import RegMixRecommender

    return RegMixRecommender(**options)


PROPOSERS: dict[str, Callable[..., Proposer]] = {
    "bayesmix": _bayesmix,
    "dirichlet-swarm": _dirichlet,
    "random-swarm": _random,
    "uniform": _uniform,
    "entropy": _entropy,
}

RECOMMENDERS: dict[str, Callable[..., Recommender]] = {
    "posterior-optimum": _posterior_optimum,
    "olmix": _olmix,
    "regmix": _regmix,
}


def get_proposer(name: str, **options: Any) -> Proposer:
    """The proposer registered under ``name``, built with ``options``."""
    try:
        factory = PROPOSERS[name]
    except KeyError:
        raise ProposalError(
            f"unknown proposer {name!r}; choose one of {', '.join(PROPOSERS)}"
        ) from None
    try:
        return factory(**options)
    except TypeError as exc:
        raise ProposalError(f"proposer {name!r}: {exc}") from None


def get_recommender(name: str, **options: Any) -> Recommender:
    """The recommender registered under ``name``, built with ``options``."""
    try:
        factory = RECOMMENDERS[name]
    except KeyError:
        raise ProposalError(
            f"unknown recommender {name!r}; choose one of {', '.join(RECOMMENDERS)}"
        ) from None
    try:
        return factory(**options)
    except TypeError as exc:
        raise ProposalError(f"recommender {name!r}: {exc}") from None


__all__ = [
    "PROPOSERS",
    "RECOMMENDERS",
    "ProposalContext",
    "ProposalError",
    "Proposer",
    "Recommender",
    "get_proposer",
    "get_recommender",
]
