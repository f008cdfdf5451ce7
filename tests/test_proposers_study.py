"""The active-learning benchmark's small configuration runs end to end and writes its table."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from studies.active_learning import run as runner


def test_small_benchmark_runs_resumes_and_tables(tmp_path: Path) -> None:
    config = runner.configs()["small"]
    config.seeds = [0]
    out = tmp_path / "small.jsonl"
    runner.run(config, out, tmp_path / "cache", None, None)
    rows = runner.load(out)
    budgets = config.cells[0].budgets()
    # olmix reference (one line per KL weight) + bayesmix (1 recommender) and the swarm
    # (Olmix's at 0.05 and at its best KL weight) per budget
    assert len(rows) == len(runner.OLMIX_KL_WEIGHTS) + 3 * len(budgets)
    assert all(r["regret"] >= -1e-9 for r in rows)
    assert {r["method"] for r in rows} == {"olmix-recipe", "bayesmix", "dirichlet-swarm"}
    assert all("cpu_s" in r for r in rows)
    # The best KL weight is one of Olmix's weights and never worse than its 0.05.
    swarm = {(r["budget"], r["recommender"]): r for r in rows if r["method"] == "dirichlet-swarm"}
    for b in budgets:
        best = swarm[b, runner.OLMIX_BEST]
        assert best["kl_weight"] in runner.OLMIX_KL_WEIGHTS
        assert best["regret"] <= swarm[b, "olmix"]["regret"] + 1e-12
    runner.run(config, out, tmp_path / "cache", None, None)  # resumes: nothing left to do
    assert len(runner.load(out)) == len(rows)
    text = runner.table(rows, config)
    assert "synthetic-bimix-4" in text and "Olmix's recipe" in text
    assert f"bayesmix + posterior-optimum beats dirichlet-swarm + {runner.OLMIX_BEST} in:" in text
    # With the law chosen before each batch, the table says which law each seed's fit had.
    held_out = replace(config, law=runner.CHOSEN_BY_HELD_OUT_FIT)
    laws = "; ".join(f"n={b}: bimix 1" for b in budgets)
    held_out_text = runner.table(rows, held_out)
    assert f"law chosen by held-out fit, bayesmix (seeds): {laws}" in held_out_text
    assert "CPU s per batch, proposal + fit, bayesmix (mean): n=" in held_out_text
    # The model-average recommender is scored against the swarm with the same recommender.
    first = min(budgets)  # the cross law is not compared before the second batch
    prior, stacked = {"bimix": 0.5, "bimix-cross": 0.5}, {"bimix": 0.9, "bimix-cross": 0.1}
    ours = [
        {**r, "law_weights": prior if r["budget"] == first else stacked}
        for r in rows
        if r["method"] == "bayesmix"
    ]
    averaged = [{**r, "recommender": runner.MODEL_AVERAGE, "regret": r["regret"] / 2} for r in ours]
    swarm = [{**r, "method": "dirichlet-swarm"} for r in ours]
    averaged += [{**r, "recommender": runner.MODEL_AVERAGE} for r in swarm]
    wins = ", ".join(f"n={b}: 1/1" for b in budgets)
    text = runner.table(ours + [r for r in rows if r["method"] != "bayesmix"] + averaged, config)
    line = f"bayesmix + {runner.MODEL_AVERAGE} beats dirichlet-swarm + {runner.MODEL_AVERAGE} in:"
    assert f"{line} {wins}" in text
    assert f"bayesmix + {runner.MODEL_AVERAGE} beats dirichlet-swarm + olmix" not in text
    split = text.split("chosen law / average of laws, bayesmix: ")[1].splitlines()[0]
    assert split.startswith(f"n={first}, a law not yet compared (1): ")
    assert f"n={max(budgets)}, all compared (1): " in split
    with pytest.raises(ValueError, match="unknown cell kind"):
        runner.make_oracle(runner.Cell("grid", 3), 0, tmp_path)
