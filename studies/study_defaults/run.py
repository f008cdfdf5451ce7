"""A study with its defaults, driven as issue 19's held-out check drives one.

Per cell and seed: ``bm.Study.create`` with the oracle's domains (natural proportions as
token counts) and objective, nothing else named (first batch, law, fit and acquisition are
the study's defaults); then, batch by batch, ``fit = study.fit()`` (none before the first),
``study.ask(q, posterior=fit)``, the oracle trains each run and ``study.tell``s it; after the
last batch ``study.optimal_mixture(study.fit().posterior)`` is scored by its regret (true
objective minus the world's best, nats). References on the same world and seed (issue 19):
Olmix's recipe, a Dirichlet swarm of 3(m + 1) runs and Olmix's recommender at its best KL
weight for the cell, and the uniform mixture with no runs.

    nice .venv/bin/python -m studies.study_defaults.run --cell regmix-landscape-17 \\
        --batches 6,6,6 --seeds 0-2

Each finished seed is a line of ``results.jsonl``; ``results.md`` is rewritten from them.
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
CACHE = bench.HERE / "cache"
RESULTS = HERE / "results.jsonl"
TABLE = HERE / "results.md"


def parse_cell(name: str) -> bench.Cell:
    kind, m = name.rsplit("-", 1)
    return bench.Cell(kind, int(m))


def one(cell: bench.Cell, seed: int, batches: list[int], checkpoints: int) -> dict[str, Any]:
    import bayesmix as bm
    from bayesmix.benchmarks import OracleTrainer, train_and_tell, weights_mapping
    from bayesmix.study import parse_config

    started = time.perf_counter()
    oracle = bench.make_oracle(cell, seed, CACHE)
    weights = dict(weights_mapping(oracle))
    equal = len(set(weights.values())) == 1 and len(weights) == len(oracle.targets)
    steps = int(getattr(oracle, "reference_step", 1000))
    config = parse_config(
        {
            "name": f"{cell.name}-{seed}",
            "seed": seed,
            "data": {"domains": list(oracle.domains), "token_counts": dict(oracle.natural)},
            "proxy": {"trainer": "external", "steps": steps},
            "objective": {"weights": None if equal else weights},
            "batch_size": max(batches),
            "budget": sum(batches),
            "report": False,
        }
    )
    study = bm.Study.create(config, storage=None)
    trainer = OracleTrainer(oracle, np.random.default_rng([seed, 2024]), checkpoints)
    fit = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for q in batches:
            runs = study.ask(q, posterior=None if fit is None else fit.posterior)
            train_and_tell(study, trainer, runs)
            fit = study.fit()
        best = study.optimal_mixture(fit.posterior).mixture.reindex(oracle.domains).to_numpy()
    post = fit.posterior
    shares = [[run.mixture.get(d, 0.0) for d in oracle.domains] for run in study.runs()]
    return {
        "cell": cell.name,
        "seed": seed,
        "batches": batches,
        "checkpoints": checkpoints,
        "law": post.law,
        "method": post.method,
        "converged": bool(post.converged),
        "map_success": bool(post.info.get("map_success", False)),
        "laplace_pd": bool(post.info.get("laplace_pd", True)),
        "regret": float(oracle.objective(best[None])[0] - oracle.best_value),
        "min_share": float(np.min(shares)),
        "seconds": round(time.perf_counter() - started, 1),
        **_common.provenance(),
    }


def references(cell: bench.Cell, seed: int) -> dict[str, float]:
    """Issue 19's references on the cell's world for ``seed``: Olmix's recipe, one value per
    KL weight (``olmix recipe <recommender>``), and the uniform mixture with no runs."""
    lines = bench.olmix_reference(cell, seed, CACHE)
    out = {f"olmix recipe {line['recommender']}": float(line["regret"]) for line in lines}
    oracle = bench.make_oracle(cell, seed, CACHE)
    m = len(oracle.domains)
    out["uniform"] = float(oracle.objective(np.full((1, m), 1.0 / m))[0] - oracle.best_value)
    return out


def write_table() -> None:
    rows = [json.loads(x) for x in RESULTS.read_text().splitlines() if x.strip()]
    out = ["# A study with its defaults against issue 19's references", ""]
    frame = pd.DataFrame(rows)
    for (cell, batches, k), g in frame.groupby(
        ["cell", frame["batches"].map(tuple), "checkpoints"], sort=False
    ):
        refs = pd.DataFrame(list(g["references"]), index=g["seed"])
        olmix = refs[[c for c in refs if c.startswith("olmix")]]
        best = olmix.mean().idxmin()
        beats_o = (g.set_index("seed")["regret"] < olmix[best]).sum()
        beats_u = (g.set_index("seed")["regret"] < refs["uniform"]).sum()
        both = (
            (g.set_index("seed")["regret"] < olmix[best])
            & (g.set_index("seed")["regret"] < refs["uniform"])
        ).sum()
        out += [
            f"## {cell}: batches {list(batches)}, {k} evaluation(s) per run",
            "",
            f"Laws fitted: {', '.join(sorted(set(g['law'] + ' ' + g['method'])))}; "
            f"fits converged {int(g['converged'].sum())}/{len(g)}.",
            "",
            "| seeds | study, mean regret | Olmix's recipe (" + best + "), mean | "
            "uniform, mean | beats Olmix | beats uniform | beats both |",
            "|---|---|---|---|---|---|---|",
            f"| {len(g)} | {g['regret'].mean():.4f} | {olmix[best].mean():.4f} | "
            f"{refs['uniform'].mean():.4f} | {beats_o}/{len(g)} | {beats_u}/{len(g)} | "
            f"{both}/{len(g)} |",
            "",
            "Per seed (regret): "
            + ", ".join(f"{s}: {r:.4f}" for s, r in zip(g["seed"], g["regret"], strict=True))
            + ".",
            "",
        ]
    machines = sorted({r["machine"] for r in rows})
    commits = sorted({r["commit"] for r in rows})
    out.append(f"Ran on {'; '.join(machines)}; commits {', '.join(commits)}; "
               f"{sum(r['seconds'] for r in rows) / 60:.0f} min in all.")  # fmt: skip
    TABLE.write_text("\n".join(out) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cell", default="regmix-landscape-17")
    p.add_argument("--batches", default="6,6,6")
    p.add_argument("--seeds", default="0-2")
    p.add_argument("--checkpoints", type=int, default=1)
    a = p.parse_args()
    cell = parse_cell(a.cell)
    batches = [int(b) for b in a.batches.split(",")]
    for seed in bench._parse_seeds(a.seeds):
        row = one(cell, seed, batches, a.checkpoints)
        row["references"] = references(cell, seed)
        print(json.dumps({k: v for k, v in row.items() if k != "references"}), flush=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(row) + "\n")
        write_table()


if __name__ == "__main__":
    main()
