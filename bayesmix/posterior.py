"""The posterior of a fitted law: its draws, the observations behind them, and what follows.

A ``Posterior`` holds the draws as arviz InferenceData and answers predictions, diagnostics and
the optimal mixture; it saves to one NetCDF file that also holds the observations, the law and
its settings, so that everything downstream works from the file alone.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import pandas as pd

from bayesmix.errors import ArgumentError, BayesMixError
from bayesmix.laws import LawSettings, get_law, get_noise
from bayesmix.laws.base import LawData
from bayesmix.laws.formulas import namespace
from bayesmix.mixtures import mixture_matrix, objective_weights
from bayesmix.observations import Observations, ObservationsError
from bayesmix.optimize import Constraints, OptimalMixture, optimal_mixture

if TYPE_CHECKING:
    from bayesmix.laws.base import Law
    from bayesmix.laws.noise import Noise

R_HAT_MAX = 1.01
ESS_MIN = 400
FILE_FORMAT = 2  # 2: the cross law's floors are per domain
# Draws x mixtures x targets x domains evaluated at once by log_loss (memory bound).
CHUNK_ELEMENTS = 20_000_000


class FittedLaw(Protocol):
    """What every fitted law answers, one law's ``Posterior`` or an average of laws
    (``LawAverage``): the training domains and targets it was fitted over. Code that takes
    either (proposals, recommendations, the command line) types its argument so, and asks
    for a ``Posterior`` where it needs one law's draws."""

    @property
    def domains(self) -> list[str]: ...

    @property
    def targets(self) -> list[str]: ...


class NotConvergedError(BayesMixError, RuntimeError):
    """A posterior whose chains did not converge was used with strict=True."""


class PosteriorFileError(BayesMixError, ValueError):
    """A file that is not a posterior this bayesmix can read."""


class ConvergenceWarning(UserWarning):
    """A posterior whose chains did not converge is being used."""


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
    def law_obj(self) -> Law:
        return get_law(self.law)

    @property
    def noise(self) -> Noise:
        """The observation-noise model the law was fitted with (``bayesmix.laws.noise``)."""
        return get_noise(self.settings.noise)

    @property
    def num_draws(self) -> int:
        p = self.idata.posterior
        return int(p.sizes["chain"] * p.sizes["draw"])

    @property
    def divergences(self) -> int:
        return int(np.asarray(self.idata.sample_stats["diverging"]).sum())

    def diagnostics(self) -> pd.DataFrame:
        """One row per scalar parameter: r_hat, ess_bulk, ess_tail (NaN for approximations).

        Entries that are the same in every draw (a fixed floor eps) have no chain statistics
        and are left out.
        """
        import arviz as az

        if self.method != "nuts":
            names = _flat_names(self.idata.posterior)
            nan = np.full(len(names), np.nan)
            return pd.DataFrame({"r_hat": nan, "ess_bulk": nan, "ess_tail": nan}, index=names)
        post = self.idata.posterior
        spread = {k: post[k].max(["chain", "draw"]) - post[k].min(["chain", "draw"]) for k in post}
        varying = [k for k, v in spread.items() if float(v.max()) > 0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summary = az.summary(self.idata, var_names=varying, kind="diagnostics", round_to="none")
        # az.summary lists each variable's entries in C order, as ravel does.
        varies = np.concatenate([np.ravel(spread[k].values) > 0 for k in varying])
        return cast(pd.DataFrame, summary).loc[varies, ["r_hat", "ess_bulk", "ess_tail"]]

    @property
    def converged(self) -> bool:
        """NUTS: every r_hat <= 1.01, every ess_bulk >= 400, no divergence.

        Approximations (laplace, svi, map) have no chains to check: they count as converged
        when the mode search met its tolerance (``info["map_message"]`` says why not) and,
        for laplace, the Hessian there is positive definite (svi: the ELBO stopped moving),
        and
        ``convergence_message`` says they are approximate.
        """
        if "_converged" not in self.info:
            if self.method == "nuts":
                d = self.diagnostics()
                ok = bool((d["r_hat"] <= R_HAT_MAX).all() and (d["ess_bulk"] >= ESS_MIN).all())
                ok = ok and self.divergences == 0
            else:
                # Every approximation stands on the mode search: a search that stopped short
                # of a mode makes the fit unconverged, whatever came after it.
                ok = bool(self.info.get("map_success", False))
                if self.method == "laplace":
                    ok = ok and bool(self.info.get("laplace_pd", False))
                elif self.method == "svi":
                    ok = ok and self.info.get("svi_rel_change", np.inf) < 1.0
            self.info["_converged"] = ok
        return bool(self.info["_converged"])

    def convergence_message(self) -> str:
        if self.method != "nuts":
            if self.converged:
                return f"approximate posterior ({self.method}); its optimisation converged"
            if not self.info.get("map_success", False):
                why = "the mode search stopped short: " + str(self.info.get("map_message", ""))
            elif self.method == "laplace":
                why = "the Hessian at the mode is not positive definite"
            else:
                why = "its ELBO was still changing"
            return f"approximate posterior ({self.method}) did NOT converge: {why}"
        d = self.diagnostics()
        if self.converged:
            return (
                f"posterior ({self.law}, NUTS) converged: max r_hat {d['r_hat'].max():.3f}, "
                f"min ess_bulk {d['ess_bulk'].min():.0f}, no divergent transitions"
            )
        if d["r_hat"].isna().all():
            chains = self.idata.posterior.sizes["chain"]
            return (
                f"posterior ({self.law}, NUTS) cannot be checked: R-hat needs at least 2 "
                f"chains, this fit ran {chains}; refit with num_chains >= 2 to trust it"
            )
        worst = d["r_hat"].idxmax()
        return (
            f"posterior ({self.law}, NUTS) did NOT converge: max r_hat {d['r_hat'].max():.3f} "
            f"({worst}), min ess_bulk {d['ess_bulk'].min():.0f}, {self.divergences} divergent "
            "transitions; its intervals are not to be trusted (fit longer, or reparametrise)"
        )

    def summary_line(self) -> str:
        """One line for people: law, method, size, time and convergence."""
        seconds = self.info.get("fit_seconds")
        took = f" in {seconds:.0f} s" if seconds is not None else ""
        flag = "" if self.converged else "WARNING: "
        return (
            f"{flag}law {self.law} by {self.method}{took}, {self.num_draws} draws: "
            f"{self.convergence_message()}"
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
        """Every site's draws with one leading draw axis (chains flattened), evenly thinned."""
        post = self.idata.posterior
        out = {}
        for name in post.data_vars:
            v = np.asarray(post[name])
            out[name] = v.reshape(-1, *v.shape[2:])
        d = self.num_draws
        if max_draws is not None and max_draws < d:
            keep = np.linspace(0, d - 1, max_draws).round().astype(int)
            out = {k: v[keep] for k, v in out.items()}
        return out

    @property
    def reference_step(self) -> float:
        """The step the law's K_t is parametrised at (s_rel = 1): the fit's setting, else the
        longest observed run."""
        step = self.settings.reference_step or self.observations.max_step
        if step is None:
            raise ObservationsError("the fitted runs have no step axis")
        return float(step)

    def s_rel(self, step: float | None) -> np.ndarray | None:
        """Training progress relative to the reference step, or None without a step axis."""
        if not self.observations.has_steps:
            return None
        ref = self.reference_step
        s = ref if step is None else float(step)
        if not np.isfinite(s) or s <= 0:
            raise ArgumentError(f"step must be a positive number, got {step!r}")
        return np.array([s / ref])

    def step_for_tokens(self, tokens: float) -> float:
        """The law's step at a number of training tokens, from the fitted runs' own ratio of
        step to tokens (steps may count tokens, millions of them, or optimiser steps at a
        fixed batch)."""
        frame = self.observations.frame
        both = frame[["step", "tokens"]].dropna()
        if both.empty:
            raise ObservationsError(
                "the fitted runs record no tokens beside their steps: give the step instead"
            )
        ratio = (both["step"] / both["tokens"]).to_numpy()
        if np.ptp(ratio) > 0.01 * np.median(ratio):
            raise ObservationsError(
                "the fitted runs' steps are not a fixed multiple of their tokens: give the "
                "step instead"
            )
        return float(tokens) * float(np.median(ratio))

    @property
    def has_sizes(self) -> bool:
        """True when the law has a model-size axis (fitted to runs of several sizes)."""
        return self.settings.reference_size is not None and self.observations.has_sizes

    def n_rel(self, model_size: float | None) -> np.ndarray | None:
        """Model size relative to the reference size, or None at the reference (and without
        a size axis, where only the fitted size can be answered)."""
        if model_size is not None and (
            not np.isfinite(float(model_size)) or float(model_size) <= 0
        ):
            raise ArgumentError(f"model_size must be a positive parameter count, got {model_size}")
        if not self.has_sizes:
            fitted = self.observations.max_model_size
            if model_size is not None and (fitted is None or float(model_size) != fitted):
                raise ObservationsError(
                    f"this posterior has no model-size axis (fitted to "
                    f"{'one size' if fitted is None else f'{fitted:.3g} parameters'}): "
                    "fit runs of several sizes (a model_size column) with law "
                    "'cross-scaling' to answer for another size"
                )
            return None
        if model_size is None:
            return None
        return np.array([float(model_size) / float(self.settings.reference_size)])

    def own_onehot(self) -> np.ndarray:
        """(T, M): 1 at each target's own training domain (rows of zeros where none)."""
        own = np.zeros((len(self.targets), len(self.domains)))
        for t, d in self.observations.target_domain.items():
            own[self.targets.index(t), self.domains.index(d)] = 1.0
        return own

    def log_loss(
        self,
        r: Any,
        step: float | None = None,
        *,
        model_size: float | None = None,
        max_draws: int | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Noise-free log loss per draw, (D, P, T), at mixtures r (P, M).

        r may be a numpy array or a torch tensor; with a tensor the law is evaluated in torch
        (draws moved to r's dtype and device), so gradients flow to r (BoTorch acquisition).
        ``model_size`` (parameters) needs a law with a size axis; None is the reference size.
        """
        s_rel = self.s_rel(step)
        if s_rel is not None:
            s_rel = np.repeat(s_rel, r.shape[-2])
        n_rel = self.n_rel(model_size)
        if n_rel is not None:
            n_rel = np.repeat(n_rel, r.shape[-2])
        params = params if params is not None else self.draws(max_draws)
        return self._log_loss(r, s_rel, params, n_rel)

    def law_inputs(self, xp: Any, like: Any, n_rel: np.ndarray | None) -> dict[str, Any]:
        """The constant keyword inputs of the law's ``log_loss``: the own-domain map, and the
        relative model sizes where the law has a size axis."""
        inputs = {"own_onehot": _as(xp, self.own_onehot(), like)}
        if n_rel is not None:
            inputs["n_rel"] = _as(xp, n_rel, like)
        return inputs

    def _log_loss(
        self,
        r: Any,
        s_rel: np.ndarray | None,
        params: Mapping[str, Any],
        n_rel: np.ndarray | None = None,
    ) -> Any:
        """The law's log loss (D, P, T) at mixtures r (P, M), relative steps s_rel (P,) and
        relative model sizes n_rel (P,)."""
        xp = namespace(r)
        law = self.law_obj
        params = {k: _as(xp, v, r) for k, v in params.items() if k in law.formula_sites}
        if s_rel is not None:
            s_rel = _as(xp, s_rel, r)
        inputs = self.law_inputs(xp, r, n_rel)
        n_draws = next(iter(params.values())).shape[0]
        per_draw = r.shape[-2] * len(self.targets) * len(self.domains)
        chunk = max(1, CHUNK_ELEMENTS // max(per_draw, 1))
        parts = [
            law.log_loss(xp, {k: v[i : i + chunk] for k, v in params.items()}, r, s_rel, **inputs)
            for i in range(0, n_draws, chunk)
        ]
        return parts[0] if len(parts) == 1 else xp.concatenate(parts, 0)

    def log_likelihood(self, obs: Observations, *, max_draws: int | None = None) -> pd.DataFrame:
        """Log density of each run's observed losses under each draw: a (draws x runs) frame.

        The law's own noise model (``laws.noise``) around its loss; given a draw a
        run's steps are independent, so its log density is theirs summed. Runs the fit did
        not see give its out-of-sample predictive fit (``bayesmix.selection``).
        """
        if not isinstance(obs, Observations):
            raise TypeError(f"log_likelihood expects Observations, got {type(obs).__name__}")
        if obs.domains != self.domains:
            raise ObservationsError(
                f"observations over domains {obs.domains} cannot be scored by a posterior "
                f"over {self.domains}"
            )
        unknown = sorted(set(obs.targets) - set(self.targets))
        if unknown:
            raise ObservationsError(f"targets the posterior was not fitted to: {unknown}")
        if obs.has_steps != self.observations.has_steps:
            raise ObservationsError(
                "observations and posterior disagree on steps: both need a step column or neither"
            )
        # The fit's reference step, not the scored runs' longest: s_rel must mean the same.
        reference = self.settings.reference_step or self.observations.max_step
        data = LawData.from_observations(obs, replace(self.settings, reference_step=reference))
        index = np.array([self.targets.index(t) for t in data.targets])
        data = replace(data, target=index[data.target])
        params = self.draws(max_draws)
        log_mean = self._log_loss(data.r, data.s_rel, params, data.n_rel)
        points = self.noise.log_prob(params, log_mean, data)
        codes, runs = pd.factorize(data.point_run)
        per_run = points @ np.eye(len(runs))[codes]
        return pd.DataFrame(per_run, columns=pd.Index(runs, name="run_id"))

    def mixture_matrix(self, mixtures: pd.DataFrame) -> np.ndarray:
        """Validate a frame of mixtures (one r:<domain> column per domain) and return (P, M)."""
        if not isinstance(mixtures, pd.DataFrame):
            raise TypeError(
                "mixtures must be a DataFrame with r:<domain> columns, got "
                f"{type(mixtures).__name__}"
            )
        return mixture_matrix(mixtures, self.domains, "mixtures", ObservationsError)

    def predict(
        self,
        mixtures: pd.DataFrame,
        step: float | None = None,
        ci: float = 0.9,
        *,
        model_size: float | None = None,
        weights: Mapping[str, float] | None = None,
        draws: bool = False,
        max_draws: int | None = None,
        seed: int = 0,
        strict: bool = False,
    ) -> pd.DataFrame:
        """Predicted loss per (mixture, target): mean and the central ``ci`` interval.

        The interval includes observation noise; ``mean`` and ``median`` are the posterior
        mean and median of the law (the median is the robust point prediction: at shares
        the data barely cover, a few draws with extreme exponents can dominate the mean).
        With ``weights``, rows with target ``objective`` give the weighted sum of targets.
        With ``draws=True``, one row per posterior draw (``draw``, ``value``) instead.
        ``model_size`` (parameters; a law with a size axis) answers for another model size;
        the rows then carry a ``model_size`` column.
        """
        self.check_usable(strict)
        if not 0 < ci < 1:
            raise ArgumentError(f"ci must be in (0, 1), got {ci}")
        r = self.mixture_matrix(mixtures)
        run_ids = (
            mixtures["run_id"].astype(str).to_numpy()
            if "run_id" in mixtures.columns
            else mixtures.index.astype(str).to_numpy()
        )
        params = self.draws(max_draws)
        log_mean = self.log_loss(r, step, model_size=model_size, params=params)  # (D, P, T)
        law_value = np.exp(log_mean)
        predictive = np.exp(self.noise.sample(params, log_mean, np.random.default_rng(seed)))
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
            table = pd.DataFrame(
                {
                    "run_id": np.tile(np.repeat(run_ids, n_t), d),
                    "target": np.tile(np.tile(names, n_p), d),
                    "draw": np.repeat(np.arange(d), n_p * n_t),
                    "value": law_value.reshape(-1),
                    "predictive": predictive.reshape(-1),
                    "step": step_value,
                }
            )
            return self._with_size(table, model_size)
        q = (1 - ci) / 2
        table = pd.DataFrame(
            {
                "run_id": np.repeat(run_ids, n_t),
                "target": np.tile(names, n_p),
                "mean": law_value.mean(axis=0).reshape(-1),
                "median": np.median(law_value, axis=0).reshape(-1),
                "lo": np.quantile(predictive, q, axis=0).reshape(-1),
                "hi": np.quantile(predictive, 1 - q, axis=0).reshape(-1),
                "step": step_value,
            }
        )
        return self._with_size(table, model_size)

    def _with_size(self, table: pd.DataFrame, model_size: float | None) -> pd.DataFrame:
        """A ``model_size`` column where the law has a size axis: the size answered for."""
        if self.has_sizes:
            table["model_size"] = float(model_size or self.settings.reference_size)
        return table

    def optimal_mixture(
        self,
        weights: Mapping[str, float] | None = None,
        step: float | None = None,
        constraints: Constraints | None = None,
        ci: float = 0.9,
        *,
        model_size: float | None = None,
        max_draws: int | None = 1000,
        strict: bool = False,
    ) -> OptimalMixture:
        """The mixture minimising sum_t w_t L_t at ``step`` (tokens, where sizes are mixed)
        and ``model_size`` (parameters; the user's target model, for a law with a size axis),
        and the distribution of optima. See ``bayesmix.optimize.optimal_mixture``.
        """
        self.check_usable(strict)
        return optimal_mixture(
            self,
            weights=weights,
            step=step,
            constraints=constraints,
            ci=ci,
            max_draws=max_draws,
            model_size=model_size,
        )

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
            "format": FILE_FORMAT,
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
            raise PosteriorFileError(f"{path}: not a bayesmix posterior file ({exc})") from exc
        frame = pd.DataFrame({c: np.asarray(table[c]) for c in meta["columns"]})
        for c in ("run_id", "target", "metric"):
            frame[c] = frame[c].astype(str)
        obs = Observations.from_frame(frame, meta["target_domain"])
        if meta["law"] == "bimix-cross" and meta.get("format", 1) < 2:
            raise PosteriorFileError(
                f"{path}: written by an earlier bayesmix whose cross law had one floor per "
                "target (now one per domain); refit it from its observations"
            )
        settings = LawSettings(**meta["settings"])
        core = az.InferenceData(posterior=idata.posterior, sample_stats=idata.sample_stats)
        return cls(
            idata=core,
            observations=obs,
            law=meta["law"],
            settings=settings,
            method=meta["method"],
            info=meta.get("info", {}),
        )


# ------------------------------------------------------------------------------- helpers
def _as(xp: Any, value: Any, like: Any) -> Any:
    """value as an array of ``xp`` (for torch: like's dtype and device)."""
    if xp is np:
        return np.asarray(value)
    if xp.__name__ == "torch":
        return xp.as_tensor(np.asarray(value), dtype=like.dtype, device=like.device)
    return xp.asarray(value)


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
