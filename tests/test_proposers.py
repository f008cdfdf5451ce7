"""Proposers behind one interface: the posterior-free swarms, bad input, pools."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix.optimize import InfeasibleError
from bayesmix.proposers import (
    ProposalContext,
    ProposalError,
    Proposer,
    get_proposer,
    get_recommender,
)

DOMAINS = ["web", "code", "books", "wiki", "math", "papers", "forum"]
P0 = dict(zip(DOMAINS, [0.4, 0.2, 0.12, 0.1, 0.08, 0.06, 0.04], strict=True))
SWARMS = ["dirichlet-swarm", "random-swarm", "uniform", "entropy"]


def make(name: str) -> Proposer:
    if name == "entropy":
        return get_proposer(name, entropies=dict(zip(DOMAINS, np.linspace(1, 3, 7), strict=True)))
    return get_proposer(name)


def shares(frame: pd.DataFrame) -> np.ndarray:
    return frame[[f"r:{d}" for d in DOMAINS]].to_numpy()


@pytest.mark.parametrize("name", SWARMS)
def test_swarm_proposals_are_mixtures_inside_the_bounds(name: str) -> None:
    cons = bm.Constraints(lower={"math": 0.05}, upper={"web": 0.3})
    ctx = ProposalContext(DOMAINS, natural=P0, constraints=cons, seed=3)
    out = make(name).propose(ctx, 8)
    r = shares(out)
    assert r.shape == (8, 7)
    np.testing.assert_allclose(r.sum(axis=1), 1.0, atol=1e-9)
    assert (r[:, DOMAINS.index("math")] >= 0.05 - 1e-9).all()
    assert (r[:, DOMAINS.index("web")] <= 0.3 + 1e-9).all()
    assert len(np.unique(r.round(9), axis=0)) == 8  # no run proposed twice


@pytest.mark.parametrize("name", SWARMS)
def test_swarms_are_reproducible_and_move_on_between_batches(name: str) -> None:
    ctx = ProposalContext(DOMAINS, natural=P0, seed=5)
    a, b = make(name).propose(ctx, 4), make(name).propose(ctx, 4)
    pd.testing.assert_frame_equal(a, b)
    later = ProposalContext(DOMAINS, natural=P0, seed=5, pending=a)
    c = make(name).propose(later, 4)
    assert np.abs(shares(c)[:, None] - shares(a)[None]).sum(-1).min() > 1e-6


def test_olmix_swarm_is_centred_on_the_natural_proportions() -> None:
    ctx = ProposalContext(DOMAINS, natural=P0, seed=0)
    dense = shares(get_proposer("dirichlet-swarm", sparse=False).propose(ctx, 400))
    np.testing.assert_allclose(dense.mean(axis=0), list(P0.values()), atol=0.02)
    assert (dense > 0).all()
    sparse = shares(get_proposer("dirichlet-swarm").propose(ctx, 400))
    assert (sparse == 0).mean() > 0.2  # Olmix's swarms are sparse


def test_regmix_swarm_caps_each_domain_at_15_times_its_natural_share() -> None:
    p0 = dict(zip(DOMAINS, [0.6, 0.3, 0.04, 0.03, 0.02, 0.006, 0.004], strict=True))
    ctx = ProposalContext(DOMAINS, natural=p0, seed=0)
    r = shares(get_proposer("random-swarm").propose(ctx, 200))
    assert (r <= 15 * np.array(list(p0.values())) + 1e-9).all()


def test_entropy_proposer_starts_with_the_softmax_of_entropies() -> None:
    h = dict(zip(DOMAINS, np.linspace(1, 3, 7), strict=True))
    ctx = ProposalContext(DOMAINS, seed=0)
    out = get_proposer("entropy", entropies=h).propose(ctx, 3)
    z = np.exp(np.array(list(h.values())))
    np.testing.assert_allclose(shares(out)[0], z / z.sum(), atol=1e-9)
    with pytest.raises(ProposalError, match="entropies"):
        get_proposer("entropy").propose(ctx, 1)


@pytest.mark.parametrize("name", ["random-swarm", "entropy"])
def test_pool_proposals_are_unused_pool_rows(name: str) -> None:
    pool = get_proposer("uniform").propose(ProposalContext(DOMAINS, seed=9), 30)
    pool.index = [f"run-{i}" for i in range(30)]
    pending = pool.iloc[:5]
    ctx = ProposalContext(DOMAINS, natural=P0, candidates=pool, pending=pending)
    out = make(name).propose(ctx, 6)
    assert set(out["candidate"]).isdisjoint(pending.index)
    assert len(set(out["candidate"])) == 6
    np.testing.assert_allclose(shares(out), shares(pool.loc[out["candidate"]]))
    with pytest.raises(ProposalError, match="fewer than q"):
        make(name).propose(ctx, 26)


def test_bad_input_gets_one_clear_error() -> None:
    ctx = ProposalContext(DOMAINS, natural=P0)
    for q in (0, -1, 2.5, True):
        with pytest.raises(ProposalError, match="q must be a positive integer"):
            get_proposer("uniform").propose(ctx, q)
    with pytest.raises(ProposalError, match="unknown proposer"):
        get_proposer("grid")
    with pytest.raises(ProposalError, match="unknown recommender"):
        get_recommender("oracle")
    with pytest.raises(ProposalError, match="sum to"):
        ProposalContext(DOMAINS, natural={**P0, "web": 0.9})
    with pytest.raises(ProposalError, match="unknown domain"):
        ProposalContext(DOMAINS, natural={**P0, "news": 0.0})
    bad = pd.DataFrame([[0.5] * 7], columns=[f"r:{d}" for d in DOMAINS])
    with pytest.raises(ProposalError, match="sums to"):
        ProposalContext(DOMAINS, pending=bad)
    infeasible = bm.Constraints(lower={"web": 0.6, "code": 0.6})
    with pytest.raises(InfeasibleError, match="lower bounds sum"):
        get_proposer("dirichlet-swarm").propose(ProposalContext(DOMAINS, constraints=infeasible), 2)
