"""Does held-out predictive fit choose the law that recommends the better mixture?

For each synthetic world (own-share and cross-domain truth, 7 domains), seed and number of
runs n, the runs are a Dirichlet swarm (the benchmark's first batches). On them:

- ``bayesmix.selection.compare_laws`` (5-fold cross-validation by run) chooses between the
  own-share and the cross law, with each fold fitted two ways: the MAP alone (plug-in
  predictive, seconds) and short NUTS (2 chains x 200 draws, the posterior predictive);
- each law is fitted to all n runs (Laplace, as in the benchmark loop; in a second pass,
  ``--recommend-fit nuts``, by NUTS) and its posterior optimum scored by its regret
  against the world's true optimum.

A line per (world, seed, n) goes to ``results/law_selection.jsonl`` (resumable; CPU seconds
recorded); the table ``results/law_selection.md`` gives, per world and n, how often each
estimator chose the cross law, the mean elpd difference, and the regret of each law's
recommendation and of the chosen one's.

    python -m studies.active_learning.law_selection [--worlds synthetic-cross-7] [--seeds 0-4]
    python -m studies.active_learning.law_selection --recommend-fit nuts --sizes 24  # 2nd pass
    python -m studies.active_learning.law_selection --table
"""

from __future__ import annotations

from studies import _common

_common.one_thread_per_library()  # before numpy, jax and torch load

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from studies.active_learning import run as bench  # noqa: E402

HERE = Path(__file__).resolve().parent

OUT = HERE / "results" / "law_selection.jsonl"
WORLDS = ("synthetic-bimix-7", "synthetic-cross-7")
SIZES = (8, 24, 56)
LAWS = ("bimix", "bimix-cross")
ESTIMATORS = ("map", "nuts")
# Each law is fitted to all n runs by one of the benchmark's ``FIT_METHODS`` before its
# posterior optimum is scored: Laplace as in the loop, or NUTS (``--recommend-fit nuts``,
# a second pass into NUTS_OUT).
NUTS_OUT = HERE / "results" / "law_selection_nuts.jsonl"


def swarm_runs(world: str, seed: int, n: int) -> tuple[Any, Any, dict[str, float]]:
    """The world's oracle, n Dirichlet-swarm runs observed in it, and the objective weights."""
    import bayesmix as bm
    from bayesmix.proposers import ProposalContext, get_proposer

    kind, m = world.rsplit("-", 1)
    oracle = bench.make_oracle(bench.Cell(kind, int(m)), seed, HERE / "cache")
    weights = {t: float(w) for t, w in zip(oracle.targets, oracle.weights, strict=True)}
    ctx = ProposalContext(oracle.domains, natural=oracle.natural, weights=weights, seed=seed)
    r = get_proposer("dirichlet-swarm").propose(ctx, n)[[f"r:{d}" for d in oracle.domains]]
    rng = np.random.default_rng([seed, 2024])
    obs = bm.Observations.from_frame(
        oracle.observe(r.to_numpy(), rng, [f"run-{i}" for i in range(n)])
    )
    return oracle, obs, weights


def regrets(
    oracle: Any, obs: Any, weights: dict[str, float], seed: int, fit: str, result: dict
) -> dict[str, float]:
    """Each law's posterior optimum's regret, the law fitted to every run by ``fit``."""
    from bayesmix.proposers import ProposalContext, get_recommender

    out = {}
    for law in LAWS:
        started = time.process_time()
        # A context per law: a context caches the posterior its first recommender fitted.
        ctx = ProposalContext(
            oracle.domains, observations=obs, natural=oracle.natural, weights=weights, seed=seed
        )
        options = {**bench.FIT_METHODS[fit], "progress": False}
        rec = get_recommender("posterior-optimum", law=law, fit_options=options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mixture = rec.recommend(ctx).reindex(oracle.domains).to_numpy()
        out[law] = float(oracle.objective(mixture[None])[0]) - oracle.best_value
        result["cpu_s"][f"recommend {law} ({fit})"] = time.process_time() - started
    return out


def line(world: str, seed: int, n: int) -> dict[str, Any]:
    """Both estimators' choice and each law's regret (Laplace fits) on one swarm of n runs."""
    from bayesmix.selection import compare_laws

    oracle, obs, weights = swarm_runs(world, seed, n)
    result: dict[str, Any] = {"world": world, "seed": seed, "n": n, "cpu_s": {}}
    for name in ESTIMATORS:
        started = time.process_time()
        comparison = compare_laws(obs, LAWS, method=name, seed=seed)
        table = comparison.table
        result[name] = {
            "chosen": comparison.chosen,
            "elpd": table["elpd"].round(3).to_dict(),
            "elpd_diff": float(table.loc["bimix-cross", "elpd_diff"]),
            "se_diff": float(table.loc["bimix-cross", "se_diff"]),
        }
        result["cpu_s"][name] = time.process_time() - started
    result["regret"] = regrets(oracle, obs, weights, seed, "laplace", result)
    result.update(commit=bench.COMMIT, host=bench.HOST)
    return result


def nuts_line(world: str, seed: int, n: int) -> dict[str, Any]:
    """Each law's regret on the same runs as ``line``, fitted by NUTS."""
    oracle, obs, weights = swarm_runs(world, seed, n)
    result: dict[str, Any] = {"world": world, "seed": seed, "n": n, "cpu_s": {}}
    result["regret_nuts"] = regrets(oracle, obs, weights, seed, "nuts", result)
    result.update(commit=bench.COMMIT, host=bench.HOST)
    return result


def table(rows: list[dict[str, Any]], nuts_rows: list[dict[str, Any]]) -> str:
    out = [
        "# Choosing the law by held-out fit",
        "",
        "Runs: a Dirichlet swarm of n runs (the benchmark's first batches) in a 7-domain "
        "synthetic world whose truth is the own-share law (bimix) or the cross law. "
        "`compare_laws` (5-fold cross-validation by run, `bayesmix.selection`) chooses "
        "between them with each fold fitted by its MAP alone (plug-in predictive) or by "
        "short NUTS (2 x 200 draws, the posterior predictive); `cross chosen` counts the "
        "seeds where it chose the cross law, `elpd diff` is the cross law's elpd minus the "
        "own-share law's (median over seeds, the median standard error in brackets; an "
        "interpolating fit's held-out density is near zero, hence differences like -1e16). "
        "Regret (mean over seeds): each law fitted to all n runs, by Laplace as in the loop "
        "and, on the seeds in `NUTS fit`, by NUTS (2 x 300 draws), and its posterior optimum "
        "scored against the true optimum; `chosen`: the regret of the law NUTS "
        "cross-validation chose. Made by `law_selection.py`. "
        + _common.commits_and_hosts(rows + nuts_rows),
        "",
        "| world | n | seeds | cross chosen (map) | elpd diff (map) | cross chosen (nuts) "
        "| elpd diff (nuts) | regret own-share / cross / chosen, Laplace fit "
        "| NUTS fit: seeds, regret own-share / cross / chosen | CPU s (map / nuts) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    df = pd.DataFrame(rows)
    nuts = {(r["world"], r["seed"], r["n"]): r["regret_nuts"] for r in nuts_rows}
    for (world, n), g in df.groupby(["world", "n"], sort=True):
        cells = [world, str(n), str(len(g))]
        for name in ESTIMATORS:
            est = pd.DataFrame(list(g[name]))
            cells += [
                f"{int((est['chosen'] == 'bimix-cross').sum())}/{len(est)}",
                f"{est['elpd_diff'].median():+.3g} ({est['se_diff'].median():.3g})",
            ]
        chosen = [c["chosen"] for c in g["nuts"]]
        cells.append(_regrets(list(g["regret"]), chosen))
        keys = [(world, s, n) for s in g["seed"]]
        have = [i for i, k in enumerate(keys) if k in nuts]
        cells.append(
            f"{len(have)}: " + _regrets([nuts[keys[i]] for i in have], [chosen[i] for i in have])
            if have
            else ""
        )
        cpu = pd.DataFrame(list(g["cpu_s"]))
        cells.append(f"{cpu['map'].mean():.0f} / {cpu['nuts'].mean():.0f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _regrets(regret: list[dict[str, float]], chosen: list[str]) -> str:
    """ "own-share / cross / chosen" mean regrets over seeds."""
    own = np.mean([r["bimix"] for r in regret])
    cross = np.mean([r["bimix-cross"] for r in regret])
    picked = np.mean([r[c] for r, c in zip(regret, chosen, strict=True)])
    return f"{own:.4f} / {cross:.4f} / {picked:.4f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds", nargs="*", default=list(WORLDS))
    p.add_argument("--sizes", nargs="*", type=int, default=list(SIZES))
    p.add_argument("--seeds", default="0-4")
    p.add_argument(
        "--recommend-fit",
        choices=sorted(bench.FIT_METHODS),
        default="laplace",
        help="laplace: the comparison lines; nuts: each law's regret with NUTS fits (2nd pass)",
    )
    p.add_argument("--table", action="store_true", help="only write the table")
    a = p.parse_args()
    out, make = (OUT, line) if a.recommend_fit == "laplace" else (NUTS_OUT, nuts_line)
    if not a.table:
        done = {(r["world"], r["seed"], r["n"]) for r in bench.load(out)}
        for n in a.sizes:
            for seed in bench._parse_seeds(a.seeds):
                for world in a.worlds:
                    if (world, seed, n) in done:
                        continue
                    result = make(world, seed, n)
                    with out.open("a") as f:
                        f.write(json.dumps(result) + "\n")
                    print(world, seed, n, "done", flush=True)
    text = table(bench.load(OUT), bench.load(NUTS_OUT))
    OUT.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
