"""A new law is one class and one registration: nothing else in the package names it.

The law below is written here, as a user would write one outside the package, registered
with ``laws.register_law``, and then fitted, scored, predicted, optimised and saved through
the public API, each stage finding what it needs on the class (``Law`` protocol).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix import laws
from bayesmix.laws.base import LawData, LawError, LawSettings, Prior

DOMAINS = ("web", "code", "books")


class LinearLog:
    """log L_t(r) = b_t + sum_j w_tj r_j: each target's log loss linear in the shares."""

    name = "linear-log"
    own_share = False
    size_axis = False
    noise = "normal"
    formula_sites = ("b", "w")
    target_sites = {"log_sigma": ("sigma", np.exp)}  # the noise's scale, per target

    def check(self, data: LawData) -> None:
        if data.s_rel is not None:
            raise LawError("law 'linear-log' fits final losses only (no step column)")

    def model(self, data: LawData, settings: LawSettings, prior: Prior | None = None) -> None:
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist

        t, m = data.n_targets, data.n_domains
        b = numpyro.sample("b", dist.Normal(jnp.asarray(data.target_mean), 1.0).to_event(1))
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([t, m]).to_event(2))
        log_mean = self.log_loss(jnp, {"b": b, "w": w}, jnp.asarray(data.r), None)
        laws.get_noise(settings.noise).observe(data, log_mean, prior)

    def log_loss(
        self, xp: ModuleType, params: Mapping[str, Any], r: Any, s_rel: Any | None, **_: Any
    ) -> Any:
        w = params["w"]
        return params["b"][..., None, :] + xp.matmul(r, xp.swapaxes(w, -1, -2))


def runs(n: int, steps: float | None = None, seed: int = 0) -> bm.Observations:
    """n runs at Dirichlet mixtures of a world whose log losses are linear in the shares
    (noise 0.01 on the log scale), one target per domain."""
    rng = np.random.default_rng(seed)
    r = rng.dirichlet(np.ones(len(DOMAINS)), size=n)
    level = np.log([3.0, 2.0, 2.5])
    effect = -0.4 * np.eye(len(DOMAINS)) - 0.05
    log_loss = level + r @ effect.T + 0.01 * rng.standard_normal((n, len(DOMAINS)))
    rows = [
        {
            "run_id": f"run-{i}",
            "step": steps,
            "target": target,
            "value": float(np.exp(log_loss[i, t])),
            "metric": "loss",
            **{f"r:{d}": r[i, j] for j, d in enumerate(DOMAINS)},
        }
        for i in range(n)
        for t, target in enumerate(DOMAINS)
    ]
    return bm.Observations.from_frame(pd.DataFrame(rows))


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    # The registry is restored after the test: other tests list the package's laws.
    monkeypatch.setattr(laws, "_LAWS", dict(laws._LAWS))
    monkeypatch.setattr(laws, "LAW_NAMES", laws.LAW_NAMES)
    laws.register_law(LinearLog)


def test_a_registered_law_fits_predicts_and_saves(registered: None, tmp_path) -> None:
    assert "linear-log" in laws.LAW_NAMES
    obs = runs(16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bm.fit(obs, law="linear-log", method="laplace", progress=False, num_samples=64)
    assert post.law == "linear-log" and post.settings.noise == "normal"  # the law's default
    assert set(post.draws()) >= {"b", "w", "sigma"}

    mixtures = obs.mixtures().drop_duplicates()
    pred = post.predict(mixtures, ci=0.9)
    observed = obs.frame.set_index(["run_id", "target"])["value"]
    fitted = pred.set_index(["run_id", "target"])["mean"]
    # The law is the world's: it fits the runs to within the noise.
    assert np.abs(fitted / observed.loc[fitted.index] - 1).max() < 0.05
    assert (pred["lo"] < pred["mean"]).all() and (pred["mean"] < pred["hi"]).all()

    scores = post.log_likelihood(obs, max_draws=16)  # the noise model's log density
    assert scores.shape == (16, 16) and np.isfinite(scores.to_numpy()).all()
    opt = post.optimal_mixture(max_draws=16)
    assert opt.mixture.sum() == pytest.approx(1.0)

    loaded = bm.Posterior.load(post.save(tmp_path / "linear.nc"))
    again = loaded.predict(mixtures, ci=0.9)
    np.testing.assert_allclose(again["mean"], pred["mean"])


def test_a_registered_law_checks_its_data(registered: None) -> None:
    curves = pd.concat([runs(4, steps=s).frame for s in (500.0, 1000.0)])  # two steps per run
    with pytest.raises(LawError, match="final losses only"):
        bm.fit(bm.Observations.from_frame(curves), law="linear-log", method="map", progress=False)
