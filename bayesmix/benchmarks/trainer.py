"""A benchmark oracle as a study's trainer: a benchmark drives ``bm.Study`` (ask, train, tell)
as a user would, with the oracle's answers in place of proxy runs.

    study = bm.Study.create(config, storage=None)         # in memory
    trainer = OracleTrainer(oracle, np.random.default_rng(seed))
    runs = study.ask(8, posterior)
    train_and_tell(study, trainer, runs)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bayesmix.benchmarks.oracles import Oracle
from bayesmix.study.storage import RunRecord
from bayesmix.study.study import Study
from bayesmix.study.trainers import Outcome, RunSpec, Trainer


class OracleTrainer:
    """Trains runs by asking ``oracle`` what they would measure (``Oracle.observe``).

    The noise comes from one generator, drawn in the order the runs are trained: the same
    seed and the same runs give the same rows. With ``checkpoints`` > 1 each run records
    that many evenly spaced evaluations up to its length, as a study's trainers do (oracles
    with a step axis: ``SyntheticOracle``); 1 records its final losses.
    """

    def __init__(self, oracle: Oracle, rng: np.random.Generator, checkpoints: int = 1) -> None:
        if checkpoints < 1:
            raise ValueError(f"checkpoints must be a positive integer, got {checkpoints!r}")
        self.oracle, self.rng, self.checkpoints = oracle, rng, checkpoints

    def train(self, runs: Sequence[RunSpec]) -> list[Outcome]:
        if not runs:
            return []
        domains = self.oracle.domains
        r = np.array([[float(run.mixture.get(d, 0.0)) for d in domains] for run in runs])
        names = [run.name for run in runs]
        if self.checkpoints == 1:
            frame = self.oracle.observe(r, self.rng, names)
        else:
            steps = np.array([float(run.steps) for run in runs])
            frame = self.oracle.observe(
                r, self.rng, names, steps=steps, checkpoints=self.checkpoints
            )
        return [
            Outcome(run.name, frame[frame["run_id"] == run.name].reset_index(drop=True))
            for run in runs
        ]


def train_and_tell(study: Study, trainer: Trainer, runs: Sequence[RunRecord]) -> None:
    """Train the runs ``study.ask`` proposed, in one call, and tell the study each outcome."""
    for o in trainer.train([RunSpec.of(r) for r in runs]):
        if o.ok:
            study.tell(o.name, o.rows)
        else:
            study.fail(o.name, o.reason or "failed")
