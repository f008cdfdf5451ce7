"""What every proposer and recommender shares: the context they read and the frames they return.

A proposer answers "which q proxy runs next?", a recommender "which mixture now?". Both read a
``ProposalContext`` (domains, what has been observed, the posterior if there is one, the
user's constraints and objective) so that a study's ask/tell loop can swap them by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from bayesmix.acquisition.base import (
    MIN_DISTANCE,
    SAME_MIXTURE_L1,
    ProposalError,
    check_min_distance,
)
from bayesmix.mixtures import SUM_TOLERANCE, mixture_matrix
from bayesmix.observations import Observations, check_domain_name
from bayesmix.optimize import Constraints


@dataclass(frozen=True)
class ProposalContext:
    """Everything a proposer or recommender may read; all but ``domains`` is optional.

    domains: training domains, in the order of the ``r:<domain>`` columns returned.
    observations: the runs observed so far (None before the first batch).
    posterior: a fitted law posterior over the same domains (None if not fitted).
    constraints: bounds, repetition caps and minimum shares (``bm.Constraints``).
    natural: natural proportions p0 (domain -> share, summing to 1); uniform when None.
    weights: the objective's weights over targets (equal when None); lower is better.
    step: the step at which the objective is taken (None: the largest observed).
    model_size: the model size (parameters) the objective is for, where the law has a size
        axis (None: the largest observed).
    seed: seeds every random choice, so that a proposal can be reproduced.
    pending: mixtures proposed but not yet observed (``r:<domain>`` columns).
    candidates: a pool; when given, every proposal and recommendation is one of its rows.
    entropies: per-domain entropies in nats (BiMix's entropy proposer).
    min_distance: every proposer keeps each proposal at least this far (L1) from the other
        runs of its batch and from the observed and pending runs (``taken_array``); 0
        allows re-measuring a mixture.
    """

    domains: list[str]
    observations: Observations | None = None
    posterior: Any = None
    constraints: Constraints | None = None
    natural: Mapping[str, float] | None = None
    weights: Mapping[str, float] | None = None
    step: float | None = None
    model_size: float | None = None
    seed: int = 0
    pending: pd.DataFrame | None = None
    candidates: pd.DataFrame | None = None
    entropies: Mapping[str, float] | None = None
    min_distance: float = MIN_DISTANCE
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        domains = list(self.domains)
        if not domains:
            raise ProposalError("the context needs at least one training domain")
        for d in domains:
            check_domain_name(d, "ProposalContext.domains")
        if len(set(domains)) != len(domains):
            raise ProposalError(f"domains repeat: {domains}")
        object.__setattr__(self, "domains", domains)
        object.__setattr__(self, "min_distance", check_min_distance(self.min_distance))
        if self.observations is not None and self.observations.domains != domains:
            raise ProposalError(
                f"observations are over domains {self.observations.domains}, the context over "
                f"{domains}"
            )
        if self.posterior is not None and list(self.posterior.domains) != domains:
            raise ProposalError(
                f"the posterior is over domains {list(self.posterior.domains)}, the context "
                f"over {domains}"
            )
        if self.natural is not None:
            self.natural_vector()  # validates
        if self.pending is not None:
            mixture_matrix(self.pending, domains, "pending", ProposalError)
        if self.candidates is not None:
            if len(self.candidates) == 0:
                raise ProposalError("candidates: the pool is empty")
            mixture_matrix(self.candidates, domains, "candidates", ProposalError)

    # ------------------------------------------------------------------ derived arrays
    @property
    def m(self) -> int:
        return len(self.domains)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) per domain from the constraints; InfeasibleError when none fits."""
        if "bounds" not in self._cache:
            self._cache["bounds"] = (self.constraints or Constraints()).bounds(self.domains)
        return self._cache["bounds"]

    def natural_vector(self) -> np.ndarray:
        """p0 as an array over ``domains`` (uniform when not given)."""
        if self.natural is None:
            return np.full(self.m, 1.0 / self.m)
        unknown = [d for d in self.natural if d not in self.domains]
        if unknown:
            raise ProposalError(f"natural proportions name unknown domain(s): {unknown}")
        p = np.array([float(self.natural.get(d, 0.0)) for d in self.domains])
        if not np.all(np.isfinite(p)) or (p < 0).any():
            raise ProposalError("natural proportions must be finite and non-negative")
        if abs(p.sum() - 1.0) > SUM_TOLERANCE:
            raise ProposalError(f"natural proportions sum to {p.sum():.6g}, not 1")
        return p / p.sum()

    def observed_array(self) -> np.ndarray:
        """(N, M) mixtures of the observed runs (0 rows when none)."""
        if self.observations is None:
            return np.zeros((0, self.m))
        return self.observations.mixtures().to_numpy(dtype=float)

    def pending_array(self) -> np.ndarray:
        if self.pending is None or len(self.pending) == 0:
            return np.zeros((0, self.m))
        return mixture_matrix(self.pending, self.domains, "pending", ProposalError)

    def taken_array(self) -> np.ndarray:
        """Mixtures already observed or pending. Every proposer keeps its proposals at least
        ``min_distance`` (L1) from these and from each other; a pool row that is one of them
        is never proposed again."""
        return np.concatenate([self.observed_array(), self.pending_array()])

    def candidate_array(self) -> np.ndarray:
        """(C, M) pool mixtures, or 0 rows without a pool."""
        if self.candidates is None:
            return np.zeros((0, self.m))
        return mixture_matrix(self.candidates, self.domains, "candidates", ProposalError)

    def available_candidates(self) -> np.ndarray:
        """Positions (into ``candidates``) of pool rows at least ``min_distance`` from every
        observed or pending run (and never one of them)."""
        pool = self.candidate_array()
        taken = self.taken_array()
        if len(taken) == 0:
            return np.arange(len(pool))
        dist = np.abs(pool[:, None, :] - taken[None, :, :]).sum(-1).min(axis=1)
        return np.flatnonzero((dist > SAME_MIXTURE_L1) & (dist >= self.min_distance))

    def rng(self, salt: int = 0) -> np.random.Generator:
        """A generator that depends on the seed and on how much has been observed, so that
        successive batches of one study differ while the whole study stays reproducible."""
        n = len(self.observed_array()) + len(self.pending_array())
        return np.random.default_rng([self.seed, n, salt])


@runtime_checkable
class Proposer(Protocol):
    """Proposes the next q proxy runs."""

    name: str

    def propose(self, context: ProposalContext, q: int) -> pd.DataFrame:
        """One row per proposed run: ``r:<domain>`` columns summing to 1, and optionally
        ``steps``, ``acquisition_value``, ``expected_gain`` and (pool) ``candidate``."""
        ...


@runtime_checkable
class Recommender(Protocol):
    """Recommends the mixture to train the large model on, from what has been observed."""

    name: str

    def recommend(self, context: ProposalContext) -> pd.Series:
        """The recommended mixture: a Series indexed by domain, summing to 1."""
        ...


# ------------------------------------------------------------------------------ helpers
def mixture_series(r: np.ndarray, domains: list[str]) -> pd.Series:
    r = np.clip(np.asarray(r, dtype=float), 0.0, None)
    out = pd.Series(r / r.sum(), index=pd.Index(domains, name="domain"), name="share")
    return out
