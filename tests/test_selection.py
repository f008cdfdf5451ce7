"""Choosing a law by held-out predictive fit, and the log likelihood it rests on."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
from numpyro.infer import log_likelihood
from typer.testing import CliRunner

import bayesmix as bm
from bayesmix import selection
from bayesmix.acquisition import ensemble_model, optimal_mixture
from bayesmix.benchmarks import SyntheticOracle
from bayesmix.cli import app
from bayesmix.domains import DomainUpdate
from bayesmix.law_average import LawAverage
from bayesmix.laws import LawData, get_law
from bayesmix.observations import ObservationsError
from bayesmix.proposers import (
    ProposalContext,
    ProposalError,
    bayesian,
    get_proposer,
    get_recommender,
)
from bayesmix.proposers.bayesian import fit_posterior
from bayesmix.reuse import prior_from_posterior
from bayesmix.selection import SelectionError, compare_laws, stacking_weights


def world_runs(law: str, n: int, noise: float, m: int = 3, **observe: object) -> bm.Observations:
    """n random mixtures of an m-domain synthetic world, observed with log-scale ``noise``."""
    world = SyntheticOracle(m, law=law, world_seed=1, noise=noise)
    rng = np.random.default_rng(0)
    r = rng.dirichlet(np.ones(m), n)
    frame = world.observe(r, rng, [f"run-{i}" for i in range(n)], **observe)
    return bm.Observations.from_frame(frame)


def test_log_likelihood_is_the_model_s_own_per_run():
    obs = world_runs("bimix", 10, 0.01, steps=10_000, checkpoints=2)
    post = bm.fit(obs, law="bimix", method="laplace", num_chains=1, num_samples=16, progress=False)
    ll = post.log_likelihood(obs)
    assert ll.shape == (16, 10) and list(ll.columns) == [f"run-{i}" for i in range(10)]
    # Summed over runs it is NumPyro's log likelihood of the fitted model, draw by draw.
    data = replace(LawData.from_observations(obs, post.settings), centered=post.info["centered"])
    model = partial(get_law("bimix").model, data, post.settings, None)
    expected = np.asarray(log_likelihood(model, post.draws())["log_y"])
    np.testing.assert_allclose(ll.to_numpy().sum(axis=1), expected, rtol=1e-9)
    # A subset of runs is scored on the fit's own reference step.
    two = post.log_likelihood(obs.select(runs=["run-3", "run-7"]))
    np.testing.assert_allclose(two.to_numpy(), ll[["run-3", "run-7"]].to_numpy(), rtol=1e-9)
    other = obs.frame.rename(columns={"r:d00": "r:web"})
    with pytest.raises(ObservationsError, match="cannot be scored by a posterior over"):
        post.log_likelihood(bm.Observations.from_frame(other))


def test_held_out_fit_keeps_the_own_share_law_where_it_is_true():
    comparison = compare_laws(world_runs("bimix", 12, 0.02), method="map", folds=3)
    assert comparison.chosen == "bimix" and comparison.folds == 3
    assert list(comparison.table.index) == ["bimix", "bimix-cross"]
    assert comparison.pointwise.shape == (12, 2)
    assert np.isfinite(comparison.pointwise.to_numpy()).all()
    assert comparison.table.loc["bimix", "elpd_diff"] == 0.0
    assert "chosen: bimix" in str(comparison)


def test_held_out_fit_finds_cross_domain_effects_when_runs_show_them():
    # Four domains, a fifth of RegMix's noise, 30 runs: the cross exponents are measured.
    comparison = compare_laws(world_runs("bimix-cross", 30, 0.005, m=4), method="map", folds=3)
    row = comparison.table.loc["bimix-cross"]
    assert comparison.chosen == "bimix-cross", str(comparison)
    assert row["elpd_diff"] > row["se_diff"] > 0


def test_what_cannot_be_compared_says_why():
    obs = world_runs("bimix", 6, 0.02)
    for kwargs, message in (
        ({"laws": ["bimix", "gp"]}, "unknown laws \\['gp'\\]"),
        ({"laws": ["bimix", "bimix"]}, "listed twice"),
        ({"method": "laplace"}, "unknown method .laplace.; choose one of loo, nuts, map"),
        ({"folds": 1}, "folds must be an integer of at least 2"),
        ({"threshold": -1.0}, "threshold must be a non-negative number"),
    ):
        with pytest.raises(SelectionError, match=message):
            compare_laws(obs, **kwargs)
    with pytest.raises(SelectionError, match="at least 4 runs to hold some out, got 3"):
        compare_laws(obs.select(runs=["run-0", "run-1", "run-2"]))


def test_a_law_that_cannot_fit_is_reported_and_the_next_compared(tmp_path):
    # Targets that are no training domain: the own-share law has nothing to fit.
    obs = world_runs("bimix", 8, 0.02)
    renamed = obs.frame.assign(target=obs.frame["target"].str.replace("d", "task"))
    path = tmp_path / "runs.csv"
    renamed.to_csv(path, index=False)
    result = CliRunner().invoke(app, ["compare-laws", str(path), "--folds", "2", "--method", "map"])
    assert result.exit_code == 0, result.output
    assert "bimix        not fitted:" in result.output
    assert "chosen: bimix-cross" in result.output
    bad = CliRunner().invoke(app, ["compare-laws", str(path), "--laws", "bimix,nope"])
    assert bad.exit_code != 0 and "unknown laws ['nope']" in bad.output


def test_the_map_is_a_posterior_of_one_draw_with_no_spread_to_transfer():
    obs = world_runs("bimix", 10, 0.02)
    post = bm.fit(obs, law="bimix", method="map", progress=False)
    assert (
        post.num_draws == 1
        and post.converged
        and "approximate posterior (map)" in str(post.summary_line())
    )
    opt = post.optimal_mixture(max_draws=None)
    assert abs(opt.mixture.sum() - 1.0) < 1e-6
    with pytest.raises(ValueError, match="a posterior of 1 draw \\(map\\) has no spread"):
        prior_from_posterior(post, DomainUpdate.add("d03", 1e9), observations=obs)


@pytest.mark.parametrize(
    ("warmup", "draws"), [pytest.param(100, 150, marks=pytest.mark.slow), (50, 60)]
)
def test_leave_one_run_out_from_one_fit_per_law_keeps_the_chosen_fit(monkeypatch, warmup, draws):
    # Pareto-smoothed leave-one-run-out: each law fitted once by NUTS, only the runs its
    # draws cannot leave out by reweighting are refitted; the chosen law's fit is kept.
    short = {"method": "nuts", "num_chains": 2, "num_warmup": warmup, "num_samples": draws}
    monkeypatch.setitem(selection.FOLD_FITS, "nuts", short)  # minutes -> a minute
    comparison = compare_laws(world_runs("bimix-cross", 16, 0.01), method="loo")
    assert comparison.chosen == "bimix-cross", str(comparison)
    row = comparison.table.loc["bimix-cross"]
    assert row["elpd_diff"] > row["se_diff"] > 0
    assert comparison.posterior is comparison.posteriors["bimix-cross"]
    assert comparison.posterior.law == "bimix-cross" and comparison.posterior.num_draws == 2 * draws
    assert set(comparison.refitted) == {"bimix", "bimix-cross"}
    assert "leave-one-run-out, Pareto-smoothed" in str(comparison)
    # K folds keep no fit to every run.
    with pytest.raises(SelectionError, match="keeps no fit to every run"):
        _ = compare_laws(world_runs("bimix", 12, 0.02), method="map", folds=3).posterior


def test_only_refits_that_can_change_the_choice_are_made():
    """A refit without an influential run can only lower its law (reweighting scores that
    run too well), so "decisive" refits the chosen law alone, and the other only where the
    chosen one fell below it; "all" refits every law (stacking needs every score right)."""
    runs = [f"run-{i}" for i in range(20)]
    rng = np.random.default_rng(0)
    pointwise = {
        "bimix": pd.Series(rng.normal(1.0, 0.1, 20), index=runs),
        "bimix-cross": pd.Series(rng.normal(3.0, 0.1, 20), index=runs),
    }
    laws, influential = list(pointwise), {"bimix": ["run-0"], "bimix-cross": ["run-1"]}

    def refits(mode: str, drop: float) -> list[str]:
        scores = {law: series.copy() for law, series in pointwise.items()}
        refitted: dict[str, list[str]] = {law: [] for law in laws}
        order = []
        while law := selection._next_refit(scores, laws, {}, 1.0, influential, refitted, mode):
            order.append(law)
            scores[law][influential[law]] -= drop  # what a refit does to its law
            refitted[law] = influential[law]
        return order

    assert refits("decisive", drop=1.0) == ["bimix-cross"]
    assert refits("decisive", drop=100.0) == ["bimix-cross", "bimix"]
    assert refits("all", drop=1.0) == ["bimix", "bimix-cross"]


def test_a_law_that_can_interpolate_the_runs_is_not_compared_but_averaged_over(monkeypatch):
    # 7 runs of 3 domains: the cross law has 4 coefficients per target, 8 runs are needed.
    obs = world_runs("bimix-cross", 7, 0.005)
    context = ProposalContext(obs.domains, observations=obs)
    average = fit_posterior(context, "average")  # bm.average_laws, as the proposer fits it
    comparison = average.comparison
    assert comparison.chosen == "bimix" and comparison.refitted == {"bimix": []}
    assert comparison.table.loc["bimix-cross", "error"].startswith("not compared: law")
    assert "only 7 distinct mixtures: below 8 it can interpolate" in str(comparison)
    assert average.posterior is comparison.posterior and average.posterior.law == "bimix"
    # Nothing held out speaks for either law yet: each keeps its prior weight, and the
    # proposals are over both laws' draws.
    assert average.weights == {"bimix": 0.5, "bimix-cross": 0.5}
    assert average.posteriors["bimix-cross"].law == "bimix-cross"
    _, model = ensemble_model(average, None, max_draws=64)
    assert [part.ensemble_size for part in model.parts] == [32, 32]
    assert [part.law_posterior.law for part in model.parts] == ["bimix", "bimix-cross"]
    r = torch.full((5, 3), 1 / 3, dtype=torch.float64)
    parts = [part.log_loss(r) for part in model.parts]
    assert torch.equal(model.log_loss(r), torch.cat(parts))
    assert not torch.allclose(parts[0].mean(0), parts[1].mean(0))
    batch = get_proposer("bayesmix", law="average").propose(context, 2)
    assert np.allclose(batch.filter(like="r:").sum(axis=1), 1.0)
    assert (batch["acquisition_value"] > 0).all()
    with pytest.raises(ProposalError, match="fitted to one law's residuals"):
        bm.propose(average, q=2, discrepancy=True)
    # A study hands the proposer its own one-law fit: law="average" averages all the same.
    refits = []
    monkeypatch.setattr(bayesian, "average_laws", lambda *args, **kw: refits.append(kw) or average)
    one_law = ProposalContext(obs.domains, observations=obs, posterior=average.posterior)
    assert fit_posterior(one_law, "average") is average and refits == [{"seed": 0}]
    assert fit_posterior(one_law, "bimix") is average.posterior
    # The recommendation is the chosen law's.
    recommender = get_recommender("posterior-optimum")
    recommended = recommender.recommend(ProposalContext(average.domains, posterior=average))
    chosen = recommender.recommend(ProposalContext(average.domains, posterior=average.posterior))
    assert recommended.equals(chosen)
    _check_model_average_recommendation(average, chosen)


def _check_model_average_recommendation(average: LawAverage, chosen: pd.Series) -> None:
    """model_average=True recommends the minimiser of the law-weighted expected objective."""

    def averaged_objective(r: np.ndarray) -> np.ndarray:
        per_law = [
            w * np.exp(post.log_loss(r, None, max_draws=256)).mean(axis=-1).mean(axis=0)
            for post, w in average.parts()
        ]
        return np.sum(per_law, axis=0)

    recommender = get_recommender("posterior-optimum", model_average=True)
    averaged = recommender.recommend(ProposalContext(average.domains, posterior=average))
    assert abs(averaged.sum() - 1) < 1e-9 and not np.allclose(averaged, chosen, atol=1e-3)
    each_optimum = [
        post.optimal_mixture(max_draws=256).mixture.reindex(average.domains).to_numpy()
        for post, _ in average.parts()
    ]
    values = averaged_objective(np.vstack([averaged.to_numpy(), *each_optimum]))
    assert values[0] <= values[1:].min() + 1e-6, values
    # The same optimum from the average itself, with intervals over both laws' optima.
    opt = optimal_mixture(average)
    assert np.allclose(opt.mixture.reindex(average.domains), averaged)
    sizes = [part.ensemble_size for part in ensemble_model(average, None)[1].parts]
    first_law = average.parts()[0][0].optimal_mixture(max_draws=sizes[0]).draws
    assert len(opt.draws) == sum(sizes) and np.allclose(opt.draws.iloc[: sizes[0]], first_law)
    assert opt.objective_interval[0] <= opt.expected_objective <= opt.objective_interval[1]
    assert (opt.intervals["lo"] <= opt.intervals["hi"]).all()
    with pytest.raises(ValueError, match="ci must be in"):
        optimal_mixture(average, ci=1.5)
    # Over a pool: the row the average predicts best.
    rng = np.random.default_rng(3)
    pool = pd.DataFrame(rng.dirichlet(np.ones(3), 40), columns=[f"r:{d}" for d in average.domains])
    picked = recommender.recommend(
        ProposalContext(average.domains, posterior=average, candidates=pool)
    )
    best = int(np.argmin(averaged_objective(pool.to_numpy())))
    assert np.allclose(picked.to_numpy(), pool.to_numpy()[best])
    # One law's posterior: nothing to average, its own optimum.
    one = recommender.recommend(ProposalContext(average.domains, posterior=average.posterior))
    assert one.equals(chosen)
    with pytest.raises(ProposalError, match="recommend from one law"):
        get_recommender("posterior-optimum", model_average=True, discrepancy=True)


def test_stacking_weights_are_the_mixture_that_predicts_held_out_runs_best():
    rng = np.random.default_rng(0)
    good, bad = rng.normal(1.0, 0.1, 20), rng.normal(-3.0, 0.1, 20)
    # One law better on every run: all the weight.
    lpd = pd.DataFrame({"a": good, "b": bad})
    assert stacking_weights(lpd)["a"] > 0.99
    # Each law better on half the runs: the mixture of both.
    halves = pd.DataFrame({"a": np.r_[good[:10], bad[10:]], "b": np.r_[bad[:10], good[10:]]})
    w = stacking_weights(halves)
    assert abs(w["a"] - 0.5) < 0.05 and abs(w.sum() - 1) < 1e-9
    assert stacking_weights(lpd[["a"]]).tolist() == [1.0]
