"""The own-share law against the cross-domain law in the loop, on the seeds both ran.

Reads ``results/full.jsonl`` (law ``bimix``), ``results/cross-law.jsonl`` (law
``bimix-cross`` fitted by Laplace, ``run.py --law bimix-cross``),
``results/cross-law-nuts.jsonl`` (fitted by NUTS, ``--fit-method nuts``) and
``results/held-out-law.jsonl`` (the law chosen before each batch, ``--law held-out``),
``results/averaged-laws.jsonl`` (the same choice recommends, proposals average the laws,
``--law averaged``) and writes
``results/compare_laws.md``: mean regret of our recommender per cell, proposer and budget
under each, and the seeds where optimum-variance with the cross law has lower regret than
the Dirichlet swarm with the own-share law (the benchmark's reference proposer and
recommender).

    python -m studies.active_learning.compare_laws
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from studies import _common
from studies.active_learning import run as bench

HERE = Path(__file__).resolve().parent

PROPOSERS = ("bayesmix-optimum-variance", "dirichlet-swarm")


def main() -> None:
    laws = {
        "own-share": pd.DataFrame(bench.load(HERE / "results" / "full.jsonl")),
        "cross": pd.DataFrame(bench.load(HERE / "results" / "cross-law.jsonl")),
        "cross (NUTS)": pd.DataFrame(bench.load(HERE / "results" / "cross-law-nuts.jsonl")),
        "held-out choice": pd.DataFrame(bench.load(HERE / "results" / "held-out-law.jsonl")),
        "held-out choice, averaged proposals": pd.DataFrame(
            bench.load(HERE / "results" / "averaged-laws.jsonl")
        ),
    }
    crosses = tuple(law for law in laws if law != "own-share")
    ours = {
        k: v[(v["recommender"] == "posterior-optimum") & v["method"].isin(PROPOSERS)]
        for k, v in laws.items()
    }
    out = [
        "# Own-share law against cross-domain law in the loop",
        "",
        "Mean regret of our recommender (posterior optimum) on the seeds both laws ran; "
        "`wins`: seeds where optimum-variance with the cross law has lower regret than the "
        "Dirichlet swarm with the own-share law. The cross law is fitted between batches by "
        "Laplace (`cross`) or NUTS, 2 x 300 draws (`cross (NUTS)`); `held-out choice`: "
        "before each batch the law with the better Pareto-smoothed leave-one-run-out fit, "
        "fitted by NUTS, 2 x 200 draws (`run.py --law held-out`; its wins count every seed it "
        "ran); `averaged proposals`: the same choice recommends, optimum-variance proposes "
        "over both laws' fits weighted by stacking (`run.py --law averaged`). "
        "Made by `compare_laws.py`. PROVENANCE",
        "",
        "| cell | proposer | law | seeds | " + " | ".join(f"n={b}" for b in (8, 16, 24)) + " |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    wins, used = [], []
    for cell in ours["cross"]["cell"].unique():
        seeds = set(ours["cross"].loc[ours["cross"]["cell"] == cell, "seed"])
        for method in PROPOSERS:
            for law, df in ours.items():
                g = df[(df["cell"] == cell) & (df["method"] == method) & df["seed"].isin(seeds)]
                if g.empty:
                    continue
                used.append(g)
                means = g.groupby("budget")["regret"].mean()
                cells = [f"{means[b]:.4f}" if b in means.index else "" for b in (8, 16, 24)]
                out.append(
                    f"| {cell} | {method} | {law} | {g['seed'].nunique()} | "
                    + " | ".join(cells)
                    + " |"
                )
        swarm = ours["own-share"][
            (ours["own-share"]["cell"] == cell) & (ours["own-share"]["method"] == PROPOSERS[1])
        ]
        for law in crosses:
            cross = ours[law][(ours[law]["cell"] == cell) & (ours[law]["method"] == PROPOSERS[0])]
            if cross.empty:
                continue
            both = cross.merge(swarm, on=["seed", "budget"], suffixes=("", "_swarm"))
            per = both.groupby("budget").apply(
                lambda g: f"{int((g['regret'] < g['regret_swarm']).sum())}/{len(g)}",
                include_groups=False,
            )
            wins.append(f"{cell}, {law}: " + ", ".join(f"n={b}: {v}" for b, v in per.items()))
    out += [
        "",
        "Optimum-variance + cross law (or the held-out choice) beats Dirichlet swarm + "
        "own-share law in:",
        "",
    ]
    out += [f"- {w}" for w in wins]
    records = [
        {k: v for k, v in r.items() if not (isinstance(v, float) and pd.isna(v))}
        for r in pd.concat(used).to_dict("records")
    ]
    text = "\n".join(out).replace("PROVENANCE", _common.commits_and_hosts(records)) + "\n"
    (HERE / "results" / "compare_laws.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
