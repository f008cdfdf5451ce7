"""The study storage on SQLite, on a real PostgreSQL server and in memory: schema, run
lifecycle, exactly-once completion, release of dead workers, concurrent claims.

PostgreSQL: $BAYESMIX_TEST_POSTGRES (``.ci/run`` installs and starts Debian's server and sets
it); without it the PostgreSQL cases skip, except in CI where they fail.
"""

from __future__ import annotations

import os
import threading

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from bayesmix.study.storage import MEMORY_URL, Base, Storage, StorageError, open_storage

PG_URL = os.environ.get(
    "BAYESMIX_TEST_POSTGRES", "postgresql+psycopg://bayesmix:bayesmix@127.0.0.1:5432/bayesmix_test"
)


def postgres_url() -> str:
    try:
        engine = create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        Base.metadata.drop_all(engine)  # a clean schema for each test
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS meta"))
        engine.dispose()
    except Exception as exc:
        msg = f"no PostgreSQL server at {PG_URL} ({type(exc).__name__}); .ci/run starts one"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return PG_URL


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def storage(request, tmp_path):
    urls = {"sqlite": f"sqlite:///{tmp_path / 'study.db'}", "memory": MEMORY_URL}
    store = open_storage(urls[request.param] if request.param in urls else postgres_url())
    yield store
    store.close()


DOMAINS = ["web", "code"]


def new_study(store: Storage, name: str = "s1") -> int:
    rec = store.create_study(name, {"name": name}, DOMAINS, {"web": 3.0, "code": 1.0}, None)
    return rec.id


def propose(store: Storage, sid: int, number: int, names: list[str]) -> bool:
    runs = [
        {"name": n, "mixture": {"web": 0.5, "code": 0.5}, "steps": 10, "seed": i}
        for i, n in enumerate(names)
    ]
    return store.add_proposal(sid, number, "uniform", 0, None, runs)


def rows(run: str, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": run,
            "step": [float(s + 1) for s in range(n)],
            "tokens": float("nan"),
            "target": "web",
            "value": [3.0 - 0.1 * s for s in range(n)],
            "metric": "loss",
        }
    )


def test_schema_version_and_study_lookup(storage):
    sid = new_study(storage)
    assert storage.study("s1").id == sid
    assert storage.domain_set(sid).natural == {"web": 0.75, "code": 0.25}
    with pytest.raises(StorageError, match="already exists"):
        new_study(storage)
    with pytest.raises(StorageError, match="no study named 'nope'.*s1"):
        storage.study("nope")
    if storage.url == MEMORY_URL:
        return  # nothing to open again: an in-memory storage is new each time
    with storage.engine.begin() as conn:
        conn.execute(text("UPDATE meta SET value = '99' WHERE key = 'schema_version'"))
    with pytest.raises(StorageError, match="schema version 99"):
        Storage(storage.url)


def test_lifecycle_and_exactly_once(storage):
    sid = new_study(storage)
    assert propose(storage, sid, 1, ["r1", "r2"])
    assert not propose(storage, sid, 1, ["r1", "r2"])  # proposal 1 exists: stored once
    assert [r.status for r in storage.runs(sid)] == ["proposed", "proposed"]

    run = storage.claim(sid, "r1", "host:1:a")
    assert run is not None and run.status == "running" and run.attempts == 1
    assert storage.claim(sid, "r1", "host:2:b") is None  # another worker cannot take it
    assert storage.heartbeat(sid, ["r1"], "host:1:a") == 1
    assert storage.heartbeat(sid, ["r1"], "host:2:b") == 0

    with pytest.raises(StorageError, match="by another worker"):
        storage.complete(sid, "r1", rows("r1"), worker="host:2:b")
    storage.complete(sid, "r1", rows("r1"), worker="host:1:a")
    with pytest.raises(StorageError, match="completed"):
        storage.complete(sid, "r1", rows("r1"), worker="host:1:a")
    with pytest.raises(StorageError, match="completed"):
        storage.complete(sid, "r1", rows("r1"))  # a user's tell, too
    obs = storage.observations(sid)
    assert len(obs) == 3 and set(obs["run_id"]) == {"r1"}
    assert obs[["r:web", "r:code"]].iloc[0].tolist() == [0.5, 0.5]

    # A user's tell completes a proposed run; a failed run takes no observations.
    storage.complete(sid, "r2", rows("r2", 2))
    assert storage.count_observations(sid) == 5
    assert not storage.fail(sid, "r2", "too late")


def test_failed_tell_writes_nothing(storage):
    sid = new_study(storage)
    propose(storage, sid, 1, ["r1"])
    bad = rows("r1")
    bad.loc[1, "step"] = bad.loc[0, "step"]  # duplicate (run, step, target, metric)
    before = storage.fingerprint()
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        storage.complete(sid, "r1", bad)
    assert storage.fingerprint() == before
    assert storage.run(sid, "r1").status == "proposed"


def test_release_requeues_once_then_fails(storage):
    sid = new_study(storage)
    propose(storage, sid, 1, ["r1"])
    storage.claim(sid, "r1", "host:1:a")
    dead = lambda run: "process gone"  # noqa: E731
    assert storage.release_dead(sid, 60.0, 2, dead) == [("r1", "proposed")]
    run = storage.run(sid, "r1")
    assert run.status == "proposed" and run.worker is None and len(run.history) == 1
    storage.claim(sid, "r1", "host:1:b")
    assert storage.release_dead(sid, 60.0, 2, dead) == [("r1", "failed")]
    run = storage.run(sid, "r1")
    assert (
        run.status == "failed" and "process gone" in run.reason and "attempt 2 of 2" in run.reason
    )
    assert storage.count_observations(sid) == 0


def test_stale_heartbeat_released_live_one_kept(storage):
    sid = new_study(storage)
    propose(storage, sid, 1, ["r1", "r2"])
    storage.claim(sid, "r1", "elsewhere:1:a")
    storage.claim(sid, "r2", "elsewhere:2:b")
    with storage.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET heartbeat_at = heartbeat_at - 100 WHERE name = 'r1'"))
    alive = lambda run: None  # noqa: E731
    assert storage.release_dead(sid, 30.0, 2, alive) == [("r1", "proposed")]
    assert "heartbeat" in storage.run(sid, "r1").history[0]["reason"]
    assert storage.run(sid, "r2").status == "running"


def test_concurrent_claims_give_each_run_to_one_worker(storage):
    sid = new_study(storage)
    names = [f"r{i}" for i in range(12)]
    propose(storage, sid, 1, names)
    got: dict[str, list[str]] = {}
    lock = threading.Lock()

    def worker(w: str) -> None:
        # A database: its own engine and connections, as a process has. In memory: the
        # threads of one process share the storage object.
        memory = storage.url == MEMORY_URL
        store = storage if memory else Storage(storage.url)
        for n in names:
            if store.claim(sid, n, w) is not None:
                with lock:
                    got.setdefault(n, []).append(w)
        if not memory:
            store.close()

    threads = [threading.Thread(target=worker, args=(f"h:{i}:t",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(names)
    assert all(len(ws) == 1 for ws in got.values())


def test_bad_urls_are_clear(tmp_path):
    with pytest.raises(StorageError, match="not a database URL"):
        Storage("not a url")
    with pytest.raises(StorageError, match="unsupported database 'mysql'"):
        Storage("mysql://u@h/db")
    with pytest.raises(StorageError, match="does not exist"):
        Storage(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    with pytest.raises(StorageError, match="no such database file"):
        Storage(f"sqlite:///{tmp_path / 'x.db'}", create=False)
    assert not (tmp_path / "x.db").exists()


def test_study_loop_on_postgres(tmp_path):
    """The whole loop against PostgreSQL: worker processes claim, heartbeat and store there."""
    from bayesmix.study import Study, parse_config, run_study

    url = postgres_url()
    cfg = parse_config(
        {
            "name": "pg-loop",
            "data": {"domains": DOMAINS},
            "proxy": {"trainer": "law", "steps": 100, "law": {"points": 2}},
            "fit": {"final": False},
            "proposer": {"name": "random-swarm"},
            "batch_size": 2,
            "budget": 2,
            "executor": {"parallel": 2, "heartbeat_seconds": 0.5},
            "report": False,
            "workdir": str(tmp_path / "work"),
        }
    )
    study = Study.create(cfg, url)
    result = run_study(study, progress=False)
    assert result.counts["completed"] == 2
    assert study.storage.count_observations(study.id) == 2 * 2 * len(DOMAINS)
    assert all(r.worker and r.attempts == 1 for r in study.runs())
