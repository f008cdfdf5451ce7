"""The world with a model-size axis (``bayesmix.benchmarks.SizeOracle``) and the multi-fidelity
GP baseline of studies/multi_fidelity, on a small hand-made world (the RegMix fit takes ~15 s)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import bayesmix as bm
from bayesmix.benchmarks import SizeOracle, load_regmix_sizes

REGMIX = Path(__file__).resolve().parents[2] / "shared" / "data" / "regmix"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_world(**kw: object) -> SizeOracle:
    """3 domains, 3 targets (target j measures domain j); the size drift differs by target
    (kappa = -0.1, 0, 0.1), so the optimum moves with model size."""
    alpha = np.array([[0.08, 0.01, 0.02], [0.01, 0.05, 0.0], [0.02, 0.0, 0.06]])
    kappa = np.array([-0.1, 0.0, 0.1])
    eps = np.full(3, 0.01)
    centre = np.log(np.full(3, 1 / 3) + eps)
    delta = kappa[:, None] * alpha
    state = {
        "law": "cross-scaling",
        "domains": ["a", "b", "c"],
        "targets": ["a", "b", "c"],
        "target_domain": {"a": "a", "b": "b", "c": "c"},
        "reference_size": 60e6,
        "params": {
            "logk": np.log([3.0, 2.5, 2.0]).tolist(),
            "alpha": alpha.tolist(),
            "eps": eps.tolist(),
            "frac_size": [0.3, 0.25, 0.35],
            "gamma": [0.3, 0.35, 0.3],
            "delta": delta.tolist(),
            "delta_level": (delta @ centre).tolist(),
        },
        "noise": {"name": "correlated", "sigma": [0.02, 0.03, 0.02], "noise_corr": 0.3},
        "natural": {"a": 0.5, "b": 0.3, "c": 0.2},
    }
    return SizeOracle(state=state, **kw)  # type: ignore[arg-type]


def test_losses_fall_with_model_size_and_torch_matches_numpy() -> None:
    world = small_world()
    r = np.random.default_rng(0).dirichlet(np.ones(3), 5)
    by_size = [world.log_loss(r, n) for n in (1e6, 60e6, 600e6)]
    assert (by_size[0] > by_size[1]).all() and (by_size[1] > by_size[2]).all()
    np.testing.assert_allclose(world.log_loss(r), by_size[2])  # default: the target size
    torch_loss = world.log_loss(torch.as_tensor(r), np.array([1e6, 60e6, 600e6, 1e6, 1e6]))
    np.testing.assert_allclose(torch_loss.numpy()[:3], np.stack(by_size)[[0, 1, 2], [0, 1, 2]])
    assert world.flops(60e6) == pytest.approx(6 * 60e6 * 1e9)


def test_optimum_has_zero_regret_and_moves_with_size() -> None:
    world = small_world()
    others = np.random.default_rng(1).dirichlet(np.ones(3), 500)
    for size in (1e6, 600e6):
        best, value = world.optimum(size)
        assert world.regret(best[None], size)[0] == pytest.approx(0.0, abs=1e-12)
        assert world.regret(others, size).min() >= -1e-12
        assert value == pytest.approx(world.objective(best, size)[0])
    np.testing.assert_allclose(world.best_mixture, world.best_mixture_at(600e6))
    assert np.abs(world.best_mixture_at(1e6) - world.best_mixture_at(600e6)).sum() > 0.01
    assert world.regret(world.best_mixture_at(1e6)[None])[0] > 0


def test_observations_are_a_tidy_table_with_model_sizes() -> None:
    world = small_world()
    r = np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
    frame = world.observe(r, np.random.default_rng(0), ["x", "y"], model_sizes=[1e6, 60e6])
    obs = bm.Observations.from_frame(frame)
    assert obs.has_sizes and obs.run_ids == ["x", "y"] and len(frame) == 2 * 3
    assert set(frame.loc[frame.run_id == "y", "model_size"]) == {60e6}
    noise = np.log(frame["value"].to_numpy().reshape(2, 3)) - world.log_loss(r, [1e6, 60e6])
    assert np.abs(noise).max() < 0.2  # sd 0.02-0.03
    again = world.observe(r, np.random.default_rng(0), ["x", "y"], model_sizes=[1e6, 60e6])
    np.testing.assert_array_equal(again["value"], frame["value"])
    with pytest.raises(ValueError, match="needs model_sizes"):
        world.observe(r, np.random.default_rng(0), ["x", "y"])


@pytest.mark.skipif(not REGMIX.exists(), reason="needs ../shared/data/regmix")
def test_regmix_runs_by_size_load_with_their_sizes() -> None:
    small, fit_big, held = load_regmix_sizes(REGMIX)
    assert (len(small.run_ids), len(fit_big.run_ids), len(held.run_ids)) == (512, 64, 192)
    assert set(small.frame["model_size"]) == {1e6} and set(held.frame["model_size"]) == {60e6}
    assert small.concat(fit_big).has_sizes


def test_gp_baseline_spends_its_budget_at_proxy_sizes_only() -> None:
    """The first batch and one step on the small world: the size choice weighs both sizes, the
    FLOPs never exceed the budget, no run is at the target size, every recommendation is a
    mixture."""
    from studies.multi_fidelity.gp_baseline import GPSettings, fidelity, run_gp_baseline

    world = small_world()
    s60 = np.log(60) / np.log(600)
    np.testing.assert_allclose(fidelity([1e6, 60e6, 600e6], 1e6, 600e6), [0, s60, 1])
    settings = GPSettings(
        init_small=8,
        init_large=1,
        candidates=256,
        current_restarts=2,
        current_raw_samples=64,
        max_batch=64,
    )
    # After the first batch 64 runs at 1M are left: one more step, at 1M or 60M.
    budget = world.flops(1e6) * (8 + 60 + 64)
    records = run_gp_baseline(world, budget, q=4, seed=0, settings=settings)
    assert len(records) >= 2 and records[-1]["flops"] <= budget * (1 + 1e-12)
    assert records[0]["runs"] == {"1e+06": 8, "6e+07": 1}
    assert set(records[1]["mes_per_cost"]) == {"1e+06", "6e+07"}
    assert [r["flops"] for r in records] == sorted(r["flops"] for r in records)
    for rec in records:
        assert abs(sum(rec["mixture"]) - 1) < 1e-5 and rec["regret"] >= -1e-9
