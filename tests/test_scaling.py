"""The model-size axis: the model_size column, the cross-scaling law, answers at unseen sizes."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix.laws import LawError, default_law, formulas
from bayesmix.observations import ObservationsError

DOMAINS = ["code", "books", "web", "wiki"]
SIZES = (1e7, 3e7, 1e8)


def world_params() -> dict[str, np.ndarray]:
    """A known cross-scaling world: own exponents 0.1-0.2, small cross effects, Chinchilla's
    size exponent, mixture effects 5 % stronger per e-fold of size."""
    rng = np.random.default_rng(7)
    m = len(DOMAINS)
    alpha = rng.normal(0.0, 0.02, (m, m)) + np.diag(rng.uniform(0.1, 0.2, m))
    delta = 0.05 * alpha
    return {
        "logk": np.log(rng.uniform(2.5, 3.5, m)),
        "alpha": alpha,
        "eps": np.full(m, 3e-3),
        "frac_size": np.full(m, 0.4),
        "gamma": np.full(m, 0.34),
        "delta": delta,
        "delta_level": np.zeros(m),
    }


def true_loss(r: np.ndarray, size: float) -> np.ndarray:
    p = world_params()
    n_rel = np.full(len(r), size / max(SIZES))
    return np.exp(
        formulas.scaling_log_loss(
            np,
            p["logk"],
            p["alpha"],
            p["eps"],
            r,
            n_rel=n_rel,
            frac_size=p["frac_size"],
            gamma=p["gamma"],
            delta=p["delta"],
            delta_level=p["delta_level"],
        )
    )


def sized_runs(n_per_size: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for size in SIZES:
        r = rng.dirichlet(np.ones(len(DOMAINS)), n_per_size)
        loss = true_loss(r, size) * np.exp(rng.normal(0, 0.005, (n_per_size, len(DOMAINS))))
        for i in range(n_per_size):
            for t, target in enumerate(DOMAINS):
                rows.append(
                    {
                        "run_id": f"n{size:.0e}-{i}",
                        "target": target,
                        "value": loss[i, t],
                        "model_size": size,
                        **{f"r:{d}": r[i, j] for j, d in enumerate(DOMAINS)},
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def sized_posterior() -> bm.Posterior:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs = bm.Observations.from_frame(sized_runs())
        return bm.fit(obs, law="cross-scaling", method="laplace", seed=0)  # the world's law


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.assign(model_size=-1.0), "'model_size': -1 is not a positive parameter"),
        (
            lambda f: f.assign(model_size=f["model_size"].where(f.index % 7 != 3)),
            "'model_size': nan is not a positive parameter count",
        ),
        (
            lambda f: f.assign(model_size=np.where(f.index % 2 == 0, 1e7, 2e7)),
            "one run has several model sizes",
        ),
    ],
    ids=["negative", "missing", "two-per-run"],
)
def test_model_size_column_is_validated(edit, message):
    with pytest.raises(ObservationsError, match=message):
        bm.Observations.from_frame(edit(sized_runs(3)))


def test_the_default_law_follows_the_data():
    frame = sized_runs(12)
    assert default_law(bm.Observations.from_frame(frame)) == "additive"
    one_size = frame[frame["model_size"] == 1e7].drop(columns="model_size")
    few = one_size[one_size["run_id"].isin(one_size["run_id"].unique()[:6])]
    # 6 runs of final losses, 4 domains (2 (M + 1) = 10 identify the cross law), each
    # measured by its own target: the shrunk cross law.
    assert default_law(bm.Observations.from_frame(few)) == "bimix-cross"
    # A domain no target measures: the own-share law until the runs identify the cross law.
    unmeasured = few[few["target"] != "wiki"]
    assert default_law(bm.Observations.from_frame(unmeasured)) == "bimix"
    more = one_size[one_size["target"] != "wiki"]
    assert default_law(bm.Observations.from_frame(more)) == "bimix-cross"  # 12 runs
    # A target without a domain of its own needs the cross law, however few the runs.
    other = unmeasured.assign(target=unmeasured["target"].replace("web", "lambada"))
    assert default_law(bm.Observations.from_frame(other)) == "bimix-cross"
    # A run's curve (several evaluations) identifies the cross law at few runs.
    curves = pd.concat(
        [
            unmeasured.assign(step=1000),
            unmeasured.assign(step=4000, value=unmeasured["value"] * 0.9),
        ]
    )
    assert default_law(bm.Observations.from_frame(curves)) == "bimix-cross"
    with pytest.raises(LawError, match="has no size axis"):
        bm.fit(bm.Observations.from_frame(frame), law="bimix-cross", method="map")


def test_predicts_a_ten_times_larger_model_with_wider_intervals(sized_posterior):
    post = sized_posterior
    assert post.law == "cross-scaling" and post.has_sizes and post.converged
    r = np.random.default_rng(99).dirichlet(np.ones(len(DOMAINS)), 20)
    mixtures = pd.DataFrame(r, columns=[f"r:{d}" for d in DOMAINS])
    fitted = post.predict(mixtures, model_size=1e8)
    bigger = post.predict(mixtures, model_size=1e9)
    assert (bigger["model_size"] == 1e9).all() and (fitted["model_size"] == 1e8).all()
    truth = true_loss(r, 1e9).reshape(-1)
    error = np.abs(bigger["median"].to_numpy() / truth - 1)
    assert error.mean() < 0.02, error.mean()
    inside = (bigger["lo"] <= truth) & (truth <= bigger["hi"])
    assert inside.mean() >= 0.7
    # Ten times past the largest size the law knows less than at the sizes it saw.
    width = lambda p: ((p["hi"] - p["lo"]) / p["median"]).mean()  # noqa: E731
    assert width(bigger) > 1.2 * width(fitted)
    # The big model's loss is lower everywhere.
    assert (bigger["median"].to_numpy() < fitted["median"].to_numpy()).all()


def test_optimal_mixture_for_the_target_size(sized_posterior):
    opt = sized_posterior.optimal_mixture(model_size=1e9, max_draws=100)
    assert abs(opt.mixture.sum() - 1) < 1e-9
    assert (opt.intervals["lo"] <= opt.intervals["hi"]).all()


def test_a_posterior_of_one_size_refuses_another(sized_posterior):
    frame = sized_runs(4)
    one = bm.Observations.from_frame(frame[frame["model_size"] == 1e8])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bm.fit(one, method="map")
    mixtures = one.mixtures().reset_index()
    assert len(post.predict(mixtures, model_size=1e8)) == len(mixtures) * len(DOMAINS)
    with pytest.raises(ObservationsError, match="no model-size axis"):
        post.predict(mixtures, model_size=1e9)
    with pytest.raises(ValueError, match="positive parameter count"):
        sized_posterior.predict(mixtures, model_size=-5)
    with pytest.raises(bm.ProposalError, match="model-size axis"):
        bm.propose(post, 2, model_sizes=[1e7], tokens=1e9, max_draws=16)


def test_cli_optimizes_for_a_model_size(tmp_path, sized_posterior):
    from typer.testing import CliRunner

    from bayesmix.cli import app

    path = sized_posterior.save(tmp_path / "sized.nc")
    runner = CliRunner()
    ok = runner.invoke(app, ["optimize", str(path), "--model-size", "1e9"])
    assert ok.exit_code == 0, ok.output
    assert "code" in ok.output and "expected objective" in ok.output
    no_tokens = runner.invoke(app, ["optimize", str(path), "--tokens", "1e9"])
    assert no_tokens.exit_code != 0 and "record no tokens" in no_tokens.output
    bad = runner.invoke(app, ["optimize", str(path), "--model-size", "-3"])
    assert bad.exit_code != 0 and "--model-size must be a positive number" in bad.output


def test_the_additive_law_fits_sizes_and_answers_for_a_bigger_model():
    """Shukor's additive law on the same runs: close at the sizes it saw, lower loss for a
    bigger model, independent noise by default."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bm.fit(bm.Observations.from_frame(sized_runs()), method="laplace", seed=0)
    assert post.law == "additive" and post.settings.noise == "normal"
    r = np.random.default_rng(5).dirichlet(np.ones(len(DOMAINS)), 10)
    mixtures = pd.DataFrame(r, columns=[f"r:{d}" for d in DOMAINS])
    fitted = post.predict(mixtures, model_size=1e8)
    error = np.abs(fitted["median"].to_numpy() / true_loss(r, 1e8).reshape(-1) - 1)
    assert error.mean() < 0.03, error.mean()
    bigger = post.predict(mixtures, model_size=1e9)
    assert (bigger["median"].to_numpy() < fitted["median"].to_numpy()).all()


def test_held_out_runs_of_one_size_are_scored_on_the_size_axis(sized_posterior):
    """log_likelihood of runs at one size (held out) places them on the fit's size axis."""
    frame = sized_runs(3, seed=1)
    held = bm.Observations.from_frame(frame[frame["model_size"] == 1e7])
    scores = sized_posterior.log_likelihood(held, max_draws=20)
    assert scores.shape == (20, 3) and np.isfinite(scores.to_numpy()).all()
    moved = bm.Observations.from_frame(held.frame.assign(model_size=1e8))
    # The same runs claimed at the largest size fit worse: their losses are a 1e7 model's.
    assert (
        scores.to_numpy().mean() > sized_posterior.log_likelihood(moved, max_draws=20).mean().mean()
    )


def test_the_optimum_by_size_widens_beyond_the_fitted_sizes(tmp_path, sized_posterior):
    """How the optimum moves with size: one row per size and domain, shares summing to one,
    and the intervals of a 100x extrapolation wider than at the largest fitted size; the CLI
    draws it (--plot) and a posterior without a size axis is refused with one clear error."""
    from typer.testing import CliRunner

    from bayesmix.cli import app
    from bayesmix.errors import ArgumentError
    from bayesmix.report import optimum_by_size

    frame = optimum_by_size(sized_posterior, [1e8, 1e10])
    assert len(frame) == 2 * len(DOMAINS)
    width = (frame["hi"] - frame["lo"]).groupby(frame["model_size"]).sum()
    assert width[1e10] > width[1e8], width
    assert np.allclose(frame.groupby("model_size")["share"].sum(), 1.0)

    path = sized_posterior.save(tmp_path / "sized.nc")
    png = tmp_path / "by_size.png"
    runner = CliRunner()
    ok = runner.invoke(app, ["optimize", str(path), "--model-size", "1e10", "--plot", str(png)])
    assert ok.exit_code == 0, ok.output
    assert png.read_bytes()[:4] == b"\x89PNG" and "optimal share by model size" in ok.output

    one = bm.Observations.from_frame(sized_runs(4)[lambda f: f["model_size"] == 1e8])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat = bm.fit(one, method="map")
    with pytest.raises(ArgumentError, match="no model-size axis"):
        optimum_by_size(flat, [1e9])
    no_axis = runner.invoke(
        app, ["optimize", str(flat.save(tmp_path / "flat.nc")), "--plot", str(png)]
    )
    assert no_axis.exit_code != 0 and "has no size axis" in no_axis.output


def test_proposals_choose_the_model_size_within_a_budget_of_flops(sized_posterior):
    """Each run costs 6 N D; the batch spends at most q runs of the largest size offered,
    every run at a size offered and apart from the others."""
    props = bm.propose(
        sized_posterior, 2, model_size=1e9, model_sizes=[1e7, 1e8], tokens=2e9, max_draws=16
    )
    assert set(props["model_size"]) <= {1e7, 1e8}
    np.testing.assert_allclose(props["flops"], 6 * props["model_size"] * 2e9)
    assert props["flops"].sum() <= 2 * 6 * 1e8 * 2e9 * (1 + 1e-9)
    r = props.filter(like="r:").to_numpy()
    gaps = np.abs(r[:, None] - r[None]).sum(-1) + 9 * np.eye(len(r))
    assert gaps.min() >= 0.02


def test_cli_proposes_runs_of_one_offered_size(tmp_path, sized_posterior):
    from typer.testing import CliRunner

    from bayesmix.cli import app

    path = sized_posterior.save(tmp_path / "sized.nc")
    out = tmp_path / "batch.csv"
    args = ["propose", str(path), "--q", "2", "--model-size", "1e9", "--tokens", "2e9"]
    ok = CliRunner().invoke(app, [*args, "--model-sizes", "1e8", "-o", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "model sizes (parameters): run 1: 1e+08 (1.2e+18 FLOPs)" in ok.output
    assert list(pd.read_csv(out)["model_size"]) == [1e8] * 2
    bad = CliRunner().invoke(app, [*args, "--model-sizes", "big"])
    assert bad.exit_code != 0 and "--model-sizes must be comma-separated parameter counts" in (
        bad.output
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model_sizes": [1e7]}, "tokens each run trains must be given"),
        ({"model_sizes": [-1e7], "tokens": 1e9}, "positive parameter counts"),
        ({"model_sizes": [1e7], "tokens": 1e9, "flops": 1.0}, "buys no run"),
        ({"model_sizes": [1e7], "tokens": 1e9, "acquisition": "qlognei"}, "optimum-variance"),
        ({"model_sizes": [1e7], "tokens": 1e9, "max_runs": 1}, "max_runs must be an integer"),
    ],
    ids=["no-tokens", "negative-size", "tiny-budget", "acquisition", "max-runs"],
)
def test_bad_model_size_options_each_say_one_clear_thing(sized_posterior, options, message):
    with pytest.raises(bm.ProposalError, match=message):
        bm.propose(sized_posterior, 2, max_draws=16, **options)


def test_the_weight_level_swap_keeps_the_differences_prior():
    """The additive law pins each target's unidentified mean relative weight
    (``additive.level_swap``) without changing the prior of what reaches the loss. Sampled
    from the prior (non-centred, as where data are few): the spread tau keeps its
    HalfNormal(1) prior (median 0.674; pinning the levels without dividing their prior out
    pulls it to about 0.15), a within-target difference given tau has variance
    2 (S^2 + tau^2) with S = 1, and the levels stay within a few hundredths of 0."""
    from types import SimpleNamespace

    import jax
    from numpyro.infer import MCMC, NUTS

    from bayesmix.laws.additive import WEIGHT_LEVEL_SD, mixture_term

    data = SimpleNamespace(n_targets=3, n_domains=3, centered=False)
    mcmc = MCMC(
        NUTS(lambda: mixture_term(data)), num_warmup=300, num_samples=1500, progress_bar=False
    )
    mcmc.run(jax.random.PRNGKey(0))
    draws = mcmc.get_samples()
    w = np.asarray(draws["weight_relative"]).reshape(-1, 3, 3)
    tau = np.asarray(draws["weight_tau"])
    assert np.abs(w.mean(axis=2)).std() < 2 * WEIGHT_LEVEL_SD
    assert np.median(tau) == pytest.approx(0.674, rel=0.15)
    standardised = (w[:, :, 1] - w[:, :, 0]) / np.sqrt(2 * (1 + tau**2))[:, None]
    assert standardised.var() == pytest.approx(1.0, rel=0.1)
