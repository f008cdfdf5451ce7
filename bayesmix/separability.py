"""Do short runs show what long ones would? A check of the law's separable step axis.

The laws factor a run's loss into a training part and a mixture part,
log L_t(r, s) = log K_t(s) - alpha_t log(r_own(t) + eps_t), so a domain's effect alpha_t is
the same at every step, and a short run teaches it as well as a long one: cost-aware run
lengths (``bm.propose(..., run_lengths=...)``) rest on that. Where a domain's effect grows or
fades with training, short runs mislead (``studies/active_learning/results/run_length.md``:
regret 6 times that of full-length runs in such a world).

The check reads the runs that recorded the loss both early (step s) and at the end (step S):
it fits the own-share law to their losses at s and, separately, at S, and compares each
target's exponent,

    d_t = log alpha_t(s) - log alpha_t(S),    z_t = mean(d_t) / sd(d_t)

over the two posteriors' draws. Under separability d_t = 0, so Q = sum_t z_t^2 is about
chi-square with T degrees of freedom; the steps are separable unless Q's p-value is below
``level``. The two fits use the same runs, whose noise at s and S is usually correlated
(the run's seed and data order), so the test errs on the side of "separable" there.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import chi2

from bayesmix.errors import BayesMixError
from bayesmix.inference import fit
from bayesmix.observations import Observations

# The own-share law has three parameters per target besides the noise: with fewer runs
# than this a fit at one step can pass through them, and its intervals collapse (z in the
# thousands where the law holds, seen with 4 runs of 4 domains).
MIN_RUNS = 8


class SeparabilityError(BayesMixError, ValueError):
    """The observations cannot say whether short runs show what long ones would."""


@dataclass(frozen=True)
class SeparabilityCheck:
    """The outcome: per-target exponent ratios and the test over all targets.

    log_ratio: per target, ``mean`` and ``sd`` of d_t = log alpha_t(short) - log alpha_t(long)
    and ``z``; statistic: Q = sum z_t^2; p_value: chi-square tail of Q with T degrees.
    """

    short_step: float
    long_step: float
    runs: int
    log_ratio: pd.DataFrame
    statistic: float
    p_value: float
    level: float

    @property
    def separable(self) -> bool:
        return self.p_value >= self.level

    def __str__(self) -> str:
        worst = self.log_ratio["z"].abs().idxmax()
        ratio = float(np.exp(self.log_ratio.loc[worst, "mean"]))
        verdict = "separable" if self.separable else "NOT separable"
        return (
            f"steps {self.short_step:g} and {self.long_step:g} are {verdict} on {self.runs} "
            f"runs (Q = {self.statistic:.1f} on {len(self.log_ratio)} targets, p = "
            f"{self.p_value:.3g}); largest change: target {worst!r}, whose exponent at step "
            f"{self.short_step:g} is {ratio:.2f} times that at {self.long_step:g}"
        )


def check_separability(
    observations: Observations,
    short_step: float | None = None,
    long_step: float | None = None,
    *,
    level: float = 0.05,
    seed: int = 0,
    num_samples: int = 512,
) -> SeparabilityCheck:
    """Whether the runs' losses at ``short_step`` show the mixture's effect they show at
    ``long_step`` (default: the largest step). The short step is the last one the runs that
    reach ``long_step`` recorded at or before ``short_step`` (default: their first). Needs at
    least ``MIN_RUNS`` distinct mixtures recorded at both steps."""
    if not 0 < level < 1:
        raise SeparabilityError(f"level must be in (0, 1), got {level}")
    if not observations.has_steps:
        raise SeparabilityError("the observations have no step column: one step per run")
    own = [t for t in observations.targets if t in observations.target_domain]
    if not own:
        raise SeparabilityError(
            "no target is a training domain: the check compares each target's own exponent"
        )
    frame = observations.frame[observations.frame["target"].isin(own)]
    long_step = float(frame["step"].max()) if long_step is None else float(long_step)
    reaching = set(frame.loc[frame["step"] == long_step, "run_id"])
    if not reaching:
        raise SeparabilityError(f"no run recorded its loss at step {long_step:g}")
    if short_step is not None and short_step >= long_step:
        raise SeparabilityError(
            f"the short step ({short_step:g}) must be below the long one ({long_step:g})"
        )
    earlier = sorted(set(frame.loc[frame["run_id"].isin(reaching), "step"]) - {long_step})
    if not earlier:
        raise SeparabilityError(f"the runs that reach step {long_step:g} recorded no earlier step")
    below = [s for s in earlier if short_step is not None and s <= short_step]
    short_step = float(below[-1] if below else earlier[0])
    both = reaching & set(frame.loc[frame["step"] == short_step, "run_id"])
    runs = observations.mixtures().loc[sorted(both)]  # each run's proportions
    distinct = len(np.unique(runs.to_numpy(dtype=float).round(6), axis=0))
    if distinct < MIN_RUNS:
        raise SeparabilityError(
            f"{distinct} distinct mixture(s) recorded both steps {short_step:g} and "
            f"{long_step:g}; the check needs {MIN_RUNS}"
        )

    def exponents(step: float) -> pd.DataFrame:
        rows = frame[frame["run_id"].isin(both) & (frame["step"] == step)].drop(columns="step")
        obs = Observations.from_frame(rows, {t: observations.target_domain[t] for t in own})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a fit's diagnostics are not the user's concern
            post = fit(
                obs,
                law="bimix",
                method="laplace",
                seed=seed,
                num_samples=num_samples,
                progress=False,
            )
        return pd.DataFrame(np.log(post.draws()["alpha"]), columns=post.targets)

    short, long = exponents(short_step), exponents(long_step)
    d = short - long.to_numpy()
    table = pd.DataFrame({"mean": d.mean(), "sd": d.std(ddof=1)})
    table["z"] = table["mean"] / table["sd"]
    table.index.name = "target"
    q = float((table["z"] ** 2).sum())
    return SeparabilityCheck(
        short_step=short_step,
        long_step=long_step,
        runs=len(both),
        log_ratio=table,
        statistic=q,
        p_value=float(chi2.sf(q, len(table))),
        level=level,
    )
