"""A world whose law is known: the one simulator of noisy losses from known parameters.

The benchmark oracles (``bayesmix.benchmarks.SyntheticOracle``), the study's dry-run trainer
(``bayesmix.study.trainers.LawTrainer``) and the tests each draw the parameters their own
way; the losses are simulated here. The law is the cross-domain BiMix law of
``bayesmix.laws.formulas`` (its own-share case when ``alpha`` is diagonal):

    log L_t(r, s) = log K_t + log(1 - f_t + f_t (s / s_ref)^-beta_t)
                    - sum_j alpha_tj log(r_j + eps_j),

targets are the training domains (target t measures domain t), and an observation is
L_t exp(noise z), z ~ N(0, 1), independent per (row, target). With a size axis (``gamma``)
the law is the cross law over mixture, steps and model size of
``formulas.scaling_log_loss``: Chinchilla's factor over steps and size, and exponents
alpha_tj + delta_tj log(N / N_ref) that drift with size, so the optimum moves with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayesmix.laws import formulas
from bayesmix.mixtures import tidy_frame


@dataclass(frozen=True)
class LawWorld:
    """Known parameters of the cross-domain law, and the noise of its observations.

    domains: the M training domains (and targets); logk (T,); alpha (T, M); eps (M,);
    frac, beta (T,): the step law (None: losses without a step axis); reference_step:
    s_ref, where the step factor is 1; noise: sd of the log-normal noise.

    drift (T,), optional, breaks the law's separation of mixture and training progress:
    target t's mixture term is scaled by (s / s_ref)^drift_t, so a short run shows a
    domain's effect weaker or stronger than a run of the reference length does.

    The size axis, optional: frac_size, gamma (T,), the share of the reference loss a bigger
    model removes and its exponent; delta (T, M), each exponent's drift per e-fold of size;
    reference_size: N_ref, where the mixture exponents are alpha.
    """

    domains: Sequence[str]
    logk: np.ndarray
    alpha: np.ndarray
    eps: np.ndarray
    frac: np.ndarray | None = None
    beta: np.ndarray | None = None
    reference_step: float = 1.0
    noise: float = 0.0
    drift: np.ndarray | None = None
    frac_size: np.ndarray | None = None
    gamma: np.ndarray | None = None
    delta: np.ndarray | None = None
    reference_size: float = 1.0

    @classmethod
    def own_share(cls, domains: Sequence[str], alpha: np.ndarray, **params: Any) -> LawWorld:
        """BiMix's own-share law: ``alpha`` (T,), each target's exponent on its own share."""
        return cls(domains, alpha=np.diag(np.asarray(alpha, dtype=float)), **params)

    def log_loss(self, r: Any, steps: Any = None, model_sizes: Any = None) -> Any:
        """Noise-free log loss (P, T) at mixtures r (P, M), steps (P,) (None: the reference
        step, or no step axis) and model sizes (P,) (None: the reference size, or no size
        axis). numpy in, numpy out; torch in, torch out."""
        xp = formulas.namespace(r)
        p = {
            name: _like(xp, value, r)
            for name, value in vars(self).items()
            if isinstance(value, np.ndarray)
        }
        s_rel = None
        if steps is not None and self.frac is not None:
            s_rel = _like(xp, np.asarray(steps, dtype=float) / self.reference_step, r)
        args = (xp, p["logk"], p["alpha"], p["eps"], r)
        if model_sizes is not None and self.gamma is not None:
            n_rel = _like(xp, np.asarray(model_sizes, dtype=float) / self.reference_size, r)
            delta = p.get("delta")
            return formulas.scaling_log_loss(
                *args,
                delta=delta,
                delta_level=None if delta is None else xp.zeros_like(p["logk"]),
                s_rel=s_rel,
                frac=p.get("frac"),
                beta=p.get("beta"),
                n_rel=n_rel,
                frac_size=p["frac_size"],
                gamma=p["gamma"],
            )
        if s_rel is None or self.drift is None or not np.any(self.drift):
            return formulas.cross_log_loss(*args, s_rel, p.get("frac"), p.get("beta"))
        mixture_term = p["logk"] - formulas.cross_log_loss(*args)
        scale = s_rel[:, None] ** p["drift"][None, :]
        step_term = formulas.log_step_factor(xp, p["frac"], p["beta"], s_rel)
        return p["logk"] - scale * mixture_term + step_term

    def sample(
        self,
        r: np.ndarray,
        rng: np.random.Generator,
        steps: np.ndarray | None = None,
        model_sizes: np.ndarray | None = None,
    ) -> np.ndarray:
        """Noisy losses (P, T) at mixtures r (P, M), steps and model sizes (P,): one draw
        per entry, row by row (the same generator gives the same losses however the rows
        are split into calls)."""
        clean = self.log_loss(np.atleast_2d(r), steps, model_sizes)
        return np.exp(clean + self.noise * rng.standard_normal(clean.shape))

    def observe(
        self,
        r: np.ndarray,
        rng: np.random.Generator,
        run_ids: Sequence[str],
        steps: np.ndarray | None = None,
        model_sizes: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """The tidy observations table (one row per run and target) of ``sample``, with a
        ``model_size`` column where sizes are given."""
        r = np.atleast_2d(r)
        values = self.sample(r, rng, steps, model_sizes)
        frame = tidy_frame(r, values, self.domains, self.domains, run_ids, steps=steps)
        if model_sizes is not None:
            sizes = np.broadcast_to(np.asarray(model_sizes, dtype=float), (len(r),))
            frame["model_size"] = np.repeat(sizes, len(self.logk))
        return frame


def _like(xp: Any, value: np.ndarray, like: Any) -> Any:
    """``value`` as an array of ``xp`` (for torch: ``like``'s dtype and device)."""
    if xp.__name__ == "torch":
        return xp.as_tensor(value, dtype=like.dtype, device=like.device)
    return xp.asarray(value)
