"""`bayesmix study update`: a new domain-set version in the store, the warm-started fit after
it, and malformed updates that leave the database exactly as it was."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from bayesmix.domains import DomainUpdate
from bayesmix.study import Study, parse_config
from bayesmix.study.cli import study_app as app
from bayesmix.study.storage import Storage
from bayesmix.study.trainers import LawTrainer, RunSpec

BASE = {
    "name": "upd",
    "data": {
        "domains": ["web", "code", "books"],
        "token_counts": {"web": 4e9, "code": 1e9, "books": 2e9},
    },
    "proxy": {"trainer": "law", "steps": 100, "law": {"points": 1}},
    "fit": {
        "method": "laplace",
        "options": {"noise": "normal", "num_chains": 1, "num_samples": 100},
    },
    "proposer": {"name": "random-swarm"},
    "batch_size": 4,
    "budget": 12,
}


def run_batch(study: Study, q: int) -> None:
    trainer = LawTrainer(study.config.proxy.law, study.domains, 100)
    for run in study.ask(q):
        rows = trainer.train([RunSpec(run.name, run.mixture, 100, run.seed)])[0].rows
        study.tell(run.name, rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("domains")
    url = f"sqlite:///{root / 'study.db'}"
    study = Study.create(parse_config(BASE), url)
    run_batch(study, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.fit()
    return root, url, study


def cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--split", "wb=a:1e9,b:3e9"], "unknown domain 'wb'"),
        (["--split", "web=a:1e9,b:1e9"], "add up to 2e+09, not to 'web''s 4e+09"),
        (["--remove", "web,code,books"], "removes every domain"),
        (["--add", "code:1e9"], "exists already"),
        (["--add", "rust"], "needs a token count"),
        ([], "the update is empty"),
        (["--add", "rust:1e9", "--prior", "/nonexistent/model"], "no saved posterior"),
    ],
)
def test_malformed_update_changes_nothing(world, args, expect) -> None:
    _, url, study = world
    before = Storage(url).fingerprint()
    code, out = cli(["update", study.name, "--storage", url, *args])
    assert code == 1
    lines = [x for x in out.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expect in out, out
    assert Storage(url).fingerprint() == before


def test_update_then_warm_fit(world, tmp_path) -> None:
    _, url, study = world
    before = Storage(url).fingerprint()
    code, out = cli(["update", study.name, "--storage", url, "--add", "rust:1e9"])
    assert code == 0, out
    assert "v1 -> v2" in out
    assert Storage(url).fingerprint() != before
    study = Study.load(study.name, url)
    assert study.domain_set.version == 2 and study.domains == ["web", "code", "books", "rust"]
    rec = study.storage.domain_updates(study.id)[2]
    assert rec["update"]["ops"][0]["kind"] == "add" and rec["prior_snapshot"] is not None
    obs = study.observations()
    assert obs.domains == study.domains and len(obs.run_ids) == 6  # old runs mapped
    run_batch(study, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = study.fit()
    post = fit.posterior
    assert post.domains == study.domains and len(post.observations.run_ids) == 9
    assert post.info["prior_targets"] == ["rust"]
    # save it as a model with its card, and start a later version from it
    code, out = cli(["save-model", study.name, str(tmp_path / "m"), "--storage", url])
    assert code == 0, out
    assert (tmp_path / "m" / "MODEL_CARD.md").exists()
    code, out = cli(
        [
            "update",
            study.name,
            "--storage",
            url,
            "--remove",
            "books",
            "--prior",
            str(tmp_path / "m"),
        ]
    )
    assert code == 0, out
    rec = Study.load(study.name, url).storage.domain_updates(study.id)[3]
    assert rec["prior_path"].endswith("posterior.nc")


def test_after_an_update_bayesmix_proposes_by_optimum_variance(tmp_path) -> None:
    """A study's bayesmix proposer uses the optimum-variance acquisition by default, after a
    domain update too (what studies/domain_updates measured); an explicit choice stays."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    for options, expect_values in (({}, True), ({"acquisition": "thompson"}, False)):
        proposer = {"name": "bayesmix", "options": options}
        cfg = parse_config({**BASE, "name": f"ov{len(options)}", "proposer": proposer})
        study = Study.create(cfg, url)
        run_batch(study, 4)  # the first batch: the study's design, no posterior needed
        study.update(DomainUpdate.add("rust", 1e9))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs = study.ask(2, posterior=study.fit())
        values = [r.acquisition_value for r in runs]
        assert all(v is not None and np.isfinite(v) for v in values) == expect_values, values
