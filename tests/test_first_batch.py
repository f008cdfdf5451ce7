"""The first batch designed for the law (``d-optimal``, bayesmix/proposers/designs.py): m + 1
distinct mixtures inside the bounds, reproducible by seed, completing a pending batch, and
runs on which the cross law's Laplace fit converges."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import bayesmix as bm
from bayesmix.laws.world import LawWorld
from bayesmix.mixtures import mixture_frame
from bayesmix.proposers import ProposalContext, get_proposer
from bayesmix.proposers.designs import DOptimalDesign, log_det, rows
from bayesmix.study.config import ProposerConfig

DOMAINS = [f"d{j}" for j in range(5)]


def design(q: int, seed: int = 0, **context: object) -> np.ndarray:
    ctx = ProposalContext(DOMAINS, seed=seed, **context)
    frame = get_proposer("d-optimal").propose(ctx, q)
    return frame[[f"r:{d}" for d in DOMAINS]].to_numpy()


def test_the_default_first_batch_is_the_design():
    assert ProposerConfig().first == "d-optimal"


@pytest.mark.parametrize("q", [3, 6, 12])
def test_distinct_mixtures_summing_to_one_within_bounds(q):
    m = len(DOMAINS)
    bounds = bm.Constraints(lower={"d0": 0.1}, upper={"d1": 0.3})
    r = design(q, constraints=bounds)
    assert r.shape == (q, m)
    assert np.allclose(r.sum(axis=1), 1)
    assert (r[:, 0] >= 0.1 - 1e-9).all() and (r[:, 1] <= 0.3 + 1e-9).all()
    assert (r >= DOptimalDesign().floor / m - 1e-9).all()  # no domain left out
    gaps = np.abs(r[:, None, :] - r[None, :, :]).sum(axis=2) + 9 * np.eye(q)
    assert gaps.min() > 0.05  # distinct runs, not repeats of a support point


def test_reproducible_by_seed_and_better_than_a_swarm_for_the_exponents():
    m = len(DOMAINS)
    assert np.array_equal(design(m + 1, seed=4), design(m + 1, seed=4))
    assert np.array_equal(design(3, seed=4), design(3, seed=4))
    ctx = ProposalContext(DOMAINS, seed=4)
    swarm = get_proposer("dirichlet-swarm").propose(ctx, m + 1)[[f"r:{d}" for d in DOMAINS]]
    # The criterion the design maximises, at the floor the design keeps (a swarm's zero
    # shares would otherwise count log(eps) as information).
    none = np.zeros((0, m))
    floored = np.maximum(swarm.to_numpy(), 0.25 / m)
    assert log_det(rows(design(m + 1, seed=4), none, 3e-3)) > log_det(rows(floored, none, 3e-3))


def test_a_second_batch_completes_a_pending_one():
    m = len(DOMAINS)
    first = design(m + 1)
    pending = mixture_frame(first, DOMAINS)
    second = design(m + 1, pending=pending)
    gaps = np.abs(second[:, None, :] - first[None, :, :]).sum(axis=2)
    assert gaps.min() > 0.05


def test_the_cross_law_fit_converges_on_the_designed_runs():
    m = 4
    domains = DOMAINS[:m]
    world = LawWorld(
        domains,
        logk=np.log([2.0, 1.6, 2.4, 1.9]),
        alpha=np.full((m, m), 0.01) + np.diag([0.08, 0.12, 0.05, 0.1]),
        eps=np.full(m, 3e-3),
        frac=np.full(m, 0.5),
        beta=np.full(m, 0.5),
        reference_step=1000.0,
        noise=0.01,
    )
    ctx = ProposalContext(domains, seed=0)
    r = get_proposer("d-optimal").propose(ctx, m + 1)[[f"r:{d}" for d in domains]].to_numpy()
    steps = np.tile([250.0, 500.0, 750.0, 1000.0], m + 1)
    rr = np.repeat(r, 4, axis=0)
    ids = list(np.repeat([f"run{i}" for i in range(m + 1)], 4))
    obs = bm.Observations.from_frame(world.observe(rr, np.random.default_rng(0), ids, steps))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "as many coefficients as mixtures": known, m + 1
        post = bm.fit(obs, law="bimix-cross", method="laplace", seed=0, num_samples=64)
    assert post.converged, post.info.get("map_message")
