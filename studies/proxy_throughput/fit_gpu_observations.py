"""Fit the laws to the Observations of the GPU proxy swarm and print the optimal mixture.

    python -m studies.proxy_throughput.fit_gpu_observations [--law bimix]

Reads gpu_observations_6m.csv beside this file (16 packed 6m proxies on the H100, written
by gpu_mixture_run.py), keeps metric == "loss", fits with ``bm.fit`` and prints the
diagnostics and ``optimal_mixture()`` with its credible intervals.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd


def point_fit(df: pd.DataFrame) -> pd.Series:
    """Cross-check without the Bayesian machinery: least-squares BiMix per domain,
    log L = -alpha log(r + 1e-3) + log(B s^-beta + C), then the closed-form optimum of
    sum_i L_i at the last step (DESIGN.md): r_i = (alpha_i K_i / lambda)^(1 / (1 + alpha_i))."""
    import numpy as np
    from scipy.optimize import brentq, least_squares

    loss = df[df.metric == "loss"]
    s_max = loss.step.max()
    alpha, kval = {}, {}
    for d, g in loss.groupby("target"):
        r, s, y = g[f"r:{d}"].to_numpy() + 1e-3, g.step.to_numpy(float), np.log(g.value)

        def resid(p, r=r, s=s, y=y):
            a, lb, beta, lc = p
            return -a * np.log(r) + np.log(np.exp(lb) * s**-beta + np.exp(lc)) - y

        fit = least_squares(resid, x0=[0.1, 1.0, 0.5, 0.5], bounds=([0, -5, 0, -5], [3, 8, 3, 5]))
        a, lb, beta, lc = fit.x
        alpha[d], kval[d] = a, np.exp(lb) * s_max**-beta + np.exp(lc)
        rmse = np.sqrt(np.mean(fit.fun**2))
        print(f"  {d:13s} alpha {a:.3f}  beta {beta:.3f}  log-loss rmse {rmse:.4f}")
    names = list(alpha)
    al, kk = np.array([alpha[d] for d in names]), np.array([kval[d] for d in names])

    def total(log_lam: float) -> float:
        return float(np.sum((al * kk / np.exp(log_lam)) ** (1 / (1 + al)))) - 1

    log_lam = brentq(total, -30, 30)
    return pd.Series((al * kk / np.exp(log_lam)) ** (1 / (1 + al)), index=names, name="share")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--law", default="bimix")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--point", action="store_true", help="only the least-squares cross-check")
    a = p.parse_args()
    if a.point:
        df = pd.read_csv(Path(__file__).with_name("gpu_observations_6m.csv"))
        print("least-squares BiMix per domain:")
        print(point_fit(df).round(3).to_string())
        return

    import bayesmix as bm

    df = pd.read_csv(Path(__file__).with_name("gpu_observations_6m.csv"))
    obs = bm.Observations.from_frame(df[df.metric == "loss"])
    print(obs)
    t0 = time.time()
    post = bm.fit(obs, law=a.law, seed=a.seed)
    diag = post.diagnostics()
    print(
        f"law {a.law}: fitted in {time.time() - t0:.0f} s; converged={post.converged}, "
        f"max r_hat {diag['r_hat'].max():.3f}, min ess_bulk {diag['ess_bulk'].min():.0f}, "
        f"divergences {post.divergences}"
    )
    opt = post.optimal_mixture()
    print("optimal mixture (equal weights over the 5 held-out domains, last step):")
    print(pd.concat([opt.mixture.rename("share"), opt.intervals], axis=1).round(3).to_string())


if __name__ == "__main__":
    main()
