"""A study whose runs are trained elsewhere (``proxy.trainer: external``): its config names
only the domains, it is driven by ask and tell (Python and ``bayesmix study ask / tell``),
and ``study run`` refuses it with the way to tell runs instead of trying to train them.

The losses told come from a known law (``LawWorld``), written to CSV and read back as a user
would paste the results of their own training runs.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from test_cli_fit import assert_one_clear_error, invoke

from bayesmix.laws.world import LawWorld
from bayesmix.study import ConfigError, Study, StudyError, parse_config, run_study

DOMAINS = ["web", "code", "books"]
STEPS = 1000
# A world whose optimum is far from uniform: code helps every target, books little.
WORLD = LawWorld(
    DOMAINS,
    logk=np.log([2.2, 1.4, 2.6]),
    alpha=np.array([[0.10, 0.04, 0.01], [0.01, 0.20, 0.01], [0.01, 0.04, 0.06]]),
    eps=np.full(3, 1e-3),
    frac=np.full(3, 0.5),
    beta=np.full(3, 0.5),
    reference_step=float(STEPS),
    noise=0.01,
)


def config(**changes: object) -> dict:
    cfg = {
        "name": "ext",
        "seed": 3,
        "data": {"domains": DOMAINS, "token_counts": {"web": 5e9, "code": 2e9, "books": 1e9}},
        "proxy": {"trainer": "external", "steps": STEPS},
        "fit": {"method": "laplace", "final": False},
        "batch_size": 4,
        "budget": 12,
        "report": False,
    }
    cfg.update(changes)
    return cfg


def results_csv(runs: list, rng: np.random.Generator) -> str:
    """The losses of ``runs`` (RunRecords, or rows of the CSV `study ask --out` wrote) at three
    evaluations each, as a CSV a user pastes: run_id, step, target, value and r:<domain>."""
    frames = []
    for r in runs:
        shares = [float(r.mixture[d]) for d in DOMAINS]
        steps = np.array([STEPS / 4, STEPS / 2, STEPS])
        frames.append(WORLD.observe(np.repeat([shares], 3, axis=0), rng, [r.name] * 3, steps))
    return pd.concat(frames).to_csv(index=False)


def pasted(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text))


def true_objective(mixture: dict[str, float]) -> float:
    r = np.array([[mixture[d] for d in DOMAINS]])
    return float(np.exp(WORLD.log_loss(r, np.array([float(STEPS)]))).mean())


def test_a_config_of_domain_names_validates_for_the_external_trainer():
    cfg = parse_config(config())
    assert cfg.proxy.trainer == "external" and cfg.data.names == DOMAINS
    assert cfg.proxy.evaluations is None  # the user's runs record what they record
    names_only = parse_config(config(data={"domains": DOMAINS}))  # token counts optional
    assert names_only.data.token_counts == {}
    with pytest.raises(ConfigError, match="suits trainers 'law' and 'external'"):
        parse_config(config(proxy={"trainer": "proxy"}))
    with pytest.raises(ConfigError, match="unknown trainer 'elsewhere'; choose .*external"):
        parse_config(config(proxy={"trainer": "elsewhere"}))


def test_ask_tell_fit_and_optimum_from_pasted_results(tmp_path):
    study = Study.create(parse_config(config()), f"sqlite:///{tmp_path / 'ext.db'}")
    rng = np.random.default_rng(0)
    fit = None
    for _ in range(2):  # the first batch, then one proposed from the posterior
        runs = study.ask(4, posterior=fit)
        assert len(runs) == 4 and all(r.steps == STEPS for r in runs)
        table = pasted(results_csv(runs, rng))
        for run in runs:
            study.tell(run.name, table[table["run_id"] == run.name])
        fit = study.fit()
    assert study.counts() == {"proposed": 0, "running": 0, "completed": 8, "failed": 0}
    assert len(fit.posterior.observations.run_ids) == 8
    assert fit.posterior.info.get("converged", fit.posterior.converged)
    best = study.optimal_mixture(fit.posterior).mixture.to_dict()
    assert abs(sum(best.values()) - 1) < 1e-6
    uniform = dict.fromkeys(DOMAINS, 1 / 3)
    assert true_objective(best) < true_objective(uniform)  # the law's optimum leans to code
    assert best["code"] > 1 / 3


def test_study_run_refuses_the_external_trainer_and_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'ext.db'}"
    study = Study.create(parse_config(config()), url)
    with pytest.raises(StudyError, match="trained elsewhere") as caught:
        run_study(study, progress=False)
    message = str(caught.value)
    assert "bayesmix study ask ext" in message and "bayesmix study tell ext" in message
    assert study.runs() == []  # refused before anything was proposed
    result = invoke("study", "run", "ext", "--storage", url, "--no-progress")
    assert_one_clear_error(result, r"trainer 'external'.*`bayesmix study tell ext results\.csv`")


@pytest.fixture
def told_once(tmp_path) -> tuple[Study, list]:
    """A study with its first batch asked and one run told."""
    study = Study.create(parse_config(config()), f"sqlite:///{tmp_path / 'ext.db'}")
    runs = study.ask(4)
    study.tell(runs[0].name, pasted(results_csv(runs[:1], np.random.default_rng(1))))
    return study, runs


def rows_of(run, seed: int = 2) -> pd.DataFrame:
    return pasted(results_csv([run], np.random.default_rng(seed)))


def with_value(frame: pd.DataFrame, column: str, value: object) -> pd.DataFrame:
    out = frame.copy()
    out.loc[out.index[1], column] = value
    return out


BAD_TELLS = [
    ("unknown-run", lambda run: rows_of(run).assign(run_id="r0099"), "r0099"),
    (
        "unknown-domain",
        lambda run: rows_of(run).assign(**{"r:news": 0.0}),
        r"unknown domain.*r:news",
    ),
    ("nan-loss", lambda run: with_value(rows_of(run), "value", np.nan), "not a finite positive"),
    (
        "other-mixture",
        lambda run: rows_of(run).assign(**{"r:web": run.mixture["web"] + 0.05}),
        r"'r:web' differs from the run's mixture",
    ),
]


@pytest.mark.parametrize(("case", "make", "expect"), BAD_TELLS, ids=[c[0] for c in BAD_TELLS])
def test_a_bad_tell_is_one_clear_error_and_loses_nothing(told_once, case, make, expect):
    study, runs = told_once
    before = (study.counts(), study.storage.observations(study.id))
    frame = make(runs[1])
    name = "r0099" if case == "unknown-run" else runs[1].name
    with pytest.raises(StudyError, match=expect):
        study.tell(name, frame)
    # A table of a good run and the bad one: all or none.
    table = pd.concat([rows_of(runs[2]), frame])
    with pytest.raises(StudyError, match=expect):
        study.tell_table(table)
    assert study.counts() == before[0]
    assert study.storage.observations(study.id).equals(before[1])
    assert study.runs()[2].status == "proposed"


def test_the_cli_asks_and_is_told_with_csv_files(tmp_path):
    url = f"sqlite:///{tmp_path / 'ext.db'}"
    (tmp_path / "ext.yaml").write_text(
        yaml.safe_dump(config(fit={"law": "bimix", "method": "laplace"}))
    )
    created = invoke("study", "create", tmp_path / "ext.yaml", "--storage", url)
    assert created.exit_code == 0, created.output
    assert "next: bayesmix study ask ext --out runs.csv" in created.output
    asked = invoke("study", "ask", "ext", "--storage", url, "--out", tmp_path / "runs.csv")
    assert asked.exit_code == 0, asked.output
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert list(runs.columns) == ["run_id", "steps", "seed", *(f"r:{d}" for d in DOMAINS)]
    assert len(runs) == 4 and np.allclose(runs[[f"r:{d}" for d in DOMAINS]].sum(axis=1), 1)

    class Row:  # a row of runs.csv as results_csv reads a run
        def __init__(self, row: pd.Series) -> None:
            self.name = row["run_id"]
            self.mixture = {d: row[f"r:{d}"] for d in DOMAINS}

    rows = [Row(row) for _, row in runs.iterrows()]
    text = results_csv(rows, np.random.default_rng(0))
    bad = pasted(text)
    bad.loc[bad.index[-1], "value"] = np.nan  # the last run's last loss is missing
    bad.to_csv(tmp_path / "bad.csv", index=False)
    result = invoke("study", "tell", "ext", tmp_path / "bad.csv", "--storage", url)
    assert_one_clear_error(result, r"bad\.csv: .*not a finite positive number.*nothing was stored")
    study = Study.load("ext", url)
    assert study.counts()["completed"] == 0
    (tmp_path / "results.csv").write_text(text)
    told = invoke("study", "tell", "ext", tmp_path / "results.csv", "--storage", url)
    assert told.exit_code == 0, told.output
    said = " ".join(told.output.split())  # rich wraps at the runner's 80 columns
    assert re.search(r"told 4 run\(s\).*4 completed, 0 still to tell", said)
    again = invoke("study", "tell", "ext", tmp_path / "results.csv", "--storage", url)
    assert_one_clear_error(again, r"run 'r0001' is completed already")
    # The next batch: the bayesmix proposer needs the law's posterior, which `ask` fits.
    asked = invoke("study", "ask", "ext", "--storage", url, "--q", "2")
    assert asked.exit_code == 0, asked.output
    assert "fitting bimix (laplace) on 4 run(s)" in asked.output
    assert Study.load("ext", url).counts()["proposed"] == 2
