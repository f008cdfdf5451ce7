"""Fitting a law to observations, and the posterior that every later stage reads.

``fit`` runs NUTS from a Laplace approximation at the MAP (its draws seed the chains), or stops
at an approximation (``method="laplace"`` or ``"svi"``) when speed matters more than exactness.
``Posterior`` holds the draws as arviz InferenceData and answers predictions, diagnostics and
the optimal mixture; it saves to one NetCDF file that also holds the observations and settings.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from bayesmix.observations import Observations, ObservationsError, ratio_column

if TYPE_CHECKING:
    from bayesmix.optimize import Constraints, OptimalMixture

log = logging.getLogger(__name__)

Method = Literal["nuts", "laplace", "svi"]

R_HAT_MAX = 1.01
ESS_MIN = 400
MIX_TOLERANCE = 1e-3


def _use_cpu_devices(n: int) -> None:
    """Let NUTS chains run in parallel on CPU threads (must precede JAX's first computation)."""
    flag = "--xla_force_host_platform_device_count"
    if flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}={n}".strip()


_use_cpu_devices(max(4, os.cpu_count() or 1))

import jax  # noqa: E402
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO, autoguide, init_to_median  # noqa: E402
from numpyro.infer.util import unconstrain_fn  # noqa: E402

from bayesmix.laws import LawData, LawSettings, Prior, get_law  # noqa: E402

jax.config.update("jax_enable_x64", True)


class NotConvergedError(RuntimeError):
    """A posterior whose chains did not converge was used with strict=True."""


class ConvergenceWarning(UserWarning):
    """A posterior whose chains did not converge is being used."""


# ---------------------------------------------------------------------------------- fitting
def fit(
    obs: Observations,
    law: str = "bimix",
    seed: int = 0,
    *,
    method: Method = "nuts",
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    eps: float | Literal["learned"] = "learned",
    noise: Literal["student", "normal"] = "student",
    rank: int = 0,
    reference_step: float | None = None,
    prior: Prior | None = None,
    target_accept: float = 0.9,
    max_tree_depth: int = 10,
    svi_steps: int = 4000,
    progress: bool = True,
) -> Posterior:
    """Fit ``law`` to ``obs`` and return its posterior.

    Args:
        obs: observations of one metric (``obs.select(metric=...)`` first if several).
        law: "bimix" (own share), "bimix-cross" (every share) or "loglinear".
        method: "nuts" (exact, with diagnostics), "laplace" (Gaussian at the MAP) or "svi"
            (multivariate-normal variational posterior): the last two are fast and approximate.
        eps: floor added to proportions in r^-alpha (a number, or "learned").
        noise: log-scale observation noise, "student" (heavy tails) or "normal".
        rank: low-rank cross-domain exponents (0: full; use 2 to 4 for 64 domains).
        prior: informative prior per site (warm starts, see ``bayesmix.reuse``).
    """
    if not isinstance(obs, Observations):
        raise TypeError(f"fit expects Observations, got {type(obs).__name__}")
    if method not in ("nuts", "laplace", "svi"):
        raise ValueError(f"unknown method {method!r}; choose nuts, laplace or svi")
    if len(obs.metrics) > 1:
        raise ObservationsError(
            f"observations hold several metrics {obs.metrics}: fit one, e.g. "
            f"obs.select(metric={obs.metrics[0]!r})"
        )
    law_obj = get_law(law)
    settings = LawSettings(
        eps=eps, noise=noise, reference_step=reference_step or obs.max_step, rank=rank
    )
    data = LawData.from_observations(obs, settings)
    law_obj.check(data)

    def model(data: LawData) -> None:
        law_obj.model(data, settings, prior)

    started = time.perf_counter()
    rng = jax.random.PRNGKey(seed)
    rng_map, rng_init, rng_run = jax.random.split(rng, 3)
    guide, params, losses = _laplace(model, data, rng_map, svi_steps if method == "svi" else 0)
    info: dict[str, Any] = {"map_loss": float(losses[-1])}
    if method == "nuts":
        samples, stats = _nuts(
            model,
            data,
            guide,
            params,
            rng_init,
            rng_run,
            num_chains,
            num_warmup,
            num_samples,
            target_accept,
            max_tree_depth,
            progress,
        )
    else:
        draws = guide.sample_posterior(rng_run, params, sample_shape=(num_chains * num_samples,))
        draws = _with_deterministic(model, data, draws)
        samples = {k: np.asarray(v)[None] for k, v in draws.items()}
        tail = np.asarray(losses[-max(10, len(losses) // 10) :])
        info["loss_rel_change"] = (
            float(np.abs(np.diff(tail)).mean() / (abs(tail.mean()) + 1e-9))
            if len(tail) > 1
            else 0.0
        )
        stats = {"diverging": np.zeros((1, num_chains * num_samples), dtype=bool)}
    info["fit_seconds"] = time.perf_counter() - started
    info.update(num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples, seed=seed)
    post = Posterior.from_samples(law, settings, method, samples, stats, obs, info)
    if not post.converged:
        warnings.warn(post.convergence_message(), ConvergenceWarning, stacklevel=2)
    return post


def _laplace(model: Any, data: LawData, rng: Any, svi_steps: int) -> tuple[Any, Any, np.ndarray]:
    """MAP by BFGS, then a Laplace approximation; with svi_steps, an MVN guide fitted by SVI."""
    from numpyro.optim import Adam, Minimize

    if svi_steps:
        guide = autoguide.AutoMultivariateNormal(model, init_loc_fn=init_to_median, init_scale=0.01)
        svi = SVI(model, guide, Adam(0.01), Trace_ELBO())
        result = svi.run(rng, svi_steps, data, progress_bar=False)
        return guide, result.params, np.asarray(result.losses)
    # BFGS alone stalls from the prior median on these models; Adam first finds the basin.
    guide = autoguide.AutoLaplaceApproximation(model, init_loc_fn=init_to_median)
    warm = SVI(model, guide, Adam(0.02), Trace_ELBO()).run(rng, 2000, data, progress_bar=False)
    result = SVI(model, guide, Minimize(method="BFGS"), Trace_ELBO()).run(
        rng, 1, data, progress_bar=False, init_params=warm.params
    )
    if not np.isfinite(result.losses[-1]) or result.losses[-1] > warm.losses[-1]:
        result = warm
    return guide, result.params, np.asarray(result.losses)


def _with_deterministic(model: Any, data: LawData, draws: Mapping[str, Any]) -> dict[str, Any]:
    from numpyro.infer import Predictive

    latent = {k: v for k, v in draws.items()}
    det = Predictive(model, posterior_samples=latent, exclude_deterministic=False)(
        jax.random.PRNGKey(0), data
    )
    out = dict(latent)
    out.update({k: v for k, v in det.items() if k != "log_y"})
    return out


def _nuts(
    model: Any,
    data: LawData,
    guide: Any,
    params: Any,
    rng_init: Any,
    rng_run: Any,
    num_chains: int,
    num_warmup: int,
    num_samples: int,
    target_accept: float,
    max_tree_depth: int,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    # Chains start from draws of the Laplace approximation pulled halfway to the MAP:
    # dispersed enough for R-hat to mean something, close enough to skip the long climb.
    mode = guide.median(params)
    starts = guide.sample_posterior(rng_init, params, sample_shape=(num_chains,))
    inits: dict[str, list[Any]] = {}
    for c in range(num_chains):
        point = {k: 0.5 * (starts[k][c] + mode[k]) for k in mode}
        u = unconstrain_fn(model, (data,), {}, point)
        if not all(bool(np.all(np.isfinite(np.asarray(v)))) for v in u.values()):
            u = unconstrain_fn(model, (data,), {}, mode)
        for k, v in u.items():
            inits.setdefault(k, []).append(v)
    init_params = {k: jax.numpy.stack(v) for k, v in inits.items()}
    kernel = NUTS(
        model, target_accept_prob=target_accept, max_tree_depth=max_tree_depth, dense_mass=True
    )
    chain_method = "parallel" if jax.local_device_count() >= num_chains else "sequential"
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress,
    )
    mcmc.run(rng_run, data, init_params=init_params, extra_fields=("diverging",))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    stats = {"diverging": np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])}
    return samples, stats


# -------------------------------------------------------------------------------- posterior
@dataclass
class Posterior:
    """Draws of a law's parameters, the observations they came from, and what follows from them.

    ``idata`` is the arviz InferenceData (posterior, sample_stats); ``observations`` the
    fitted table; ``law``, ``settings`` and ``method`` say how it was fitted.
    """

    idata: Any
    observations: Observations
    law: str
    settings: LawSettings
    method: str
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_samples(
        cls,
        law: str,
        settings: LawSettings,
        method: str,
        samples: Mapping[str, np.ndarray],
        stats: Mapping[str, np.ndarray],
        obs: Observations,
        info: dict[str, Any],
    ) -> Posterior:
        import arviz as az

        post = {k: np.asarray(v) for k, v in samples.items() if not k.startswith("_")}
        idata = az.from_dict(posterior=post, sample_stats=dict(stats))
        return cls(
            idata=idata, observations=obs, law=law, settings=settings, method=method, info=info
        )

    # ------------------------------------------------------------------ properties
    @property
    def domains(self) -> list[str]:
        return self.observations.domains

    @property
    def targets(self) -> list[str]:
        return self.observations.targets

    @property
    def law_obj(self) -> Any:
        return get_law(self.law)

    @property
    def num_draws(self) -> int:
        p = self.idata.posterior
        return int(p.sizes["chain"] * p.sizes["draw"])

    @property
    def divergences(self) -> int:
        return int(np.asarray(self.idata.sample_stats["diverging"]).sum())

    def diagnostics(self) -> pd.DataFrame:
        """One row per scalar parameter: r_hat, ess_bulk, ess_tail (NaN for approximations)."""
        import arviz as az

        if self.method != "nuts":
            names = _flat_names(self.idata.posterior)
            nan = np.full(len(names), np.nan)
            return pd.DataFrame({"r_hat": nan, "ess_bulk": nan, "ess_tail": nan}, index=names)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summary = az.summary(self.idata, kind="diagnostics")
        return summary[["r_hat", "ess_bulk", "ess_tail"]]

    @property
    def converged(self) -> bool:
        """NUTS: every r_hat <= 1.01, every ess_bulk >= 400, no divergence.

        Approximations (laplace, svi) have no chains to check: they count as converged when
        the optimisation ended finite (and, for svi, flat), and ``convergence_message`` says
        they are approximate.
        """
        if "_converged" in self.info:
            return bool(self.info["_converged"])
        if self.method == "nuts":
            d = self.diagnostics()
            ok = bool((d["r_hat"] <= R_HAT_MAX).all() and (d["ess_bulk"] >= ESS_MIN).all())
            ok = ok and self.divergences == 0
        else:
            ok = bool(np.isfinite(self.info.get("map_loss", np.nan)))
            ok = ok and self.info.get("loss_rel_change", 0.0) < 1e-3
        self.info["_converged"] = ok
        return ok

    def convergence_message(self) -> str:
        if self.method != "nuts":
            state = "converged" if self.converged else "did NOT converge"
            return f"approximate posterior ({self.method}); its optimisation {state}"
        d = self.diagnostics()
        worst = d["r_hat"].idxmax()
        return (
            f"posterior ({self.law}, NUTS) did NOT converge: max r_hat {d['r_hat'].max():.3f} "
            f"({worst}), min ess_bulk {d['ess_bulk'].min():.0f}, {self.divergences} divergent "
            "transitions; its intervals are not to be trusted (fit longer, or reparametrise)"
        )

    def check_usable(self, strict: bool = False) -> None:
        """Warn loudly (or raise with strict=True) when the chains did not converge."""
        if self.converged:
            return
        if strict:
            raise NotConvergedError(self.convergence_message())
        warnings.warn(self.convergence_message(), ConvergenceWarning, stacklevel=3)

    # ------------------------------------------------------------------ draws
    def draws(self, max_draws: int | None = None) -> dict[str, np.ndarray]:
        """Law parameters with one leading draw axis (chains flattened), optionally thinned."""
        out = {}
        post = self.idata.posterior
        for name in post.data_vars:
            v = np.asarray(post[name])
            out[name] = v.reshape(-1, *v.shape[2:])
        d = self.num_draws
        if max_draws is not None and max_draws < d:
            keep = np.linspace(0, d - 1, max_draws).round().astype(int)
            out = {k: v[keep] for k, v in out.items()}
        if "eps" not in out:
            n = next(iter(out.values())).shape[0]
            out["eps"] = np.full(n, float(self.settings.eps))
        return out

    def s_rel(self, step: float | None) -> np.ndarray | None:
        """Training progress relative to the reference step, or None without a step axis."""
        if not self.observations.has_steps:
            return None
        ref = self.settings.reference_step or self.observations.max_step
        s = ref if step is None else float(step)
        if not np.isfinite(s) or s <= 0:
            raise ValueError(f"step must be a positive number, got {step!r}")
        return np.array([s / ref])

    def own_onehot(self) -> np.ndarray:
        own = np.zeros((len(self.targets), len(self.domains)))
        for t, d in self.observations.target_domain.items():
            own[self.targets.index(t), self.domains.index(d)] = 1.0
        return own

    def log_loss(
        self,
        r: np.ndarray,
        step: float | None = None,
        max_draws: int | None = None,
        params: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Noise-free log loss per draw: (D, P, T) for mixtures r (P, M)."""
        params = params if params is not None else self.draws(max_draws)
        s_rel = self.s_rel(step)
        if s_rel is not None:
            s_rel = np.repeat(s_rel, len(r))
        eps = params["eps"][:, None, None]
        return self.law_obj.log_loss(
            np, params, r[None], s_rel, own_onehot=self.own_onehot(), eps=eps
        )

    def mixture_matrix(self, mixtures: pd.DataFrame) -> np.ndarray:
        """Validate a frame of mixtures (one r:<domain> column per domain) and return (P, M)."""
        return mixture_matrix(mixtures, self.domains)

    def predict(
        self,
        mixtures: pd.DataFrame,
        step: float | None = None,
        ci: float = 0.9,
        *,
        weights: Mapping[str, float] | None = None,
        draws: bool = False,
        max_draws: int | None = None,
        seed: int = 0,
        strict: bool = False,
    ) -> pd.DataFrame:
        """Predicted loss per (mixture, target): mean and the central ``ci`` interval.

        The interval includes observation noise; ``mean`` is the posterior mean of the law.
        With ``weights``, rows with target ``objective`` give the weighted sum of targets.
        With ``draws=True``, one row per posterior draw (``draw``, ``value``) instead.
        """
        self.check_usable(strict)
        if not 0 < ci < 1:
            raise ValueError(f"ci must be in (0, 1), got {ci}")
        r = self.mixture_matrix(mixtures)
        run_ids = (
            mixtures["run_id"].astype(str).to_numpy()
            if "run_id" in mixtures.columns
            else mixtures.index.astype(str).to_numpy()
        )
        params = self.draws(max_draws)
        log_mean = self.log_loss(r, step, params=params)  # (D, P, T)
        noise = self._noise(params, log_mean.shape, seed)
        law_value = np.exp(log_mean)
        predictive = np.exp(log_mean + noise)
        names = list(self.targets)
        if weights is not None:
            w = objective_weights(weights, self.targets)
            law_value = np.concatenate([law_value, (law_value @ w)[..., None]], axis=-1)
            predictive = np.concatenate([predictive, (predictive @ w)[..., None]], axis=-1)
            names.append("objective")
        step_value = (
            np.nan
            if self.s_rel(step) is None
            else float(step if step is not None else self.settings.reference_step)
        )
        n_p, n_t = law_value.shape[1], law_value.shape[2]
        if draws:
            d = law_value.shape[0]
            return pd.DataFrame(
                {
                    "run_id": np.tile(np.repeat(run_ids, n_t), d),
                    "target": np.tile(np.tile(names, n_p), d),
                    "draw": np.repeat(np.arange(d), n_p * n_t),
                    "value": law_value.reshape(-1),
                    "predictive": predictive.reshape(-1),
                    "step": step_value,
                }
            )
        q = (1 - ci) / 2
        return pd.DataFrame(
            {
                "run_id": np.repeat(run_ids, n_t),
                "target": np.tile(names, n_p),
                "mean": law_value.mean(axis=0).reshape(-1),
                "lo": np.quantile(predictive, q, axis=0).reshape(-1),
                "hi": np.quantile(predictive, 1 - q, axis=0).reshape(-1),
                "step": step_value,
            }
        )

    def _noise(
        self, params: Mapping[str, np.ndarray], shape: tuple[int, ...], seed: int
    ) -> np.ndarray:
        rng = np.random.default_rng(seed)
        sigma = params["sigma"][:, None, :]
        if self.settings.noise == "student":
            nu = params["nu"][:, None, None]
            z = rng.standard_t(np.broadcast_to(nu, shape))
        else:
            z = rng.standard_normal(shape)
        return sigma * z

    def optimal_mixture(
        self,
        weights: Mapping[str, float] | None = None,
        step: float | None = None,
        constraints: Constraints | None = None,
        ci: float = 0.9,
        *,
        max_draws: int | None = 1000,
        strict: bool = False,
    ) -> OptimalMixture:
        """The mixture minimising sum_t w_t L_t at ``step``, and the distribution of optima.

        See ``bayesmix.optimize.optimal_mixture``.
        """
        from bayesmix.optimize import optimal_mixture

        self.check_usable(strict)
        return optimal_mixture(
            self, weights=weights, step=step, constraints=constraints, ci=ci, max_draws=max_draws
        )

    def to_prior(self, update: Any, **kwargs: Any) -> Any:
        """The prior for a new domain set after ``update`` (see ``bayesmix.reuse``)."""
        from bayesmix.reuse import prior_from_posterior

        return prior_from_posterior(self, update, **kwargs)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write one NetCDF file: draws, sample stats, the observations and the settings."""
        import xarray as xr

        path = Path(path)
        frame = self.observations.frame.reset_index(drop=True)
        table = xr.Dataset({c: ("row", _netcdf_column(frame[c])) for c in frame.columns})
        meta = {
            "law": self.law,
            "method": self.method,
            "settings": self.settings.to_dict(),
            "target_domain": self.observations.target_domain,
            "columns": list(frame.columns),
            "info": {k: v for k, v in self.info.items() if not k.startswith("_")},
            "format": 1,
        }
        idata = self.idata.copy()
        idata.add_groups(
            {"observed_table": table}, warn_on_custom_groups=False
        ) if _has_custom_group_flag() else idata.add_groups({"observed_table": table})
        idata.posterior.attrs["bayesmix"] = json.dumps(meta, default=_json_default)
        tmp = path.with_name(path.name + ".tmp")
        idata.to_netcdf(str(tmp))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Posterior:
        """Read a file written by ``save``; everything needed to predict and optimise is in it."""
        import arviz as az

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such posterior file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                idata = az.from_netcdf(str(path))
            meta = json.loads(idata.posterior.attrs["bayesmix"])
            table = idata["observed_table"]
        except Exception as exc:
            raise ValueError(f"{path}: not a bayesmix posterior file ({exc})") from exc
        frame = pd.DataFrame({c: np.asarray(table[c]) for c in meta["columns"]})
        for c in ("run_id", "target", "metric"):
            frame[c] = frame[c].astype(str)
        obs = Observations.from_frame(frame, meta["target_domain"])
        settings = LawSettings(**meta["settings"])
        import arviz as az2

        core = az2.InferenceData(posterior=idata.posterior, sample_stats=idata.sample_stats)
        return cls(
            idata=core,
            observations=obs,
            law=meta["law"],
            settings=settings,
            method=meta["method"],
            info=meta.get("info", {}),
        )


# ------------------------------------------------------------------------------- helpers
def mixture_matrix(mixtures: pd.DataFrame, domains: list[str]) -> np.ndarray:
    """(P, M) proportions from a frame with one r:<domain> column per domain; validated."""
    if not isinstance(mixtures, pd.DataFrame):
        raise TypeError(
            f"mixtures must be a DataFrame with r:<domain> columns, got {type(mixtures).__name__}"
        )
    cols = [ratio_column(d) for d in domains]
    missing = [c for c in cols if c not in mixtures.columns]
    if missing:
        raise ObservationsError(
            f"mixtures lack column(s) {', '.join(missing)} (every domain "
            "of the posterior needs one)"
        )
    unknown = [c for c in mixtures.columns if str(c).startswith("r:") and c not in cols]
    if unknown:
        raise ObservationsError(
            f"mixtures have column(s) for unknown domain(s): {', '.join(unknown)}"
        )
    r = mixtures[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(r) | (r < 0) | (r > 1)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ObservationsError(
            f"mixture row {mixtures.index[i]!r}, column {cols[j]!r}: "
            f"{mixtures[cols[j]].iloc[i]!r} is not a proportion in [0, 1]"
        )
    sums = r.sum(axis=1)
    off = np.abs(sums - 1) > MIX_TOLERANCE
    if off.any():
        i = int(np.argmax(off))
        raise ObservationsError(
            f"mixture row {mixtures.index[i]!r}: proportions sum to {sums[i]:.6g}, not 1"
        )
    return r / sums[:, None]


def objective_weights(weights: Mapping[str, float] | None, targets: list[str]) -> np.ndarray:
    """Weights over targets (equal by default); unknown targets and bad values are errors."""
    if weights is None:
        return np.full(len(targets), 1.0 / len(targets))
    unknown = [t for t in weights if t not in targets]
    if unknown:
        raise ValueError(f"weights name unknown target(s): {', '.join(map(str, unknown))}")
    w = np.array([float(weights.get(t, 0.0)) for t in targets])
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return w


def _flat_names(posterior: Any) -> list[str]:
    names = []
    for name in posterior.data_vars:
        shape = posterior[name].shape[2:]
        if not shape:
            names.append(name)
        else:
            names += [f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]
    return names


def _netcdf_column(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=float)
    return col.astype(str).to_numpy(dtype=object)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _has_custom_group_flag() -> bool:
    import inspect

    import arviz as az

    return "warn_on_custom_groups" in inspect.signature(az.InferenceData.add_groups).parameters
