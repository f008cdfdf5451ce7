"""A study kept in memory (``storage=None`` or ``memory://``, as Optuna's in-memory storage):
the same ask / tell / fit as on a database, reached through its storage object only, and
refused by the executors, whose worker processes cannot reach it."""

from __future__ import annotations

import threading
import time

import pytest

from bayesmix.study import StorageError, Study, parse_config, run_study
from bayesmix.study.storage import MEMORY_URL, MemoryStorage
from bayesmix.study.trainers import LawTrainer, RunSpec

DOMAINS = ["web", "code", "books"]


def config(tmp_path, name: str = "mem"):
    return parse_config(
        {
            "name": name,
            "seed": 5,
            "workdir": str(tmp_path / name),
            "data": {"domains": DOMAINS, "token_counts": {"web": 5e9, "code": 2e9, "books": 1e9}},
            "proxy": {"trainer": "law", "steps": 400, "law": {"alpha": 0.1, "noise": 0.02}},
            "fit": {
                "law": "bimix",
                "method": "laplace",
                "final": False,
                "options": {"num_samples": 50},
            },
            "proposer": {"name": "random-swarm", "first": "dirichlet-swarm"},
            "batch_size": 3,
            "budget": 6,
            "report": False,
        }
    )


def play(study: Study, batches: int) -> None:
    trainer = LawTrainer(study.config.proxy.law, study.domains, study.config.proxy.steps)
    for _ in range(batches):
        runs = study.ask(3)
        for o in trainer.train([RunSpec(r.name, r.mixture, r.steps, r.seed) for r in runs]):
            study.tell(o.name, o.rows)


def test_memory_study_behaves_as_on_a_database(tmp_path):
    on_disk = Study.create(config(tmp_path / "disk"), f"sqlite:///{tmp_path / 's.db'}")
    in_memory = Study.create(config(tmp_path / "mem"), None)
    assert isinstance(in_memory.storage, MemoryStorage) and in_memory.storage.url == MEMORY_URL
    for study in (on_disk, in_memory):
        play(study, 2)
    assert [r.mixture for r in in_memory.runs()] == [r.mixture for r in on_disk.runs()]
    assert in_memory.observations().frame.equals(on_disk.observations().frame)
    assert not list(tmp_path.glob("mem/**/*.db"))  # nothing written for the storage


def test_memory_study_resumes_in_process_and_fits_once(tmp_path, monkeypatch):
    """Opened again through its storage object (a driver restarted in this process), the
    study reuses its snapshot; two drivers in two threads asking for a new fit at once: the
    lease lets one fit while the other waits for its snapshot, as on a database."""
    import bayesmix

    study = Study.create(config(tmp_path), "memory://")
    play(study, 1)
    fit = study.fit()
    assert not fit.reused
    again = Study.load("mem", study.storage)
    assert again.counts() == {"proposed": 0, "running": 0, "completed": 3, "failed": 0}
    refit = again.fit()
    assert refit.reused and refit.snapshot == fit.snapshot
    # A URL opens a new, empty memory: the study is not there.
    with pytest.raises(StorageError, match="no study named 'mem' in memory://"):
        Study.load("mem", MEMORY_URL)
    with pytest.raises(StorageError, match="already exists in memory://"):
        Study.create(config(tmp_path), study.storage)

    play(again, 1)  # runs no snapshot covers yet
    assert [r.name for r in again.runs()][-3:] == ["r0004", "r0005", "r0006"]
    calls = []

    def slow_fit(*args, **kwargs):
        calls.append(1)
        time.sleep(1.5)
        return fit.posterior

    monkeypatch.setattr(bayesmix, "fit", slow_fit)
    fits = []
    drivers = [
        threading.Thread(target=lambda: fits.append(Study.load("mem", study.storage).fit()))
        for _ in range(2)
    ]
    for d in drivers:
        d.start()
    for d in drivers:
        d.join(120)
    assert len(calls) == 1 and len(fits) == 2
    assert fits[0].snapshot == fits[1].snapshot and sorted(f.reused for f in fits) == [0, 1]


def test_executors_refuse_a_memory_study(tmp_path):
    study = Study.create(config(tmp_path), None)
    with pytest.raises(StorageError, match="worker processes cannot reach"):
        run_study(study, progress=False)
