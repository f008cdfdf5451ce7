"""No proposal repeats a run: every proposer and acquisition keeps each proposed mixture at
least ``min_distance`` (L1) from its batch's other runs, the pending runs and the observed
runs (issue 19); 0 allows re-measuring a mixture, and too large a distance is one clear
error."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix.acquisition import ACQUISITIONS
from bayesmix.acquisition.base import MIN_DISTANCE
from bayesmix.benchmarks import SyntheticOracle
from bayesmix.proposers import PROPOSERS, ProposalContext, ProposalError, get_proposer
from bayesmix.study import Study, parse_config
from bayesmix.study.trainers import LawTrainer, RunSpec

SAME_RUN = 1e-3  # two runs closer than this (L1) measure the same mixture

# Every registered proposer, the bayesmix one with every registered acquisition.
CASES = [
    pytest.param(name, {"acquisition": a, "max_draws": 64}, id=f"{name}-{a}")
    for name in PROPOSERS
    if name == "bayesmix"
    for a in ACQUISITIONS
] + [pytest.param(name, {}, id=name) for name in PROPOSERS if name != "bayesmix"]


def mixtures(frame: pd.DataFrame, domains: list[str]) -> np.ndarray:
    return frame[[f"r:{d}" for d in domains]].to_numpy(dtype=float)


def assert_distinct(batch: np.ndarray, ctx: ProposalContext, min_distance: float) -> None:
    """No two of (batch, pending, observed) within SAME_RUN; each new run at least
    ``min_distance`` from every other."""
    every = np.concatenate([batch, ctx.taken_array()])
    dist = np.abs(every[:, None] - every[None]).sum(-1)
    dist[np.diag_indices(len(every))] = np.inf
    assert dist.min() > SAME_RUN
    assert dist[: len(batch)].min() >= min_distance - 1e-12


@pytest.fixture(scope="module")
def context_parts(synthetic_world, synthetic_fit):
    """10 observed uniform runs with their posterior, and 3 pending swarm runs."""
    obs, post = synthetic_fit
    domains = synthetic_world.domains
    pending = get_proposer("dirichlet-swarm").propose(
        ProposalContext(domains, observations=obs, natural=synthetic_world.natural, seed=1), 3
    )
    entropies = {d: 1.0 + 0.2 * i for i, d in enumerate(domains)}
    return {
        "domains": domains,
        "observations": obs,
        "posterior": post,
        "natural": synthetic_world.natural,
        "pending": pending[[f"r:{d}" for d in domains]],
        "entropies": entropies,
        "seed": 3,
    }


@pytest.mark.parametrize(("name", "options"), CASES)
def test_no_proposal_lies_near_another_run(context_parts, name, options):
    ctx = ProposalContext(**context_parts)
    batch = get_proposer(name, **options).propose(ctx, 6)
    assert len(batch) == 6
    assert_distinct(mixtures(batch, ctx.domains), ctx, MIN_DISTANCE)


@pytest.mark.parametrize(("name", "options"), CASES)
def test_a_larger_min_distance_is_kept(context_parts, name, options):
    ctx = ProposalContext(**context_parts, min_distance=0.25)
    batch = get_proposer(name, **options).propose(ctx, 4)
    assert_distinct(mixtures(batch, ctx.domains), ctx, 0.25)


@pytest.mark.parametrize(("name", "options"), CASES)
def test_from_a_pool_no_row_near_a_taken_run(context_parts, name, options):
    """The pool holds the observed and pending runs themselves and rows just beside them
    (0.01 away): none of those may be proposed."""
    domains = context_parts["domains"]
    taken = np.concatenate(
        [context_parts["observations"].mixtures().to_numpy(), context_parts["pending"].to_numpy()]
    )
    beside = taken.copy()
    beside[:, 0] += 0.005
    beside[:, 1] -= 0.005
    fresh = np.random.default_rng(4).dirichlet(np.ones(len(domains)), 40)
    rows = np.concatenate([taken, beside[(beside >= 0).all(axis=1)], fresh])
    pool = pd.DataFrame(rows, columns=[f"r:{d}" for d in domains])
    pool.index = [f"row-{i}" for i in range(len(pool))]
    ctx = ProposalContext(**context_parts, candidates=pool)
    batch = get_proposer(name, **options).propose(ctx, 5)
    got = mixtures(batch, domains)
    assert np.abs(got[:, None] - rows[None]).sum(-1).min(axis=1).max() < 1e-9  # pool rows
    assert_distinct(got, ctx, MIN_DISTANCE)


@pytest.mark.parametrize(("name", "options"), CASES)
def test_too_large_a_distance_is_one_clear_error(context_parts, name, options):
    """Five domains hold at most five mixtures 1.9 apart (near the vertices)."""
    ctx = ProposalContext(**context_parts, min_distance=1.9)
    with pytest.raises(ProposalError, match="min_distance=1.9"):
        get_proposer(name, **options).propose(ctx, 6)


@pytest.mark.parametrize("value", [-0.1, float("nan"), 2.0, "0.1", True])
def test_min_distance_is_checked(context_parts, value):
    with pytest.raises(ProposalError, match="min_distance"):
        ProposalContext(**context_parts, min_distance=value)
    with pytest.raises(ProposalError, match="min_distance"):
        bm.propose(context_parts["posterior"], 2, min_distance=value)


@pytest.fixture(scope="module")
def sharp_cross_fit():
    """The cross law fitted (Laplace) to a first swarm of 6 runs of its own world: the fit
    that proposed one mixture 6 times in one batch before the distance was kept (world 2:
    since the floors' and noise scales' spreads are fixed, world 0's fit no longer does)."""
    world = SyntheticOracle(5, law="bimix-cross", world_seed=2)
    first = get_proposer("dirichlet-swarm").propose(
        ProposalContext(world.domains, natural=world.natural, seed=0), 6
    )
    r = mixtures(first, world.domains)
    frame = world.observe(r, np.random.default_rng(0), [f"run-{i}" for i in range(len(r))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bm.fit(
            bm.Observations.from_frame(frame),
            law="bimix-cross",
            method="laplace",
            progress=False,
            num_samples=128,
        )
    return post


def test_the_cross_law_batch_of_one_mixture_is_gone(sharp_cross_fit):
    post = sharp_cross_fit
    domains = list(post.domains)

    def batch(min_distance: float) -> np.ndarray:
        frame = bm.propose(post, 6, "optimum-variance", max_draws=64, min_distance=min_distance)
        return mixtures(frame, domains)

    old = batch(0.0)  # the old behaviour, now an explicit choice: repeats
    dist = np.abs(old[:, None] - old[None]).sum(-1)[np.triu_indices(len(old), 1)]
    assert (dist < SAME_RUN).any()
    ctx = ProposalContext(domains, observations=post.observations)
    assert_distinct(batch(MIN_DISTANCE), ctx, MIN_DISTANCE)


# ---------------------------------------------------------------------------------- study
DOMAINS = ["web", "code", "books"]


def study_config(tmp_path, name: str, options: dict) -> object:
    return parse_config(
        {
            "name": name,
            "seed": 7,
            "workdir": str(tmp_path / name),
            "data": {"domains": DOMAINS, "token_counts": {"web": 5e9, "code": 2e9, "books": 1e9}},
            "proxy": {"trainer": "law", "steps": 400, "law": {"alpha": 0.1, "noise": 0.01}},
            "fit": {
                "law": "bimix",
                "method": "laplace",
                "final": False,
                "options": {"num_samples": 32},
            },
            "proposer": {"name": "bayesmix", "options": {"max_draws": 32, **options}},
            "batch_size": 3,
            "budget": 9,
            "report": False,
        }
    )


def test_a_study_never_repeats_a_run(tmp_path):
    """Three batches of a study in memory: the first by the first-batch design, then two by
    optimum-variance from one fit, the second asked while the first is pending; the study's
    ``proposer.options.min_distance`` holds for every run."""
    study = Study.create(study_config(tmp_path, "distinct", {"min_distance": 0.05}), None)
    trainer = LawTrainer(study.config.proxy.law, study.domains, study.config.proxy.steps)

    def train(runs: list) -> None:
        for out in trainer.train([RunSpec(r.name, r.mixture, r.steps, r.seed) for r in runs]):
            study.tell(out.name, out.rows)

    train(study.ask(3))
    fit = study.fit()
    second = study.ask(3, fit)
    train([*second, *study.ask(3, fit)])
    r = np.array([[run.mixture[d] for d in DOMAINS] for run in study.runs()])
    assert len(r) == 9
    dist = np.abs(r[:, None] - r[None]).sum(-1)[np.triu_indices(len(r), 1)]
    assert dist.min() >= 0.05 - 1e-12


def test_the_study_config_checks_min_distance(tmp_path):
    with pytest.raises(ValueError, match="min_distance"):
        study_config(tmp_path, "bad", {"min_distance": -1})
