"""The domain-update benchmark (studies/domain_updates/run.py): its world follows the updates,
its table reads its results; the tiny CI configuration runs end to end (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bayesmix.domains import DomainSet


@pytest.fixture(scope="module")
def bench():
    from studies.domain_updates import run

    return run


def test_world_follows_the_updates(bench) -> None:
    world = bench.World.initial(6, seed=0)
    dset = DomainSet.create(dict(world.tokens))
    for kind in ("add1", "add3", "revise1", "remove1", "split4"):
        before = world.objective(np.full((1, len(world.domains)), 1 / len(world.domains)))
        update = world.update(kind, 4)
        dset = dset.apply(update)
        assert list(dset.domains) == world.domains
        assert np.isfinite(before).all()
        r, v = world.optimum()
        assert abs(r.sum() - 1) < 1e-9
        # the optimum beats the natural mixture and random mixtures
        nat = np.array([world.natural[d] for d in world.domains])
        assert v <= world.objective(nat)[0] + 1e-12
        rand = np.random.default_rng(0).dirichlet(np.ones(len(r)), 50)
        assert (world.objective(rand) >= v - 1e-12).all()
    assert dset.version == 6 and len(world.domains) == 6 + 1 + 3 - 1 + 3
    frame = world.observe(
        np.full((2, len(world.domains)), 1 / len(world.domains)),
        ["a", "b"],
        np.random.default_rng(1),
    )
    assert set(frame["target"]) == set(world.domains)


def test_table_from_results(bench, tmp_path) -> None:
    rows = []
    for seed in (0, 1):
        for method, runs, regret in [
            ("scratch", 10, 0.01),
            ("olmix-recompute", 10, 0.05),
            ("olmix-full-reuse", 3, 0.04),
            ("olmix-partial-reuse", 6, 0.03),
            ("warm", 0, 0.02),
            ("warm", 3, 0.005),
            ("warm-reuse", 0, 0.02),
            ("warm-reuse", 3, 0.02),
        ]:
            row = {
                "seed": seed,
                "config": "t",
                "update": 1,
                "kind": "add1",
                "method": method,
                "runs": runs,
                "regret": regret,
                "cpu_s": 1.0,
            }
            if method.startswith("warm"):
                row.update(coverage=0.9, covered=9, n_domains=10)
            rows.append(row)
        rows.append({"seed": seed, "update": -1, "method": "done", "kind": "done", "runs": 0})
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = bench.table(bench.CONFIGS["ci"], path)
    assert "seeds finished: 2" in text
    assert "**warm**: reaches scratch's final regret in 2 of 2 (seed, update) pairs" in text
    assert "needing 3.0 runs vs 10 for scratch (saving 70.0%)" in text
    # warm-reuse never reaches 0.01: reported, no saving claimed
    assert "**warm-reuse**: reaches scratch's final regret in 0 of 2" in text
    assert "add1 not reached (0.0200 vs 0.0100)" in text
    assert "warm (at Olmix full reuse's runs) vs olmix-full-reuse: lower regret" in text


@pytest.mark.slow
def test_ci_configuration_end_to_end(bench, tmp_path) -> None:
    bench.main(["--config", "ci", "--out", str(tmp_path)])
    text = (tmp_path / "ci.md").read_text()
    assert "seeds finished: 1" in text and "What ran" in text
    rows = [json.loads(x) for x in (tmp_path / "ci.jsonl").read_text().splitlines()]
    methods = {r["method"] for r in rows}
    assert {"scratch", "olmix-full-reuse", "olmix-partial-reuse", "warm", "warm-reuse"} <= methods
    assert all(np.isfinite(r["regret"]) for r in rows if "regret" in r)
