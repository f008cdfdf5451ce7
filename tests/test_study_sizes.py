"""Studies whose runs take several model sizes: the config (``proposer.options.model_sizes``,
``objective.model_size``, a budget in FLOPs or GPU-hours), the stored size of each run, the
known-law trainer's size axis, and the recommendation at the target size."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from bayesmix.study import Study, StudyError, parse_config
from bayesmix.study.config import ConfigError
from bayesmix.study.storage import SCHEMA_VERSION, open_storage
from bayesmix.study.study import first_batch_sizes
from bayesmix.study.trainers import LawTrainer, RunSpec

DOMAINS = ["web", "code", "books", "wiki"]
SIZES = [1e7, 1e8]
TARGET = 1e9


def config(**over) -> dict:
    cfg = {
        "name": "sized",
        "seed": 2,
        "data": {"domains": DOMAINS},
        "proxy": {
            "trainer": "law",
            "steps": 200,
            "tokens_per_step": 1e5,
            # Code's share matters more, web's less, as the model grows: the optimum moves.
            "law": {"size_drift": {"web": -0.03, "code": 0.04, "books": 0.0, "wiki": 0.0}},
        },
        "objective": {"model_size": TARGET},
        "fit": {"method": "laplace", "final": False},
        "proposer": {"first_batch": 6, "options": {"model_sizes": SIZES, "max_draws": 32}},
        "batch_size": 2,
        "budget": {"flops": 1e17},
        "report": False,
    }
    cfg.update(over)
    return cfg


def with_options(**options) -> dict:
    base = config()
    return config(
        proposer={**base["proposer"], "options": {**base["proposer"]["options"], **options}}
    )


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (with_options(model_sizes=[1e7]), "at least two different positive parameter counts"),
        (with_options(model_sizes=[1e7, -1e8]), "at least two different positive"),
        (with_options(model_sizes=["big", 1e8]), "at least two different positive"),
        (with_options(acquisition="thompson"), "optimum-variance acquisition"),
        (config(objective={}), "needs objective.model_size"),
        (config(proposer={"first_batch": 1, "options": {"model_sizes": SIZES}}), "first batch"),
        (config(budget={"flops": 1e17, "gpu_hours": 3}), "one of flops or gpu_hours"),
        (config(budget={}), "one of flops or gpu_hours"),
        (config(proposer={"first_batch": 6}), "give proposer.options.model_sizes"),
        (config(proxy={"trainer": "law", "steps": 200}), "give proxy.tokens_per_step"),
        (
            config(
                data={"sample_corpus": True},
                proxy={"trainer": "proxy", "tokens_per_step": 1e5},
            ),
            "trains one size",
        ),
    ],
)
def test_bad_size_configs_are_one_clear_error(over, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(over)


def test_budget_in_flops_and_gpu_hours_counts_runs_by_size():
    # YAML 1.1 reads 1.0e9 as a string; the sizes are the numbers meant.
    cfg = parse_config(with_options(model_sizes=["1.0e7", "1.0e8"]))
    assert cfg.model_sizes == SIZES
    unit = 6 * 1e8 * 200 * 1e5  # a run of the target length at the largest size
    assert cfg.budget_runs == pytest.approx(1e17 / unit)
    assert cfg.run_cost(200, 1e7) == pytest.approx(0.1) and cfg.run_cost(100, 1e8) == 0.5
    runs = [RunSpec("a", {}, 200, 0, 1e7), RunSpec("b", {}, 200, 0, 1e8)]
    assert cfg.spent(runs) == pytest.approx(1.1)
    assert cfg.spent_label(runs) == f"2 runs, {1.1 * unit:.3g} of 1e+17 FLOPs"
    hours = parse_config(config(budget={"gpu_hours": 2, "gpu_flops": 1e14}))
    assert hours.budget_runs == pytest.approx(2 * 3600 * 1e14 / unit)
    assert "2 GPU-hours" in hours.budget_label
    # A budget in runs counts a run of the target length at the largest size as one.
    assert parse_config(config(budget=12)).spent(runs) == pytest.approx(1.1)


def test_first_batch_holds_every_size_mostly_the_cheapest():
    assert first_batch_sizes(6, SIZES) == [1e7] * 4 + [1e8] * 2
    assert first_batch_sizes(3, [1e6, 1e7, 1e8]) == [1e6, 1e7, 1e8]
    assert first_batch_sizes(8, [1e6, 1e7, 1e8]) == [1e6] * 4 + [1e7] * 2 + [1e8] * 2
    with pytest.raises(StudyError, match="cannot hold each of 3 sizes"):
        first_batch_sizes(2, [1e6, 1e7, 1e8])


def test_known_law_optimum_moves_with_size():
    cfg = parse_config(config())
    trainer = LawTrainer(cfg.proxy.law, DOMAINS, cfg.proxy.steps)
    code_heavy = {"web": 0.1, "code": 0.5, "books": 0.2, "wiki": 0.2}
    web_heavy = {"web": 0.5, "code": 0.1, "books": 0.2, "wiki": 0.2}

    def gap(size: float) -> float:
        return trainer.objective(code_heavy, None, size) - trainer.objective(web_heavy, None, size)

    assert gap(1e10) < gap(1e6)  # code-heavy gains on web-heavy as the model grows
    assert trainer.objective(web_heavy, None, 1e9) < trainer.objective(web_heavy, None, 1e7)
    rows = trainer.train([RunSpec("r", web_heavy, 200, 0, 1e7)])[0].rows
    assert rows is not None and rows["value"].gt(0).all()


def test_schema_1_database_is_migrated_and_keeps_its_studies(tmp_path):
    path = tmp_path / "old.db"
    study = Study.create(parse_config(config(budget=12)), f"sqlite:///{path}")
    study.ask(6)
    study.storage.engine.dispose()
    with sqlite3.connect(path) as db:  # what a database of schema version 1 looked like
        db.execute("ALTER TABLE runs DROP COLUMN model_size")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    again = Study.load("sized", f"sqlite:///{path}")
    assert [r.model_size for r in again.runs()] == [None] * 6  # sizes were not recorded
    with sqlite3.connect(path) as db:
        (version,) = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert int(version) == SCHEMA_VERSION
    assert open_storage(f"sqlite:///{path}").studies()[0].name == "sized"


def test_study_proposes_sizes_and_recommends_for_the_target(tmp_path):
    study = Study.create(parse_config(config()), f"sqlite:///{tmp_path / 'study.db'}")
    trainer = LawTrainer(study.config.proxy.law, DOMAINS, study.config.proxy.steps)
    first = study.ask(6)
    assert [r.model_size for r in first] == [1e7] * 4 + [1e8] * 2
    # A told size that is not the run's is refused, and nothing is stored.
    rows = trainer.train([RunSpec.of(first[0])])[0].rows
    with pytest.raises(StudyError, match="differs from the run's"):
        study.tell(first[0].name, rows.assign(model_size=1e8))
    for run in first:
        study.tell(run.name, trainer.train([RunSpec.of(run)])[0].rows)
    obs = study.observations()
    assert obs.has_sizes and set(obs.frame["model_size"]) == set(SIZES)

    fit = study.fit()
    assert fit.posterior.law == "additive" and fit.posterior.has_sizes
    batch = study.ask(2, fit)  # the FLOPs of 2 runs at 1e8, in runs of either size
    sizes = np.array([r.model_size for r in batch])
    assert set(sizes) <= set(SIZES) and len(batch) <= 8
    assert study.config.spent(batch) <= 2 + 1e-9
    assert "model_size" in study.runs_frame().columns

    # The recommendation is the optimum at the target size, as the snapshot recorded it.
    opt = study.optimal_mixture(fit.posterior)
    assert abs(opt.mixture.sum() - 1) < 1e-6 and isinstance(opt.intervals, pd.DataFrame)
    stored = study.storage.posteriors(study.id)[-1].summary["mixture"]
    np.testing.assert_allclose(opt.mixture[DOMAINS].to_numpy(), [stored[d] for d in DOMAINS])
