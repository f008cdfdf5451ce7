"""The ``bayesmix`` proposer: BoTorch acquisition over the law's posterior.

Before any run is observed there is no posterior, so the first batch comes from a
posterior-free design (the Olmix swarm by default). Afterwards the posterior in the context
is used, or one is fitted to the context's observations (law and method configurable; pass
``fit_options={"method": "nuts"}`` for exact intervals, the default Laplace approximation
is what keeps refits between batches cheap). ``law="average"`` fits the candidate laws by
NUTS and weights them by held-out fit (``bm.average_laws``; ``fit_options`` go to it): the
proposals are over every law's draws, the recommendation is the chosen law's. It is fitted
even when the context holds one law's posterior (a study passes its own fit), unless that
posterior already is a ``LawAverage``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bayesmix.acquisition import ACQUISITIONS
from bayesmix.acquisition.base import ProposalError, check_q
from bayesmix.acquisition.proposal import propose
from bayesmix.inference import fit
from bayesmix.law_average import LawAverage
from bayesmix.proposers.base import ProposalContext
from bayesmix.proposers.registry import POSTERIOR_FREE, get_proposer
from bayesmix.selection import average_laws

AVERAGE_OF_LAWS = "average"


def fit_posterior(
    context: ProposalContext, law: str | None, fit_options: dict[str, Any] | None = None
) -> Any:
    """The context's posterior, or one fitted to its observations (None without any): a
    ``LawAverage`` for ``law="average"``."""
    averaged = isinstance(context.posterior, LawAverage)
    if context.posterior is not None and (law != AVERAGE_OF_LAWS or averaged):
        return context.posterior
    if context.observations is None:
        return None
    if "posterior" not in context._cache:
        if law == AVERAGE_OF_LAWS:
            context._cache["posterior"] = average_laws(
                context.observations, seed=context.seed, **(fit_options or {})
            )
            return context._cache["posterior"]
        options = {"method": "laplace", "progress": False, **(fit_options or {})}
        context._cache["posterior"] = fit(
            context.observations, law=law, seed=context.seed, **options
        )
    return context._cache["posterior"]


@dataclass
class BayesMixProposer:
    """Acquisition over the posterior of a data-mixing law (``bayesmix.acquisition``).

    acquisition: "optimum-variance" (default: it beat Thompson sampling in
    studies/active_learning and studies/domain_updates), "thompson" or "qlognei".
    law, fit_options: how to fit a posterior when the context has none (a law name, or
    "average": see the module docstring).
    initial: the posterior-free proposer for the first batch.
    max_draws: ensemble size; discrepancy: add a GP residual term to the ensemble.
    run_lengths, checkpoints: let optimum-variance choose each run's length (steps) from
    ``run_lengths``, spending the compute of q target-length runs
    (``bayesmix.acquisition.propose``); None: every run has the target length.
    model_sizes, tokens, max_runs: let optimum-variance choose each run's model size
    (parameters) too, for the most variance of the optimum at the context's ``model_size``
    removed per FLOP; tokens: what a run trains where the law has no step axis.
    """

    acquisition: str = "optimum-variance"
    law: str | None = None
    fit_options: dict[str, Any] = field(default_factory=dict)
    initial: str = "dirichlet-swarm"
    max_draws: int = 256
    discrepancy: bool = False
    settings: Any = None
    run_lengths: tuple[float, ...] | None = None
    checkpoints: int = 4
    model_sizes: tuple[float, ...] | None = None
    tokens: float | None = None
    max_runs: int | None = None
    name: str = "bayesmix"

    def __post_init__(self) -> None:
        if self.acquisition not in ACQUISITIONS:
            raise ProposalError(
                f"unknown acquisition {self.acquisition!r}; choose one of {', '.join(ACQUISITIONS)}"
            )
        if self.initial not in POSTERIOR_FREE:
            raise ProposalError(
                f"initial: the first batch needs a proposer without a posterior, one of "
                f"{', '.join(POSTERIOR_FREE)} (got {self.initial!r})"
            )

    def propose(self, context: ProposalContext, q: int) -> pd.DataFrame:
        q = check_q(q)
        post = fit_posterior(context, self.law, self.fit_options)
        if post is None:
            return get_proposer(self.initial).propose(context, q)
        return propose(
            post,
            q,
            self.acquisition,
            weights=context.weights,
            step=context.step,
            constraints=context.constraints,
            pending=context.pending,
            candidates=context.candidates,
            seed=context.seed,
            max_draws=self.max_draws,
            discrepancy=self.discrepancy,
            settings=self.settings,
            run_lengths=self.run_lengths,
            checkpoints=self.checkpoints,
            min_distance=context.min_distance,
            model_size=context.model_size,
            model_sizes=self.model_sizes,
            tokens=self.tokens,
            max_runs=self.max_runs,
        )
