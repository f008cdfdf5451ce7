"""Do short proxy runs pay? Cost-aware run lengths against full-length runs, at equal compute.

Both methods propose with bayesmix's optimum-variance acquisition after the same first
batch (Olmix's swarm of q = 8 full-length runs). ``full-length`` then trains q runs of the
target length (10,000 steps) per batch; ``cost-aware`` spends the same compute on runs of
2,500, 5,000 or 10,000 steps, each chosen for the most variance of the optimum removed per
step (``bm.propose(..., run_lengths=..., check_steps=False)``); ``cost-aware, checked``
does so only where the runs that recorded early and final losses pass the separability
check (``bayesmix.separability``; the default of ``bm.propose``), and otherwise trains
target-length runs. Every run records its loss at 4 evenly spaced
checkpoints (a run's curve is free). The law (own-share BiMix with its step axis) is
refitted after every batch, and the recommended mixture (the posterior-expected optimum at
the target step) is scored by its simple regret. Compute is counted in target-length runs.

Two worlds per seed (``SyntheticOracle``, 7 domains): ``separable``, where a domain's
effect on the loss is the same at every step, as the law assumes, and ``drift``, where
target t's mixture term scales as s^gamma_t, gamma_t ~ N(0, 0.5): short runs then show
the mixture's effect wrongly, and the law fitted to them is misspecified.

    python -m studies.active_learning.run_length [--seeds 0-9]   # resumable; writes the table
"""

from __future__ import annotations

from pathlib import Path

from studies import _common
from studies.active_learning import run as bench  # before numpy: one thread per library

HERE = Path(__file__).resolve().parent

# isort: split
import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

M = 7
TARGET = 10_000.0
SHORT = (2_500.0, 5_000.0, 10_000.0)
# method -> (run lengths, separability check)
LENGTHS = {
    "full-length": (None, False),
    "cost-aware": (SHORT, False),
    "cost-aware, checked": (SHORT, True),
}
WORLDS = {"separable": 0.0, "drift": 0.5}
CHECKPOINTS = 4
BUDGETS = (8, 16, 24)  # compute, in target-length runs; the first batch is shared
OUT = HERE / "results" / "run_length.jsonl"


def trajectory(world: str, seed: int, method: str, done: set[int]) -> list[dict[str, Any]]:
    import bayesmix as bm
    from bayesmix.acquisition import optimal_mixture
    from bayesmix.benchmarks import SyntheticOracle
    from bayesmix.proposers import ProposalContext, get_proposer

    oracle = SyntheticOracle(
        M,
        world_seed=seed,
        step_drift=WORLDS[world],
        optimum_cache=HERE / "cache" / "synthetic_optima.json",
    )
    weights = dict(zip(oracle.targets, oracle.weights.tolist(), strict=True))
    rng = np.random.default_rng([seed, 2024])
    ctx = ProposalContext(oracle.domains, natural=oracle.natural, weights=weights, seed=seed)
    batch = get_proposer("dirichlet-swarm").propose(ctx, bench.Q)
    steps = np.full(len(batch), TARGET)
    obs = post = None
    compute, runs, lines = 0.0, 0, []
    for budget in BUDGETS:
        started = time.process_time()
        if budget > BUDGETS[0]:
            lengths, check = LENGTHS[method]
            batch = bm.propose(
                post,
                bench.Q,
                "optimum-variance",
                weights=weights,
                seed=seed,
                run_lengths=lengths,
                checkpoints=CHECKPOINTS,
                check_steps=check,
            )
            steps = batch["steps"].to_numpy() if "steps" in batch else np.full(len(batch), TARGET)
        r = batch[[f"r:{d}" for d in oracle.domains]].to_numpy()
        ids = [f"{method}-{runs + i}" for i in range(len(r))]
        frame = oracle.observe(r, rng, ids, steps=steps, checkpoints=CHECKPOINTS)
        new = bm.Observations.from_frame(frame)
        obs = new if obs is None else obs.concat(new)
        compute += float(steps.sum()) / TARGET
        runs += len(r)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            post = bm.fit(
                obs,
                law="bimix",
                seed=seed,
                progress=False,
                method="laplace",
                num_samples=256,
                reference_step=TARGET,
                **({"init": post} if post is not None else {}),
            )
        if budget in done:
            continue
        mixture = optimal_mixture(post, weights, TARGET, None, 256).mixture
        mixture = mixture.reindex(oracle.domains).to_numpy()
        regret = float(oracle.objective(mixture[None])[0]) - oracle.best_value
        lines.append(
            {
                "world": world,
                "seed": seed,
                "method": method,
                "budget": budget,
                "compute": round(compute, 6),
                "runs": runs,
                "mean_length": float(np.mean(steps)),
                "regret": regret,
                "cpu_s": time.process_time() - started,
                "commit": bench.COMMIT,
                "host": bench.HOST,
            }
        )
    return lines


def table(rows: list[dict[str, Any]]) -> str:
    df = pd.DataFrame(rows)
    out = [
        "# Cost-aware run lengths against full-length runs, at equal compute",
        "",
        f"Made by `run_length.py` ({len(df)} lines, {df['cpu_s'].sum() / 3600:.2f} CPU "
        f"hours). {_common.commits_and_hosts(rows)} {M} domains, q = {bench.Q} target-"
        "length runs of compute per batch, the first batch shared. Regret: mean over seeds "
        "(seeds in brackets); runs: mean number of runs trained; wins: seeds where the "
        "method has lower regret than full-length runs (at 8 all have trained the same "
        "first batch); short: seeds that trained any run shorter than the target by then.",
    ]
    for world, wdf in df.groupby("world", sort=False):
        out += ["", f"## {world} world", "", "| compute | method | regret | runs | short | wins |"]
        out.append("|---:|---|---:|---:|---:|---:|")
        for budget, bdf in wdf.groupby("budget"):
            pivot = bdf.pivot(index="seed", columns="method", values="regret")
            for method, g in bdf.groupby("method", sort=False):
                wins = ""
                if method != "full-length" and {method, "full-length"} <= set(pivot):
                    pair = pivot[[method, "full-length"]].dropna()
                    ca, fl = pair[method], pair["full-length"]
                    tied = int(np.isclose(ca, fl, rtol=0, atol=1e-12).sum())
                    wins = f"{int((ca < fl).sum())}/{len(pair)}" + (
                        f" ({tied} tied)" if tied else ""
                    )
                short = int((g["runs"] > g["compute"] + 1e-9).sum())
                out.append(
                    f"| {budget} | {method} | {g['regret'].mean():.5f} ({len(g)}) | "
                    f"{g['runs'].mean():.1f} | {short}/{len(g)} | {wins} |"
                )
    return "\n".join(out) + "\n"


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0-9")
    p.add_argument("--table", action="store_true", help="only write the table")
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = bench.load(OUT)
    if not a.table:
        done: dict[tuple, set[int]] = {}
        for r in rows:
            done.setdefault((r["world"], r["seed"], r["method"]), set()).add(r["budget"])
        with OUT.open("a") as fh:
            for seed in bench._parse_seeds(a.seeds):
                for world in WORLDS:
                    for method in LENGTHS:
                        have = done.get((world, seed, method), set())
                        if set(BUDGETS) <= have:
                            continue
                        for line in trajectory(world, seed, method, have):
                            fh.write(json.dumps(line) + "\n")
                            fh.flush()
                            rows.append(line)
                            print(
                                f"{world} seed {seed} {method} compute {line['compute']:.1f} "
                                f"runs {line['runs']} regret {line['regret']:.5f}",
                                flush=True,
                            )
    text = table(rows)
    OUT.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
