"""Fits shared by the test files: each is computed once per test run (session scope; once per
worker under ``pytest -n``), so the tests that need the same posterior do not refit it.

Most of a small fit's time is JAX compiling its law, and a compiled law is reused by the
next fit of the same law and shapes in the process: fits of one kind are best kept together.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import bayesmix as bm
from bayesmix.benchmarks import SyntheticOracle


@pytest.fixture(scope="session")
def synthetic_world() -> SyntheticOracle:
    """A 5-domain world of the own-share law (tests/test_acquisition.py)."""
    return SyntheticOracle(5, law="bimix", world_seed=1)


def observe_first_runs(world: SyntheticOracle, proposer: str, n: int, **observe: object):
    """The tidy table of n runs of a proposer's first batch in ``world``."""
    from bayesmix.proposers import ProposalContext, get_proposer

    ctx = ProposalContext(world.domains, natural=world.natural, seed=0)
    first = get_proposer(proposer).propose(ctx, n)
    r = first[[f"r:{d}" for d in world.domains]].to_numpy()
    return world.observe(r, np.random.default_rng(0), [f"run-{i}" for i in range(n)], **observe)


@pytest.fixture(scope="session")
def synthetic_fit(synthetic_world: SyntheticOracle) -> tuple[bm.Observations, bm.Posterior]:
    """10 uniform runs of the world, and the own-share law fitted to them (Laplace)."""
    obs = bm.Observations.from_frame(observe_first_runs(synthetic_world, "uniform", 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bm.fit(
            obs, law="bimix", method="laplace", progress=False, num_chains=1, num_samples=128
        )
    return obs, post


def fit_swarm_with_steps(world: SyntheticOracle, n: int) -> bm.Posterior:
    """The law fitted to a swarm of n runs of 10,000 steps, each recorded at 4 checkpoints."""
    frame = observe_first_runs(world, "dirichlet-swarm", n, steps=10_000, checkpoints=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bm.fit(
            bm.Observations.from_frame(frame),
            law="bimix",  # the world's own law
            method="laplace",
            progress=False,
            num_samples=128,
            reference_step=10_000,
        )


@pytest.fixture(scope="session", name="fit_swarm_with_steps")
def fit_swarm_with_steps_fixture() -> Callable[[SyntheticOracle, int], bm.Posterior]:
    """``fit_swarm_with_steps`` itself, for tests that fit another world's swarm."""
    return fit_swarm_with_steps


@pytest.fixture(scope="session")
def synthetic_fit_with_steps(synthetic_world: SyntheticOracle) -> bm.Posterior:
    """A swarm of 8 runs of the world with 4 checkpoints each, fitted (Laplace)."""
    return fit_swarm_with_steps(synthetic_world, 8)


@pytest.fixture(scope="session")
def fit_once() -> Callable[[str, Callable[[], bm.Posterior]], bm.Posterior]:
    """``fit_once(key, make)``: ``make()``'s posterior, computed the first time a key is asked
    for in this test run (tests/test_inference.py's fits to known parameters)."""
    fits: dict[str, bm.Posterior] = {}

    def get(key: str, make: Callable[[], bm.Posterior]) -> bm.Posterior:
        if key not in fits:
            fits[key] = make()
        return fits[key]

    return get


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a module of small-tensor tests: on a shared machine a second
    thread only adds contention (a GP fit ran 10-50x slower with it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
