"""Ray: a real local Ray cluster with 2 worker slots runs a study of 8 runs, driven by two
drivers at once (as on two nodes sharing one store): no proposal is run twice and no
observation is lost."""

from __future__ import annotations

import os
import threading

import pytest

from bayesmix.study import Study, parse_config, run_study
from bayesmix.study.trainers import LawTrainer, RunSpec

ray = pytest.importorskip("ray", reason="the ray package is not installed")


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
    )
    yield ray
    ray.shutdown()


def test_two_drivers_on_ray_run_each_proposal_once(cluster, tmp_path):
    cfg = parse_config(
        {
            "name": "ray-study",
            "seed": 5,
            "data": {"domains": ["web", "code", "books"]},
            "proxy": {"trainer": "law", "steps": 300, "law": {"seconds": 0.5, "points": 3}},
            "fit": {"method": "laplace", "final": False},
            "proposer": {"name": "random-swarm", "first": "dirichlet-swarm"},
            "batch_size": 4,
            "budget": 8,
            "executor": {"kind": "ray", "cpus_per_run": 1, "heartbeat_seconds": 0.5},
            "report": False,
        }
    )
    url = f"sqlite:///{tmp_path / 'ray.db'}"
    Study.create(cfg, url)
    assert cluster.cluster_resources()["CPU"] == 2

    errors: list[BaseException] = []

    def driver() -> None:
        try:
            run_study(Study.load("ray-study", url), executor="ray", progress=False)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=driver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert ray.is_initialized()  # the drivers used the test's cluster and left it running

    study = Study.load("ray-study", url)
    runs = study.runs()
    assert study.counts() == {"proposed": 0, "running": 0, "completed": 8, "failed": 0}
    assert sorted(r.proposal for r in runs) == [1] * 4 + [2] * 4  # each batch proposed once
    assert all(r.attempts == 1 for r in runs)  # no proposal run twice
    workers = {r.worker.rsplit(":", 1)[0] for r in runs}
    assert len(workers) == 2  # both Ray worker processes took runs
    obs = study.storage.observations(study.id)
    trainer = LawTrainer(cfg.proxy.law, study.domains, cfg.proxy.steps)
    for r in runs:
        want = trainer.train([RunSpec(r.name, r.mixture, r.steps, r.seed)])[0].rows
        got = obs[obs.run_id == r.name]
        assert len(got) == len(want) == 3 * 3
        assert sorted(got["value"]) == sorted(want["value"])
