"""Fault test: a study of 24 runs with the local executor, its driver and workers killed with
SIGKILL at random points five times and resumed each time, ends with every completed run's
observations stored exactly once (and equal to what its trainer produced).

Runs use the known-law trainer (seconds per run) through the real CLI, in real processes.
Kills alternate between a random moment after the study has made progress since the last
kill (so they spread over the whole study) and a random moment while a run is in flight (so
some kills certainly land mid-run, the case that needs the re-queue). The full test
(24 runs, 5 kills: a few minutes on 2 cores) is ``slow``; a 6-run, 2-kill version runs always.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml
from sqlalchemy import text

from bayesmix.study import Study
from bayesmix.study.trainers import LawTrainer, RunSpec


@pytest.mark.slow
def test_sigkill_five_times_then_resume(tmp_path):
    check_sigkill_resume(tmp_path, budget=24, kills=5, min_completed=20)


def test_sigkill_twice_then_resume(tmp_path):
    check_sigkill_resume(tmp_path, budget=6, kills=2, min_completed=4)


def wait_for_progress(url: str, since: int, timeout: float = 300.0) -> int:
    """Block until the study has more completed runs than ``since``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            counts = Study.load("fault", url).counts()
        except Exception:  # the driver is creating the tables or holds the write lock
            counts = None
        if counts and counts["completed"] > since:
            return counts["completed"]
        time.sleep(0.3)
    raise AssertionError(f"no progress past {since} completed runs in {timeout} s")


def wait_for_live_run(url: str, timeout: float = 300.0) -> None:
    """Block until a run is held by a worker that is alive (claimed by this driver's worker)."""
    from bayesmix.study.worker import is_dead_locally

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            runs = Study.load("fault", url).runs("running")
        except Exception:
            runs = []
        if any(is_dead_locally(r.worker) is None for r in runs):
            return
        time.sleep(0.1)
    raise AssertionError(f"no run in flight within {timeout} s")


def check_sigkill_resume(tmp_path, budget: int, kills: int, min_completed: int) -> None:
    cfg = {
        "name": "fault",
        "seed": 11,
        "data": {"domains": ["web", "code", "books", "papers"]},
        "proxy": {"trainer": "law", "steps": 500, "law": {"seconds": 1.5, "points": 3}},
        "fit": {"method": "laplace", "final": False},
        "proposer": {"name": "random-swarm", "first": "dirichlet-swarm"},
        "batch_size": 4,
        "budget": budget,
        "executor": {"parallel": 2, "heartbeat_seconds": 0.5, "stale_after_seconds": 3},
        "report": False,
    }
    path = tmp_path / "fault.yaml"
    path.write_text(yaml.safe_dump(cfg))
    url = f"sqlite:///{tmp_path / 'fault.db'}"
    cli = [sys.executable, "-m", "bayesmix.study.cli"]
    subprocess.run([*cli, "create", str(path), "--storage", url], check=True, capture_output=True)

    rng = random.Random(20261123)
    log = open(tmp_path / "driver.log", "ab")  # noqa: SIM115
    completed_after_kill = [0]
    for k in range(kills):
        proc = subprocess.Popen(
            [*cli, "resume", "fault", "--storage", url, "--no-progress"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the driver and its workers
        )
        if k % 2 == 0:
            wait_for_progress(url, completed_after_kill[-1])
            time.sleep(rng.uniform(0.0, 4.0))
        else:
            wait_for_live_run(url)
            # Well inside the 1.5 s a run takes, even with a loaded machine's polling delay.
            time.sleep(rng.uniform(0.0, 0.3))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        study = Study.load("fault", url)
        completed_after_kill.append(study.counts()["completed"])
    failed_before = Study.load("fault", url).counts()["failed"]
    final = subprocess.run(
        [*cli, "resume", "fault", "--storage", url, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    log.close()
    # `study run` / `resume` exit 1 when runs failed meanwhile (a killed worker's run that
    # ran out of attempts), naming them; else 0.
    failed_now = Study.load("fault", url).counts()["failed"] - failed_before
    assert final.returncode == (1 if failed_now else 0), final.stderr[-2000:]
    assert not failed_now or "run(s) failed" in final.stderr

    study = Study.load("fault", url)
    counts = study.counts()
    assert counts["proposed"] == counts["running"] == 0
    assert counts["completed"] + counts["failed"] == budget
    assert counts["completed"] >= min_completed, counts
    assert completed_after_kill == sorted(completed_after_kill)  # nothing ever un-completed
    # The kills landed while runs were in flight: their runs were released and re-run.
    runs = study.runs()
    assert sum(len(r.history) for r in runs) >= 1, completed_after_kill

    trainer = LawTrainer(study.config.proxy.law, study.domains, study.config.proxy.steps)
    obs = study.storage.observations(study.id)
    for run in runs:
        got = obs[obs.run_id == run.name]
        if run.status == "failed":
            assert got.empty and run.reason
            continue
        want = trainer.train([RunSpec(run.name, run.mixture, run.steps, run.seed)])[0].rows
        assert len(got) == len(want) == 3 * 4  # exactly once: no row lost, none duplicated
        merged = want.merge(got, on=["step", "target", "metric"], suffixes=("", "_db"))
        assert len(merged) == len(want) and (merged["value"] == merged["value_db"]).all()
    with study.storage.engine.connect() as conn:
        dup = conn.execute(
            text(
                "SELECT COUNT(*) FROM (SELECT run_id, step, target, metric FROM observations "
                "GROUP BY run_id, step, target, metric HAVING COUNT(*) > 1) d"
            )
        ).scalar()
    assert dup == 0
