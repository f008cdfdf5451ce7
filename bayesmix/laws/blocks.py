"""NumPyro building blocks the laws share: pooled parameters, the floor eps, the step law.

Every per-target parameter is drawn from a population distribution with its own mean and
scale, so targets borrow strength from each other when data are few. The draw is centred or
non-centred (``LawData.centered``): non-centred where the data say little about each entry,
centred where they pin it down, each the parametrisation without a funnel in its regime.
Where an informative prior (a warm start) gives a location and scale for an entry, that entry
is drawn from it instead of the population.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.handlers import reparam
from numpyro.infer.reparam import LocScaleReparam

from bayesmix import jax_setup  # noqa: F401  (XLA flags and float64 before JAX computes)
from bayesmix.laws.base import (
    LEARNED_FLOORS,
    PRIOR_CORRELATION,
    LawData,
    LawSettings,
    Prior,
    SiteTransform,
)

EPS_PRIOR_CENTRE = 3e-3
FLOOR_SCALE = 1.0  # spread of the log floors around their mean (``pooled_log_floor``)


def normal_effects(
    name: str,
    loc: jnp.ndarray | float,
    scale: jnp.ndarray | float,
    shape: tuple[int, ...],
    centered: bool,
) -> jnp.ndarray:
    """theta ~ N(loc, scale) elementwise over ``shape``, centred or non-centred."""
    d = dist.Normal(loc, scale).expand(shape).to_event(len(shape))
    if centered:
        return numpyro.sample(name, d)
    with reparam(config={name: LocScaleReparam(centered=0)}):
        return numpyro.sample(name, d)


def grouped_effects(
    values: str,
    shared: str,
    loc: float,
    shared_scale: float,
    tau: jnp.ndarray,
    groups: np.ndarray,
    n_groups: int,
    centered: bool,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Effects theta_i = a_g(i) + tau d_i in groups that share a mean effect a_g (one
    domain's effect on every target), a_g ~ N(loc, S^2), d_i ~ N(0, 1); returns (theta,
    a), theta recorded as the site ``values`` and a as ``shared``.

    Centred (the data pin each theta_i): a is integrated out of theta's prior, under which
    a group's entries are jointly normal with variance S^2 + tau^2 and correlation
    S^2 / (S^2 + tau^2) (``GroupedEquicorrelatedNormal``), and a is drawn from its exact
    conditional given theta (``_shared_given``, non-centred as ``{shared}_z``): NUTS then
    meets no funnel between a and tau, nor the ridge between a_g and the mean of its d_i.
    Non-centred: a, then theta = a + tau d; ``{shared}_z`` is recorded so that the centred
    model's Laplace fit can start from this model's MAP.
    """
    n = len(groups)
    if centered:
        total = shared_scale**2 + tau**2
        marginal = GroupedEquicorrelatedNormal(
            jnp.full(n, loc), jnp.sqrt(total), shared_scale**2 / total, groups, n_groups
        )
        theta = numpyro.sample(values, marginal)
        mean, sd = _shared_given(theta, loc, shared_scale, tau, groups, n_groups)
        z = numpyro.sample(f"{shared}_z", dist.Normal(0, 1).expand([n_groups]).to_event(1))
        return theta, numpyro.deterministic(shared, mean + sd * z)
    a = numpyro.sample(shared, dist.Normal(loc, shared_scale).expand([n_groups]).to_event(1))
    theta = normal_effects(values, a[groups], tau, (n,), False)
    mean, sd = _shared_given(theta, loc, shared_scale, tau, groups, n_groups)
    numpyro.deterministic(f"{shared}_z", (a - mean) / sd)
    return theta, a


def _shared_given(
    theta: jnp.ndarray,
    loc: float,
    shared_scale: float,
    tau: jnp.ndarray,
    groups: np.ndarray,
    n_groups: int,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Mean and sd of a_g given its group's n_g effects (normal-normal conjugacy):
    precision 1 / S^2 + n_g / tau^2, mean (loc / S^2 + sum_i theta_i / tau^2) / precision."""
    n = np.bincount(groups, minlength=n_groups)
    precision = 1.0 / shared_scale**2 + n / tau**2
    total = jax.ops.segment_sum(theta, groups, n_groups)
    mean = (loc / shared_scale**2 + total / tau**2) / precision
    return mean, 1.0 / jnp.sqrt(precision)


def pooled(
    name: str,
    n: int,
    loc: float | np.ndarray,
    loc_scale: float,
    pop_scale: float,
    prior: Prior | None,
    centered: bool,
    *,
    fixed_spread: bool = False,
) -> jnp.ndarray:
    """theta_i ~ N(loc_i + mu, tau), mu ~ N(0, loc_scale), tau ~ HalfNormal(pop_scale);
    with ``fixed_spread``, tau = pop_scale.

    A fixed spread is for sites whose values the data pin one by one but whose spread they
    barely inform (the noise scales, the floors): a learned tau then runs towards zero where
    the values agree and forms a funnel with them that NUTS cannot cross.
    With ``prior[name] = (m, s)``, entries whose m is finite are drawn from N(m_i, s_i)
    instead of the population (warm starts).
    """
    mu = numpyro.sample(f"{name}_mu", dist.Normal(0.0, loc_scale))
    tau = pop_scale if fixed_spread else numpyro.sample(f"{name}_tau", dist.HalfNormal(pop_scale))
    centre, scale = informed(name, mu + jnp.asarray(loc) * jnp.ones(n), tau, prior)
    return normal_effects(name, centre, scale, (n,), centered)


def informed(
    name: str, loc: jnp.ndarray, scale: jnp.ndarray | float, prior: Prior | None
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Location and scale of a site's entries: the population's, or ``prior[name] = (m, s)``
    where m is finite (warm starts: the old posterior stands in for the population)."""
    scale = scale * jnp.ones_like(loc)
    if prior is None or name not in prior:
        return loc, scale
    m, s = (np.asarray(v, dtype=float) for v in prior[name])
    known = np.isfinite(m)
    return jnp.where(known, np.nan_to_num(m), loc), jnp.where(
        known, np.nan_to_num(s, nan=1.0), scale
    )


def prior_correlation(prior: Prior | None, values: dict[str, jnp.ndarray]) -> None:
    """Couple each target's informed entries across sites: one joint normal, not k independent.

    ``informed`` draws entry x_tj of site j from N(m_tj, s_tj). With z_tj = (x_tj - m_tj) / s_tj
    and R_t the correlation of target t's sites in the old posterior
    (``prior[PRIOR_CORRELATION]``), the factor

        -1/2 z_t^T (R_t^{-1} - I) z_t

    turns that product of normals into N(m_t, S_t R_t S_t), S_t = diag(s_t), up to a constant.
    A warm start needs it: the floor, the exponent and the level of one domain trade off in its
    posterior, and independent normals drop what the old runs said about
    the combination. Sites of R missing from ``values`` (a fit without steps) are marginalised
    out, which for a normal is taking the sub-block of R.
    """
    if prior is None or PRIOR_CORRELATION not in prior:
        return
    corr, names = prior[PRIOR_CORRELATION]
    use = [j for j, n in enumerate(names) if str(n) in values and str(n) in prior]
    if len(use) < 2:
        return
    r = np.asarray(corr, dtype=float)[:, use][:, :, use]
    informed_rows = np.isfinite(r).all(axis=(1, 2))
    if not informed_rows.any():
        return
    coupling = np.zeros_like(r)
    eye = np.eye(len(use))
    coupling[informed_rows] = np.linalg.inv(r[informed_rows]) - eye
    z = []
    for j in use:
        name = str(names[j])
        m, s = (np.asarray(v, dtype=float) for v in prior[name])
        m, s = np.where(informed_rows, m, 0.0), np.where(informed_rows, s, 1.0)
        z.append((values[name] - m) / s)
    zt = jnp.stack(z, axis=-1)  # (T, k)
    numpyro.factor("prior_correlation", -0.5 * jnp.einsum("tj,tjk,tk->", zt, coupling, zt))


def floor_eps(data: LawData, settings: LawSettings, prior: Prior | None) -> jnp.ndarray:
    """(T,) floors eps_t in log(r_own(t) + eps_t) of the own-share law: fixed, or learned per
    target and pooled.

    A loss flattens out below some share of a domain: eps is that share, on a log-normal
    population prior centred at 3e-3 (a wide one: 1e-5 to 1 at 2 sd).
    """
    if settings.eps == "shared":
        return numpyro.deterministic("eps", jnp.full(data.n_targets, jnp.exp(shared_log_floor())))
    if settings.eps != "learned":
        return numpyro.deterministic("eps", jnp.full(data.n_targets, float(settings.eps)))
    return numpyro.deterministic("eps", jnp.exp(pooled_log_floor(data.n_targets, data, prior)))


def shared_log_floor() -> jnp.ndarray:
    """One log floor for every domain, on the population prior's centre and spread."""
    return numpyro.sample("log_eps_shared", dist.Normal(np.log(EPS_PRIOR_CENTRE), 1.5))


def pooled_log_floor(n: int, data: LawData, prior: Prior | None) -> jnp.ndarray:
    """(n,) log floors log eps_i ~ N(log 3e-3 + mu, FLOOR_SCALE), mu ~ N(0, 1.5).

    Pooled through their learned mean on a fixed spread (``pooled``): a floor shows only
    where a share nears zero, so the data rarely say how far floors differ, and a learned
    spread left NUTS on the GPU swarm's curves at R-hat 1.08, ESS 43 and up to 65
    divergences (``studies/law_convergence``). Fixed, the floors predict held-out RegMix
    runs as well (Pile-CC rho 0.958 / 0.978 / 0.983 at 54 / 108 / 512 runs; learned
    0.956 / 0.977 / 0.983).
    """
    return pooled(
        "log_eps", n, np.log(EPS_PRIOR_CENTRE), 1.5, FLOOR_SCALE, prior, data.centered,
        fixed_spread=True,
    )  # fmt: skip


def domain_floor_eps(data: LawData, settings: LawSettings) -> jnp.ndarray:
    """(M,) floors eps_j in log(r_j + eps_j) of the cross law, one per training domain.

    Learned and pooled as in ``floor_eps`` for the domains some target measures (the own
    exponent pins the floor); the other domains keep the population prior's centre, 3e-3.
    Their floor and the exponents on them trade off (a high floor with large exponents fits
    like a low one with small exponents): learned, they left NUTS chains in different places
    on RegMix (R-hat 1.6 on philpapers' exponents), and tied to the population mean they
    still slowed it (R-hat 1.04).
    """
    m = data.n_domains
    if settings.eps not in LEARNED_FLOORS:
        return numpyro.deterministic("eps", jnp.full(m, float(settings.eps)))
    log_eps = jnp.full(m, np.log(EPS_PRIOR_CENTRE))
    measured = np.flatnonzero(data.own_onehot.any(axis=0))
    if measured.size and settings.eps == "shared":
        log_eps = log_eps.at[measured].set(shared_log_floor())
    elif measured.size:
        log_eps = log_eps.at[measured].set(pooled_log_floor(measured.size, data, None))
    return numpyro.deterministic("eps", jnp.exp(log_eps))


def logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# The step law's per-target sites and their natural counterparts (``Law.target_sites``).
STEP_SITES: dict[str, SiteTransform | None] = {
    "logit_frac": ("frac", logistic),
    "log_beta": ("beta", np.exp),
}


def step_law(
    data: LawData, prior: Prior | None, fixed_spread: bool = False
) -> tuple[jnp.ndarray | None, jnp.ndarray | None]:
    """Per target: f in (0, 1), the share of K still removable by training, and beta > 0.

    ``fixed_spread``: pool f and beta on fixed spreads (``pooled``), as the laws over model
    sizes do: their runs at every size pin each target's f and beta, and a learned spread of
    f ran towards zero into a funnel (the divergences of studies/size_simulation)."""
    if data.s_rel is None:
        return None, None
    t = data.n_targets
    fixed = {"fixed_spread": fixed_spread}
    logit_f = pooled("logit_frac", t, 0.0, 1.5, 1.0, prior, data.centered, **fixed)
    frac = numpyro.deterministic("frac", 1.0 / (1.0 + jnp.exp(-logit_f)))
    log_beta = pooled("log_beta", t, np.log(0.5), 1.0, 0.5, prior, data.centered, **fixed)
    return frac, numpyro.deterministic("beta", jnp.exp(log_beta))


def log_k_at_centre(data: LawData, prior: Prior | None) -> jnp.ndarray:
    """(T,) log loss at the centre of the observed mixtures and the reference step.

    Centred on each target's mean observed log loss, so the offsets are small and not pooled:
    pooling offsets that the centring already made alike puts a funnel at a zero scale.
    """
    loc, scale = np.zeros(data.n_targets), np.full(data.n_targets, 0.5)
    if prior is not None and "logk_offset" in prior:
        m, s = (np.asarray(v, dtype=float) for v in prior["logk_offset"])
        loc, scale = np.where(np.isfinite(m), m, loc), np.where(np.isfinite(m), s, scale)
    offset = numpyro.sample("logk_offset", dist.Normal(loc, scale).to_event(1))
    return jnp.asarray(data.target_mean) + offset


class GroupedEquicorrelatedNormal(dist.Distribution):
    """Normal over a flat vector whose entries fall into groups: within a group every pair is
    correlated by rho, across groups independent. Entry i: mean loc_i, scale s_i.

    Per group g of n entries, with z = (y - loc) / s, d = 1 - rho and c = d + n rho,

        log p_g = -1/2 [n log 2 pi + 2 sum log s + (n - 1) log d + log c
                        + (sum z^2 - rho (sum z)^2 / c) / d]

    from R^-1 = (I - rho 11^T / c) / d and det R = d^(n-1) c, R = rho 11^T + d I: linear in
    the number of entries, where a general low-rank normal factorises a capacitance matrix
    per group (several times slower inside NUTS). Groups may differ in size, so a subset of a
    group is simply its marginal.
    """

    arg_constraints = {"loc": constraints.real_vector, "scale": constraints.positive}
    support = constraints.real_vector
    reparametrized_params = ["loc", "scale"]

    def __init__(
        self,
        loc: jnp.ndarray,
        scale: jnp.ndarray,
        rho: jnp.ndarray | float,
        group: np.ndarray,
        n_groups: int,
        validate_args: bool | None = None,
    ) -> None:
        self.loc, self.scale, self.rho = loc, jnp.broadcast_to(scale, jnp.shape(loc)), rho
        self.group, self.n_groups = np.asarray(group), int(n_groups)
        if jnp.ndim(loc) != 1 or self.group.shape != jnp.shape(loc):
            raise ValueError("GroupedEquicorrelatedNormal: loc and group must be flat and alike")
        super().__init__(event_shape=jnp.shape(loc)[-1:], validate_args=validate_args)

    @property
    def mean(self) -> jnp.ndarray:
        return self.loc

    @property
    def variance(self) -> jnp.ndarray:
        return self.scale**2

    def sample(self, key: jnp.ndarray, sample_shape: tuple[int, ...] = ()) -> jnp.ndarray:
        k_shared, k_own = jax.random.split(key)
        shared = jax.random.normal(k_shared, (*sample_shape, self.n_groups))[..., self.group]
        own = jax.random.normal(k_own, sample_shape + self.event_shape)
        z = jnp.sqrt(self.rho) * shared + jnp.sqrt(1.0 - self.rho) * own
        return self.loc + self.scale * z

    def log_prob(self, value: jnp.ndarray) -> jnp.ndarray:
        return self.group_log_prob(value).sum()

    def group_log_prob(self, value: jnp.ndarray) -> jnp.ndarray:
        """(n_groups,) each group's log density (0 for a group without entries: there
        n = 0, c = d, and the terms cancel)."""
        z = (value - self.loc) / self.scale
        n = np.bincount(self.group, minlength=self.n_groups)
        sums = jax.ops.segment_sum(z, self.group, self.n_groups)
        squares = jax.ops.segment_sum(z**2, self.group, self.n_groups)
        log_scales = jax.ops.segment_sum(jnp.log(self.scale), self.group, self.n_groups)
        d = 1.0 - self.rho
        c = d + n * self.rho
        quad = (squares - self.rho * sums**2 / c) / d
        log_det = 2.0 * log_scales + (n - 1) * jnp.log(d) + jnp.log(c)
        return jnp.asarray(-0.5 * (n * jnp.log(2.0 * jnp.pi) + log_det + quad))
