"""bm.fit on data simulated from known parameters: every law, the NetCDF round trip, the
convergence checks, warm starts and the errors a user can cause.

Coded against the public API (bm.fit, Posterior.predict / log_loss / optimal_mixture / save /
load): the names of the parameters inside the draws are the laws' business.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix import inference
from bayesmix.laws.world import LawWorld
from bayesmix.optimize import own_share_optimum

DOMAINS = ["web", "code", "books", "wiki"]
STEPS = (250.0, 500.0, 1000.0)
SIGMA = 0.02


# ----------------------------------------------------------------------------- simulation
def truth(m: int = 4, seed: int = 0) -> LawWorld:
    """The own-share law with known parameters, its steps relative to the longest run."""
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(0.05, 0.2, m)
    return LawWorld.own_share(
        DOMAINS[:m],
        alpha,
        logk=np.log(rng.uniform(2.0, 3.5, m)),
        eps=np.full(m, 3e-3),
        frac=rng.uniform(0.3, 0.6, m),
        beta=rng.uniform(0.3, 0.8, m),
        reference_step=max(STEPS),
        noise=SIGMA,
    )


def true_log_loss(r: np.ndarray, step: float | None) -> np.ndarray:
    return WORLD.log_loss(r, None if step is None else np.full(len(r), step))


def mixtures(n: int, m: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + 100).dirichlet(np.ones(m), size=n)


def table(r: np.ndarray, steps: bool, seed: int = 0, prefix: str = "run") -> pd.DataFrame:
    """The tidy table of noisy losses of the own-share law at mixtures r (and STEPS)."""
    per_run = len(STEPS) if steps else 1
    ids = [f"{prefix}-{p}" for p in range(len(r)) for _ in range(per_run)]
    at = np.tile(STEPS, len(r)) if steps else None
    return WORLD.observe(np.repeat(r, per_run, axis=0), np.random.default_rng(seed + 200), ids, at)


def mixture_frame(r: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(r, columns=[f"r:{d}" for d in DOMAINS])
    frame.insert(0, "run_id", [f"new-{i}" for i in range(len(r))])
    return frame


WORLD = truth()
TRAIN = mixtures(10)
TEST = mixtures(30, seed=1)

# name -> (law, data with steps?, median relative error allowed on held-out points)
CASES = {
    "bimix-steps": ("bimix", True, 0.01),
    "bimix": ("bimix", False, 0.01),
    "bimix-cross": ("bimix-cross", False, 0.025),
    "loglinear-steps": ("loglinear", True, 0.02),
}


@pytest.fixture(scope="module")
def fitted(fit_once):
    """``fitted(name)``: each case fitted once per test run (Laplace, a few seconds plus
    compilation; conftest.py's ``fit_once``)."""

    def get(name: str) -> bm.Posterior:
        def make() -> bm.Posterior:
            law, steps, _ = CASES[name]
            obs = bm.Observations.from_frame(table(TRAIN, steps))
            return bm.fit(obs, law=law, method="laplace", seed=0, num_samples=300)

        return fit_once(f"test_inference:{name}", make)

    return get


# ----------------------------------------------------------------------------- recovery
@pytest.mark.parametrize(
    "name",
    [
        "bimix-steps",
        "bimix",
        pytest.param("bimix-cross", marks=pytest.mark.slow),
        "loglinear-steps",
    ],
)
def test_each_law_predicts_held_out_mixtures(fitted, name):
    law, steps, tolerance = CASES[name]
    post = fitted(name)
    assert post.law == law and post.method == "laplace" and post.converged
    assert post.domains == DOMAINS and post.targets == DOMAINS
    for step in (max(STEPS), min(STEPS)) if steps else (None,):
        pred = post.predict(mixture_frame(TEST), step=step, ci=0.9)
        assert list(pred.columns) == ["run_id", "target", "mean", "median", "lo", "hi", "step"]
        assert len(pred) == len(TEST) * len(DOMAINS)
        assert pred["run_id"].iloc[0] == "new-0" and pred["target"].tolist()[:4] == DOMAINS
        exact = np.exp(true_log_loss(TEST, step)).reshape(-1)
        rel = np.abs(pred["mean"].to_numpy() / exact - 1)
        assert np.median(rel) < tolerance, (step, np.median(rel))
        assert (pred["lo"] <= pred["mean"]).all() and (pred["mean"] <= pred["hi"]).all()
        # The 90 % predictive intervals (noise included) cover most new noisy losses.
        noisy = exact * np.exp(SIGMA * np.random.default_rng(7).standard_normal(exact.shape))
        covered = ((pred["lo"] <= noisy) & (noisy <= pred["hi"])).mean()
        assert covered >= 0.75, (step, covered)


def test_bimix_recovers_the_true_optimum(fitted):
    """The own-share law's optimum from the posterior is close to the true parameters' one."""
    post = fitted("bimix-steps")
    m = len(DOMAINS)
    w = np.full(m, 1.0 / m)
    exact = own_share_optimum(
        (np.log(w) + WORLD.logk)[None],
        np.diag(WORLD.alpha)[None],
        WORLD.eps[None],
        np.arange(m),
        np.zeros(m),
        np.ones(m),
    )[0]
    opt = post.optimal_mixture(max_draws=200)
    assert np.abs(opt.mixture.to_numpy() - exact).sum() < 0.1
    # Noise-free log loss per draw from post.log_loss matches predict's mean.
    r = TEST[:3]
    law = np.exp(post.log_loss(r)).mean(axis=0)
    pred = post.predict(mixture_frame(r))
    np.testing.assert_allclose(law.reshape(-1), pred["mean"].to_numpy(), rtol=1e-10)


def test_torch_log_loss_matches_numpy_and_has_gradients(fitted):
    import torch

    post = fitted("bimix-steps")
    r = torch.tensor(TEST[:2], dtype=torch.float64, requires_grad=True)
    out = post.log_loss(r, step=500.0, max_draws=50)
    assert isinstance(out, torch.Tensor) and out.shape == (50, 2, len(DOMAINS))
    ref = post.log_loss(TEST[:2], step=500.0, max_draws=50)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-10)
    out.sum().backward()
    assert r.grad is not None and torch.isfinite(r.grad).all() and (r.grad != 0).any()


# ----------------------------------------------------------------------------- round trip
def test_save_load_round_trip(fitted, tmp_path):
    post = fitted("bimix-steps")
    path = post.save(tmp_path / "post.nc")
    back = bm.Posterior.load(path)
    assert (back.law, back.method, back.settings) == (post.law, post.method, post.settings)
    assert back.domains == post.domains and back.targets == post.targets
    assert back.observations.target_domain == post.observations.target_domain
    pd.testing.assert_frame_equal(back.observations.frame, post.observations.frame)
    a, b = post.draws(), back.draws()
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert back.converged == post.converged and back.divergences == post.divergences
    new = mixture_frame(TEST[:5])
    for step in (None, 400.0):
        pd.testing.assert_frame_equal(back.predict(new, step=step), post.predict(new, step=step))
    with pytest.raises(FileNotFoundError, match="no such posterior file"):
        bm.Posterior.load(tmp_path / "missing.nc")
    (tmp_path / "junk.nc").write_text("not netcdf")
    with pytest.raises(ValueError, match="not a bayesmix posterior file"):
        bm.Posterior.load(tmp_path / "junk.nc")


def test_cross_law_file_of_the_per_target_floor_format_is_refused(fitted, tmp_path):
    """A cross-law file written when its floors were per target cannot be predicted from:
    loading it says so instead of failing later on a shape."""
    import json

    import arviz as az

    post = fitted("bimix-cross")
    assert post.draws()["eps"].shape[1] == len(post.domains)
    path = post.save(tmp_path / "cross.nc")
    assert bm.Posterior.load(path).law == "bimix-cross"
    idata = az.from_netcdf(str(path))
    meta = json.loads(idata.posterior.attrs["bayesmix"])
    idata.posterior.attrs["bayesmix"] = json.dumps({**meta, "format": 1})
    idata.to_netcdf(str(tmp_path / "old.nc"))
    with pytest.raises(ValueError, match="one floor per target"):
        bm.Posterior.load(tmp_path / "old.nc")


def test_one_shared_floor_is_one_learned_value_for_every_domain():
    """eps="shared": the cross law learns one floor, the same for every domain a target
    measures (the others keep the prior's centre, as with per-domain floors)."""
    obs = bm.Observations.from_frame(table(TRAIN, steps=False))
    post = bm.fit(obs, law="bimix-cross", method="laplace", eps="shared", progress=False)
    eps = post.draws()["eps"]
    assert post.settings.eps == "shared" and eps.shape[1] == len(post.domains)
    np.testing.assert_allclose(eps, eps[:, :1] * np.ones_like(eps))
    assert eps.std() > 0  # learned: it varies across draws


# ----------------------------------------------------------------------------- convergence
def test_both_nuts_metrics_sample_the_same_posterior():
    """The default metric (a diagonal adapted in warm-up) and the Laplace covariance
    (mass_matrix="laplace") are two ways to sample one posterior."""
    obs = bm.Observations.from_frame(table(TRAIN, steps=False))
    short = {"law": "bimix", "num_chains": 2, "num_warmup": 200, "num_samples": 200}
    adapted = bm.fit(obs, progress=False, **short)
    laplace = bm.fit(obs, mass_matrix="laplace", progress=False, **short)
    assert adapted.num_draws == laplace.num_draws == 400
    a, b = adapted.draws()["alpha"].mean(0), laplace.draws()["alpha"].mean(0)
    np.testing.assert_allclose(a, b, rtol=0.1)


def test_short_nuts_run_is_flagged_and_refused_when_strict():
    obs = bm.Observations.from_frame(table(TRAIN, steps=False))
    with pytest.warns(bm.ConvergenceWarning, match="did NOT converge"):
        post = bm.fit(
            obs, law="bimix", method="nuts", num_chains=2, num_warmup=5, num_samples=20,
            seed=1, progress=False,
        )  # fmt: skip
    assert post.method == "nuts" and post.num_draws == 40
    assert post.converged is False
    diverging = post.idata.sample_stats["diverging"].to_numpy()
    assert diverging.shape == (2, 20)
    assert isinstance(post.divergences, int) and post.divergences == int(diverging.sum())
    diag = post.diagnostics()
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(diag.columns)
    assert len(diag) > 0 and diag["ess_bulk"].min() < 400
    assert "WARNING" in post.summary_line()
    with pytest.raises(bm.NotConvergedError, match="did NOT converge"):
        post.check_usable(strict=True)
    with pytest.raises(bm.NotConvergedError):
        post.optimal_mixture(strict=True)
    with pytest.raises(bm.NotConvergedError):
        post.predict(mixture_frame(TEST[:2]), strict=True)
    with pytest.warns(bm.ConvergenceWarning):
        post.predict(mixture_frame(TEST[:2]))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="counts Linux memory maps")
@pytest.mark.parametrize(
    "fits",
    [
        pytest.param(3, marks=pytest.mark.slow),
        # Two fits (one growth step of the map count) catch a pile-up of ~1,100 maps per fit
        # just as well; each NUTS fit here is mostly its compilation.
        2,
    ],
)
def test_repeated_nuts_fits_do_not_pile_up_compiled_code(monkeypatch, fits):
    # Each NUTS fit used to keep ~1,100 memory maps alive; ~55 fits in one process (a study,
    # a cross-validation) then ran out of Linux's 65,530 and crashed in the LLVM compiler.
    # Compiled code is now dropped every FITS_PER_CACHE fits: here after each.
    obs = bm.Observations.from_frame(table(TRAIN, steps=False))

    def maps() -> int:
        return len(Path("/proc/self/maps").read_text().splitlines())

    monkeypatch.setattr(inference, "FITS_PER_CACHE", 1)
    counts = []
    for seed in range(fits):
        with pytest.warns(bm.ConvergenceWarning, match="R-hat needs at least 2 chains"):
            bm.fit(
                obs, law="bimix", method="nuts", num_chains=1, num_warmup=10, num_samples=10,
                seed=seed, progress=False,
            )  # fmt: skip
        counts.append(maps())
    assert counts[-1] - counts[0] < 200, counts


def test_entries_fixed_in_every_draw_do_not_fail_the_convergence_check(fitted):
    """A fixed floor (eps constant in every draw) has no r_hat; well-mixed chains of the
    rest still count as converged, and a mixing failure elsewhere is still caught."""
    from bayesmix.laws import LawSettings

    rng = np.random.default_rng(0)
    obs = fitted("bimix").observations
    t = len(obs.targets)
    eps = np.concatenate([np.full((4, 500, 1), 3e-3), rng.normal(size=(4, 500, t - 1))], -1)
    samples = {"alpha": rng.normal(size=(4, 500, t)), "eps": eps}
    stats = {"diverging": np.zeros((4, 500), dtype=bool)}
    post = bm.Posterior.from_samples("bimix", LawSettings(), "nuts", samples, stats, obs, {})
    diag = post.diagnostics()
    assert len(diag) == 2 * t - 1 and diag["r_hat"].notna().all()
    assert post.converged
    stuck = {**samples, "alpha": samples["alpha"] + np.arange(4)[:, None, None]}
    assert not bm.Posterior.from_samples(
        "bimix", LawSettings(), "nuts", stuck, stats, obs, {}
    ).converged


def test_laplace_diagnostics_have_the_columns(fitted):
    post = fitted("bimix")
    diag = post.diagnostics()
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(diag.columns)
    assert len(diag) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        post.check_usable(strict=True)  # converged: no warning, no error


# ----------------------------------------------------------------------------- warm start
def test_warm_start_from_a_previous_posterior(fitted):
    post = fitted("bimix")
    more = table(mixtures(3, seed=5), steps=False, seed=5, prefix="more")
    obs = bm.Observations.from_frame(pd.concat([table(TRAIN, steps=False), more]))
    again = bm.fit(obs, law="bimix", method="laplace", seed=0, num_samples=300, init=post)
    assert again.converged and len(again.observations.run_ids) == 13
    # Same held-out accuracy as the first fit (medians: the Laplace draws' tails at small
    # shares make single posterior means noisy).
    new = mixture_frame(TEST)
    exact = np.exp(true_log_loss(TEST, None)).reshape(-1)
    rel = np.abs(again.predict(new)["mean"].to_numpy() / exact - 1)
    assert np.median(rel) < 0.01


def test_warm_start_refuses_another_law_or_domain_set(fitted):
    post = fitted("bimix")
    obs = post.observations
    with pytest.raises(ValueError, match="same law, domains and targets"):
        bm.fit(obs, law="bimix-cross", method="laplace", init=post)
    three = table(TRAIN, steps=False).drop(columns="r:wiki")
    three = three[three["target"] != "wiki"].copy()
    three[["r:web", "r:code", "r:books"]] = three[["r:web", "r:code", "r:books"]].div(
        three[["r:web", "r:code", "r:books"]].sum(axis=1), axis=0
    )
    with pytest.raises(ValueError, match="same law, domains and targets.*4 domains"):
        bm.fit(bm.Observations.from_frame(three), law="bimix", method="laplace", init=post)


# ----------------------------------------------------------------------------- user errors
def test_bimix_refuses_a_target_without_its_own_domain():
    frame = table(TRAIN, steps=False)
    math = frame[frame["target"] == "web"].assign(target="math")
    obs = bm.Observations.from_frame(pd.concat([frame, math]))
    assert "math" not in obs.target_domain
    with pytest.raises(ValueError, match="needs each target's own training domain; none for math"):
        bm.fit(obs, law="bimix", method="laplace")


def test_a_law_with_every_exponent_warns_when_the_runs_are_too_few():
    """bimix-cross regresses each target on M + 1 unknowns: below 2 (M + 1) distinct runs
    it can interpolate them, and the user is told; the own-share law is not."""
    from bayesmix.inference import warn_if_interpolating
    from bayesmix.laws import LawData, LawSettings, get_law

    def data(r: np.ndarray) -> LawData:
        obs = bm.Observations.from_frame(table(r, steps=False))
        return LawData.from_observations(obs, LawSettings())

    few, enough = data(TRAIN[:6]), data(TRAIN)
    with pytest.warns(UserWarning, match="only 6 distinct mixtures: below 10 it can interpolate"):
        warn_if_interpolating(get_law("bimix-cross"), few)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_interpolating(get_law("bimix-cross"), enough)
        warn_if_interpolating(get_law("bimix"), few)


def test_bimix_needs_two_distinct_mixtures():
    frame = table(np.repeat(TRAIN[:1], 3, axis=0), steps=False)
    with pytest.raises(ValueError, match="at least two distinct mixtures"):
        bm.fit(bm.Observations.from_frame(frame), law="bimix", method="laplace")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": -0.01}, "eps must be a positive number, 'learned' or 'shared', got -0.01"),
        ({"eps": 0.0}, "eps must be a positive number"),
        ({"eps": "auto"}, "eps must be a positive number"),
        ({"law": "bimixx"}, "unknown law 'bimixx'; choose one of bimix, bimix-cross, loglinear"),
        ({"noise": "gaussian"}, "noise must be one of .*normal.*got 'gaussian'"),
        ({"method": "mcmc"}, "unknown method 'mcmc'"),
        ({"num_samples": 0}, "num_samples must be a positive integer"),
        ({"num_chains": 1.5}, "num_chains must be a positive integer"),
        ({"early_steps": 1.0}, "early_steps must be in"),
        ({"mass_matrix": "dense"}, "unknown mass_matrix 'dense'; choose one of laplace"),
    ],
)
def test_bad_settings_are_one_clear_error(kwargs, message):
    obs = bm.Observations.from_frame(table(TRAIN[:3], steps=False))
    with pytest.raises(ValueError, match=message) as info:
        bm.fit(obs, **{"law": "bimix", "method": "laplace", **kwargs})
    assert "\n" not in str(info.value)


def test_the_warm_up_is_left_out_of_the_fit_and_of_its_scores():
    """Evaluations before a tenth of a run's last step (here step 20 of 1000, at the initial
    loss, which no step law describes) are not fitted, and the fit scores runs without them."""
    late = table(TRAIN, steps=True)
    warm_up = late[late["step"] == STEPS[0]].assign(step=20.0, value=10.8)
    obs = bm.Observations.from_frame(pd.concat([late, warm_up]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.ConvergenceWarning)
        post = bm.fit(obs, law="bimix", method="laplace", num_samples=200)
        kept = bm.fit(bm.Observations.from_frame(late), law="bimix", method="laplace")
    assert post.info["early_rows"] == len(warm_up)
    ll = post.log_likelihood(obs, max_draws=50)
    assert np.allclose(ll, post.log_likelihood(bm.Observations.from_frame(late), max_draws=50))
    centre = {k: float(np.mean(post.draws()[k])) for k in ("beta", "frac")}
    assert centre == pytest.approx({k: float(np.mean(kept.draws()[k])) for k in centre}, rel=0.05)


def test_fit_wants_observations():
    with pytest.raises(TypeError, match="fit expects Observations"):
        bm.fit(table(TRAIN[:3], steps=False))


def test_loglinear_optimal_mixture(fitted):
    post = fitted("loglinear-steps")
    opt = post.optimal_mixture(max_draws=50)
    assert opt.mixture.sum() == pytest.approx(1.0)
