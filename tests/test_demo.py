"""End to end with real CPU-tiny proxies: the sample corpus, shards, proxy training in a worker
process (three proxies packed in one stacked model), observations in the store. The full
``bayesmix demo`` (fits, proposals, report; under 10 minutes on 2 cores) is the ``slow`` test
below."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bayesmix.study import Study, parse_config, run_study


def test_study_with_real_tiny_proxies(tmp_path):
    cfg = parse_config(
        {
            "name": "tiny-e2e",
            "seed": 2,
            "data": {"sample_corpus": True, "sample_bytes": 60_000},
            "proxy": {
                "trainer": "proxy",
                "size": "tiny",
                "steps": 30,
                "options": {
                    "d_model": 64,
                    "n_layers": 2,
                    "ctx": 64,
                    "batch_size": 4,
                    "warmup": 5,
                    "eval_points": 3,
                    "eval_tokens": 1024,
                    "threads": 1,
                },
            },
            # Fits are tested on known laws (test_report); the slow demo test fits real proxies.
            "fit": {"method": "laplace", "final": False},
            "proposer": {"name": "dirichlet-swarm"},
            "batch_size": 3,
            "budget": 3,
            "executor": {"pack": 3},  # one process trains the 3 proxies stacked
            "report": False,
        }
    )
    study = Study.create(cfg, f"sqlite:///{tmp_path / 'e2e.db'}")
    assert study.domains == ["python_code", "c_headers", "licences", "python_docs", "package_docs"]
    assert all(study.domain_set.token_counts[d] > 10_000 for d in study.domains)
    result = run_study(study, progress=False)
    assert result.counts["completed"] == 3, [r.reason for r in study.runs()]
    obs = study.observations(all_metrics=True)
    assert sorted(obs.metrics) == ["bpb", "loss"]
    assert len(obs.frame) == 3 * 5 * 3 * 2  # runs x targets x evaluations x metrics
    for run in study.runs():
        assert (study.workdir / "runs" / run.name / "result.json").is_file()
        losses = obs.frame[(obs.frame.run_id == run.name) & (obs.frame.metric == "loss")]
        first, last = losses.step.min(), losses.step.max()
        # the proxies learned something: held-out loss fell from the first evaluation
        assert losses[losses.step == last].value.mean() < losses[losses.step == first].value.mean()
    assert [r.attempts for r in study.runs()] == [1, 1, 1]


@pytest.mark.slow
def test_bayesmix_demo_under_ten_minutes(tmp_path):
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "bayesmix.cli", "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    minutes = (time.perf_counter() - started) / 60
    assert out.returncode == 0, out.stderr[-3000:]
    assert "optimal mixture" in out.stdout and "report:" in out.stderr + out.stdout
    assert (tmp_path / "demo" / "demo" / "report" / "report.html").is_file()
    assert minutes < 10, f"the demo took {minutes:.1f} min"
