"""`bayesmix fit` and `bayesmix optimize` end to end on a small CSV, and their user errors:
one clear `error:` line, exit code 1, never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bayesmix.cli import app
from bayesmix.laws.formulas import bimix_log_loss

DOMAINS = ["web", "code", "books"]
runner = CliRunner()


def tidy_table(runs: int = 8, seed: int = 0) -> pd.DataFrame:
    """Own-share losses (no step axis) at Dirichlet mixtures, noise 0.02 on the log scale."""
    rng = np.random.default_rng(seed)
    m = len(DOMAINS)
    alpha, eps = rng.uniform(0.05, 0.2, m), np.full(m, 3e-3)
    logk = np.log(rng.uniform(2.0, 3.5, m))
    r = np.round(rng.dirichlet(np.ones(m), size=runs), 4)
    r[:, -1] = 1 - r[:, :-1].sum(axis=1)
    y = np.exp(bimix_log_loss(np, logk, alpha, eps, r) + 0.02 * rng.standard_normal((runs, m)))
    return pd.DataFrame(
        [
            {"run_id": f"run-{p}", "target": d, "value": y[p, t]}
            | {f"r:{e}": r[p, j] for j, e in enumerate(DOMAINS)}
            for p in range(runs)
            for t, d in enumerate(DOMAINS)
        ]
    )


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_clear_error(result, pattern: str) -> None:
    text = result.output  # stdout and stderr interleaved (click >= 8.2)
    assert result.exit_code == 1, text
    assert (
        "Traceback" not in text
        and result.exception is None
        or isinstance(result.exception, SystemExit)
    ), text
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, text
    assert re.search(pattern, errors[0]), errors[0]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    csv = folder / "table.csv"
    tidy_table().to_csv(csv, index=False)
    out = folder / "post.nc"
    result = invoke("fit", csv, "-o", out, "--law", "bimix", "--method", "laplace", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "posterior written to" in result.output and "law bimix by laplace" in result.output
    assert out.is_file()
    return out


def test_fit_then_optimize(fitted):
    result = invoke("optimize", fitted, "--upper", "web=0.2", "--ci", "0.8")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "optimal mixture (closed-form)" in out
    assert "recommended" in out and "lo 80%" in out and "hi 80%" in out
    assert "expected objective" in out
    shares = {d: recommended(out, d) for d in DOMAINS}
    assert shares["web"] <= 0.2 + 1e-3  # the recommended share respects its upper bound
    assert sum(shares.values()) == pytest.approx(1.0, abs=3e-3)


def recommended(output: str, domain: str) -> float:
    """The first number on the domain's row of the printed table (the recommended share)."""
    match = re.search(rf"^\W*{domain}\W+([\d.]+)", output, re.M)
    assert match is not None, output
    return float(match.group(1))


def test_optimize_with_token_caps(fitted, tmp_path):
    counts = tmp_path / "tokens.csv"
    pd.DataFrame({"domain": DOMAINS, "token_count": [1e12, 1e12, 2.5e10]}).to_csv(
        counts, index=False
    )
    result = invoke(
        "optimize", fitted, "--token-counts", counts, "--target-tokens", "1e12",
        "--max-epochs", "4", "--lower", "code=0.3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert recommended(result.output, "books") <= 0.1 + 1e-3  # cap 4 x 2.5e10 / 1e12
    assert recommended(result.output, "code") >= 0.3 - 1e-3


# (id, the input, text the one error line must contain): listed in tests/MALFORMED_INPUTS.md
OPTIMIZE_ERRORS: list[tuple[str, str, str]] = [
    ("upper-unknown-domain", "--upper news=0.2", "unknown domain"),
    ("lower-sum", "--lower web=0.7 --lower code=0.5", "lower bounds sum to 1.2"),
    ("bound-no-value", "--upper web", "not domain=value"),
    ("bound-text", "--upper web=abc", "not a number"),
    ("posterior-missing", "optimize none.nc", "no such posterior file"),
    ("posterior-junk", "optimize junk.nc (a text file)", "not a bayesmix posterior file"),
    ("token-counts-missing", "--token-counts no.csv", "no such file"),
]


@pytest.mark.parametrize("case", OPTIMIZE_ERRORS, ids=[c[0] for c in OPTIMIZE_ERRORS])
def test_optimize_errors(fitted, tmp_path, case):
    name, given, expect = case
    junk = tmp_path / "junk.nc"
    junk.write_text("x")
    files = {"none.nc": tmp_path / "none.nc", "junk.nc": junk, "no.csv": tmp_path / "no.csv"}
    words = given.split(" (")[0].split()
    posterior = files[words[1]] if words[0] == "optimize" else fitted
    args = [] if words[0] == "optimize" else [files.get(w, w) for w in words]
    assert_one_clear_error(invoke("optimize", posterior, *args), expect)


def write(tmp_path: Path, frame: pd.DataFrame, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


FIT_ERRORS: list[tuple[str, str, str]] = [
    ("table-missing", "fit missing.csv", "no such file"),
    ("proportions-sum", "a run's proportions sum to 1.2", r"run 'run-1'.*sum to"),
    ("value-empty", "a loss left empty", r"run 'run-1', column 'value'"),
    ("law-unknown", "--law nope", "unknown law 'nope'"),
    ("method-unknown", "--method mcmc", "unknown method 'mcmc'"),
    ("not-a-table", "a .txt file with columns a,b", "missing required column"),
]


@pytest.mark.parametrize("case", FIT_ERRORS, ids=[c[0] for c in FIT_ERRORS])
def test_fit_errors(tmp_path, case):
    name, _, expect = case
    out = tmp_path / "post.nc"
    frame = tidy_table(runs=3)
    args: list = [write(tmp_path, frame, "good.csv"), "--method", "laplace"]
    if name == "table-missing":
        args[0] = tmp_path / "missing.csv"
    elif name == "proportions-sum":
        frame.loc[frame["run_id"] == "run-1", "r:books"] += 0.2
        args[0] = write(tmp_path, frame)
    elif name == "value-empty":
        frame.loc[4, "value"] = np.nan
        args[0] = write(tmp_path, frame)
    elif name == "law-unknown":
        args += ["--law", "nope"]
    elif name == "method-unknown":
        args[1:] = ["--method", "mcmc"]
    else:
        args[0] = tmp_path / "table.txt"
        args[0].write_text("a,b\n1,2\n")
    assert_one_clear_error(invoke("fit", *args, "-o", out), expect)
    assert not out.exists()


def test_help_lists_the_options():
    result = invoke("optimize", "--help")
    assert result.exit_code == 0
    for option in ("--ci", "--upper", "--lower", "--token-counts", "--max-epochs", "--strict"):
        assert option in result.output
    result = invoke("fit", "--help")
    assert result.exit_code == 0 and "--law" in result.output and "--method" in result.output
