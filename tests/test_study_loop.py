"""The study's ask / tell API and its loop with the local executor, on the known-law trainer
(a real component: it evaluates bayesmix.laws.formulas instead of training)."""

from __future__ import annotations

import io
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from bayesmix.study import Study, StudyError, parse_config, run_study
from bayesmix.study.trainers import LawTrainer, RunSpec

DOMAINS = ["web", "code", "books"]


def config(name: str = "loop", **over) -> dict:
    cfg = {
        "name": name,
        "seed": 3,
        "data": {"domains": DOMAINS, "token_counts": {"web": 5e9, "code": 2e9, "books": 1e9}},
        "proxy": {"trainer": "law", "steps": 400, "law": {"alpha": 0.1, "noise": 0.02}},
        "fit": {"method": "laplace", "final": False},
        "proposer": {"name": "random-swarm", "first": "dirichlet-swarm"},
        "batch_size": 3,
        "budget": 6,
        "executor": {"parallel": 2, "heartbeat_seconds": 0.5, "stale_after_seconds": 5},
        "report": False,
    }
    for key, value in over.items():
        cfg[key] = value
    return cfg


def create(tmp_path, **over) -> Study:
    cfg = parse_config(config(**over))
    return Study.create(cfg, f"sqlite:///{tmp_path / 'study.db'}")


def law_rows(study: Study, run) -> pd.DataFrame:
    trainer = LawTrainer(study.config.proxy.law, study.domains, study.config.proxy.steps)
    return trainer.train([RunSpec(run.name, run.mixture, run.steps, run.seed)])[0].rows


def test_ask_tell_round_trip(tmp_path):
    study = create(tmp_path)
    runs = study.ask(3)
    assert [r.name for r in runs] == ["r0001", "r0002", "r0003"]
    assert all(r.status == "proposed" and r.proposal == 1 for r in runs)
    for r in runs:
        assert abs(sum(r.mixture.values()) - 1) < 1e-6 and set(r.mixture) == set(DOMAINS)
    rows = law_rows(study, runs[0])
    study.tell("r0001", rows.drop(columns=["run_id"]))  # run_id is optional
    with pytest.raises(StudyError, match="completed already"):
        study.tell("r0001", rows)
    study.fail("r0002", "out of memory on the user's cluster")
    obs = study.observations()
    assert obs.run_ids == ["r0001"] and len(obs.frame) == len(rows)
    assert study.counts() == {"proposed": 1, "running": 0, "completed": 1, "failed": 1}
    # A second ask continues the numbering and knows the pending mixtures.
    more = study.ask(2)
    assert [r.name for r in more] == ["r0004", "r0005"] and more[0].proposal == 2
    # The same study, opened by name from its storage URL, sees the same state.
    again = Study.load("loop", study.storage.url)
    assert again.counts() == study.counts()


def test_same_seed_same_proposals(tmp_path):
    def play(folder, seed: int) -> list[dict[str, float]]:
        folder.mkdir()
        study = create(folder, seed=seed)
        for _ in range(3):
            for run in study.ask(3):
                study.tell(run.name, law_rows(study, run))
        return [r.mixture for r in study.runs()]

    a = play(tmp_path / "a", 3)
    b = play(tmp_path / "b", 3)
    c = play(tmp_path / "c", 4)
    assert len(a) == 9 and a == b
    assert a != c


def test_local_executor_runs_budget_exactly_once(tmp_path):
    study = create(tmp_path, batch_size=2, budget=4)
    result = run_study(study, progress=False)
    assert result.counts == {"proposed": 0, "running": 0, "completed": 4, "failed": 0}
    runs = study.runs()
    assert [r.proposal for r in runs] == [1, 1, 2, 2]
    assert all(r.attempts == 1 and r.history == [] for r in runs)
    obs = study.observations()
    points = len(LawTrainer(study.config.proxy.law, DOMAINS, 400).steps_of(400))
    assert len(obs.frame) == 4 * points * len(DOMAINS)
    # Stored values are the trainer's, untouched.
    for run in runs:
        want = law_rows(study, run).set_index(["step", "target"])["value"]
        got = obs.frame[obs.frame.run_id == run.name].set_index(["step", "target"])["value"]
        pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)
    # Asking for more budget later continues the same study (with progress bars drawn).
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    more = run_study(study, budget=5, progress=True, console=console)
    assert more.counts["completed"] == 5
    assert "study loop" in screen.getvalue() and "5/5" in screen.getvalue()


def test_dead_worker_requeued_once_then_failed(tmp_path):
    study = create(tmp_path)
    study.ask(1)
    code = "import os; print(os.getpid())"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    pid = int(dead.stdout)  # this process has exited: its runs are orphaned
    worker = f"{socket.gethostname()}:{pid}:tok"
    study.storage.claim(study.id, "r0001", worker)
    assert study.release_dead() == [("r0001", "proposed")]
    study.storage.claim(study.id, "r0001", worker)
    assert study.release_dead() == [("r0001", "failed")]
    run = study.runs()[0]
    assert run.status == "failed" and f"process {pid} no longer exists" in run.reason
    assert len(run.history) == 2


def test_worker_process_failure_is_released_then_failed(tmp_path):
    # Workers that die before storing anything (here: they cannot read the study's config,
    # corrupted after the driver read it) leave their run re-queued once, then failed with
    # the worker's last words as the reason.
    study = create(tmp_path, budget=1, batch_size=1)
    with study.storage.session() as s:
        from bayesmix.study.storage import StudyRow

        row = s.get(StudyRow, study.id)
        row.config = {**row.config, "batch_size": -1}
    result = run_study(study, progress=False)
    assert result.counts["failed"] == 1
    run = study.runs()[0]
    assert run.attempts == 2 and len(run.history) == 2
    assert "worker process exited with code 1" in run.reason and "batch_size" in run.reason
    assert study.storage.count_observations(study.id) == 0


def test_law_trainer_matches_formula():
    law = parse_config(config()).proxy.law.model_copy(update={"noise": 0.0})
    trainer = LawTrainer(law, DOMAINS, 400)
    mix = {"web": 0.5, "code": 0.3, "books": 0.2}
    out = trainer.train([RunSpec("x", mix, 400, 0)])[0].rows
    last = out[out.step == 400].set_index("target")["value"]
    # own share only (cross 0.01 on the others), K = 2 at the last step
    r = np.array([0.5, 0.3, 0.2]) + law.eps
    alpha = np.full((3, 3), law.cross) + np.diag([0.1 - law.cross] * 3)
    want = 2.0 * np.exp(-(alpha * np.log(r)[None, :]).sum(1))
    np.testing.assert_allclose(last[DOMAINS].to_numpy(), want, rtol=1e-9)


@pytest.mark.slow
def test_same_seed_same_bayesian_proposals(tmp_path):
    """With the bayesmix proposer the proposals go through a fit and BoTorch: still the same."""
    pytest.importorskip("bayesmix.proposers.bayesian", reason="the bayesmix proposer is absent")

    def play(folder) -> list[dict[str, float]]:
        folder.mkdir()
        study = create(folder, proposer={"name": "bayesmix", "first": "dirichlet-swarm"})
        for run in study.ask(4):
            study.tell(run.name, law_rows(study, run))
        return [r.mixture for r in study.ask(2, study.fit())]

    a, b = play(tmp_path / "a"), play(tmp_path / "b")
    assert a == b


def test_example_configs_validate():
    from pathlib import Path

    from bayesmix.study import load_config

    folder = Path(__file__).resolve().parents[1] / "configs" / "study"
    names = sorted(p.name for p in folder.glob("*.yaml"))
    assert {"demo.yaml", "dry-run.yaml", "gpu-cluster.yaml"} <= set(names)
    for name in names:
        cfg = load_config(folder / name)
        assert cfg.budget >= (cfg.proposer.first_batch or cfg.batch_size)


def test_gpu_slots():
    from bayesmix.study.executors import gpu_slots

    assert gpu_slots(["0", "1"], 1.0) == ["0", "1"]
    assert gpu_slots(["0", "1", "2", "3"], 2.0) == ["0,1", "2,3"]
    assert gpu_slots(["0", "1"], 0.5) == ["0", "0", "1", "1"]  # two proxies per GPU
    assert gpu_slots([], 1.0) == []


def test_a_study_with_run_lengths_spends_its_budget_in_compute(tmp_path):
    """proposer.options.run_lengths: after the first (full-length) batch the bayesmix
    proposer may train shorter runs (each recording the trainer's 4 checkpoints, which the
    proposal counts on); the budget counts compute in target-length runs."""
    pytest.importorskip("bayesmix.proposers.bayesian", reason="the bayesmix proposer is absent")
    study = create(
        tmp_path,
        proposer={
            "name": "bayesmix",
            "first": "dirichlet-swarm",
            "first_batch": 8,  # the separability check needs 8 runs
            "options": {"run_lengths": [100, 400], "max_draws": 64},
        },
        proxy={"trainer": "law", "steps": 400, "law": {"alpha": 0.1, "noise": 0.02}},
        batch_size=4,
        budget=12,
        executor={"parallel": 1},
    )
    result = run_study(study, progress=False)
    runs = study.runs()
    steps = [r.steps for r in runs]
    assert steps[:8] == [400] * 8 and 100 in steps[8:]
    assert len(runs) > 12 and sum(steps) == 12 * 400
    assert result.counts["completed"] == len(runs)
    # A run trained to its own length records its own checkpoints.
    short = next(r for r in runs if r.steps == 100)
    obs = study.observations().frame
    assert obs.loc[obs.run_id == short.name, "step"].max() == 100
