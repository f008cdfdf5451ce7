"""Is there a first batch that beats the Dirichlet swarm at n = m + 1 runs?

Before any run there is no posterior, so the benchmark's bayesmix trajectories start with
the same Dirichlet swarm as the swarm they are compared with, and tie at n = m + 1 (q = 8
runs, 7 domains). This study asks whether a posterior-free design of those first 8 runs
would give a better recommendation than the swarm's, in >= 8 of 10 worlds (the
acceptance's bar). Designs:

- ``dirichlet-swarm``, ``random-swarm``, ``uniform``: the proposers of the same names;
- ``star-natural``, ``star-uniform``: a centre (the natural proportions, or 1/m each) and m
  runs that each raise one domain's share to max(3 c_j, 1.5 / m) (at most 0.6) and
  rescale the others: one factor at a time, so every domain's share moves once;
- ``maximin``: space-filling in log-share: from 3,000 uniform draws on the simplex, the one
  nearest 1/m, then greedily the draw farthest (Euclidean, log of shares floored at 1e-3)
  from those already picked.

Each batch is observed in the world with the benchmark's noise and seed, then fitted and
recommended from exactly as ``run.py --law averaged`` does at n = m + 1 (the own-share law
by NUTS: the cross law cannot be compared yet), so the swarm's lines reproduce that
benchmark's n = 8 regrets. A line per (world, seed, design) goes to
``results/first-batch.jsonl`` (resumable, CPU seconds recorded); the table
``results/first-batch.md`` gives each design's mean regret and its wins over the swarm.

    python -m studies.active_learning.first_batch [--worlds synthetic-cross-7] [--seeds 0-9]
    python -m studies.active_learning.first_batch --table
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

OUT = HERE / "results" / "first-batch.jsonl"
WORLDS = ("synthetic-bimix-7", "synthetic-cross-7")
SWARM = "dirichlet-swarm"
DESIGNS = (SWARM, "random-swarm", "uniform", "star-natural", "star-uniform", "maximin")


def star(centre: np.ndarray) -> np.ndarray:
    """The centre and one run per domain with that domain's share raised."""
    m = len(centre)
    rows = [centre]
    for j in range(m):
        raised = min(0.6, max(3.0 * centre[j], 1.5 / m))
        r = centre * (1 - raised) / (1 - centre[j])
        r[j] = raised
        rows.append(r)
    return np.array(rows)


def maximin(rng: np.random.Generator, m: int, q: int, pool_size: int = 3000) -> np.ndarray:
    """q mixtures spread out in log-share, picked greedily from uniform draws."""
    pool = rng.dirichlet(np.ones(m), pool_size)
    logs = np.log(np.maximum(pool, 1e-3))
    picked = [int(np.argmin(np.abs(pool - 1 / m).sum(axis=1)))]
    distance = np.linalg.norm(logs - logs[picked[0]], axis=1)
    while len(picked) < q:
        j = int(np.argmax(distance))
        picked.append(j)
        distance = np.minimum(distance, np.linalg.norm(logs - logs[j], axis=1))
    return pool[picked]


def first_batch(design: str, oracle: Any, context: Any, seed: int) -> np.ndarray:
    from bayesmix.proposers import get_proposer

    m = len(oracle.domains)
    if design in ("dirichlet-swarm", "random-swarm", "uniform"):
        batch = get_proposer(design).propose(context, bench.Q)
        return batch[[f"r:{d}" for d in oracle.domains]].to_numpy()
    if design == "star-natural":
        return star(np.array([oracle.natural[d] for d in oracle.domains]))
    if design == "star-uniform":
        return star(np.full(m, 1.0 / m))
    if design == "maximin":
        return maximin(np.random.default_rng([seed, 5]), m, bench.Q)
    raise ValueError(f"unknown design {design!r}; choose one of {', '.join(DESIGNS)}")


def regret_line(world: str, seed: int, design: str, cache: Path) -> dict[str, Any]:
    import bayesmix as bm

    started = time.process_time()
    kind, m = world.rsplit("-", 1)
    oracle = bench.make_oracle(bench.Cell(kind, int(m)), seed, cache)
    r = first_batch(design, oracle, bench.oracle_context(oracle, seed), seed)
    ids = [f"{design}-{i}" for i in range(len(r))]
    # The benchmark's noise stream for a trajectory's first batch.
    obs = bm.Observations.from_frame(oracle.observe(r, np.random.default_rng([seed, 2024]), ids))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bm.compare_laws(obs, method="loo", folds=3, seed=seed).posterior
        recommender = bench.make_recommender("posterior-optimum", bench.configs()["full"])
        mixture = (
            recommender.recommend(bench.oracle_context(oracle, seed, obs, post))
            .reindex(oracle.domains)
            .to_numpy()
        )
    value = float(oracle.objective(mixture[None])[0])
    return {
        "world": world,
        "seed": seed,
        "design": design,
        "runs": len(r),
        "regret": value - oracle.best_value,
        "law": post.law,
        "mixture": mixture.round(6).tolist(),
        "cpu_s": time.process_time() - started,
        "commit": bench.COMMIT,
        "host": bench.HOST,
    }


def table(rows: list[dict[str, Any]]) -> str:
    frame = pd.DataFrame(rows)
    cpu_h = frame["cpu_s"].sum() / 3600
    out = [
        "# The first batch: posterior-free designs against the Dirichlet swarm",
        "",
        f"{len(frame)} lines, {cpu_h:.2f} CPU hours; q = {bench.Q} runs of 7 domains, "
        "recommended from the own-share law fitted by NUTS as `run.py --law averaged` does at "
        "n = m + 1. Regret in nats (lower is better), mean over seeds; wins: seeds in which "
        "the design's regret is below the Dirichlet swarm's. " + _common.commits_and_hosts(rows),
        "",
    ]
    for world, g in frame.groupby("world", sort=False):
        regret = g.pivot(index="seed", columns="design", values="regret")
        out += [
            f"## {world}",
            "",
            "| design | mean regret | wins over the swarm |",
            "|---|---:|---:|",
        ]
        for design in [d for d in DESIGNS if d in regret]:
            both = regret[[design, SWARM]].dropna() if SWARM in regret else None
            wins = (
                "-"
                if both is None or design == SWARM
                else f"{int((both[design] < both[SWARM]).sum())}/{len(both)}"
            )
            out.append(
                f"| {design} | {regret[design].mean():.5f} ({regret[design].count()}) | {wins} |"
            )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds", nargs="*", default=list(WORLDS), choices=WORLDS)
    p.add_argument("--designs", nargs="*", default=list(DESIGNS), choices=DESIGNS)
    p.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,5")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--cache", type=Path, default=HERE / "cache")
    p.add_argument("--table", action="store_true", help="only write the table")
    a = p.parse_args(argv)
    if not a.table:
        bench._jax_compilation_cache(a.cache)
        done = {(r["world"], r["seed"], r["design"]) for r in bench.load(a.out)}
        with a.out.open("a") as fh:
            for world in a.worlds:
                for seed in bench._parse_seeds(a.seeds):
                    for design in a.designs:
                        if (world, seed, design) in done:
                            continue
                        line = regret_line(world, seed, design, a.cache)
                        print(json.dumps(line), flush=True)
                        fh.write(json.dumps(line) + "\n")
                        fh.flush()
    rows = bench.load(a.out)
    if rows:
        a.out.with_suffix(".md").write_text(table(rows) + "\n")
        print(a.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
