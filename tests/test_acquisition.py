"""BoTorch over the law's posterior: the ensemble model, the acquisition functions, propose()."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

import bayesmix as bm
from bayesmix.acquisition import ACQUISITIONS, propose, qOptimumVarianceReduction
from bayesmix.acquisition.model import LawEnsembleModel
from bayesmix.benchmarks import SyntheticOracle
from bayesmix.proposers import ProposalContext, ProposalError, get_proposer, get_recommender

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(synthetic_world: SyntheticOracle) -> SyntheticOracle:
    return synthetic_world


@pytest.fixture(scope="module")
def fitted(synthetic_fit) -> tuple[bm.Observations, object]:
    return synthetic_fit  # conftest.py: 10 uniform runs of the world, fitted (Laplace)


def shares(frame: pd.DataFrame, domains: list[str]) -> np.ndarray:
    return frame[[f"r:{d}" for d in domains]].to_numpy()


def test_ensemble_model_is_the_posterior_law_with_gradients(fitted) -> None:
    _, post = fitted
    model = LawEnsembleModel(post, max_draws=32)
    x = torch.full((2, 3, 5), 0.2, dtype=torch.float64)
    x[0, 0] = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.1])
    x.requires_grad_(True)
    p = model.posterior(x)
    assert p.values.shape == (2, 32, 3, len(post.targets))
    expected = np.exp(post.log_loss(x.detach().reshape(-1, 5).numpy(), max_draws=32))
    got = p.values.detach().movedim(1, 0).reshape(32, 6, -1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    p.mean.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_members_far_in_the_tails_keep_gradients_finite(fitted) -> None:
    """A draw whose exponent for a never-observed domain is huge predicts losses that
    overflow exp(); the ensemble caps the log loss, so the acquisition's gradients stay
    finite (before, qLogNEI's SLSQP died on NaN gradients after a sparse Dirichlet swarm)."""
    from bayesmix.acquisition.model import LOG_LOSS_CAP

    _, post = fitted
    model = LawEnsembleModel(post, max_draws=8)
    x = torch.full((1, 5), 0.2, dtype=torch.float64)
    model.log_loss(x)  # converts the draws once

    class Wild:
        def __init__(self, law):
            self.law = law

        def log_loss(self, *args, **kwargs):
            out = self.law.log_loss(*args, **kwargs)
            return torch.cat([out[:1] * 1e4, -out[1:2] * 1e4, out[2:]])

    model._law = Wild(model._law)
    x = torch.tensor([[0.0, 0.25, 0.25, 0.25, 0.25]], dtype=torch.float64, requires_grad=True)
    values = model.posterior(x[None]).values
    assert torch.isfinite(values).all()
    assert values.max() <= np.exp(LOG_LOSS_CAP) and values.min() >= np.exp(-LOG_LOSS_CAP)
    values.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("acquisition", ACQUISITIONS)
def test_each_acquisition_proposes_feasible_distinct_runs(fitted, acquisition: str) -> None:
    obs, post = fitted
    obs_r = obs.mixtures().to_numpy()
    domains = list(post.domains)
    cons = bm.Constraints(lower={domains[0]: 0.1}, upper={domains[1]: 0.15})
    out = propose(post, 3, acquisition, constraints=cons, max_draws=64, seed=0)
    r = shares(out, domains)
    assert r.shape == (3, 5)
    np.testing.assert_allclose(r.sum(axis=1), 1.0, atol=1e-6)
    assert (r[:, 0] >= 0.1 - 1e-6).all() and (r[:, 1] <= 0.15 + 1e-6).all()
    # The expected gain is E_d[max(0, min_obs F_d - F_d(x))] over the same 64 draws.
    objective = np.exp(post.log_loss(np.vstack([r, obs_r]), max_draws=64)).mean(-1)
    best = objective[:, 3:].min(axis=1, keepdims=True)
    gain = np.maximum(best - objective[:, :3], 0).mean(axis=0)
    np.testing.assert_allclose(out["expected_gain"].to_numpy(), gain, rtol=1e-6, atol=1e-12)
    assert np.abs(r[:, None] - r[None]).sum(-1)[np.triu_indices(3, 1)].min() > 1e-4


def test_proposals_improve_on_the_observed_runs(fitted, world: SyntheticOracle) -> None:
    obs, post = fitted
    observed = world.objective(obs.mixtures().to_numpy())
    out = propose(post, 2, "qlognei", max_draws=64, seed=0)
    proposed = world.objective(shares(out, world.domains))
    assert proposed.min() < observed.min()  # the law is right: its proposals are better


def test_noise_scale_leaves_out_members_whose_prediction_overflows(fitted, monkeypatch):
    """A cross law fitted to few runs has members whose predictions overflow; their
    non-finite ratios once made sigma_t NaN and every gradient of optimum-variance NaN."""
    _, post = fitted
    model = LawEnsembleModel(post, None, max_draws=32)
    clean = model.noise_scale()
    real = post.predict

    def overflowing(*args, **kwargs):
        out = real(*args, **kwargs).copy()
        out.loc[out.index[::7], "predictive"] = np.inf
        return out

    monkeypatch.setattr(post, "predict", overflowing)
    sigma = model.noise_scale()
    assert np.isfinite(sigma).all()
    np.testing.assert_allclose(sigma, clean, rtol=0.25)


def test_optimum_variance_grows_with_the_batch(fitted) -> None:
    _, post = fitted
    model = LawEnsembleModel(post, max_draws=64)
    optima = torch.as_tensor(
        post.optimal_mixture(max_draws=64).draws.to_numpy(), dtype=torch.float64
    )
    acq = qOptimumVarianceReduction(model, optima, torch.full((5,), 0.01))
    x = torch.as_tensor(np.random.default_rng(0).dirichlet(np.ones(5), 4))
    one, two, four = (float(acq(x[None, :k])) for k in (1, 2, 4))
    assert 0 <= one <= two <= four <= acq.variance_now + 1e-12


def test_a_large_batch_scores_with_several_threads(fitted) -> None:
    """Hundreds of candidates at 2 threads, where batched LU can fail on MKL
    (pytorch/pytorch#142815, seen in this suite): each score is the trace formula."""
    _, post = fitted
    model = LawEnsembleModel(post, max_draws=64)
    optima = torch.as_tensor(
        post.optimal_mixture(max_draws=64).draws.to_numpy(), dtype=torch.float64
    )
    acq = qOptimumVarianceReduction(model, optima, torch.full((5,), 0.01))
    x = torch.as_tensor(np.random.default_rng(2).dirichlet(np.ones(5), 300))[:, None, :]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        scores = acq(x)
    finally:
        torch.set_num_threads(before)
    z = acq.features(x[:3])
    r = acq.optima_c
    for k in range(3):
        g = z[k] @ z[k].T
        expected = torch.trace(r.T @ g @ torch.linalg.inv(g + torch.eye(len(g))) @ r)
        np.testing.assert_allclose(float(scores[k]), float(expected), rtol=1e-8)


def test_pending_runs_count_as_runs_of_the_batch(fitted) -> None:
    """Pending runs enter through their Gram matrix: a batch of 2 with 2 pending removes
    what the batch of all 4 removes, whether pending came as X_pending or add_pending."""
    _, post = fitted
    model = LawEnsembleModel(post, max_draws=64)
    optima = torch.as_tensor(
        post.optimal_mixture(max_draws=64).draws.to_numpy(), dtype=torch.float64
    )
    x = torch.as_tensor(np.random.default_rng(1).dirichlet(np.ones(5), 4))
    acq = qOptimumVarianceReduction(model, optima, torch.full((5,), 0.02))
    together = float(acq(x[None]))
    acq.set_X_pending(x[:2])
    as_pending = float(acq(x[None, 2:]))
    added = qOptimumVarianceReduction(model, optima, torch.full((5,), 0.02))
    added.add_pending(x[:2], (None,))
    np.testing.assert_allclose([as_pending, float(added(x[None, 2:]))], together, rtol=1e-9)


@pytest.fixture(scope="module")
def fitted_with_steps(synthetic_fit_with_steps) -> object:
    return synthetic_fit_with_steps  # conftest.py: a swarm of 8 runs with 4 checkpoints


def test_cost_aware_proposals_spend_the_batch_compute_on_short_runs(fitted_with_steps) -> None:
    """In the law's own world a short run shows a mixture's effect at a quarter of the
    cost, so the batch's compute (q target-length runs) buys more, shorter runs."""
    out = propose(
        fitted_with_steps,
        2,
        "optimum-variance",
        max_draws=64,
        run_lengths=[2_500, 10_000],
        checkpoints=2,
    )
    steps = out["steps"].to_numpy()
    assert set(steps) <= {2_500.0, 10_000.0} and steps.sum() <= 20_000
    assert steps.sum() > 20_000 - 2_500 and len(out) > 2
    r = shares(out, list(fitted_with_steps.domains))
    assert np.allclose(r.sum(axis=1), 1.0) and (r >= 0).all()
    assert np.all(np.diff(out["acquisition_value"].to_numpy()) >= -1e-9)


def test_cost_aware_proposals_keep_to_the_target_length_where_short_runs_mislead(
    fit_swarm_with_steps,
) -> None:
    """Where a domain's effect changes with training (step drift), the separability check
    on the first runs' checkpoints sends the batch back to target-length runs, and says so;
    ``check_steps=False`` trusts the law and proposes short runs anyway."""
    post = fit_swarm_with_steps(SyntheticOracle(5, world_seed=1, step_drift=1.0), 10)
    options = {"max_draws": 64, "run_lengths": [2_500, 10_000], "checkpoints": 2}
    with pytest.warns(UserWarning, match="short runs would mislead here .*NOT separable"):
        checked = propose(post, 2, "optimum-variance", **options)
    assert checked["steps"].tolist() == [10_000.0, 10_000.0]
    trusting = propose(post, 2, "optimum-variance", check_steps=False, **options)
    assert (trusting["steps"] == 2_500).any()


def test_bad_run_lengths_each_say_one_clear_thing(fitted, fitted_with_steps) -> None:
    post = fitted_with_steps
    for args, message in (
        ((post, 2, "thompson"), "optimum-variance acquisition only"),
        ((fitted[1], 2, "optimum-variance"), "need a law fitted with a step axis"),
    ):
        with pytest.raises(ProposalError, match=message):
            propose(*args, run_lengths=[2_500], max_draws=32)
    for lengths, message in (([-5], "positive numbers"), ([20_000], "longer than the target")):
        with pytest.raises(ProposalError, match=message):
            propose(post, 2, "optimum-variance", run_lengths=lengths, max_draws=32)


def test_pool_proposals_come_from_the_pool(fitted) -> None:
    obs, post = fitted
    pool = get_proposer("uniform").propose(ProposalContext(list(post.domains), seed=4), 20)
    pool.index = [f"pool-{i}" for i in range(20)]
    ctx = ProposalContext(list(post.domains), observations=obs, posterior=post, candidates=pool)
    for acquisition in ("thompson", "optimum-variance"):
        out = get_proposer("bayesmix", acquisition=acquisition, max_draws=64).propose(ctx, 3)
        assert len(set(out["candidate"])) == 3
        np.testing.assert_allclose(
            shares(out, post.domains), shares(pool.loc[out["candidate"]], post.domains)
        )
    best = get_recommender("posterior-optimum", max_draws=64).recommend(ctx)
    assert np.abs(shares(pool, post.domains) - best.to_numpy()).sum(1).min() < 1e-9


def test_bayesmix_proposer_starts_without_a_posterior(world: SyntheticOracle) -> None:
    ctx = ProposalContext(world.domains, natural=world.natural, seed=2)
    out = get_proposer("bayesmix").propose(ctx, 4)
    assert shares(out, world.domains).shape == (4, 5)


def test_recommenders_beat_the_natural_mixture(fitted, world: SyntheticOracle) -> None:
    obs, post = fitted
    ctx = ProposalContext(world.domains, observations=obs, posterior=post, natural=world.natural)
    natural = world.objective(np.array(list(world.natural.values())))[0]
    ours = get_recommender("posterior-optimum", max_draws=64).recommend(ctx)
    assert world.objective(ours.to_numpy())[0] < natural
    for rec in (get_recommender("olmix"), get_recommender("regmix", num_simulated=2000)):
        r = rec.recommend(ctx).to_numpy()
        assert abs(r.sum() - 1) < 1e-9 and (r >= 0).all()


def test_bad_input_to_propose(fitted) -> None:
    _, post = fitted
    with pytest.raises(ProposalError, match="unknown acquisition"):
        propose(post, 2, "ucb")
    with pytest.raises(ProposalError, match="q must be"):
        propose(post, 0)
    with pytest.raises(ProposalError, match="unknown target"):
        propose(post, 1, weights={"nope": 1.0})
    with pytest.raises(ValueError, match="lower bounds sum"):
        propose(post, 1, constraints=bm.Constraints(lower={d: 0.3 for d in post.domains}))


def empty_posterior(post):
    """The same posterior with its draws sliced away (0 draws)."""
    import dataclasses

    import arviz as az

    core = az.InferenceData(
        posterior=post.idata.posterior.isel(draw=slice(0, 0)),
        sample_stats=post.idata.sample_stats.isel(draw=slice(0, 0)),
    )
    return dataclasses.replace(post, idata=core, info=dict(post.info))


def test_the_three_user_errors_each_say_one_clear_thing(fitted) -> None:
    """Issue 4: infeasible constraints, an empty posterior, q < 1 -> one clear error each."""
    _, post = fitted
    with pytest.raises(ValueError, match="lower bounds sum to 1.5") as infeasible:
        propose(post, 2, "thompson", constraints=bm.Constraints(lower={"d00": 0.8, "d01": 0.7}))
    with pytest.raises(ProposalError, match="posterior is empty") as empty:
        propose(empty_posterior(post), 2, "thompson")
    with pytest.raises(ProposalError, match="q must be a positive integer") as small:
        propose(post, 0, "thompson")
    messages = {str(e.value) for e in (infeasible, empty, small)}
    assert len(messages) == 3 and all("\n" not in m for m in messages)
    for q in (-1, 0, 1.5, True):
        with pytest.raises(ProposalError, match="q must be"):
            propose(post, q, "thompson")
    with pytest.raises(ProposalError, match="no posterior"):
        propose(None, 2, "thompson")


def test_cli_propose_prints_runs_with_their_expected_gain(fitted, tmp_path) -> None:
    from typer.testing import CliRunner

    from bayesmix.cli import app

    _, post = fitted
    path = post.save(tmp_path / "post.nc")
    runner = CliRunner()
    ok = runner.invoke(app, ["propose", str(path), "--q", "2", "--acq", "thompson"])
    assert ok.exit_code == 0, ok.output
    assert "2 proposed runs (thompson)" in ok.output and "expected gain" in ok.output
    for args, message in (
        (["--q", "0"], "q must be a positive integer"),
        (["--acq", "ucb"], "unknown acquisition"),
        (["--lower", "d00=0.9", "--lower", "d01=0.9"], "lower bounds sum"),
        (["--run-lengths", "short"], "--run-lengths must be comma-separated numbers"),
        (["--run-lengths", "2500"], "need a law fitted with a step axis"),
        (["--acq", "thompson", "--run-lengths", "2500"], "optimum-variance acquisition only"),
    ):
        bad = runner.invoke(app, ["propose", str(path), *args])
        assert bad.exit_code == 1 and message in bad.output, bad.output
    empty = empty_posterior(post).save(tmp_path / "empty.nc")
    bad = runner.invoke(app, ["propose", str(empty), "--q", "2", "--acq", "thompson"])
    assert bad.exit_code == 1 and "posterior is empty" in bad.output, bad.output
    assert "Traceback" not in bad.output


@pytest.mark.parametrize(
    ("draws", "refit"),
    [
        # As a user runs it: each command refits the average (NUTS, 2 chains of 60 draws).
        pytest.param(60, True, marks=pytest.mark.slow),
        # The same commands on shorter chains, the average fitted once and handed to each
        # command (same observations, laws and seed: the same fits).
        (16, False),
    ],
)
def test_cli_proposes_over_an_average_of_laws(fitted, tmp_path, monkeypatch, draws, refit):
    from typer.testing import CliRunner

    from bayesmix import selection
    from bayesmix.cli import app

    short = {"method": "nuts", "num_chains": 2, "num_warmup": draws, "num_samples": draws}
    monkeypatch.setitem(selection.FOLD_FITS, "nuts", short)  # a minute -> seconds
    if not refit:
        averages: dict[tuple, object] = {}
        real = bm.average_laws

        def once(obs, laws, **kwargs):
            key = (tuple(laws), tuple(sorted(kwargs.items())))
            if key not in averages:
                averages[key] = real(obs, laws, **kwargs)
            return averages[key]

        monkeypatch.setattr(bm, "average_laws", once)
    path = fitted[1].save(tmp_path / "post.nc")
    runner = CliRunner()
    args = ["propose", str(path), "--q", "2", "--acq", "thompson", "--average-laws"]
    ok = runner.invoke(app, [*args, "bimix,bimix-cross"])
    assert ok.exit_code == 0, ok.output
    # 10 runs of 5 domains: too few to compare the cross law, so both keep their prior weight.
    assert "law weights: bimix 0.50, bimix-cross 0.50" in ok.output
    assert "2 proposed runs (thompson)" in ok.output
    bad = runner.invoke(app, [*args, "bimix,nope"])
    assert bad.exit_code == 1 and "unknown laws ['nope']" in bad.output, bad.output
    # The optimum of the average, with intervals over both laws' optima.
    args = ["optimize", str(path), "--average-laws", "bimix,bimix-cross", "--upper", "d00=0.3"]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert "law weights: bimix 0.50, bimix-cross 0.50" in ok.output
    assert "optimal mixture (law average (BoTorch))" in ok.output and "hi 90%" in ok.output
    share = float(re.search(r"d00\W+([0-9.]+)", ok.output).group(1))  # its recommended share
    assert share <= 0.3 + 1e-6, ok.output
    bad = runner.invoke(app, [*args, "--strict"])
    assert bad.exit_code == 1 and "did NOT converge" in bad.output, bad.output
