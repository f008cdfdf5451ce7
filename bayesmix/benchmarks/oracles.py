"""Oracles: what a proxy run would have measured, for benchmarking proposers without a GPU.

An oracle answers ``observe(mixtures)`` with a tidy observation table (as proxy training
would), knows the true noise-free objective of any mixture, and the best achievable value,
so the simple regret of a recommended mixture is ``objective(r) - best_value``.

- ``SyntheticOracle``: the own-share or the cross-domain BiMix law with known parameters
  (``bayesmix.laws.formulas``, the one definition of each law), multiplicative log-normal
  noise at the level measured on RegMix's runs, and a step axis.
- ``RegMixLandscape`` and ``PoolOracle`` (``bayesmix.benchmarks.regmix``): a smooth model
  of all 768 RegMix runs (1M parameters), and those runs themselves.

The objective is the weighted mean of target losses (equal weights by default); lower is
better. Every oracle's optimum is found once by ``global_minimum`` (documented there).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from bayesmix.laws.world import LawWorld

# Log-scale observation noise of RegMix's 1M-parameter runs: the per-target residual standard
# deviation left by RegMix's landscape model (cross-domain law + GP, fitted to all 768 runs),
# median over the 13 targets (0.0265; `RegMixLandscape(...).state["info"]` has each). Law
# misfit is in it too, so it bounds the seed noise from above.
REGMIX_LOG_NOISE = 0.026
REFERENCE_STEP = 10_000.0  # the synthetic target run length (steps)


class Oracle(Protocol):
    """Ground truth for a benchmark: observations on demand, true objective, optimum."""

    name: str
    domains: list[str]
    targets: list[str]
    natural: dict[str, float]
    weights: np.ndarray  # over targets, summing to 1
    best_value: float
    best_mixture: np.ndarray

    def objective(self, r: np.ndarray) -> np.ndarray:
        """True noise-free objective at mixtures r (P, M) -> (P,)."""
        ...

    def observe(
        self, r: np.ndarray, rng: np.random.Generator, run_ids: list[str], **kw: Any
    ) -> pd.DataFrame:
        """The tidy table proxy runs at mixtures r would produce."""
        ...


# ------------------------------------------------------------------------- global search
def global_minimum(
    objective: Callable[[Any], Any],
    m: int,
    *,
    seed: int = 0,
    natural: np.ndarray | None = None,
    extra_starts: np.ndarray | None = None,
    n_random: int = 4096,
    n_refine: int = 16,
) -> tuple[np.ndarray, float]:
    """Global minimum of a smooth objective over the simplex, found once per oracle.

    objective: torch (P, M) -> (P,), differentiable. The search: ``n_random`` points (the
    vertices, the centre, ``natural`` and ``extra_starts``, then Dirichlet draws at strengths
    0.1 to 10 m around the centre and around ``natural``) are evaluated; the best
    ``n_refine`` distinct ones are refined by SLSQP (scipy; exact gradients from torch,
    constraint sum r = 1, bounds 0 <= r <= 1); the best refined point is the optimum.
    """
    import torch
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    centre = np.full(m, 1.0 / m)
    starts = [np.eye(m), centre[None]]
    if natural is not None:
        starts.append(natural[None])
    if extra_starts is not None:
        starts.append(np.atleast_2d(extra_starts))
    grid = np.logspace(-1, np.log10(10 * m), 12)
    n_each = max(1, (n_random - sum(len(s) for s in starts)) // 2)
    for base in (centre, natural if natural is not None else centre):
        conc = np.maximum(rng.choice(grid, size=n_each)[:, None] * base[None] * m, 1e-3)
        g = rng.gamma(conc)
        starts.append(g / g.sum(axis=1, keepdims=True))
    pts = np.concatenate(starts)
    pts = pts[np.isfinite(pts).all(axis=1)]
    with torch.no_grad():
        vals = np.concatenate(
            [
                objective(torch.as_tensor(c, dtype=torch.float64)).numpy()
                for c in np.array_split(pts, max(1, len(pts) // 512))
            ]
        )
    order = np.argsort(vals)
    chosen: list[np.ndarray] = []
    for i in order:
        if all(np.abs(pts[i] - c).sum() > 1e-3 for c in chosen):
            chosen.append(pts[i])
        if len(chosen) == n_refine:
            break

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        xt = torch.as_tensor(x, dtype=torch.float64).clamp_min(0.0).requires_grad_(True)
        v = objective(xt[None])[0]
        (g,) = torch.autograd.grad(v, xt)
        return float(v.detach()), g.numpy()

    best_x, best_v = pts[order[0]], float(vals[order[0]])
    for x0 in chosen:
        res = minimize(
            fun,
            x0,
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * m,
            constraints=[
                {"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones(m)}
            ],
            options={"maxiter": 500, "ftol": 1e-12},
        )
        x = np.clip(res.x, 0.0, None)
        x = x / x.sum()
        with torch.no_grad():
            v = float(objective(torch.as_tensor(x[None], dtype=torch.float64))[0])
        if v < best_v:
            best_x, best_v = x, v
    return best_x, best_v


def cached_optimum(
    cache: str | Path | None, key: str, search: Callable[[], tuple[np.ndarray, float]]
) -> tuple[np.ndarray, float]:
    """``search()`` once per key; results kept in a JSON file (global searches are slow)."""
    if cache is None:
        return search()
    path = Path(cache)
    table = json.loads(path.read_text()) if path.exists() else {}
    if key not in table:
        x, v = search()
        table = json.loads(path.read_text()) if path.exists() else {}
        table[key] = {"mixture": np.asarray(x).tolist(), "value": float(v)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(table))
        tmp.replace(path)
    return np.asarray(table[key]["mixture"]), float(table[key]["value"])


class WeightedObjective:
    """The objective of an oracle with a ``log_loss`` (numpy or torch) and target ``weights``:
    F(r) = sum_t w_t exp(log L_t(r)), the noise-free weighted loss (lower is better)."""

    weights: np.ndarray

    def log_loss(self, r: Any) -> Any:
        raise NotImplementedError

    def torch_objective(self, r: Any) -> Any:
        import torch

        w = torch.as_tensor(self.weights, dtype=r.dtype)
        return torch.exp(self.log_loss(r)) @ w

    def objective(self, r: np.ndarray) -> np.ndarray:
        return np.exp(self.log_loss(np.atleast_2d(r))) @ self.weights


# ---------------------------------------------------------------------------- synthetic
@dataclass
class SyntheticOracle(WeightedObjective):
    """A known law with known parameters: the own-share or the cross-domain BiMix law,
    simulated by ``bayesmix.laws.world.LawWorld`` (``world``).

    Parameters are drawn once from ``world_seed`` (one target per domain):
    log K_t ~ log U(1.5, 3) nats, own exponent alpha_t ~ LogNormal(log 0.05, 0.5),
    eps_t = 0.005; for the cross law also alpha_tj = a_j + d_tj (j != own(t)) with a domain
    effect a_j ~ N(c, c) shared by all targets and d_tj ~ N(0, c), c = 0.05 / m, so that the
    cross terms together weigh about as much as the own term at any m (negative: domain j
    hurts target t); the step law f_t ~ U(0.3, 0.6), beta_t ~ U(0.3, 0.7) at steps relative
    to ``REFERENCE_STEP``; natural proportions ~ normalised LogNormal(0, 1). Observations get
    log-normal noise of scale ``noise`` (RegMix's level by default), independent per row.

    step_drift > 0 breaks the law's separation of mixture and training progress: target t's
    mixture term is scaled by s_rel^gamma_t, gamma_t ~ N(0, step_drift), so a short run
    shows a domain's effect weaker or stronger than the target run does (the target step,
    hence the optimum, is unchanged). A world for asking whether short runs mislead.
    """

    m: int
    law: str = "bimix"
    world_seed: int = 0
    noise: float = REGMIX_LOG_NOISE
    reference_step: float = REFERENCE_STEP
    step_drift: float = 0.0
    domains: list[str] = field(default_factory=list)
    optimum_cache: str | Path | None = None
    world: LawWorld = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.law not in ("bimix", "bimix-cross"):
            raise ValueError(f"law must be 'bimix' or 'bimix-cross', got {self.law!r}")
        if self.m < 2:
            raise ValueError(f"a synthetic world needs at least 2 domains, got {self.m}")
        self.name = f"synthetic-{self.law}-{self.m}"
        if not self.domains:
            self.domains = [f"d{j:02d}" for j in range(self.m)]
        rng = np.random.default_rng([self.world_seed, self.m, self.law == "bimix-cross"])
        m = self.m
        nat = rng.lognormal(0.0, 1.0, m)
        self.natural = dict(zip(self.domains, nat / nat.sum(), strict=True))
        own = np.eye(m)
        alpha = np.diag(rng.lognormal(np.log(0.05), 0.5, m))
        if self.law == "bimix-cross":
            c = 0.05 / m
            shared = rng.normal(c, c, m)
            dev = rng.normal(0.0, c, (m, m))
            alpha = alpha + (1 - own) * (shared[None, :] + dev)
        logk = np.log(rng.uniform(1.5, 3.0, m))
        frac, beta = rng.uniform(0.3, 0.6, m), rng.uniform(0.3, 0.7, m)
        drift_rng = np.random.default_rng([self.world_seed, m, self.law == "bimix-cross", 7])
        self.world = LawWorld(
            self.domains,
            logk=logk,
            alpha=alpha,
            eps=np.full(m, 0.005),
            frac=frac,
            beta=beta,
            reference_step=self.reference_step,
            noise=self.noise,
            drift=drift_rng.normal(0.0, 1.0, m) * self.step_drift,
        )
        self.targets = list(self.domains)
        self.weights = np.full(m, 1.0 / m)
        self.best_mixture, self.best_value = cached_optimum(
            self.optimum_cache,
            f"{self.name}/world{self.world_seed}",
            lambda: global_minimum(
                self.torch_objective, m, seed=self.world_seed, natural=self._natural_array()
            ),
        )

    def _natural_array(self) -> np.ndarray:
        return np.array([self.natural[d] for d in self.domains])

    def log_loss(self, r: Any, steps: Any = None) -> Any:
        """Noise-free log loss (P, T) at mixtures r (P, M) and steps (P,) (None: reference)."""
        return self.world.log_loss(r, steps)

    def observe(
        self,
        r: np.ndarray,
        rng: np.random.Generator,
        run_ids: list[str],
        steps: np.ndarray | None = None,
        checkpoints: int = 1,
    ) -> pd.DataFrame:
        """Losses of runs at mixtures r; with ``steps`` (run lengths), ``checkpoints`` evenly
        spaced evaluations per run up to its length (a run's curve is free to record)."""
        r = np.atleast_2d(r)
        if steps is None:
            return self.world.observe(r, rng, run_ids)
        steps = np.broadcast_to(np.asarray(steps, dtype=float), (len(r),))
        frac = np.arange(1, checkpoints + 1) / checkpoints
        at = (steps[:, None] * frac[None, :]).reshape(-1)
        rr = np.repeat(r, checkpoints, axis=0)
        ids = list(np.repeat(np.asarray(run_ids, dtype=object), checkpoints))
        return self.world.observe(rr, rng, ids, steps=at)


def weights_mapping(oracle: Any) -> Mapping[str, float]:
    """The oracle's objective weights as the target -> weight mapping posteriors take."""
    return {t: float(w) for t, w in zip(oracle.targets, oracle.weights, strict=True) if w > 0}
