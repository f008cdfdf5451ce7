"""Oracles: known laws with known optima, RegMix's runs as a pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import bayesmix as bm
from bayesmix.benchmarks import PoolOracle, SyntheticOracle

REGMIX = Path(__file__).resolve().parents[2] / "shared" / "data" / "regmix"


@pytest.mark.parametrize("law", ["bimix", "bimix-cross"])
def test_synthetic_optimum_is_the_minimum(law: str) -> None:
    o = SyntheticOracle(6, law=law, world_seed=3)
    rng = np.random.default_rng(0)
    others = rng.dirichlet(np.ones(6), 2000)
    assert o.best_value <= o.objective(others).min()
    assert abs(o.best_mixture.sum() - 1) < 1e-9
    # KKT on the simplex: equal partial derivatives wherever the share is positive.
    x = torch.as_tensor(o.best_mixture[None]).requires_grad_(True)
    (g,) = torch.autograd.grad(o.torch_objective(x)[0], x)
    g = g[0].numpy()[o.best_mixture > 1e-4]
    assert g.max() - g.min() < 1e-4 * abs(g).max()


def test_synthetic_observations_are_a_valid_table_with_a_step_curve() -> None:
    o = SyntheticOracle(4, world_seed=0, noise=0.0)
    r = np.full((2, 4), 0.25)
    frame = o.observe(r, np.random.default_rng(0), ["a", "b"], steps=[5000, 10000], checkpoints=2)
    obs = bm.Observations.from_frame(frame)
    assert obs.has_steps and len(obs.run_ids) == 2 and len(frame) == 2 * 2 * 4
    curve = frame[(frame.run_id == "b") & (frame.target == "d00")].sort_values("step")["value"]
    assert curve.is_monotonic_decreasing  # more training, lower loss
    final = frame[(frame.run_id == "b") & (frame.step == 10000)]["value"].to_numpy()
    np.testing.assert_allclose(final, np.exp(o.log_loss(r[:1]))[0])
    np.testing.assert_allclose(final.mean(), o.objective(r[:1])[0])


def test_synthetic_worlds_differ_by_seed_and_repeat_by_seed() -> None:
    a, b = SyntheticOracle(5, world_seed=1), SyntheticOracle(5, world_seed=1)
    c = SyntheticOracle(5, world_seed=2)
    np.testing.assert_array_equal(a.world.alpha, b.world.alpha)
    assert not np.allclose(a.world.alpha, c.world.alpha)
    with pytest.raises(ValueError, match="law must be"):
        SyntheticOracle(5, law="loglinear")


@pytest.mark.skipif(not REGMIX.exists(), reason="needs ../shared/data/regmix")
def test_step_drift_changes_short_runs_only() -> None:
    """A drifting world's mixture effect differs at short runs; at the target step it is
    the separable world, so the optimum is the same."""
    flat, drift = SyntheticOracle(5, world_seed=1), SyntheticOracle(5, world_seed=1, step_drift=0.5)
    r = np.random.default_rng(0).dirichlet(np.ones(5), 4)
    full, short = np.full(4, flat.reference_step), np.full(4, flat.reference_step / 4)
    np.testing.assert_allclose(drift.log_loss(r, full), flat.log_loss(r, full))
    assert not np.allclose(drift.log_loss(r, short), flat.log_loss(r, short))
    np.testing.assert_allclose(drift.best_mixture, flat.best_mixture)


def test_pool_oracle_answers_with_the_measured_runs() -> None:
    o = PoolOracle(REGMIX)
    assert o.pool_x.shape == (768, 17) and len(o.targets) == 13
    assert o.best_value == pytest.approx((o.pool_y @ o.weights).min())
    frame = o.observe(o.pool_x[:3], np.random.default_rng(0), ["x", "y", "z"])
    np.testing.assert_allclose(frame["value"].to_numpy()[:13], o.pool_y[0])
    with pytest.raises(ValueError, match="only for mixtures of its pool"):
        o.objective(np.full((1, 17), 1 / 17))
    cc = PoolOracle(REGMIX, target="pile_cc")
    assert cc.best_value == pytest.approx(o.pool_y[:, o.targets.index("pile_cc")].min())


def test_oracle_trainer_records_evaluations_along_each_run() -> None:
    """OracleTrainer(checkpoints=4) answers each run as a study's trainer would: 4 evenly
    spaced evaluations up to the run's length, the last at its final loss's step."""
    from bayesmix.benchmarks import OracleTrainer
    from bayesmix.study.trainers import RunSpec

    oracle = SyntheticOracle(3, law="bimix-cross", world_seed=1)
    runs = [
        RunSpec("a", {"d00": 0.5, "d01": 0.3, "d02": 0.2}, 1000, 0),
        RunSpec("b", {"d00": 0.1, "d01": 0.1, "d02": 0.8}, 2000, 0),
    ]
    outcomes = OracleTrainer(oracle, np.random.default_rng(0), checkpoints=4).train(runs)
    for outcome, run in zip(outcomes, runs, strict=True):
        steps = sorted(outcome.rows["step"].unique())
        assert outcome.ok and steps == [run.steps * k / 4 for k in (1, 2, 3, 4)]
        assert set(outcome.rows["target"]) == set(oracle.targets)
    final = OracleTrainer(oracle, np.random.default_rng(0)).train(runs[:1])[0].rows
    assert "step" not in final.columns or final["step"].isna().all()
    with pytest.raises(ValueError, match="checkpoints must be a positive integer"):
        OracleTrainer(oracle, np.random.default_rng(0), checkpoints=0)
