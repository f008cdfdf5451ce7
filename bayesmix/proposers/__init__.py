"""Proposers (the next proxy runs) and recommenders (the mixture to train on), chosen by name.

    from bayesmix.proposers import ProposalContext, get_proposer, get_recommender
    ctx = ProposalContext(domains, observations=obs, posterior=post, natural=p0, seed=0)
    batch = get_proposer("bayesmix", acquisition="qlognei").propose(ctx, q=8)
    mixture = get_recommender("posterior-optimum").recommend(ctx)

Proposers: "bayesmix" (BoTorch over the law's posterior), "dirichlet-swarm" (Olmix),
"random-swarm" (RegMix), "uniform", "entropy" (BiMix). Recommenders: "posterior-optimum"
(ours), "olmix" (point log-linear law + 0.05 KL to the prior + caps), "regmix" (LightGBM +
simulate-and-pick). The registry is ``bayesmix.proposers.registry``.
"""

from __future__ import annotations

from bayesmix.acquisition.base import ProposalError
from bayesmix.proposers.base import ProposalContext, Proposer, Recommender
from bayesmix.proposers.registry import (
    POSTERIOR_FREE,
    PROPOSERS,
    RECOMMENDERS,
    get_proposer,
    get_recommender,
)

__all__ = [
    "POSTERIOR_FREE",
    "PROPOSERS",
    "RECOMMENDERS",
    "ProposalContext",
    "ProposalError",
    "Proposer",
    "Recommender",
    "get_proposer",
    "get_recommender",
]
