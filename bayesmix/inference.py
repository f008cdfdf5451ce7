"""Fitting a law to observations: MAP, Laplace, SVI or NUTS, and the Posterior they give.

Every method starts the same way: the MAP of the law's non-centred model, found by L-BFGS on
the model's potential (the negative log joint density in unconstrained space, with exact JAX
gradients), and the Laplace approximation there (the inverse Hessian of the potential).

- ``method="map"``: the MAP alone, as one draw: a point fit without intervals (held-out
  scoring in ``bayesmix.selection``, quick looks).
- ``method="laplace"``: draws from that Gaussian; seconds, approximate.
- ``method="svi"``: a multivariate-normal variational posterior started at the MAP.
- ``method="nuts"`` (default): NUTS chains started from dispersed Laplace draws, with the
  Laplace covariance as the dense mass matrix, so warm-up starts in the typical set with the
  right metric instead of spending its budget finding both.

The hierarchy is sampled centred or non-centred as the data warrant (``LawSettings.centered``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial, wraps
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO, autoguide
from numpyro.infer.initialization import init_to_value
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn
from threadpoolctl import threadpool_limits

from bayesmix import jax_setup  # noqa: F401  (XLA flags and float64 before any computation)
from bayesmix.errors import ArgumentError
from bayesmix.laws import (
    Law,
    LawData,
    LawError,
    LawSettings,
    Prior,
    default_law,
    distinct_mixtures,
    get_law,
    runs_to_identify,
)
from bayesmix.laws.base import EARLY_STEPS
from bayesmix.observations import Observations, ObservationsError
from bayesmix.posterior import ConvergenceWarning, NotConvergedError, Posterior

log = logging.getLogger(__name__)

Method = Literal["nuts", "laplace", "svi", "map"]
METHODS = ("nuts", "laplace", "svi", "map")
MassMatrix = Literal["laplace", "diagonal"]
MASS_MATRICES = ("laplace", "diagonal")

__all__ = ["ConvergenceWarning", "NotConvergedError", "Posterior", "fit"]


MAP_GTOL = 1e-5
# A point whose potential's gradient is below this in every coordinate is taken as the mode
# even where the optimiser reported a failure (it stopped on precision loss at the mode).
MAP_GTOL_ACCEPT = 1e-3
MAP_RESTARTS = 2

# Fits between two drops of JAX's compiled code (``_drops_compiled``).
FITS_PER_CACHE = 16
_fits_since_drop = 0


def _drops_compiled(fit_fn: Callable[..., Posterior]) -> Callable[..., Posterior]:
    """Drop JAX's compiled code every ``FITS_PER_CACHE`` fits.

    Kept, it lets later fits of the same shapes skip compiling (refits, cross-validation
    folds: a fifth faster); but NumPyro's NUTS holds ~1,100 memory maps per fit, and a
    process that fitted ~55 times (a study, a cross-validation) ran out of Linux's 65,530
    and died in the LLVM compiler ("Cannot allocate memory", then a segfault).
    """

    @wraps(fit_fn)
    def fit_and_drop(*args: Any, **kwargs: Any) -> Posterior:
        global _fits_since_drop
        try:
            return fit_fn(*args, **kwargs)
        finally:
            _fits_since_drop += 1
            if _fits_since_drop >= FITS_PER_CACHE:
                jax.clear_caches()
                _fits_since_drop = 0

    return fit_and_drop


@_drops_compiled
def fit(
    obs: Observations,
    law: str | None = None,
    seed: int = 0,
    *,
    method: Method = "nuts",
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 1000,
    eps: float | Literal["learned", "shared"] = "learned",
    noise: Literal["correlated", "normal", "student"] | None = None,
    rank: int = 0,
    centered: bool | None = None,
    early_steps: float = EARLY_STEPS,
    reference_step: float | None = None,
    prior: Prior | None = None,
    init: Posterior | None = None,
    target_accept: float = 0.85,
    max_tree_depth: int = 8,
    mass_matrix: MassMatrix = "diagonal",
    svi_steps: int = 3000,
    progress: bool = True,
) -> Posterior:
    """Fit ``law`` to ``obs`` and return its posterior.

    Args:
        obs: observations of one metric (``obs.select(metric=...)`` first if several).
        law: "bimix" (own share), "bimix-cross" (every share), "loglinear" or
            "cross-scaling" (every share, model size and tokens); None: ``default_law``.
        method: "nuts" (exact, with diagnostics), "laplace" (Gaussian at the MAP), "svi"
            (multivariate-normal variational posterior), both fast and approximate, or "map"
            (the mode alone, one draw: no intervals).
        num_chains, num_warmup, num_samples: NUTS chains and draws per chain (for the
            approximations, num_chains x num_samples draws in one chain). 4 x 1000 draws:
            with 4 x 500, the largest split R-hat of ~300 well-mixed parameters (ESS > 1000
            each) still lands above 1.01 by chance (RegMix cross law: 1.013).
        eps: floor in log(r + eps): a number, "learned" (pooled, per domain) or "shared"
            (one learned floor).
        noise: log-scale observation noise: "correlated" (normal, partly shared by a run's
            targets), "normal" or "student" (heavy tails); see ``laws.blocks.observe``.
            None: the law's own default (``noise`` on the law; "correlated" where it has none).
        rank: low-rank cross-domain exponents (0: full, the default; see ``LawSettings``).
        centered: force the centred (True) or non-centred (False) hierarchy; None decides
            from the number of observations per target.
        early_steps: evaluations before this fraction of their run's last step are left out
            (the warm-up, where no power law in the step holds; ``Observations.late_steps``):
            the posterior describes training past them, and ``info["early_rows"]`` counts them.
        prior: informative prior per site (warm starts, see ``bayesmix.reuse``).
        init: an earlier posterior of the same law, domains and targets: its posterior mean
            starts the MAP search (refits after a few more runs converge in a few iterations).
        mass_matrix: NUTS's metric: "diagonal" (adapted in warm-up, the default) or
            "laplace" (the Laplace fit's dense covariance, fixed). The Laplace metric is
            faster where the posterior is near Gaussian (512 RegMix runs: 30 s against
            82 s) but does not mix where it is not: on the GPU swarm's training curves it
            left R-hat 1.03, ESS 180 and divergences, the adapted one R-hat 1.008, ESS 980
            and none (``studies/law_convergence``).
        progress: show NUTS progress (one line; ``sampling_progress``).
    """
    if not isinstance(obs, Observations):
        raise TypeError(f"fit expects Observations, got {type(obs).__name__}")
    if method not in METHODS:
        raise ArgumentError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if mass_matrix not in MASS_MATRICES:
        raise ArgumentError(
            f"unknown mass_matrix {mass_matrix!r}; choose one of {', '.join(MASS_MATRICES)}"
        )
    for name, value in (("num_chains", num_chains), ("num_samples", num_samples)):
        if not isinstance(value, int) or value < 1:
            raise ArgumentError(f"{name} must be a positive integer, got {value!r}")
    if len(obs.metrics) > 1:
        raise ObservationsError(
            f"observations hold several metrics {obs.metrics}: fit one, e.g. "
            f"obs.select(metric={obs.metrics[0]!r})"
        )
    law = law or default_law(obs)
    law_obj = get_law(law)
    if obs.has_sizes and not getattr(law_obj, "size_axis", False):
        raise LawError(
            f"the observations mix model sizes {sorted(obs.frame['model_size'].unique())} "
            f"and law {law!r} has no size axis: fit law='cross-scaling' (or select one size)"
        )
    settings = LawSettings(
        eps=eps,
        noise=noise or getattr(law_obj, "noise", "correlated"),
        reference_step=reference_step or obs.max_step,
        reference_size=obs.max_model_size if obs.has_sizes else None,
        rank=rank,
        centered=centered,
        early_steps=early_steps,
    )
    data = LawData.from_observations(obs, settings)
    law_obj.check(data)
    if prior is None:
        warn_if_interpolating(law_obj, data)

    started = time.perf_counter()
    rng_init, rng_run = jax.random.split(jax.random.PRNGKey(seed))
    # The MAP is searched in the non-centred model, whose density is bounded (the centred
    # one grows without bound as a population scale shrinks to zero); the Gaussian around it
    # and the chains live in the parametrisation the data call for.
    start = _warm_start(init, law, obs) if init is not None else None
    mode = find_map(partial(law_obj.model, replace(data, centered=False), settings, prior), start)
    model = partial(law_obj.model, data, settings, prior)
    info: dict[str, Any] = {
        "early_rows": len(obs) - len(obs.late_steps(early_steps)),
        "map_potential": mode.potential,
        "map_iterations": mode.iterations,
        "map_success": mode.success,
        "map_message": mode.message,
        "map_flat": mode.flat.tolist(),
        "map_seconds": time.perf_counter() - started,
    }
    if method == "map":
        # One draw, the mode: its sites are the non-centred model's, its formula sites alike.
        samples = {k: np.asarray(v)[None, None] for k, v in mode.values.items()}
        info.update(centered=False, fit_seconds=time.perf_counter() - started, seed=seed)
        stats = {"diverging": np.zeros((1, 1), dtype=bool)}
        return Posterior.from_samples(law, settings, method, samples, stats, obs, info)
    laplace = Laplace(model, mode.values)
    n_draws = num_chains * num_samples
    if method == "laplace":
        samples = laplace.sample(rng_run, n_draws)
        stats = {"diverging": np.zeros((1, n_draws), dtype=bool)}
        info["laplace_pd"] = laplace.positive_definite
    elif method == "svi":
        samples, info["svi_rel_change"] = _svi(model, laplace, rng_run, svi_steps, n_draws)
        stats = {"diverging": np.zeros((1, n_draws), dtype=bool)}
    else:
        samples, stats = _nuts(
            model,
            laplace,
            rng_init,
            rng_run,
            num_chains,
            num_warmup,
            num_samples,
            target_accept,
            max_tree_depth,
            mass_matrix,
            progress,
        )
    info["centered"] = data.centered
    info["fit_seconds"] = time.perf_counter() - started
    info.update(num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples, seed=seed)
    post = Posterior.from_samples(law, settings, method, samples, stats, obs, info)
    if not post.converged:
        warnings.warn(post.convergence_message(), ConvergenceWarning, stacklevel=2)
    return post


# ------------------------------------------------------------------------------ MAP / Laplace
@dataclass
class Mode:
    """The MAP: flat unconstrained vector, every site's constrained value, potential there."""

    flat: np.ndarray
    values: dict[str, np.ndarray]
    potential: float
    iterations: int
    success: bool
    message: str = ""  # why the search stopped short of a mode, where it did


class Laplace:
    """The Gaussian approximation of a model's posterior around a point near its mode.

    Works on the flat vector of every latent site's unconstrained value (``ravel_pytree``
    order, which is also the order NUTS uses for its mass matrix). The covariance is the
    inverse Hessian of the potential, eigenvalues floored where it is not positive definite.
    """

    def __init__(self, model: Callable[[], None], values: Mapping[str, Any]) -> None:
        self.model = model
        latent = {k: values[k] for k in latent_sites(model)}
        self.mode = latent  # constrained values at the mode
        flat, self.unravel = ravel_pytree(unconstrain_fn(model, (), {}, latent))
        self.flat_map = np.asarray(flat)
        self.cov, self.positive_definite = _inverse_covariance(
            np.asarray(_hessian(model, self.unravel)(flat))
        )
        constrain = partial(constrain_fn, model, (), {}, return_deterministic=True)
        self._to_sites = jax.jit(jax.vmap(lambda v: constrain(self.unravel(v))))

    def constrained(self, flat_draws: np.ndarray) -> dict[str, np.ndarray]:
        """Unconstrained flat draws (N, d) -> every site's constrained value, deterministic too."""
        sites = self._to_sites(jnp.asarray(flat_draws))
        return {k: np.asarray(v) for k, v in sites.items()}

    def flat_draws(self, rng: Any, n: int) -> np.ndarray:
        chol = np.linalg.cholesky(self.cov)
        z = np.asarray(jax.random.normal(rng, (n, len(self.flat_map))))
        return self.flat_map + z @ chol.T

    def sample(self, rng: Any, n: int) -> dict[str, np.ndarray]:
        """n draws of every site, with a leading chain axis of 1 (arviz layout)."""
        return {k: v[None] for k, v in self.constrained(self.flat_draws(rng, n)).items()}


def latent_sites(model: Callable[[], None]) -> list[str]:
    from numpyro import handlers

    trace = handlers.trace(handlers.seed(model, 0)).get_trace()
    return [k for k, s in trace.items() if s["type"] == "sample" and not s["is_observed"]]


def warn_if_interpolating(law: Law, data: LawData) -> None:
    """Warn when a law with an exponent per domain for every target has too few runs
    (``interpolation_risk``); a prior from an earlier study (``prior=``) supplies what the
    runs cannot, so then nothing is said."""
    risk = interpolation_risk(law, data.r)
    if risk:
        warnings.warn(
            f"{risk}, and its intervals are then overconfident; use law='bimix' or run more "
            "mixtures",
            UserWarning,
            stacklevel=3,
        )


def interpolation_risk(law: Law, r: np.ndarray) -> str | None:
    """Why ``law`` can pass through every run of mixtures ``r`` (runs x domains), or None.

    A law with an exponent per domain for every target (``own_share`` False: bimix-cross,
    log-linear) regresses each target on the M log shares: M + 1 unknowns per target. With
    about that many distinct mixtures it can pass through every run, and the noise scale
    then shrinks onto the interpolation: NUTS and Laplace alike return confident, wrong
    exponents for the domains the runs barely vary (seen with 8 runs of 7 domains,
    studies/active_learning/results/cross-law.md). Below 2 (M + 1) runs it is a risk.
    """
    if law.own_share:
        return None
    runs = distinct_mixtures(r)
    m = r.shape[1]
    needed = runs_to_identify(m)
    if runs >= needed:
        return None
    return (
        f"law {law.name!r} has {m + 1} coefficients per target and the data only {runs} "
        f"distinct mixtures: below {needed} it can interpolate the runs"
    )


def prior_centre(model: Callable[[], None]) -> dict[str, Any]:
    """Each latent site at its prior mean (or a prior draw where the mean is not finite),
    in unconstrained space: a deterministic, cheap start for the MAP search."""
    from numpyro import handlers
    from numpyro.distributions.transforms import biject_to

    def centre() -> dict[str, Any]:
        trace = handlers.trace(handlers.seed(model, 0)).get_trace()
        z = {}
        for name, site in trace.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            value = site["value"]
            try:
                mean = jnp.broadcast_to(site["fn"].mean, jnp.shape(value))
                value = jnp.where(jnp.isfinite(mean), mean, value)
            except NotImplementedError:
                pass
            z[name] = biject_to(site["fn"].support).inv(value)
        return z

    # Traced once under jit: running the model eagerly compiles every operation on its own.
    return jax.jit(centre)()


def find_map(model: Callable[[], None], start: np.ndarray | None = None) -> Mode:
    """MAP from the prior centre (or the flat vector ``start``) by a trust-region Newton-Krylov
    search with exact Hessian-vector products.

    The cross-domain laws' potentials are long curved valleys (exponents trade off against
    the floor and the scale): L-BFGS needs 10,000+ iterations there, Newton-Krylov ~100.
    """
    from scipy.optimize import minimize

    flat0, unravel = ravel_pytree(prior_centre(model))
    if start is not None and start.shape == flat0.shape:
        flat0 = jnp.asarray(start)

    def potential(v: Any) -> Any:
        return _potential(model, unravel(v))

    value_and_grad = jax.jit(jax.value_and_grad(potential))
    hvp = jax.jit(lambda v, d: jax.jvp(jax.grad(potential), (v,), (d,))[1])

    def objective(v: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = value_and_grad(v)
        if not np.isfinite(value):
            return np.inf, np.zeros_like(v)
        return float(value), np.asarray(grad)

    # The optimiser's own linear algebra is tiny: BLAS threads would only contend for cores.
    x, iterations = np.asarray(flat0), 0
    with threadpool_limits(limits=1, user_api="blas"):
        # trust-krylov stops "unsuccessfully" when its trust region collapses on a nearly
        # flat ridge short of the gradient tolerance; a fresh start from where it stopped
        # (a new trust radius) usually finishes the job, so it gets MAP_RESTARTS more tries.
        for _ in range(1 + MAP_RESTARTS):
            result = minimize(
                objective,
                x,
                jac=True,
                hessp=lambda v, d: np.asarray(hvp(v, d)),
                method="trust-krylov",
                options={"maxiter": 2000, "gtol": MAP_GTOL},
            )
            x, iterations = np.asarray(result.x), iterations + int(result.nit)
            if result.success or not np.isfinite(result.fun):
                break
    if not np.isfinite(result.fun):
        raise RuntimeError("MAP search failed: the potential is not finite at the optimum")
    gradient = float(np.abs(objective(x)[1]).max())
    constrain = partial(constrain_fn, model, (), {}, return_deterministic=True)
    values = {k: np.asarray(v) for k, v in constrain(unravel(jnp.asarray(x))).items()}
    success = bool(result.success) or gradient <= MAP_GTOL_ACCEPT
    message = "" if success else f"{result.message} (max |gradient| {gradient:.2g})"
    return Mode(x, values, float(result.fun), iterations, success, message)


def _potential(model: Callable[[], None], z: Mapping[str, Any]) -> Any:
    return potential_energy(model, (), {}, z)


def _hessian(model: Callable[[], None], unravel: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return jax.jit(jax.hessian(lambda v: _potential(model, unravel(v))))


def _inverse_covariance(hessian: np.ndarray) -> tuple[np.ndarray, bool]:
    """Inverse of a symmetric Hessian, eigenvalues floored where it is not positive definite."""
    h = 0.5 * (hessian + hessian.T)
    values, vectors = np.linalg.eigh(h)
    positive = bool(values.min() > 0)
    floor = max(values.max() * 1e-8, 1e-6)
    values = np.maximum(values, floor)
    return (vectors / values) @ vectors.T, positive


def _warm_start(previous: Posterior, law: str, obs: Observations) -> np.ndarray | None:
    """The MAP of an earlier fit of the same law, domains and targets (unconstrained, flat)."""
    if previous.law != law or previous.domains != obs.domains or previous.targets != obs.targets:
        raise ArgumentError(
            "init must be a posterior of the same law, domains and targets "
            f"(got {previous.law} over {len(previous.domains)} domains, "
            f"{len(previous.targets)} targets)"
        )
    flat = previous.info.get("map_flat")
    return None if flat is None else np.asarray(flat, dtype=float)


# ------------------------------------------------------------------------------------- SVI
def _svi(
    model: Callable[[], None], laplace: Laplace, rng: Any, steps: int, n_draws: int
) -> tuple[dict[str, np.ndarray], float]:
    """An MVN variational posterior started at the MAP; returns draws and the ELBO's last drift."""
    from numpyro.optim import Adam

    values = {k: v[0] for k, v in laplace.constrained(laplace.flat_map[None]).items()}
    guide = autoguide.AutoMultivariateNormal(
        model, init_loc_fn=init_to_value(values=values), init_scale=0.01
    )
    result = SVI(model, guide, Adam(0.005), Trace_ELBO()).run(rng, steps, progress_bar=False)
    losses = np.asarray(result.losses)
    tail = losses[-max(10, len(losses) // 10) :]
    drift = float(abs(tail[: len(tail) // 2].mean() - tail[len(tail) // 2 :].mean()))
    latent = guide.sample_posterior(rng, result.params, sample_shape=(n_draws,))
    z = jax.vmap(lambda p: unconstrain_fn(model, (), {}, p))(latent)
    flat = jax.vmap(lambda zz: ravel_pytree(zz)[0])(z)
    return {k: v[None] for k, v in laplace.constrained(np.asarray(flat)).items()}, drift


# ------------------------------------------------------------------------------------ NUTS
def _nuts(
    model: Callable[[], None],
    laplace: Laplace,
    rng_init: Any,
    rng_run: Any,
    num_chains: int,
    num_warmup: int,
    num_samples: int,
    target_accept: float,
    max_tree_depth: int,
    mass_matrix: MassMatrix,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    # Chains start at Laplace draws pulled halfway to the MAP: dispersed enough for R-hat to
    # mean something, close enough to skip the long climb into the typical set. The metric
    # is a diagonal adapted in warm-up (mass_matrix="diagonal"), or the Laplace covariance,
    # fixed ("laplace"), cheaper where the posterior is near Gaussian (RegMix's final
    # losses), mixing badly where it is not (training curves); where the Hessian is not
    # positive definite, a dense metric is adapted instead.
    use_laplace = mass_matrix == "laplace" and laplace.positive_definite
    flat = 0.5 * (laplace.flat_draws(rng_init, num_chains) + laplace.flat_map)
    init_params = jax.vmap(laplace.unravel)(jnp.asarray(flat))
    if num_chains == 1:  # MCMC takes one chain's start unbatched
        init_params = jax.tree_util.tree_map(lambda v: v[0], init_params)
    kernel = NUTS(
        model,
        # NumPyro traces the model once to find its transforms before the chains start from
        # init_params; at its default random point the additive law's loss can be infinite,
        # which a validating distribution refuses (a start-up crash, studies/size_simulation).
        init_strategy=init_to_value(values=laplace.mode),
        target_accept_prob=target_accept,
        max_tree_depth=max_tree_depth,
        dense_mass=mass_matrix == "laplace",
        inverse_mass_matrix=laplace.cov if use_laplace else None,
        adapt_mass_matrix=not use_laplace,
    )
    chain_method = "parallel" if jax.local_device_count() >= num_chains else "sequential"
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=False,  # one line of our own instead of a bar per chain
    )
    what = f"NUTS: {num_chains} chains x ({num_warmup} warm-up + {num_samples}) draws"
    with sampling_progress(progress, what):
        mcmc.run(rng_run, init_params=init_params, extra_fields=("diverging", "num_steps"))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {k: np.asarray(v) for k, v in extra.items()}
    return samples, stats


# Seconds between two plain progress lines when stderr is not a terminal.
PROGRESS_EVERY = 30.0


@contextmanager
def sampling_progress(show: bool, what: str) -> Iterator[None]:
    """Progress of a long sampling call, compact wherever stderr goes.

    numpyro draws one tqdm bar per chain; on a terminal they overlap, and in a log file or
    CI each redraw is a new line (hundreds per fit). Instead: on a terminal one transient
    line (spinner, what runs, time elapsed); elsewhere a plain line at the start, one every
    ``PROGRESS_EVERY`` seconds and one at the end.
    """
    if not show:
        yield
        return
    if sys.stderr.isatty():
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, transient=True) as bar:
            bar.add_task(what, total=None)
            yield
        return
    started = time.perf_counter()
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(PROGRESS_EVERY):
            print(f"{what}: {time.perf_counter() - started:.0f} s so far", file=sys.stderr)

    print(f"{what}: started", file=sys.stderr, flush=True)
    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()
        print(f"{what}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
