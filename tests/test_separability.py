"""The separability check: do short runs show the mixture's effect that long ones do?"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix.benchmarks import SyntheticOracle
from bayesmix.proposers import ProposalContext, get_proposer
from bayesmix.separability import SeparabilityError, check_separability


def runs(step_drift: float, n: int = 10, seed: int = 0) -> bm.Observations:
    """n runs of 10,000 steps, each recorded at 4 checkpoints, in a 5-domain world where a
    target's mixture term scales as s^gamma_t, gamma_t ~ N(0, step_drift)."""
    world = SyntheticOracle(5, world_seed=seed, step_drift=step_drift)
    ctx = ProposalContext(world.domains, natural=world.natural, seed=seed)
    r = get_proposer("dirichlet-swarm").propose(ctx, n)[[f"r:{d}" for d in world.domains]]
    ids = [f"run-{i}" for i in range(n)]
    frame = world.observe(
        r.to_numpy(), np.random.default_rng(seed), ids, steps=10_000, checkpoints=4
    )
    return bm.Observations.from_frame(frame)


def test_the_law_s_own_world_is_separable_and_a_drifting_one_is_not():
    same = check_separability(runs(0.0))
    assert (same.short_step, same.long_step, same.runs) == (2_500.0, 10_000.0, 10)
    assert same.separable and same.p_value > 0.05
    assert list(same.log_ratio.columns) == ["mean", "sd", "z"] and len(same.log_ratio) == 5
    # A target that is no training domain (a benchmark) has no own exponent: left out.
    obs = runs(1.0, seed=1)  # seed 0 draws losses above 1e3, which Observations refuses
    bench = obs.frame[obs.frame["target"] == "d00"].assign(target="math")
    drift = check_separability(bm.Observations.from_frame(pd.concat([obs.frame, bench])))
    assert not drift.separable and drift.p_value < 1e-3
    assert "NOT separable" in str(drift) and "times that at 10000" in str(drift)
    # The user may name the steps compared; the short one is the last recorded at or before.
    assert check_separability(runs(0.0), 6_000, 10_000).short_step == 5_000.0


def test_what_cannot_be_checked_says_why():
    obs = runs(0.0, n=4)
    no_steps = bm.Observations.from_frame(
        obs.frame[obs.frame["step"] == 10_000].drop(columns="step")
    )
    for args, message in (
        ((no_steps,), "no step column"),
        ((obs,), "4 distinct mixture\\(s\\) recorded both steps 2500 and 10000; the check needs 8"),
        ((obs, 10_000, 10_000), "must be below the long one"),
        ((obs, 2_500, 20_000), "no run recorded its loss at step 20000"),
    ):
        with pytest.raises(SeparabilityError, match=message):
            check_separability(*args)
    only_bench = obs.frame.assign(target=obs.frame["target"].str.replace("d", "task"))
    with pytest.raises(SeparabilityError, match="no target is a training domain"):
        check_separability(bm.Observations.from_frame(only_bench))
    with pytest.raises(SeparabilityError, match="level must be in"):
        check_separability(obs, level=1.5)


def test_cli_check_steps_prints_the_test_and_refuses_a_table_without_steps(tmp_path):
    from typer.testing import CliRunner

    from bayesmix.cli import app

    obs = runs(1.0, seed=1)  # seed 0 draws losses above 1e3, which Observations refuses
    obs.write(tmp_path / "runs.csv")
    runner = CliRunner()
    ok = runner.invoke(app, ["check-steps", str(tmp_path / "runs.csv")])
    assert ok.exit_code == 0, ok.output
    assert "log exponent at step 2500 minus at 10000" in ok.output
    assert "NOT separable on 10 runs" in ok.output
    flat = obs.frame[obs.frame["step"] == 10_000].drop(columns="step")
    flat.to_csv(tmp_path / "flat.csv", index=False)
    bad = runner.invoke(app, ["check-steps", str(tmp_path / "flat.csv")])
    assert bad.exit_code == 1 and "no step column" in bad.output, bad.output
    assert "Traceback" not in bad.output
