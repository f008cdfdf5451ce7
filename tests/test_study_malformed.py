"""Malformed configs and inputs: each gives one clear error line, never a traceback, and never
changes the database (a fingerprint of every table before and after).

51 malformed configs and 12 bad commands or storages (through the real CLI), and 22 bad
Python-API inputs (tell, fail, ask, load): 85 cases.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from bayesmix.study import Study, StudyError, parse_config
from bayesmix.study.cli import study_app as app
from bayesmix.study.storage import Storage, StorageError

BASE: dict[str, Any] = {
    "name": "base",
    "data": {"domains": ["web", "code"], "token_counts": {"web": 4e9, "code": 1e9}},
    "proxy": {"trainer": "law", "steps": 100},
    "fit": {"method": "laplace"},
    "proposer": {"name": "random-swarm"},
    "batch_size": 2,
    "budget": 4,
}


def edit(path: str, value: Any) -> Callable[[dict], dict]:
    """A config with the value at a dotted path set (or deleted, for value DELETE)."""

    def apply(cfg: dict) -> dict:
        out = copy.deepcopy(cfg)
        out["name"] = "new"
        node = out
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        if value is DELETE:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
        return out

    return apply


DELETE = object()

# (id, mutation of BASE or raw file text, text the error must contain)
CONFIG_CASES: list[tuple[str, Any, str]] = [
    ("empty-file", "", "this file is empty"),
    ("yaml-syntax", "name: [unclosed\n", "not valid YAML at line"),
    ("top-level-list", "- a\n- b\n", "this file is a list"),
    ("top-level-scalar", "42\n", "this file is a int"),
    ("unknown-key", edit("colour", "blue"), "colour: unknown key"),
    ("missing-name", edit("name", DELETE), "name: required key is missing"),
    ("missing-data", edit("data", DELETE), "data: required key is missing"),
    ("name-spaces", edit("name", "my study"), "study name 'my study'"),
    ("name-too-long", edit("name", "x" * 80), "study name"),
    ("seed-negative", edit("seed", -1), "seed: Input should be greater than or equal to 0"),
    ("seed-string", edit("seed", "abc"), "seed: Input should be a valid integer"),
    ("data-two-sources", edit("data.sample_corpus", True), "exactly one of sample_corpus"),
    ("data-no-source", edit("data", {"tokenizer": "byte"}), "exactly one of sample_corpus"),
    ("one-domain", edit("data", {"domains": ["web"]}), "at least two domains"),
    ("domain-case", edit("data.domains", ["Web", "code"]), "'Web' is not canonical"),
    ("domain-repeat", edit("data.domains", ["web", "web"]), "domain names repeat"),
    ("tokens-negative", edit("data.token_counts.web", -5), "data.token_counts.web"),
    ("tokens-unknown", edit("data.token_counts.books", 5), "token_counts names unknown"),
    ("paths-missing", edit("data", {"paths": {"a": "/nonexistent/a", "b": "/nonexistent/b"}}), "a"),
    ("data-unknown-key", edit("data.format", "x"), "data.format: unknown key"),
    ("trainer-unknown", edit("proxy.trainer", "magic"), "proxy.trainer: unknown trainer 'magic'"),
    ("steps-zero", edit("proxy.steps", 0), "proxy.steps: Input should be greater than 0"),
    ("steps-string", edit("proxy.steps", "many"), "proxy.steps: Input should be a valid integer"),
    ("size-unknown", edit("proxy.size", "huge"), "unknown size 'huge'"),
    ("law-alpha-negative", edit("proxy.law.alpha", -0.1), "must be positive"),
    ("law-frac", edit("proxy.law.frac", 1.5), "proxy.law.frac: Input should be less than 1"),
    ("law-alpha-missing", edit("proxy.law.alpha", {"web": 0.1}), "proxy.law.alpha must give"),
    ("law-unknown-key", edit("proxy.law.gamma", 1), "proxy.law.gamma: unknown key"),
    ("proxy-on-names", edit("proxy.trainer", "proxy"), "data.domains (names only)"),
    ("weights-unknown", edit("objective.weights", {"books": 1}), "names unknown domain(s): books"),
    ("weights-zero", edit("objective.weights", {"web": 0}), "weights must not be all zero"),
    ("weights-negative", edit("objective.weights", {"web": -1}), "objective.weights.web"),
    ("ci", edit("objective.ci", 1.5), "objective.ci: Input should be less than 1"),
    ("lower-share", edit("constraints.lower", {"web": 2}), "constraints.lower.web"),
    ("lower-sum", edit("constraints.lower", {"web": 0.7, "code": 0.6}), "lower bounds sum to 1.3"),
    ("caps-half", edit("constraints.target_tokens", 1e12), "target_tokens and max_epochs go"),
    ("upper-unknown", edit("constraints.upper", {"books": 0.5}), "constraints.upper names unknown"),
    (
        "caps-infeasible",
        edit("constraints", {"target_tokens": 1e12, "max_epochs": 1}),
        "no mixture fits",
    ),
    ("law-unknown", edit("fit.law", "chinchilla"), "unknown law 'chinchilla'"),
    ("method-unknown", edit("fit.method", "mcmc"), "fit.method: Input should be 'nuts'"),
    ("fit-option", edit("fit.options", {"chains": 4}), "unknown fit option(s) chains"),
    ("proposer-unknown", edit("proposer.name", "genetic"), "unknown proposer 'genetic'"),
    ("first-bayesian", edit("proposer.first", "bayesmix"), "the first batch needs a design"),
    (
        "run-lengths-swarm",
        edit("proposer.options", {"run_lengths": [50, 100]}),
        "run_lengths needs proposer 'bayesmix' with the optimum-variance acquisition",
    ),
    (
        "run-lengths-too-long",
        edit("proposer", {"name": "bayesmix", "options": {"run_lengths": [50, 500]}}),
        "500 steps is longer than the target run (proxy.steps = 100)",
    ),
    (
        "run-lengths-malformed",
        edit("proposer.options", {"run_lengths": "short"}),
        "run_lengths must be a list of positive step counts, got 'short'",
    ),
    (
        "checkpoints-zero",
        edit("proposer.options", {"checkpoints": 0}),
        "checkpoints must be a positive integer, got 0",
    ),
    ("first-batch-budget", edit("proposer.first_batch", 10), "exceeds the budget (4)"),
    ("bayes-one-run", edit("proposer", {"name": "bayesmix", "first_batch": 1}), "at least two"),
    ("batch-zero", edit("batch_size", 0), "batch_size: Input should be greater than 0"),
    ("budget-negative", edit("budget", -5), "budget: Input should be greater than 0"),
    ("executor-kind", edit("executor.kind", "slurm"), "executor.kind: Input should be 'local'"),
    ("stale-short", edit("executor.stale_after_seconds", 1), "at least twice heartbeat"),
    ("attempts-zero", edit("executor.max_attempts", 0), "executor.max_attempts"),
    ("exists", edit("name", "base"), "a study named 'base' already exists"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A storage holding one study with completed and proposed runs."""
    root = tmp_path_factory.mktemp("malformed")
    url = f"sqlite:///{root / 'study.db'}"
    study = Study.create(parse_config(BASE), url)
    from bayesmix.study.trainers import LawTrainer, RunSpec

    trainer = LawTrainer(study.config.proxy.law, study.domains, 100)
    for run in study.ask(2):
        study.tell(run.name, trainer.train([RunSpec(run.name, run.mixture, 100, run.seed)])[0].rows)
    study.ask(2)
    return root, url, study


def run_cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def assert_one_clear_error(code: int, output: str, expect: str) -> None:
    assert code == 1, output
    assert "Traceback" not in output
    errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, output
    assert expect in errors[0], errors[0]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_malformed_config(world, case):
    root, url, _ = world
    name, mutation, expect = case
    path = root / f"{name}.yaml"
    text = mutation if isinstance(mutation, str) else yaml.safe_dump(mutation(BASE))
    path.write_text(text)
    before = Storage(url).fingerprint()
    code, output = run_cli(["create", str(path), "--storage", url])
    assert_one_clear_error(code, output, expect)
    if name not in ("empty-file", "yaml-syntax", "top-level-list", "top-level-scalar"):
        assert str(path) in output or name in ("paths-missing", "exists", "caps-infeasible")
    assert Storage(url).fingerprint() == before


def test_missing_config_file(world):
    root, url, _ = world
    code, output = run_cli(["create", str(root / "nope.yaml"), "--storage", url])
    assert_one_clear_error(code, output, "nope.yaml: no such config file")


CLI_CASES: list[tuple[str, list[str], str]] = [
    ("run-unknown", ["run", "ghost"], "no study named 'ghost'"),
    ("run-budget", ["run", "base", "--budget", "0"], "--budget must be a positive"),
    ("run-executor", ["run", "base", "--executor", "slurm"], "--executor must be local"),
    ("status-unknown", ["status", "ghost"], "studies here: base"),
    ("resume-unknown", ["resume", "ghost"], "no study named 'ghost'"),
    ("report-unknown", ["report", "ghost"], "no study named 'ghost'"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_malformed_command(world, case):
    _, url, _ = world
    name, args, expect = case
    before = Storage(url).fingerprint()
    code, output = run_cli([*args, "--storage", url])
    assert_one_clear_error(code, output, expect)
    assert Storage(url).fingerprint() == before


@pytest.mark.parametrize(
    "storage, expect",
    [
        ("nonsense", "is not a database URL"),
        ("mysql://u@localhost/db", "unsupported database 'mysql'"),
        ("sqlite:////nonexistent-folder/x.db", "does not exist"),
        ("TEXTFILE", "file is not a database"),
        ("MISSING", "no such database file"),
    ],
)
def test_bad_storage(world, storage, expect):
    root, _, _ = world
    if storage == "TEXTFILE":
        (root / "notes.txt").write_text("not a database\n" * 100)
        storage = f"sqlite:///{root / 'notes.txt'}"
    elif storage == "MISSING":
        storage = f"sqlite:///{root / 'missing.db'}"
    code, output = run_cli(["status", "base", "--storage", storage])
    assert_one_clear_error(code, output, expect)
    assert not (root / "missing.db").exists()


def good_rows(study: Study, name: str) -> pd.DataFrame:
    run = study.storage.run(study.id, name)
    return pd.DataFrame(
        {"step": [50.0, 100.0], "target": "web", "value": [3.0, 2.5], "metric": "loss"}
    ).assign(**{f"r:{d}": run.mixture[d] for d in study.domains})


def tell_cases(study: Study) -> list[tuple[str, Callable[[], Any], str]]:
    pending = [r.name for r in study.runs("proposed")][0]
    done = [r.name for r in study.runs("completed")][0]
    rows = good_rows(study, pending)
    return [
        ("unknown-run", lambda: study.tell("r9999", rows), "no run named 'r9999'"),
        ("run-id-type", lambda: study.tell(3, rows), "run_id must be a run name"),
        ("nan", lambda: study.tell(pending, rows.assign(value=np.nan)), "not a finite positive"),
        ("negative", lambda: study.tell(pending, rows.assign(value=-1.0)), "not a finite positive"),
        ("text-value", lambda: study.tell(pending, rows.assign(value="low")), "finite positive"),
        (
            "no-value",
            lambda: study.tell(pending, rows.drop(columns="value")),
            "lack column(s) value",
        ),
        ("no-target", lambda: study.tell(pending, rows.drop(columns="target")), "column(s) target"),
        ("mixture", lambda: study.tell(pending, rows.assign(**{"r:web": 0.0})), "differs from"),
        ("other-run", lambda: study.tell(pending, rows.assign(run_id="r0001")), "other run(s)"),
        ("target-name", lambda: study.tell(pending, rows.assign(target="Web Text")), "canonical"),
        ("not-a-frame", lambda: study.tell(pending, [1, 2]), "must be a DataFrame"),
        ("empty", lambda: study.tell(pending, rows.iloc[:0]), "no observation rows"),
        ("duplicate", lambda: study.tell(pending, rows.assign(step=50.0)), "more than once"),
        ("unknown-domain", lambda: study.tell(pending, rows.assign(**{"r:books": 0})), "unknown"),
        ("step-negative", lambda: study.tell(pending, rows.assign(step=-5.0)), "not positive"),
        ("told-twice", lambda: study.tell(done, good_rows(study, done)), "completed already"),
        ("fail-done", lambda: study.fail(done, "oops"), "completed already"),
        ("ask-zero", lambda: study.ask(0), "q must be a positive integer"),
        ("ask-text", lambda: study.ask("3"), "q must be a positive integer"),
        ("ask-bool", lambda: study.ask(True), "q must be a positive integer"),
        ("bayes-no-post", lambda: bayes(study).ask(2), "needs the posterior"),
        ("load-unknown", lambda: Study.load("ghost", study.storage), "no study named 'ghost'"),
    ]


def bayes(study: Study) -> Study:
    """The same study as seen with proposer 'bayesmix' (the config is what ask reads)."""
    other = Study.load(study.name, study.storage)
    proposer = other.config.proposer.model_copy(update={"name": "bayesmix"})
    other.config = other.config.model_copy(update={"proposer": proposer})
    return other


def test_malformed_python_inputs(world):
    _, url, study = world
    cases = tell_cases(study)
    assert len(cases) + len(CONFIG_CASES) + len(CLI_CASES) + 6 >= 50
    for name, call, expect in cases:
        before = study.storage.fingerprint()
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        # The study's own errors (ValueErrors, so that callers catching ValueError see them),
        # never a bare ValueError or another library's.
        kind = type(info.value)
        assert kind in (StudyError, StorageError), (name, kind.__name__, message)
        assert expect in message, (name, message)
        assert "\n" not in message and "Traceback" not in message, (name, message)
        assert study.storage.fingerprint() == before, name
