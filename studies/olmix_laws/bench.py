"""The Olmix problem (64 domains, 52 tasks): fit time and held-out accuracy (issue 2).

Olmix's 512 full-recomputation runs (MMLU as its 4 category means, Olmix's dropped metrics
dropped) are split once at random (seed 0) into 410 runs to fit and 102 to test. Laws:
``loglinear`` (Olmix's form, Bayesian) and ``bimix-cross`` with the full 52 x 64 matrix of
exponents under its shrinkage prior, each by the Laplace approximation; next to them, in the
same run, Olmix's own point fit (Huber loss on c + exp(A.r), ``OlmixRecommender.fit``).
Scores on the test runs: Spearman rho and MAE per task (mean over the 52 tasks), and the
same for the objective (the mean of the 52 bits-per-byte), with the coverage of 50 % / 90 %
intervals.

    python -m studies.olmix_laws.bench            # writes results.md next to this file
"""

from __future__ import annotations

import os
import platform
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

import bayesmix as bm
from bayesmix.laws import formulas
from studies import _common

HERE = Path(__file__).resolve().parent
DATA = _common.DATA / "olmix"
TEST_RUNS = 102
LAWS = (("loglinear", {}), ("bimix-cross", {}))


def load() -> tuple[bm.Observations, bm.Observations]:
    obs = bm.datasets.load_olmix(
        DATA / "full_recomputation_ratios.csv",
        DATA / "full_recomputation_metrics.csv",
        mmlu_categories=DATA / "mmlu_categories.csv",
    )
    runs = np.random.default_rng(0).permutation(obs.run_ids)
    return obs.select(runs=list(runs[TEST_RUNS:])), obs.select(runs=list(runs[:TEST_RUNS]))


def wide(obs: bm.Observations) -> tuple[np.ndarray, pd.DataFrame]:
    table = obs.frame.pivot(index="run_id", columns="target", values="value")
    return obs.mixtures().loc[table.index].to_numpy(dtype=float), table[obs.targets]


def score(pred: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Mean over tasks of Spearman rho and MAE, and both for the objective (task mean)."""
    rho = [spearmanr(pred[t], truth[t]).statistic for t in truth.columns]
    return {
        "task_spearman": float(np.nanmean(rho)),
        "task_mae": float((pred - truth).abs().to_numpy().mean()),
        "objective_spearman": float(spearmanr(pred.mean(axis=1), truth.mean(axis=1)).statistic),
        "objective_mae": float((pred.mean(axis=1) - truth.mean(axis=1)).abs().mean()),
    }


def bayes_row(law: str, options: dict, train: bm.Observations, test: bm.Observations) -> dict:
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bm.fit(train, law=law, method="laplace", seed=0, progress=False, **options)
    seconds = time.perf_counter() - started
    _, truth = wide(test)
    mix = test.mixtures().loc[truth.index].reset_index()
    weights = dict.fromkeys(post.targets, 1.0 / len(post.targets))
    p50 = post.predict(mix, ci=0.5, weights=weights)
    p90 = post.predict(mix, ci=0.9, weights=weights)
    tasks = p50[p50["target"] != "objective"]
    pred = tasks.pivot(index="run_id", columns="target", values="median")
    row = {"model": f"{law} (laplace)", **score(pred.loc[truth.index, truth.columns], truth)}
    objective = truth.mean(axis=1)
    for ci, p in (("cover50", p50), ("cover90", p90)):
        o = p[p["target"] == "objective"].set_index("run_id").loc[truth.index]
        row[f"objective_{ci}"] = float(((o["lo"] <= objective) & (objective <= o["hi"])).mean())
        t = p[p["target"] != "objective"]
        inside = [
            (
                (g.set_index("run_id").loc[truth.index, "lo"] <= truth[name])
                & (truth[name] <= g.set_index("run_id").loc[truth.index, "hi"])
            ).mean()
            for name, g in t.groupby("target")
        ]
        row[f"task_{ci}"] = float(np.mean(inside))
    return {**row, "fit_seconds": seconds, "note": post.summary_line()}


def olmix_point_row(train: bm.Observations, test: bm.Observations) -> dict:
    from bayesmix.proposers.recommenders import OlmixRecommender

    r, y = wide(train)
    r_test, truth = wide(test)
    started = time.perf_counter()
    params = OlmixRecommender().fit(r, y.to_numpy())
    seconds = time.perf_counter() - started
    loss = np.exp(formulas.loglinear_log_loss(np, params["log_c"], params["A"], r_test))
    pred = pd.DataFrame(loss, index=truth.index, columns=y.columns)[truth.columns]
    return {"model": "Olmix point log-linear (Huber)", **score(pred, truth), "fit_seconds": seconds}


def main() -> None:
    train, test = load()
    rows = [olmix_point_row(train, test)]
    print(rows[-1], flush=True)
    for law, options in LAWS:
        rows.append(bayes_row(law, options, train, test))
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_avg = os.getloadavg()[0]
    lines = [
        "# Olmix problem: fit time and held-out accuracy (written by bench.py)",
        "",
        f"{len(train.domains)} domains, {len(train.targets)} tasks; fit on {len(train.run_ids)} "
        f"runs, tested on {len(test.run_ids)} held-out runs (random split, seed 0). "
        f"Ran {when} on {platform.machine()} x{os.cpu_count()} ({platform.node()}), load "
        f"average {load_avg:.1f} at the end. task_*: mean over tasks; objective_*: the mean "
        "of the 52 bits-per-byte. Target: each fit under 10 minutes on this machine.",
        "",
        frame.drop(columns=["note"], errors="ignore").to_markdown(index=False, floatfmt=".3f"),
        "",
        *[f"- {r['model']}: {r['note']}" for r in rows if isinstance(r.get("note"), str)],
    ]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print((HERE / "results.md").read_text())


if __name__ == "__main__":
    main()
