"""Posterior-free proposers: the random swarms of Olmix and RegMix, uniform, and BiMix's entropy.

Each draws mixtures from a distribution over the simplex, keeps those inside the user's
bounds (rejection, as both Olmix and RegMix do, with a projection as the last resort when the
bounds are too tight for rejection to succeed), and zeroes shares too small to matter.

- ``dirichlet-swarm`` (Olmix, allenai/olmix ``generate``): r ~ Dir(s p0^T), p0 the natural
  proportions, one strength s drawn per run from 15 log-spaced values in [0.1, 5]; sparse
  (default) zeroes shares below 0.002, dense draws strengths in [m, 10 m] and keeps every
  domain.
- ``random-swarm`` (RegMix, sail-sg/regmix ``synthesize_mixture.py``): the same Dirichlet
  scheme with the prior tempered to p0^0.5, at most 15 times p0_j per domain, shares below
  2e-4 zeroed.
- ``uniform``: r ~ Dir(1, ..., 1), uniform over the simplex.
- ``entropy`` (BiMix): first softmax(H) of per-domain entropies H, then a sparse Dirichlet
  swarm centred on it (BiMix gives one mixture per entropy kind; a batch needs more).

Every proposal lies at least ``context.min_distance`` (L1) from the observed and pending
runs and from the batch's other proposals (``distinct_rows``): draws too close are dropped.
With a pool (``context.candidates``), each draw is replaced by the nearest (L1) pool row that
far from every observed, pending or already picked run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesmix.acquisition.base import (
    SAME_MIXTURE_L1,
    ProposalError,
    check_q,
    distinct_rows,
    proposal_frame,
    too_few_distinct,
)
from bayesmix.optimize import project_to_box_simplex
from bayesmix.proposers.base import ProposalContext
from bayesmix.proxy.data import Manifest
from bayesmix.proxy.entropy import ENTROPY_KINDS, domain_entropies

BOUND_TOLERANCE = 1e-9
MAX_REJECTION_ROUNDS = 50


def _strengths(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """One Dirichlet strength per draw among 15 log-spaced values (Olmix and RegMix)."""
    grid = np.logspace(np.log10(low), np.log10(high), 15)
    return rng.choice(grid, size=n)


def _dirichlet(rng: np.random.Generator, centre: np.ndarray, strengths: np.ndarray) -> np.ndarray:
    # Tiny concentrations underflow to exact zeros in numpy's gamma sampler; a floor keeps
    # every row a valid mixture while still letting most of its mass sit on a few domains.
    conc = np.maximum(strengths[:, None] * centre[None, :], 1e-3)
    g = rng.gamma(conc)
    total = g.sum(axis=1, keepdims=True)
    out = np.where(total > 0, g / np.where(total > 0, total, 1.0), centre[None, :])
    return out


def _zero_small(r: np.ndarray, minimum: float, lo: np.ndarray) -> np.ndarray:
    """Zero shares below ``minimum`` (never below a domain's lower bound), renormalise."""
    if minimum <= 0:
        return r
    keep = (r >= minimum) | (lo[None, :] > 0)
    out = np.where(keep, r, 0.0)
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 0, out / np.where(total > 0, total, 1.0), r)


def _inside(r: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return ((r >= lo - BOUND_TOLERANCE) & (r <= hi + BOUND_TOLERANCE)).all(axis=1)


@dataclass
class DirichletSwarm:
    """Dirichlet draws around a centre: the engine of every swarm proposer.

    temperature: the centre is p^temperature renormalised (RegMix uses 0.5, Olmix 1).
    strengths: (low, high) range of the Dirichlet strength s (draws ~ Dir(s p)).
    minimum: shares below it are zeroed (sparse swarms); 0 keeps every domain.
    max_multiple: caps each share at this multiple of the (untempered) centre (RegMix: 15).
    """

    name: str = "dirichlet-swarm"
    temperature: float = 1.0
    strengths: tuple[float, float] = (0.1, 5.0)
    minimum: float = 2e-3
    max_multiple: float | None = None
    sparse: bool = True

    def __post_init__(self) -> None:
        low, high = self.strengths
        if not (0 < low <= high and np.isfinite(high)):
            raise ProposalError(f"strengths must be 0 < low <= high, got {self.strengths}")
        if not self.temperature > 0:
            raise ProposalError(f"temperature must be positive, got {self.temperature}")
        if not self.sparse:
            self.minimum = 0.0

    def centre(self, context: ProposalContext) -> np.ndarray:
        return context.natural_vector()

    def propose(self, context: ProposalContext, q: int) -> pd.DataFrame:
        q = check_q(q)
        r = self.draws(context, q if context.candidates is None else 4 * q)
        if context.candidates is not None:
            return pick_from_pool(context, r, q)
        if len(r) < q:
            raise too_few_distinct(len(r), q, context.min_distance, self.name)
        return proposal_frame(r[:q], context.domains)

    def draws(self, context: ProposalContext, n: int) -> np.ndarray:
        """Up to n mixtures for a batch, each ``min_distance`` from the others and the
        taken runs."""
        return self.sample(context, n, context.rng(salt=0))

    def sample(
        self,
        context: ProposalContext,
        n: int,
        rng: np.random.Generator,
        taken: np.ndarray | None = None,
    ) -> np.ndarray:
        """Up to n draws inside the bounds, each at least ``context.min_distance`` (L1) from
        the others and from ``taken`` (default: the context's observed and pending runs);
        fewer only where the bounds leave no room for n such mixtures."""
        lo, hi = context.bounds()
        base = self.centre(context)
        if self.max_multiple is not None:
            hi = np.minimum(hi, np.minimum(1.0, self.max_multiple * base))
            if hi.sum() < 1 - BOUND_TOLERANCE or (lo > hi).any():
                raise ProposalError(
                    f"{self.name}: caps of {self.max_multiple:g} x the natural proportions "
                    "leave no feasible mixture under the constraints"
                )
        centre = base**self.temperature
        centre = centre / centre.sum()
        taken = context.taken_array() if taken is None else taken
        spacing = context.min_distance
        out = np.zeros((0, context.m))
        for _ in range(MAX_REJECTION_ROUNDS):
            draws = _dirichlet(rng, centre, self._draw_strengths(rng, 2 * n + 64, context.m))
            draws = _zero_small(draws, self.minimum, lo)
            out = _new_rows(np.concatenate([out, draws[_inside(draws, lo, hi)]]), taken, spacing, n)
            if len(out) >= n:
                break
        if len(out) < n:
            # Bounds too tight for rejection: project draws onto the feasible set instead.
            extra = _dirichlet(rng, centre, self._draw_strengths(rng, n - len(out), context.m))
            extra = project_to_box_simplex(extra, lo, hi)
            out = _new_rows(np.concatenate([out, extra]), taken, spacing, n)
        return out

    def _draw_strengths(self, rng: np.random.Generator, n: int, m: int) -> np.ndarray:
        low, high = self.strengths
        return _strengths(rng, n, low, high)


def _new_rows(r: np.ndarray, taken: np.ndarray, spacing: float, n: int) -> np.ndarray:
    """The first n rows of r, in order, that lie ``spacing`` (L1) from every row of
    ``taken`` and from each other (``distinct_rows``)."""
    if len(r) == 0:
        return r
    # Sparse draws often collapse onto the same vertex or edge: exact duplicates after
    # rounding far below any meaningful share.
    _, first = np.unique(np.round(r, 9), axis=0, return_index=True)
    r = r[np.sort(first)]
    return r[distinct_rows(r, taken, spacing, n)]


def pick_from_pool(context: ProposalContext, r: np.ndarray, q: int, **extra: list) -> pd.DataFrame:
    """Replace each draw by its nearest (L1) available pool row (``available_candidates``);
    a pick makes the rows within ``min_distance`` of it unavailable, itself included."""
    pool = context.candidate_array()
    free = context.available_candidates()
    spacing = max(context.min_distance, SAME_MIXTURE_L1)
    if len(free) < q:
        raise too_few_distinct(len(free), q, context.min_distance, "the pool")
    chosen: list[int] = []
    for row in r:
        if len(chosen) == q or len(free) == 0:
            break
        pick = int(free[np.argmin(np.abs(pool[free] - row).sum(axis=1))])
        chosen.append(pick)
        free = free[np.abs(pool[free] - pool[pick]).sum(axis=1) >= spacing]
    if len(chosen) < q:
        raise too_few_distinct(len(chosen), q, context.min_distance, "the pool")
    labels = context.candidates.index[chosen]
    frame = proposal_frame(pool[chosen], context.domains, candidate=list(labels), **extra)
    return frame


class OlmixSwarm(DirichletSwarm):
    """Olmix's swarm: Dir(s p0), s in [0.1, 5]; sparse (zero below 0.002) or dense."""

    def __init__(self, sparse: bool = True, **options: float) -> None:
        m_dense = options.pop("dense_strength", None)
        super().__init__(name="dirichlet-swarm", sparse=sparse, **options)  # type: ignore[arg-type]
        self._dense_strength = m_dense

    def _draw_strengths(self, rng: np.random.Generator, n: int, m: int) -> np.ndarray:
        if self.sparse:
            return super()._draw_strengths(rng, n, m)
        # Dense: concentrations m p0_j .. 10 m p0_j keep every domain in every run.
        low = float(self._dense_strength or m)
        return _strengths(rng, n, low, 10 * low)


def regmix_swarm(**options: float) -> DirichletSwarm:
    """RegMix's swarm: Dir(s p0^0.5), s in [0.1, 5], r_j <= 15 p0_j, zero below 2e-4."""
    settings = {"temperature": 0.5, "minimum": 2e-4, "max_multiple": 15.0, **options}
    return DirichletSwarm(name="random-swarm", **settings)  # type: ignore[arg-type]


class UniformSwarm(DirichletSwarm):
    """Uniform over the (bounded) simplex: Dir(1, ..., 1), rejected outside the bounds."""

    def __init__(self) -> None:
        super().__init__(name="uniform", minimum=0.0, sparse=False)

    def centre(self, context: ProposalContext) -> np.ndarray:
        return np.full(context.m, 1.0 / context.m)

    def _draw_strengths(self, rng: np.random.Generator, n: int, m: int) -> np.ndarray:
        return np.full(n, float(m))


def entropy_softmax(h: Any, temperature: float) -> Any:
    """softmax(H / temperature) over domains, H their entropies (nats): BiMix's mixture."""
    z = h / temperature
    w = np.exp(z - z.max())
    return w / w.sum()


def entropy_mixture(
    shards: str | Path | Manifest,
    kind: str = "conditional",
    temperature: float = 1.0,
    max_tokens: int | None = 4_000_000,
) -> pd.Series:
    """BiMix's entropy-driven mixture r_i = softmax(H_i / temperature): a first design with no
    proxy run, from one pass over the prepared shards.

    Args:
        shards: a shard folder written by ``prepare`` (or its Manifest).
        kind: "conditional" (token-bigram conditional entropy, BiMix's CE), "shannon" (SE)
            or "joint" (JE).
        temperature: divides the entropies before the softmax (1 as in BiMix).
        max_tokens: tokens read per domain (None: all).

    Returns:
        A Series indexed by domain, summing to 1, named ``r``.
    """
    if kind not in ENTROPY_KINDS:
        raise ProposalError(f"kind must be one of {ENTROPY_KINDS}, got {kind!r}")
    if not temperature > 0:
        raise ProposalError(f"temperature must be positive, got {temperature}")
    h = domain_entropies(shards, max_tokens)[kind]
    return entropy_softmax(h, temperature).rename("r")


class EntropySwarm(DirichletSwarm):
    """BiMix's entropy mixture softmax(H / temperature) first, then a swarm around it.

    Entropies come from ``entropies`` (domain -> nats), from the context, or from prepared
    shards (``shards``: a folder written by ``bayesmix proxy prepare``).
    """

    def __init__(
        self,
        entropies: Mapping[str, float] | None = None,
        shards: str | Path | None = None,
        kind: str = "conditional",
        entropy_temperature: float = 1.0,
    ) -> None:
        super().__init__(name="entropy")
        self.entropies = dict(entropies) if entropies is not None else None
        self.shards = shards
        self.kind = kind
        if not entropy_temperature > 0:
            raise ProposalError(f"entropy_temperature must be positive, got {entropy_temperature}")
        self.entropy_temperature = entropy_temperature

    def centre(self, context: ProposalContext) -> np.ndarray:
        return entropy_softmax(self._entropies(context), self.entropy_temperature)

    def _entropies(self, context: ProposalContext) -> np.ndarray:
        given = self.entropies if self.entropies is not None else context.entropies
        if given is None and self.shards is not None:
            table = domain_entropies(self.shards)
            given = table[self.kind].to_dict()
        if given is None:
            raise ProposalError(
                "the entropy proposer needs per-domain entropies: pass entropies={domain: nats} "
                "or shards=<prepared shard folder> (public data without text has none)"
            )
        missing = [d for d in context.domains if d not in given]
        if missing:
            raise ProposalError(f"entropy proposer: no entropy for domain(s) {missing}")
        h = np.array([float(given[d]) for d in context.domains])
        if not np.all(np.isfinite(h)):
            raise ProposalError("entropies must be finite numbers")
        return h

    def draws(self, context: ProposalContext, n: int) -> np.ndarray:
        """The entropy mixture (unless taken) first, then a swarm around it."""
        lo, hi = context.bounds()
        taken = context.taken_array()
        first = project_to_box_simplex(self.centre(context)[None], lo, hi)
        first = _new_rows(first, taken, context.min_distance, 1)
        rest = self.sample(context, n, context.rng(salt=1), np.concatenate([taken, first]))
        return np.concatenate([first, rest])[:n]
