"""A study that starts from an earlier posterior (config ``warm_start``): the first batch is
the study's proposer's, from the posterior carried over; every fit takes the earlier
posterior as its prior; a domain the earlier study did not have is added; and bad input is
one clear error that stores nothing.

The world is a known own-share law (the ``law`` trainer, final losses only): the earlier
study fits that law (bimix, Laplace) on 6 runs, and the studies here on m + 1 = 4.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from bayesmix.study import Study, StudyError, parse_config, run_study
from bayesmix.study.cli import study_app
from bayesmix.study.config import ConfigError, StudyConfig
from bayesmix.study.storage import RunRecord, Storage
from bayesmix.study.trainers import LawTrainer, RunSpec

DOMAINS = ["web", "code", "books"]
MAX_DRAWS = 64
ALPHA = {"web": 0.2, "code": 0.06, "books": 0.12, "rust": 0.1}
LOSS = {"web": 2.0, "code": 1.6, "books": 2.4, "rust": 2.2}


def config(
    name: str, domains: list[str] = DOMAINS, law: str | None = None, **over: Any
) -> dict[str, Any]:
    """A study of the known world; ``law``: its fit.law (None: the default, or with a warm
    start the earlier posterior's)."""
    cfg: dict[str, Any] = {
        "name": name,
        "data": {"domains": domains},
        "proxy": {
            "trainer": "law",
            "steps": 100,
            "law": {
                "alpha": {d: ALPHA.get(d, 0.1) for d in domains},
                "loss": {d: LOSS.get(d, 2.0) for d in domains},
                "cross": 0.0,  # own-share: the law the studies fit (bimix) is the world's
                "noise": 0.01,
                "points": 1,
            },
        },
        "fit": {
            "law": law,
            "method": "laplace",
            "options": {"noise": "normal", "num_chains": 1, "num_samples": 64},
        },
        # A smaller ensemble than the default (256 draws) keeps a proposal to seconds.
        "proposer": {"name": "bayesmix", "options": {"max_draws": MAX_DRAWS}},
        "batch_size": 4,
        "budget": 8,
    }
    cfg.update(over)
    return cfg


def create(cfg: dict[str, Any] | StudyConfig | Path, url: str) -> Study:
    return Study.create(parse_config(cfg) if isinstance(cfg, dict) else cfg, url)


def tell(study: Study, runs: list[RunRecord]) -> None:
    trainer = LawTrainer(study.config.proxy.law, study.domains, study.config.proxy.steps)
    for run in runs:
        rows = trainer.train([RunSpec(run.name, run.mixture, run.steps, run.seed)])[0].rows
        study.tell(run.name, rows)


def fit(study: Study) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return study.fit()


def mixtures(study: Study, runs: list[RunRecord]) -> np.ndarray:
    return np.array([[r.mixture[d] for d in study.domains] for r in runs])


def regret(study: Study, mixture: dict[str, float]) -> float:
    """The known world's objective at ``mixture`` above its optimum (3 domains: a grid)."""
    trainer = LawTrainer(study.config.proxy.law, study.domains, study.config.proxy.steps)
    g = np.linspace(0, 1, 201)
    grid = np.array([(a, b, 1 - a - b) for a in g for b in g if a + b <= 1 + 1e-9])
    steps = np.full(len(grid), trainer.reference)
    best = np.exp(trainer.world.log_loss(grid, steps)).mean(axis=1).min()  # equal weights
    return trainer.objective(mixture, None) - float(best)


def optimum(study: Study, snapshot: int) -> tuple[pd.Series, pd.Series]:
    """The optimal mixture a snapshot recorded (``Study.summarise``), and its intervals'
    widths, by domain."""
    summary = next(s for s in study.storage.posteriors(study.id) if s.id == snapshot).summary
    intervals = pd.DataFrame(summary["intervals"]).T
    return pd.Series(summary["mixture"]), intervals["hi"] - intervals["lo"]


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Any]:
    """The earlier study: 6 runs of the world and its fit, also saved as a file."""
    root = tmp_path_factory.mktemp("warm")
    url = f"sqlite:///{root / 'studies.db'}"
    study = create(config("earlier", law="bimix", proposer={"name": "random-swarm"}), url)
    tell(study, study.ask(6))
    done = fit(study)
    done.posterior.save(root / "earlier.nc")
    create(config("empty"), url)  # a study without a posterior yet
    return url, root / "earlier.nc", (done.posterior, *optimum(study, done.snapshot))


def test_the_first_batch_and_the_fit_start_from_the_earlier_posterior(earlier) -> None:
    url, _, (old, _, _) = earlier
    # Both fit the world's law (own-share): the cold study names it, the warm one inherits
    # it from the earlier posterior.
    cold = create(config("cold", law="bimix"), url)
    warm = create(config("warm", warm_start={"study": "earlier"}), url)
    record = warm.warm_start
    assert record is not None and record["study"] == "earlier" and record["law"] == old.law

    cold_runs, warm_runs = cold.ask(4), warm.ask(4)
    first = warm.storage.proposals(warm.id).iloc[0]
    assert first["proposer"] == "bayesmix"  # the study's proposer, not the design
    assert cold.storage.proposals(cold.id).iloc[0]["proposer"] == "d-optimal"
    # The proposal came from the carried posterior, stored as a snapshot before any run.
    snap = next(s for s in warm.storage.posteriors(warm.id) if s.id == first["posterior_id"])
    assert snap.n_runs == 0 and snap.law == old.law
    # Chosen by the acquisition (its values recorded), none of them a run of the design.
    assert all(r.acquisition_value is not None for r in warm_runs)
    gaps = np.abs(mixtures(warm, warm_runs)[:, None] - mixtures(cold, cold_runs)[None]).sum(-1)
    assert gaps.min() > 0.05, gaps

    tell(cold, cold_runs)
    tell(warm, warm_runs)
    cold_fit, warm_fit = fit(cold), fit(warm)
    post = warm_fit.posterior
    # Only the study's own runs are in the likelihood; the earlier ones are its prior.
    assert len(post.observations.run_ids) == 4
    assert sorted(post.info["prior_targets"]) == sorted(DOMAINS)
    assert post.law == old.law  # the earlier posterior's law: no fit.law in the config
    cold_mix, cold_width = optimum(cold, cold_fit.snapshot)
    warm_mix, warm_width = optimum(warm, warm_fit.snapshot)
    assert warm_width.mean() < 0.7 * cold_width.mean(), (warm_width, cold_width)
    warm_regret, cold_regret = regret(warm, warm_mix.to_dict()), regret(cold, cold_mix.to_dict())
    assert warm_regret < cold_regret, (warm_regret, cold_regret)


def test_an_acquisition_of_the_optimum_starts_near_the_earlier_optimum(earlier) -> None:
    """The default acquisition (optimum-variance) spends the first runs where the optimum is
    unsure, which for an own-share law is near the simplex's edges; one that seeks the
    optimum (expected improvement) starts beside the earlier study's."""
    url, _, (_, target, _) = earlier
    warm = create(
        config(
            "warm-ei",
            warm_start={"study": "earlier"},
            proposer={"options": {"acquisition": "qlognei", "max_draws": MAX_DRAWS}},
        ),
        url,
    )
    cold = create(config("cold-ei"), url)
    target = target[DOMAINS].to_numpy()
    warm_gap = np.abs(mixtures(warm, warm.ask(4)) - target).sum(axis=1)
    cold_gap = np.abs(mixtures(cold, cold.ask(4)) - target).sum(axis=1)
    assert warm_gap.mean() < 0.5 * cold_gap.mean(), (warm_gap, cold_gap)
    assert warm_gap.min() < 0.1


def test_a_warm_start_from_a_file_with_a_domain_added(earlier, tmp_path) -> None:
    url, path, (_, _, known) = earlier
    (tmp_path / "earlier.nc").write_bytes(path.read_bytes())
    # A relative path is read from the config's folder; the domains come in any order.
    domains = ["rust", "books", "code", "web"]
    cfg = config("added", domains, warm_start={"posterior": "earlier.nc"})
    cfg["data"]["token_counts"] = {"rust": 1e9, "web": 4e9}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(cfg))
    study = Study.create(tmp_path / "study.yaml", url)
    # The posterior's domains in its order, then the added one: as the carried posterior.
    assert study.domains == ["web", "code", "books", "rust"]
    assert study.config.data.domains == study.domains
    record = study.warm_start
    assert record is not None and record["describe"] == "add rust (1e+09 tokens)"
    assert record["path"] == str((tmp_path / "earlier.nc").resolve())

    carried = fit(study)
    assert carried.posterior.domains == study.domains and carried.posterior.info["transferred"]
    mixture, width = optimum(study, carried.snapshot)
    # The new domain gets a share, with the widest interval: nothing is known of it but the
    # spread of the domains that are.
    assert mixture["rust"] > 0.02 and width["rust"] == width.max(), width
    assert width["rust"] > 2 * known.max(), (width, known)

    runs = study.ask(4)
    assert all(r.mixture["rust"] > 0 for r in runs)
    tell(study, runs)
    after = fit(study)
    assert after.posterior.domains == study.domains
    assert len(after.posterior.observations.run_ids) == 4
    assert optimum(study, after.snapshot)[1]["rust"] < width["rust"]  # its runs taught it


def test_the_earlier_file_must_stay_as_it_was(earlier, tmp_path) -> None:
    url, path, _ = earlier
    copy = tmp_path / "earlier.nc"
    copy.write_bytes(path.read_bytes())
    study = create(config("kept", warm_start={"posterior": str(copy)}), url)
    copy.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(StudyError, match="changed since the study was created"):
        study.fit()
    copy.unlink()
    with pytest.raises(StudyError, match="is gone"):
        study.ask(4)
    assert study.runs() == [] and study.storage.posteriors(study.id) == []


def test_the_loop_runs_a_warm_started_study(earlier) -> None:
    url, _, _ = earlier
    study = create(
        config(
            "looped",
            warm_start={"study": "earlier"},
            fit={"method": "laplace", "final": False, "options": {"num_samples": 64}},
            budget=4,
            executor={"parallel": 2, "heartbeat_seconds": 0.5, "stale_after_seconds": 5},
            report=False,
        ),
        url,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_study(study, progress=False)
    assert result.counts["completed"] == 4
    # The loop took the carried posterior before the first batch, and proposed from it.
    snap = study.storage.posteriors(study.id)[0]
    assert snap.n_runs == 0
    assert result.events[1] == "proposal 1: 4 run(s) from bayesmix", result.events
    assert study.storage.proposals(study.id).iloc[0]["posterior_id"] == snap.id


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("missing-file", {"posterior": "/nonexistent/post.nc"}, "/nonexistent/post.nc: no such file"),
    ("corrupt-file", {"posterior": "CORRUPT"}, "not a bayesmix posterior file"),
    ("unknown-study", {"study": "nope"}, "no study named 'nope'"),
    ("no-posterior", {"study": "empty"}, "study 'empty' has no posterior yet"),
    ("both", {"study": "earlier", "posterior": "x.nc"}, "give one of posterior"),
    ("neither", {}, "give one of posterior"),
    ("itself", {"study": "new"}, "cannot start from its own posterior"),
    ("no-common-domain", {"study": "earlier", "domains": ["x1", "x2"]}, "share none"),
]


@pytest.mark.parametrize(("case", "warm", "expect"), BAD, ids=[b[0] for b in BAD])
def test_bad_warm_starts_store_nothing(earlier, tmp_path, case, warm, expect) -> None:
    url = earlier[0]
    warm = dict(warm)
    domains = warm.pop("domains", DOMAINS)
    if warm.get("posterior") == "CORRUPT":
        (tmp_path / "corrupt.nc").write_bytes(b"CDF\x01 not really a netcdf file")
        warm["posterior"] = str(tmp_path / "corrupt.nc")
    before = Storage(url).fingerprint()
    with pytest.raises(ConfigError) as err:
        create(config("new", domains, warm_start=warm), url)
    message = str(err.value)
    assert expect in message and "\n" not in message, message
    assert "warm_start" in message  # it names the key
    assert Storage(url).fingerprint() == before


def test_the_cli_says_what_is_wrong_in_one_line(earlier, tmp_path) -> None:
    url = earlier[0]
    cfg = config("cli-new", warm_start={"posterior": "missing.nc"})
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(cfg))
    before = Storage(url).fingerprint()
    result = CliRunner().invoke(
        study_app, ["create", str(tmp_path / "study.yaml"), "--storage", url]
    )
    lines = [x for x in result.output.strip().splitlines() if x.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("error:") and "missing.nc: no such file" in lines[0]
    assert Storage(url).fingerprint() == before
