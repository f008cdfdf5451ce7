"""Prior transfer, observation mapping and mixture reuse (``bayesmix.reuse``)."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix import reuse
from bayesmix.domains import DomainSet, DomainUpdate, DomainUpdateError
from bayesmix.laws.base import PRIOR_CORRELATION
from bayesmix.laws.blocks import informed, prior_correlation
from bayesmix.mixtures import tidy_frame


def frame(r: np.ndarray, domains: list[str], seed: int = 0, tag: str = "run") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    alpha = np.linspace(0.03, 0.1, len(domains))
    loss = np.exp(1.0 - alpha * np.log(r + 0.005) + 0.02 * rng.standard_normal(r.shape))
    return tidy_frame(r, loss, domains, domains, [f"{tag}{i}" for i in range(len(r))])


DOMS = ["a", "b", "c"]
R = np.array(
    [
        [0.5, 0.5, 0.0],
        [0.2, 0.3, 0.5],
        [0.0, 0.6, 0.4],
        [0.7, 0.0, 0.3],
        [0.1, 0.1, 0.8],
        [0.4, 0.4, 0.2],
        [0.3, 0.0, 0.7],
        [0.6, 0.2, 0.2],
    ]
)


@pytest.fixture(scope="module")
def obs() -> bm.Observations:
    return bm.Observations.from_frame(frame(R, DOMS))


@pytest.fixture(scope="module")
def post(obs: bm.Observations) -> bm.Posterior:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bm.fit(
            obs,
            law="bimix",
            method="laplace",
            num_chains=1,
            num_samples=200,
            progress=False,
            noise="normal",
        )


# ------------------------------------------------------------------ observation mapping
def test_mapping_add_keeps_every_run(obs: bm.Observations) -> None:
    m = reuse.map_observations(obs, DomainUpdate.add("d", 1e9))
    assert m.runs_kept == len(R) and m.prior_targets == []
    assert m.observations.domains == [*DOMS, "d"]
    assert (m.observations.frame["r:d"] == 0).all()
    assert sorted(m.kept_targets) == DOMS


def test_mapping_remove_keeps_zero_share_runs_only(obs: bm.Observations) -> None:
    m = reuse.map_observations(obs, DomainUpdate.remove("c"), drop_partial=False)
    kept = sorted(m.observations.run_ids)
    assert kept == ["run0"]  # the only run with c at 0
    assert m.observations.domains == ["a", "b"]
    assert "c" not in m.observations.targets
    # by default, targets that lost rows travel in the prior instead
    m2 = reuse.map_observations(obs, DomainUpdate.remove("c"))
    assert m2.observations is None and sorted(m2.prior_targets) == ["a", "b"]


def test_mapping_merge_sums_and_split_needs_zero(obs: bm.Observations) -> None:
    m = reuse.map_observations(obs, DomainUpdate.merge(["b", "c"], "bc"))
    f = m.observations.frame.drop_duplicates("run_id").set_index("run_id")
    assert np.allclose(f["r:bc"].to_numpy(), (R[:, 1] + R[:, 2]))
    assert set(m.observations.targets) == {"a"}
    s = reuse.map_observations(obs, DomainUpdate.split("a", {"a1": 1.0, "a2": 1.0}))
    assert sorted(set(s.observations.run_ids)) == ["run2"] if s.observations else True
    s2 = reuse.map_observations(
        obs, DomainUpdate.split("a", {"a1": 1.0, "a2": 1.0}), drop_partial=False
    )
    assert sorted(set(s2.observations.run_ids)) == ["run2"]
    assert (s2.observations.frame[["r:a1", "r:a2"]] == 0).all().all()


def test_mapping_revise_depends_on_the_law(obs: bm.Observations) -> None:
    own = reuse.map_observations(obs, DomainUpdate.revise("b"), own_share=True)
    assert own.runs_kept == len(R) and "b" not in own.observations.targets
    cross = reuse.map_observations(obs, DomainUpdate.revise("b"), drop_partial=False)
    assert sorted(set(cross.observations.run_ids)) == ["run3", "run6"]  # b at 0


# ------------------------------------------------------------------ prior transfer
def test_prior_transfer(post: bm.Posterior, obs: bm.Observations) -> None:
    upd = DomainUpdate.split("a", {"a1": 1.0, "a2": 1.0}) + DomainUpdate.add("d", 1.0)
    tp = reuse.transfer_posterior(post, upd)
    assert tp.domains == ["a1", "a2", "b", "c", "d"]
    prior = reuse.prior_from_posterior(post, upd, observations=tp.observations)
    loc, scale = prior["log_alpha"]
    old = post.draws()["log_alpha"]
    i_a = post.targets.index("a")
    # split parts start from the parent's posterior, widened
    assert loc[0] == pytest.approx(old[:, i_a].mean(), abs=1e-6)
    assert scale[0] > old[:, i_a].std()
    # unchanged: the posterior, widened by the tunable factor
    i_b = post.targets.index("b")
    assert scale[2] == pytest.approx(old[:, i_b].std() * reuse.TransferSettings().widen, rel=1e-6)
    wide = reuse.prior_from_posterior(
        post, upd, observations=tp.observations, settings=reuse.TransferSettings(widen=3.0)
    )
    assert wide["log_alpha"][1][2] == pytest.approx(3 * old[:, i_b].std(), rel=1e-6)
    # new domain: the population (spread across targets), wider than any single posterior
    assert np.isfinite(loc[4]) and scale[4] > scale[2]
    # kept targets: population prior (NaN), their runs are in the likelihood
    keep = reuse.prior_from_posterior(post, upd, observations=tp.observations, keep=["b", "c"])
    assert np.isnan(keep["log_alpha"][0][2:4]).all()
    assert "logk_offset" in prior and np.isnan(prior["logk_offset"][0][4])
    # Each carried target's sites are coupled as in the old posterior: the correlation of
    # its joint draws (widening scales every site alike, so it keeps the correlation).
    corr, names = prior[PRIOR_CORRELATION]
    names = list(names)
    assert {"log_alpha", "log_eps", "logk_offset"} <= set(names)
    assert corr.shape == (5, len(names), len(names))
    assert np.isnan(corr[4]).all()  # the new domain: population prior, no coupling
    np.testing.assert_allclose(np.diagonal(corr[:4], axis1=1, axis2=2), 1.0)
    np.testing.assert_allclose(corr[:4], np.swapaxes(corr[:4], 1, 2))
    draws = post.draws()
    a, e = names.index("log_alpha"), names.index("log_eps")
    empirical = np.corrcoef(draws["log_alpha"][:, i_b], draws["log_eps"][:, i_b])[0, 1]
    assert abs(empirical) > 0.2  # the coupling the independent prior would drop
    assert corr[2, a, e] == pytest.approx(empirical, abs=0.01)
    assert np.isnan(keep[PRIOR_CORRELATION][0][2:4]).all()


def test_prior_correlation_is_the_joint_normal() -> None:
    """Independent normals times the coupling factor = the joint normal, up to a constant."""
    from numpyro.infer.util import log_density
    from scipy.stats import multivariate_normal

    names = ["log_alpha", "log_eps"]
    m = {"log_alpha": np.array([-3.0, np.nan]), "log_eps": np.array([-5.0, np.nan])}
    s = {"log_alpha": np.array([0.2, np.nan]), "log_eps": np.array([1.0, np.nan])}
    corr = np.full((2, 2, 2), np.nan)
    corr[0] = [[1.0, -0.7], [-0.7, 1.0]]
    prior = {n: (m[n], s[n]) for n in names} | {PRIOR_CORRELATION: (corr, np.array(names))}

    def model() -> None:
        values = {}
        for n in names:
            loc, scale = informed(n, jnp.zeros(2), 1.0, prior)
            values[n] = numpyro.sample(n, dist.Normal(loc, scale).to_event(1))
        prior_correlation(prior, values)

    cov = np.array([[0.04, -0.7 * 0.2], [-0.7 * 0.2, 1.0]])
    joint = multivariate_normal([-3.0, -5.0], cov)
    points = [np.array([-3.1, -4.0]), np.array([-2.7, -6.5]), np.array([-3.3, -3.0])]
    ours, exact = [], []
    for p in points:
        params = {"log_alpha": jnp.array([p[0], 0.3]), "log_eps": jnp.array([p[1], -0.2])}
        ours.append(float(log_density(model, (), {}, params)[0]))
        exact.append(joint.logpdf(p) + dist.Normal(0.0, 1.0).log_prob(jnp.array([0.3, -0.2])).sum())
    np.testing.assert_allclose(np.diff(ours), np.diff(exact), rtol=1e-6)


QUICK_FIT = {
    "method": "laplace",
    "num_chains": 1,
    "num_samples": 100,
    "progress": False,
    "noise": "normal",
}


def test_transfer_posterior_and_warm_fit(post: bm.Posterior, obs: bm.Observations) -> None:
    upd = DomainUpdate.add("d", 1.0)
    tp = reuse.transfer_posterior(post, upd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = tp.optimal_mixture(max_draws=100)
    iv = opt.intervals
    # the new domain is the least known
    width = iv["hi"] - iv["lo"]
    assert width.idxmax() == "d"
    new_r = np.array([[0.3, 0.3, 0.2, 0.2], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    new = bm.Observations.from_frame(frame(new_r, [*DOMS, "d"], seed=1, tag="new"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = reuse.warm_fit(post, upd, new, **QUICK_FIT)
    assert fitted.domains == [*DOMS, "d"]
    assert len(fitted.observations.run_ids) == len(R) + 3
    assert fitted.info["prior_targets"] == ["d"]
    # A second update straight after a transfer (no run in between): everything the
    # transferred posterior knows is in its prior, so only the new runs enter the likelihood,
    # whatever old observations are passed.
    upd2 = DomainUpdate.add("e", 1.0)
    newer_r = np.array(
        [[0.2, 0.2, 0.2, 0.2, 0.2], [0.1, 0.3, 0.1, 0.2, 0.3], [0.4, 0.1, 0.2, 0.1, 0.2]]
    )
    newer = bm.Observations.from_frame(frame(newer_r, [*DOMS, "d", "e"], seed=2, tag="newer"))
    for old_obs in (None, obs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            chained = reuse.warm_fit(tp, upd2, newer, old_observations=old_obs, **QUICK_FIT)
        assert chained.domains == [*DOMS, "d", "e"]
        assert sorted(chained.observations.run_ids) == sorted(newer.run_ids)
        assert sorted(chained.info["prior_targets"]) == [*DOMS, "d", "e"]


# ------------------------------------------------------------------ mixture reuse
def test_reuse_plan_round_trip() -> None:
    old = {"a": 0.5, "b": 0.3, "c": 0.2}
    plan = reuse.reuse_plan(old, DomainUpdate.add("d", 1.0))
    assert plan.frozen == ("a", "b", "c") and plan.free == ("d",)
    assert plan.reduced_domains == ["existing", "d"]
    full = plan.to_full(np.array([[0.8, 0.2]]))
    assert np.allclose(full, [[0.4, 0.24, 0.16, 0.2]])
    assert np.allclose(plan.to_reduced(full), [[0.8, 0.2]])
    x = np.array([[0.1, 0.5, 0.2, 0.2]])
    assert np.allclose(plan.restrict(x), [[0.4, 0.24, 0.16, 0.2]])
    part = reuse.with_reopened(plan, ["a"])
    assert part.free == ("a", "d") and np.allclose(part.ratios, [0.6, 0.4])
    assert reuse.reuse_plan(old, DomainUpdate.add("d", 1.0), reopen=["b"]).free == ("b", "d")
    with pytest.raises(DomainUpdateError, match="not unchanged"):
        reuse.reuse_plan(old, DomainUpdate.revise("a"), reopen=["a"])
    # removal: nothing affected, the remaining ratios are the mixture
    rm = reuse.reuse_plan(old, DomainUpdate.remove("c"))
    assert rm.free == () and np.allclose(rm.to_full(np.ones((1, 1))), [[0.625, 0.375]])


def test_choose_reopen(post: bm.Posterior) -> None:
    upd = DomainUpdate.add("d", 1.0)
    tp = reuse.transfer_posterior(post, upd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = tp.optimal_mixture(max_draws=100)
    # frozen at the posterior's own optimal ratios: nothing to re-open
    good = {d: float(opt.intervals.loc[d, "mean"]) for d in DOMS}
    plan = reuse.reuse_plan(good, upd)
    assert reuse.choose_reopen(tp, plan, optimum=opt) == []
    # frozen far from them: the posterior re-opens; the user overrides
    bad = {"a": 0.98, "b": 0.01, "c": 0.01}
    plan = reuse.reuse_plan(bad, upd)
    chosen = reuse.choose_reopen(tp, plan, optimum=opt)
    assert set(chosen) == set(DOMS)
    assert "a" not in reuse.choose_reopen(tp, plan, optimum=opt, freeze=["a"])


def test_save_and_load_model(post: bm.Posterior, tmp_path) -> None:
    folder = reuse.save_model(post, tmp_path / "tiny", data="synthetic", optimum=False)
    card = (folder / "MODEL_CARD.md").read_text()
    assert "synthetic" in card and "bimix" in card and "| a |" in card
    loaded = reuse.load_model(folder)
    assert loaded.domains == post.domains
    with pytest.raises(FileNotFoundError):
        reuse.load_model(tmp_path / "nothing")


def test_domain_set_mismatch(post: bm.Posterior) -> None:
    with pytest.raises(DomainUpdateError, match="not the posterior's"):
        reuse.prior_from_posterior(
            post, DomainUpdate.add("d", 1.0), targets=["a"], domain_set=DomainSet(("x", "y"))
        )
