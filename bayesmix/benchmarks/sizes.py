"""A world with a model-size axis: RegMix's 1M and 60M runs as one law whose optimum moves with
model size, for benchmarking methods that choose the proxy size with the mixture.

The law is the cross law with a size axis (``cross-scaling``, ``bayesmix.laws.scaling``):

    log L_t(r, N) = log K_t + log(1 + f_N,t (n^-gamma_t - 1))
                    - sum_j (alpha_tj + delta_tj log n) log(r_j + eps_j) + delta_level_t log n,

n = N / N_ref (N_ref = 60M, the largest fitted size), fitted by ``bm.fit(..., method=
"laplace")`` to RegMix's 512 training runs at 1M parameters plus the 60M runs of the first 64
test mixtures (``load_regmix_sizes``, the observations of ``studies/scaling_laws``). The world's
parameters are the posterior median of every site of the law (one draw); its observations add
the fitted noise (per-target scale sigma_t, and the correlation of one run's targets). Because
delta_t = kappa_t alpha_t differs between targets, the objective (the mean of the 13 losses)
weighs the targets differently at each size, and its optimum moves with N.

Every run trains the same number of tokens D (RegMix's 1M and 60M runs both trained 1B
tokens), so a run of N parameters costs 6 N D FLOPs (``SizeOracle.flops``).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesmix.benchmarks.oracles import WeightedObjective, cached_optimum, global_minimum
from bayesmix.mixtures import tidy_frame
from bayesmix.observations import Observations

log = logging.getLogger(__name__)

SIZE_LAW = "cross-scaling"
FIT_MIXTURES_60M = 64  # test mixtures whose 60M runs the world is fitted to (the rest held out)
SMALL_SIZE, LARGE_SIZE = 1e6, 60e6  # RegMix's two released model sizes (parameters)
TARGET_SIZE = 600e6  # the benchmark's target: 10x the largest proxy
RUN_TOKENS = 1e9  # tokens per run: RegMix trained its 1M and 60M models on 1B tokens
CACHE_FILE = "size_world.json"  # the fitted parameters, in the oracle's cache directory
OPTIMA_FILE = "size_world_optima.json"  # the optimum at each size asked for
STATE_VERSION = 1  # bump when what the state holds or how it is fitted changes


def with_model_size(obs: Observations, model_size: float) -> Observations:
    """``obs`` with every run at ``model_size`` parameters (a ``model_size`` column)."""
    return Observations.from_frame(obs.frame.assign(model_size=model_size), obs.target_domain)


def load_regmix_sizes(
    data_dir: str | Path, fit_mixtures_60m: int = FIT_MIXTURES_60M
) -> tuple[Observations, Observations, Observations]:
    """RegMix's runs with their model size: (the 512 training runs at 1M, the 60M runs of the
    first ``fit_mixtures_60m`` test mixtures by ``index``, the other 60M test runs)."""
    from bayesmix.datasets import load_regmix

    data = Path(data_dir)
    small = load_regmix(
        data / "train_mixture_1m.csv", data / "train_pile_loss_1m.csv", prefix="train-1m"
    )
    big = load_regmix(
        data / "test_mixture_60m.csv", data / "test_pile_loss_60m.csv", prefix="test-60m"
    )
    runs = big.run_ids
    return (
        with_model_size(small, SMALL_SIZE),
        with_model_size(big.select(runs=runs[:fit_mixtures_60m]), LARGE_SIZE),
        with_model_size(big.select(runs=runs[fit_mixtures_60m:]), LARGE_SIZE),
    )


def fit_size_world(
    data_dir: str | Path, *, seed: int = 0, fit_mixtures_60m: int = FIT_MIXTURES_60M
) -> dict[str, Any]:
    """Fit the size law to RegMix's 1M and 60M runs; the world's state (``SizeOracle``).

    Each of the law's sites is its posterior median over the Laplace draws (one draw with a
    leading axis of 1, as the law's ``log_loss`` takes them), and so is each of the noise's
    (sigma per target, and the noise model's own sites)."""
    from bayesmix.benchmarks.regmix import regmix_natural
    from bayesmix.inference import fit
    from bayesmix.laws import get_law, get_noise

    small, fit_big, _ = load_regmix_sizes(data_dir, fit_mixtures_60m)
    obs = small.concat(fit_big)
    started = time.perf_counter()
    with warnings.catch_warnings():
        # The fit's convergence warnings are about its draws; the world keeps their median.
        warnings.simplefilter("ignore")
        post = fit(obs, law=SIZE_LAW, method="laplace", seed=seed, progress=False)
    seconds = time.perf_counter() - started
    draws = post.draws()
    law = get_law(SIZE_LAW)
    noise = get_noise(post.settings.noise)
    params = {k: np.median(draws[k], axis=0) for k in law.formula_sites if k in draws}
    noise_params = {k: np.median(draws[k], axis=0) for k in ("sigma", *noise.sites)}
    state = {
        "version": STATE_VERSION,
        "law": SIZE_LAW,
        "domains": list(post.domains),
        "targets": list(post.targets),
        "target_domain": dict(post.observations.target_domain),
        "reference_size": float(post.settings.reference_size),
        "params": {k: v.tolist() for k, v in params.items()},
        "noise": {"name": post.settings.noise, **{k: v.tolist() for k, v in noise_params.items()}},
        "natural": regmix_natural(data_dir, list(post.domains)),
        "fit": {
            "data": "RegMix 512 train runs at 1M + 60M runs of the first "
            f"{fit_mixtures_60m} test mixtures",
            "method": "laplace",
            "seed": seed,
            "fit_mixtures_60m": fit_mixtures_60m,
            "seconds": seconds,
            "map_success": bool(post.info.get("map_success", False)),
        },
    }
    log.info("size world fitted in %.1f s", seconds)
    return state


@dataclass
class SizeOracle(WeightedObjective):
    """RegMix's loss as a function of mixture and model size (module docstring): true losses,
    noisy observations of runs at any size, and the optimum at any size.

    data_dir: RegMix's release (``../shared/data/regmix``), fitted once when ``cache`` (a
    directory) holds no fit; state: the fitted world itself (``fit_size_world``'s dict:
    domains, targets, reference_size, params, noise, natural), for a hand-made world.
    target_size: the size the benchmark recommends for (``best_mixture``, ``best_value`` and
    ``objective`` without a size are there); tokens: every run's training tokens.
    The objective is the mean of the targets' losses (uniform ``weights``).
    """

    data_dir: str | Path | None = None
    cache: str | Path | None = None
    target_size: float = TARGET_SIZE
    tokens: float = RUN_TOKENS
    seed: int = 0
    state: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from bayesmix.laws import get_law, get_noise

        if not self.state:
            if self.data_dir is None:
                raise ValueError("SizeOracle needs data_dir (RegMix's release) or a state")
            self.state = self._load_or_fit()
        self.name = "regmix-sizes"
        self.domains = list(self.state["domains"])
        self.targets = list(self.state["targets"])
        self.reference_size = float(self.state["reference_size"])
        self.weights = np.full(len(self.targets), 1.0 / len(self.targets))
        self.natural = dict(self.state["natural"])
        self._law = get_law(self.state["law"])
        noise = dict(self.state["noise"])
        self._noise = get_noise(noise.pop("name"))
        self._noise_params = {k: np.asarray(v, dtype=float)[None] for k, v in noise.items()}
        self._params = {
            k: np.asarray(v, dtype=float)[None] for k, v in self.state["params"].items()
        }
        own = np.zeros((len(self.targets), len(self.domains)))
        for t, d in self.state.get("target_domain", {}).items():
            own[self.targets.index(t), self.domains.index(d)] = 1.0
        self._own = own
        self._optima: dict[float, tuple[np.ndarray, float]] = {}
        self.best_mixture, self.best_value = self.optimum(self.target_size)

    # ------------------------------------------------------------------ fitting and cache
    def _cache_path(self) -> Path | None:
        return None if self.cache is None else Path(self.cache) / CACHE_FILE

    def _load_or_fit(self) -> dict[str, Any]:
        path = self._cache_path()
        if path is not None and path.exists():
            state = json.loads(path.read_text())
            if state.get("version") == STATE_VERSION and state["fit"]["seed"] == self.seed:
                return state
        assert self.data_dir is not None
        state = fit_size_world(self.data_dir, seed=self.seed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(path)
        return state

    # ------------------------------------------------------------------ the law
    def flops(self, model_size: Any) -> Any:
        """Training FLOPs of a run of ``model_size`` parameters (a number, or an array of
        them): 6 N D (Kaplan et al.'s forward and backward count)."""
        out = 6.0 * np.asarray(model_size, dtype=float) * self.tokens
        return float(out) if out.ndim == 0 else out

    def log_loss(self, r: Any, model_size: Any = None) -> Any:
        """Noise-free log loss (P, T) at mixtures r (P, M) and model sizes (a number, or (P,)
        per row; None: the target size). numpy in, numpy out; torch in, torch out (so that
        gradients flow to r)."""
        from bayesmix.laws import formulas

        xp = formulas.namespace(r)
        size = self.target_size if model_size is None else model_size
        n_rel = np.full(r.shape[0], 1.0) * np.asarray(size, dtype=float) / self.reference_size
        if xp.__name__ == "torch":
            params = {k: xp.as_tensor(v, dtype=r.dtype) for k, v in self._params.items()}
            n = xp.as_tensor(n_rel, dtype=r.dtype)
            own = xp.as_tensor(self._own, dtype=r.dtype)
        else:
            params, n, own = self._params, n_rel, self._own
        return self._law.log_loss(xp, params, r, None, n_rel=n, own_onehot=own)[0]

    def objective(self, r: np.ndarray, model_size: Any = None) -> np.ndarray:
        """True noise-free objective F(r, N) = sum_t w_t L_t(r, N), (P,)."""
        return np.exp(self.log_loss(np.atleast_2d(np.asarray(r, dtype=float)), model_size)) @ (
            self.weights
        )

    def torch_objective(self, r: Any, model_size: Any = None) -> Any:
        import torch

        w = torch.as_tensor(self.weights, dtype=r.dtype)
        return torch.exp(self.log_loss(r, model_size)) @ w

    def optimum(self, model_size: float) -> tuple[np.ndarray, float]:
        """(best mixture, best objective) at ``model_size``, by ``global_minimum``; searched
        once per size (kept in the cache directory when there is one)."""
        size = float(model_size)
        if size not in self._optima:
            optima = None if self.cache is None else Path(self.cache) / OPTIMA_FILE
            key = f"{self.name}/seed{self.seed}/v{STATE_VERSION}/{size:.6g}"
            self._optima[size] = cached_optimum(
                optima if self.state.get("fit") else None,  # a hand-made world is not cached
                key,
                lambda: global_minimum(
                    lambda r: self.torch_objective(r, size),
                    len(self.domains),
                    seed=self.seed,
                    natural=np.array([self.natural[d] for d in self.domains]),
                ),
            )
        return self._optima[size]

    def best_mixture_at(self, model_size: float) -> np.ndarray:
        return self.optimum(model_size)[0]

    def best_value_at(self, model_size: float) -> float:
        return self.optimum(model_size)[1]

    def regret(self, r: np.ndarray, model_size: float | None = None) -> np.ndarray:
        """F(r, N) - min_r' F(r', N), (P,): at the target size unless ``model_size``."""
        size = self.target_size if model_size is None else float(model_size)
        return self.objective(r, size) - self.optimum(size)[1]

    # ------------------------------------------------------------------ observations
    def sample(self, r: np.ndarray, model_sizes: Any, rng: np.random.Generator) -> np.ndarray:
        """Noisy losses (P, T): the law's losses times the fitted log-normal noise (per-target
        scale, correlated between one run's targets as the fit found)."""
        clean = self.log_loss(np.atleast_2d(np.asarray(r, dtype=float)), model_sizes)
        return np.exp(self._noise.sample(self._noise_params, clean[None], rng)[0])

    def observe(
        self,
        r: np.ndarray,
        rng: np.random.Generator,
        run_ids: list[str],
        *,
        model_sizes: Any = None,
    ) -> pd.DataFrame:
        """The tidy table of runs at mixtures r (P, M) and ``model_sizes`` (a number or (P,);
        required: a run's size is part of what it costs): one row per run and target, with
        a ``model_size`` column."""
        if model_sizes is None:
            raise ValueError("SizeOracle.observe needs model_sizes (parameters of each run)")
        r = np.atleast_2d(np.asarray(r, dtype=float))
        sizes = np.broadcast_to(np.asarray(model_sizes, dtype=float), (len(r),))
        if not (np.isfinite(sizes).all() and (sizes > 0).all()):
            raise ValueError(f"model sizes must be positive parameter counts, got {sizes}")
        values = self.sample(r, sizes, rng)
        frame = tidy_frame(r, values, self.domains, self.targets, run_ids)
        frame.insert(4, "model_size", np.repeat(sizes, len(self.targets)))
        return frame
