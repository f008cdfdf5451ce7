"""The optimal mixture: closed form against a generic solver, the box-simplex projection, and
the constraints (bounds, repetition caps, infeasible combinations) on real posteriors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

import bayesmix as bm
from bayesmix.laws.formulas import bimix_log_loss
from bayesmix.optimize import InfeasibleError, own_share_optimum, project_to_box_simplex

DOMAINS = ["web", "code", "books", "wiki"]


# ----------------------------------------------------------------------------- helpers
def realistic_draws(n: int, t: int, seed: int) -> dict[str, np.ndarray]:
    """Draws like RegMix posteriors give: alpha 0.02-0.3, eps 1e-4-1e-2, K 2-4 nats."""
    rng = np.random.default_rng(seed)
    return {
        "alpha": np.exp(rng.normal(np.log(0.07), 0.7, (n, t))),
        "eps": np.exp(rng.normal(np.log(2e-3), 1.2, (n, t))),
        "logk": np.log(rng.uniform(2.0, 4.0, (n, t))),
    }


def slsqp(objective, m: int, lo: np.ndarray, hi: np.ndarray, start: np.ndarray | None = None):
    """A generic solver: SLSQP on the box-simplex from a feasible start."""
    x0 = project_to_box_simplex(np.full((1, m), 1.0 / m), lo, hi)[0] if start is None else start
    res = minimize(
        objective,
        x0,
        method="SLSQP",
        bounds=list(zip(lo, hi, strict=True)),
        constraints=[{"type": "eq", "fun": lambda r: r.sum() - 1.0}],
        options={"ftol": 1e-15, "maxiter": 2000},
    )
    return res.x


def own_objective(p: dict[str, np.ndarray], d: int, w: np.ndarray, own: np.ndarray):
    """sum_t w_t L_t(r) of draw d through the law's own formula (one mixture r)."""

    def f(r: np.ndarray) -> float:
        r_own = np.clip(r, 0.0, None)[own][None]
        logl = bimix_log_loss(np, p["logk"][d], p["alpha"][d], p["eps"][d], r_own)
        return float(np.exp(logl[0]) @ w)

    return f


def simulate(m: int = 4, runs: int = 10, seed: int = 0, sigma: float = 0.02) -> pd.DataFrame:
    """Own-share data without steps from known parameters (domain j is target j)."""
    rng = np.random.default_rng(seed)
    domains = DOMAINS[:m]
    alpha = rng.uniform(0.05, 0.2, m)
    eps = np.full(m, 3e-3)
    logk = np.log(rng.uniform(2.0, 3.5, m))
    r = rng.dirichlet(np.ones(m), size=runs)
    log_y = bimix_log_loss(np, logk, alpha, eps, r) + sigma * rng.standard_normal((runs, m))
    rows = [
        {"run_id": f"run-{p}", "target": d, "value": float(np.exp(log_y[p, t]))}
        | {f"r:{e}": r[p, j] for j, e in enumerate(domains)}
        for p in range(runs)
        for t, d in enumerate(domains)
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def post() -> bm.Posterior:
    obs = bm.Observations.from_frame(simulate())
    return bm.fit(obs, law="bimix", method="laplace", seed=0, num_samples=200, progress=False)


# ----------------------------------------------------------------------------- closed form
@pytest.mark.parametrize("bounded", [False, True])
def test_closed_form_matches_generic_solver_per_draw(bounded):
    n, m = 12, 5
    p = realistic_draws(n, m, seed=1)
    w = np.array([0.3, 0.1, 0.2, 0.25, 0.15])
    own = np.arange(m)
    if bounded:
        lo = np.array([0.05, 0.0, 0.1, 0.0, 0.0])
        hi = np.array([0.4, 0.15, 1.0, 0.3, 1.0])
    else:
        lo, hi = np.zeros(m), np.ones(m)
    closed = own_share_optimum(np.log(w) + p["logk"], p["alpha"], p["eps"], own, lo, hi)
    assert closed.shape == (n, m)
    np.testing.assert_allclose(closed.sum(axis=1), 1.0, atol=1e-9)
    assert (closed >= lo - 1e-9).all() and (closed <= hi + 1e-9).all()
    for d in range(n):
        f = own_objective(p, d, w, own)
        generic = slsqp(f, m, lo, hi)
        # The closed form is never worse than the generic solver, and they agree.
        assert f(closed[d]) <= f(generic) + 1e-10
        np.testing.assert_allclose(closed[d], generic, atol=2e-3)


def test_closed_form_with_an_unmeasured_domain():
    """A domain no target measures stays at its lower bound unless the others' caps push it."""
    n, t = 6, 3
    p = realistic_draws(n, t, seed=2)
    w = np.full(t, 1 / 3)
    own = np.array([0, 1, 3])  # domain 2 is measured by no target
    for lo, hi in [
        (np.array([0.0, 0.0, 0.05, 0.0]), np.ones(4)),
        (np.zeros(4), np.array([0.3, 0.3, 1.0, 0.3])),  # 0.1 must go to domain 2
    ]:
        closed = own_share_optimum(np.log(w) + p["logk"], p["alpha"], p["eps"], own, lo, hi)
        for d in range(n):
            f = own_objective(p, d, w, own)
            generic = slsqp(f, 4, lo, hi)
            assert f(closed[d]) <= f(generic) + 1e-10
            np.testing.assert_allclose(closed[d], generic, atol=2e-3)
        assert closed[:, 2] == pytest.approx(max(lo[2], 1 - hi[[0, 1, 3]].sum()), abs=1e-9)


def test_posterior_optimum_is_the_per_draw_optimum(post):
    """post.optimal_mixture (closed form for bimix) against SLSQP on post.log_loss, per draw."""
    k = 8
    opt = post.optimal_mixture(max_draws=k)
    assert opt.solver == "closed-form"
    assert list(opt.draws.columns) == post.domains and len(opt.draws) == k
    draws = post.draws(k)
    m = len(post.domains)
    for d in range(k):
        one = {name: v[d : d + 1] for name, v in draws.items()}  # draw d, names not needed

        def f(r, one=one):
            r = np.clip(r, 1e-12, None)
            return float(np.exp(post.log_loss(r[None] / r.sum(), params=one))[0, 0].mean())

        generic = slsqp(f, m, np.zeros(m), np.ones(m))
        closed = opt.draws.iloc[d].to_numpy()
        assert f(closed) <= f(generic) + 1e-9
        np.testing.assert_allclose(closed, generic, atol=3e-3)
    # The recommendation minimises the posterior expected objective.
    everything = post.draws(k)

    def expected(r):
        r = np.clip(r, 1e-12, None)
        return float(np.exp(post.log_loss(r[None] / r.sum(), params=everything))[:, 0].mean())

    generic = slsqp(expected, m, np.zeros(m), np.ones(m))
    assert expected(opt.mixture.to_numpy()) <= expected(generic) + 1e-7


# ----------------------------------------------------------------------------- projection
def random_box(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Random bounds with sum(lo) <= 1 <= sum(hi)."""
    while True:
        lo = np.where(rng.random(m) < 0.5, rng.uniform(0, 0.3, m), 0.0)
        hi = np.where(rng.random(m) < 0.5, rng.uniform(0.05, 0.6, m), 1.0)
        hi = np.maximum(hi, lo)
        if lo.sum() <= 1 <= hi.sum():
            return lo, hi


def test_projection_properties_and_it_is_the_euclidean_projection():
    rng = np.random.default_rng(3)
    for _ in range(40):
        m = int(rng.integers(2, 9))
        lo, hi = random_box(rng, m)
        v = rng.normal(0.2, 0.8, (3, m))
        x = project_to_box_simplex(v, lo, hi)
        np.testing.assert_allclose(x.sum(axis=1), 1.0, atol=1e-9)
        assert (x >= lo - 1e-12).all() and (x <= hi + 1e-12).all()
        np.testing.assert_allclose(project_to_box_simplex(x, lo, hi), x, atol=1e-9)  # idempotent
        for row, xr in zip(v, x, strict=True):
            qp = slsqp(lambda z, row=row: float(((z - row) ** 2).sum()), m, lo, hi)
            assert ((xr - row) ** 2).sum() <= ((qp - row) ** 2).sum() + 1e-9
            np.testing.assert_allclose(xr, qp, atol=1e-5)


def test_projection_against_brute_force_on_a_grid():
    """Three domains: the nearest point of a fine grid of the feasible set."""
    lo, hi = np.array([0.1, 0.0, 0.2]), np.array([0.5, 0.3, 1.0])
    g = np.linspace(0, 1, 1001)
    a, b = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([a.ravel(), b.ravel(), 1 - a.ravel() - b.ravel()], axis=1)
    pts = pts[((pts >= lo - 1e-12) & (pts <= hi + 1e-12)).all(axis=1)]
    rng = np.random.default_rng(4)
    for v in rng.normal(0.3, 0.6, (10, 3)):
        x = project_to_box_simplex(v[None], lo, hi)[0]
        best = pts[np.argmin(((pts - v) ** 2).sum(axis=1))]
        np.testing.assert_allclose(x, best, atol=1.5e-3)


def test_projection_in_jax_matches_numpy():
    import jax.numpy as jnp

    rng = np.random.default_rng(5)
    lo, hi = random_box(rng, 6)
    v = rng.normal(0.2, 0.5, (4, 6))
    ref = project_to_box_simplex(v, lo, hi)
    out = project_to_box_simplex(jnp.asarray(v), jnp.asarray(lo), jnp.asarray(hi), xp=jnp)
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-9)


# ----------------------------------------------------------------------------- constraints
def test_bounds_and_repetition_caps():
    cons = bm.Constraints(lower={"web": 0.1}, upper={"code": 0.25})
    lo, hi = cons.bounds(DOMAINS)
    np.testing.assert_allclose(lo, [0.1, 0, 0, 0])
    np.testing.assert_allclose(hi, [1, 0.25, 1, 1])
    counts = {"web": 1e12, "code": 5e10, "books": 2e10, "wiki": 1e10}
    cons = bm.Constraints(upper={"web": 0.6}, token_counts=counts, target_tokens=4e11, max_epochs=4)
    lo, hi = cons.bounds(DOMAINS)
    # r_j <= k N_j / R: web 10 -> 1 (then its upper bound 0.6), code 0.5, books 0.2, wiki 0.1.
    np.testing.assert_allclose(hi, [0.6, 0.5, 0.2, 0.1])
    np.testing.assert_allclose(cons.caps(DOMAINS), [1.0, 0.5, 0.2, 0.1])
    assert lo.sum() == 0


def test_infeasible_constraints_name_the_binding_domains():
    with pytest.raises(InfeasibleError, match=r"lower bounds sum to 1\.2.*web>=0\.7.*code>=0\.5"):
        bm.Constraints(lower={"web": 0.7, "code": 0.5}).bounds(DOMAINS)
    with pytest.raises(InfeasibleError, match=r"sum to 0\.9 < 1.*web<=0\.3.*code<=0\.2"):
        bm.Constraints(upper={"web": 0.3, "code": 0.2, "books": 0.2, "wiki": 0.2}).bounds(DOMAINS)
    with pytest.raises(InfeasibleError, match=r"'code'.*lower bound 0\.3 exceeds its upper"):
        bm.Constraints(lower={"code": 0.3}, upper={"code": 0.2}).bounds(DOMAINS)
    counts = {"web": 1e10, "code": 1e10, "books": 1e10, "wiki": 1e10}
    caps = {"token_counts": counts, "target_tokens": 1e12, "max_epochs": 4}  # caps 0.04 each
    with pytest.raises(InfeasibleError, match=r"'books'.*exceeds its repetition cap 0\.04"):
        bm.Constraints(lower={"books": 0.1}, **caps).bounds(DOMAINS)
    with pytest.raises(InfeasibleError, match=r"repetition caps sum to 0\.16 < 1.*4 epochs"):
        bm.Constraints(**caps).bounds(DOMAINS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"upper": {"news": 0.2}}, r"upper names unknown domain\(s\): news"),
        ({"lower": {"web": 0.1, "Math": 0.1}}, r"lower names unknown domain\(s\): Math"),
        ({"upper": {"web": 1.5}}, r"upper\['web'\] = 1\.5 is not a share"),
        ({"lower": {"web": -0.1}}, r"lower\['web'\] = -0\.1 is not a share"),
        ({"upper": {"web": float("nan")}}, r"upper\['web'\] = nan"),
        ({"token_counts": {"web": 1.0}}, "need token_counts, target_tokens and max_epochs"),
        (
            {"token_counts": {"web": 1e9}, "target_tokens": 1e9, "max_epochs": 1},
            r"no count for domain\(s\) code, books, wiki",
        ),
        (
            {"token_counts": dict.fromkeys(DOMAINS, 1e9), "target_tokens": 0, "max_epochs": 1},
            "target_tokens must be positive",
        ),
        (
            {"token_counts": dict.fromkeys(DOMAINS, 1e9), "target_tokens": 1e9, "max_epochs": -1},
            "max_epochs must be positive",
        ),
    ],
)
def test_bad_constraints_are_one_clear_error(kwargs, message):
    with pytest.raises(InfeasibleError, match=message):
        bm.Constraints(**kwargs).bounds(DOMAINS)


def test_optimal_mixture_respects_every_constraint(post):
    counts = {"web": 4e11, "code": 4e11, "books": 4e10, "wiki": 4e11}  # books: cap 0.16
    cons = bm.Constraints(
        lower={"wiki": 0.3},
        upper={"web": 0.2},
        token_counts=counts,
        target_tokens=1e12,
        max_epochs=4,
    )
    lo, hi = cons.bounds(post.domains)
    opt = post.optimal_mixture(constraints=cons, ci=0.8, max_draws=100)
    assert opt.mixture.sum() == pytest.approx(1.0, abs=1e-9)
    for r in [opt.mixture.to_numpy(), *opt.draws.to_numpy()]:
        assert (r >= lo - 1e-8).all() and (r <= hi + 1e-8).all()
        assert r.sum() == pytest.approx(1.0, abs=1e-8)
    # At least one constraint binds for this posterior (web and wiki want other shares).
    binding = np.isclose(opt.mixture.to_numpy(), lo, atol=1e-6) | np.isclose(
        opt.mixture.to_numpy(), hi, atol=1e-6
    )
    assert binding.any()
    check_intervals(opt, centred=False)
    with pytest.raises(InfeasibleError, match="names unknown domain"):
        post.optimal_mixture(constraints=bm.Constraints(upper={"news": 0.1}))


def check_intervals(opt, centred: bool = True) -> None:
    iv = opt.intervals
    assert list(iv.columns) == ["mean", "lo", "hi"]
    np.testing.assert_allclose(iv["mean"], opt.draws.mean(axis=0), atol=1e-12)
    assert (iv["lo"] <= iv["hi"]).all()
    assert (iv["lo"] >= opt.draws.min(axis=0) - 1e-12).all()
    assert (iv["hi"] <= opt.draws.max(axis=0) + 1e-12).all()
    if centred:
        # Where no bound piles the optima up, the mean lies inside the central interval (at a
        # bound it need not: 90 % of the draws at 0.2 and the rest below give mean < lo).
        assert (iv["lo"] <= iv["mean"] + 1e-12).all() and (iv["mean"] <= iv["hi"] + 1e-12).all()
    # The recommended mixture sits within the spread of per-draw optima (up to a little slack:
    # minimising the expected objective is not the mean of the minimisers).
    slack = np.maximum(0.25 * (iv["hi"] - iv["lo"]), 0.01)
    assert (opt.mixture >= iv["lo"] - slack).all() and (opt.mixture <= iv["hi"] + slack).all()
    lo, hi = opt.objective_interval
    assert lo <= opt.expected_objective <= hi


def test_unconstrained_optimum_intervals(post):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a converged posterior warns about nothing
        opt = post.optimal_mixture(ci=0.9, max_draws=200)
    assert opt.converged and opt.ci == 0.9
    assert opt.mixture.index.tolist() == post.domains
    assert opt.as_frame().columns.tolist() == ["recommended", "mean", "lo", "hi"]
    check_intervals(opt)
    with pytest.raises(ValueError, match="ci must be in"):
        post.optimal_mixture(ci=1.5)
    with pytest.raises(ValueError, match="unknown target"):
        post.optimal_mixture(weights={"news": 1.0})


def test_one_target_under_the_own_share_law_warns_of_the_vertex(post):
    """Weighing one target, the own-share law's optimum is its own domain alone (up to the
    bounds): the user is told so, and pointed to the cross law."""
    target = post.targets[0]
    with pytest.warns(UserWarning, match="bimix-cross"):
        opt = post.optimal_mixture(weights={target: 1.0}, max_draws=50)
    own = post.domains[post.own_onehot()[0].argmax()]
    assert opt.mixture[own] > 0.99


@pytest.mark.slow
def test_projected_gradient_optimum_of_the_cross_law():
    """bimix-cross has no closed form: the projected-gradient optima per draw match SLSQP on
    post.log_loss, and respect the constraints."""
    obs = bm.Observations.from_frame(simulate())
    cross = bm.fit(obs, law="bimix-cross", method="laplace", seed=0, num_samples=200)
    cons = bm.Constraints(lower={"wiki": 0.1}, upper={"web": 0.4})
    lo, hi = cons.bounds(cross.domains)
    k = 6
    opt = cross.optimal_mixture(constraints=cons, max_draws=k)
    assert opt.solver == "projected-gradient"
    draws = cross.draws(k)
    m = len(cross.domains)
    for d in range(k):
        one = {name: v[d : d + 1] for name, v in draws.items()}

        def f(r, one=one):
            r = np.clip(r, 1e-12, None)
            return float(np.exp(cross.log_loss(r[None] / r.sum(), params=one))[0, 0].mean())

        generic = slsqp(f, m, lo, hi)
        pg = opt.draws.iloc[d].to_numpy()
        assert (pg >= lo - 1e-8).all() and (pg <= hi + 1e-8).all()
        assert f(pg) <= f(generic) + 1e-6
    check_intervals(opt, centred=False)
