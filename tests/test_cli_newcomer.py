"""What a new user hit on the fit / optimize side (issue 21): absurd losses, ambiguous metrics,
bad output paths, bad token counts, ignored columns, unreadable numbers in messages, published
releases without Python, silent progress, silent zeros and point estimates shown as certain.

Every malformed input is a row of a case list below (id, input, expected message), from which
``tests/MALFORMED_INPUTS.md`` is generated (``python tests/malformed_inputs.py``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_cli_fit import DOMAINS, assert_one_clear_error, invoke, tidy_table, write

import bayesmix as bm
from bayesmix.observations import ObservationsError

# ------------------------------------------------------------------------------ fit errors
# (id, the input, text the one error line must contain)
FIT_CASES: list[tuple[str, str, str]] = [
    ("loss-1e300", "one loss of 1e300 among losses near 3", "run 'run-1', target 'code': 1e+300"),
    ("loss-times-1e12", "every loss times 1e12", "24 of 24 losses are above 1000"),
    ("two-metrics", "a table of two metrics, no --metric", "holds 2 metrics (loss, bpb): choose"),
    ("unknown-metric", "--metric ppl on a table of loss", "unknown metric 'ppl'; the table has"),
    ("out-is-input", "fit t.csv -o t.csv", "is an input file; writing the posterior there"),
    ("out-is-folder", "fit t.csv -o DIR (a folder)", "is a folder; give a file name"),
    ("out-folder-missing", "fit t.csv -o /nonexistent/dir/x.nc", "folder /nonexistent/dir does"),
    ("no-output", "fit t.csv without -o", "give the posterior file to write with -o"),
    ("no-input", "fit -o x.nc without a table", "give exactly one of a tidy table, --regmix"),
    ("table-and-release", "fit t.csv --regmix MIX LOSS -o x.nc", "give exactly one of"),
    ("regmix-missing", "--regmix with files that do not exist", "RegMix mixtures: "),
    ("olmix-wrong-files", "--olmix given RegMix's files", "Olmix ratios: no 'run' column"),
]


def fit_case_args(name: str, tmp_path: Path) -> list:
    """The command line of a FIT_CASES row (files written under tmp_path)."""
    frame = tidy_table(runs=8)
    table = write(tmp_path, frame, "t.csv")
    out = tmp_path / "post.nc"
    mix, loss = regmix_release(tmp_path)
    if name == "loss-1e300":
        frame.loc[4, "value"] = 1e300
        return [write(tmp_path, frame), "-o", out]
    if name == "loss-times-1e12":
        return [write(tmp_path, frame.assign(value=frame["value"] * 1e12)), "-o", out]
    if name == "two-metrics":
        both = pd.concat([frame, frame.assign(metric="bpb")])
        return [write(tmp_path, both.assign(metric=both["metric"].fillna("loss"))), "-o", out]
    if name == "unknown-metric":
        return [table, "--metric", "ppl", "-o", out]
    if name == "out-is-input":
        return [table, "-o", table]
    if name == "out-is-folder":
        (tmp_path / "DIR").mkdir()
        return [table, "-o", tmp_path / "DIR"]
    if name == "out-folder-missing":
        return [table, "-o", "/nonexistent/dir/x.nc"]
    if name == "no-output":
        return [table]
    if name == "no-input":
        return ["-o", out]
    if name == "table-and-release":
        return [table, "--regmix", mix, loss, "-o", out]
    if name == "regmix-missing":
        return ["--regmix", tmp_path / "no-mix.csv", tmp_path / "no-loss.csv", "-o", out]
    if name == "olmix-wrong-files":
        return ["--olmix", mix, loss, "-o", out]
    raise AssertionError(name)


@pytest.mark.parametrize("case", FIT_CASES, ids=[c[0] for c in FIT_CASES])
def test_fit_refuses(case, tmp_path):
    name, _, expect = case
    args = fit_case_args(name, tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = invoke("fit", *args, "--method", "map")
    assert_one_clear_error(result, re.escape(expect))
    # Refused before fitting: nothing written, no stray DIR.tmp, the input untouched.
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    if name == "out-is-input":
        assert pd.read_csv(tmp_path / "t.csv").shape == (24, 6)


def test_loss_outliers_are_named_row_by_row():
    frame = tidy_table(runs=8)
    frame.loc[[4, 10], "value"] = [1e300, 5e-4]
    with pytest.raises(ObservationsError) as info:
        bm.Observations.from_frame(frame)
    message = str(info.value)
    assert "2 loss(es)" in message
    assert "run 'run-1', target 'code': 1e+300" in message
    assert "run 'run-3', target 'code': 0.0005" in message


def test_real_losses_pass_the_scale_check():
    # Initial losses (~10.8 nats at step 13) next to final ones (~2) are one curve, not outliers.
    frame = tidy_table(runs=4)
    early = frame.assign(step=13.0, value=10.8)
    late = frame.assign(step=1e4, value=frame["value"] * 0.9)
    assert bm.Observations.from_frame(pd.concat([early, late])).has_steps


# -------------------------------------------------------------------------- optimize errors
OPTIMIZE_CASES: list[tuple[str, str, str]] = [
    ("step-negative", "optimize --step -5", "--step must be a positive number of training steps"),
    ("step-nan", "optimize --step nan", "--step must be a positive number of training st"),
    ("tokens-twice", "token counts listing web twice", "domain(s) web listed more than once"),
    ("tokens-text", "token count 'abc'", "line 3 (domain 'code'): token_count 'abc' is not a"),
    ("tokens-negative", "token count -1", "line 2 (domain 'web'): token_count '-1' is not a"),
    ("tokens-empty", "a token count left empty", "line 4 (domain 'books'): token_count (empty)"),
    ("tokens-columns", "token counts with columns name,tokens", "expected columns domain,token_c"),
]

TOKEN_FILES = {
    "tokens-twice": "domain,token_count\nweb,1e12\ncode,1e12\nweb,5e9\nbooks,1e10\n",
    "tokens-text": "domain,token_count\nweb,1e12\ncode,abc\nbooks,1e10\n",
    "tokens-negative": "domain,token_count\nweb,-1\ncode,1e12\nbooks,1e10\n",
    "tokens-empty": "domain,token_count\nweb,1e12\ncode,1e12\nbooks,\n",
    "tokens-columns": "name,tokens\nweb,1e12\n",
}


@pytest.mark.parametrize("case", OPTIMIZE_CASES, ids=[c[0] for c in OPTIMIZE_CASES])
def test_optimize_refuses(case, tmp_path):
    name, _, expect = case
    # Options are checked before the posterior is read: no fit needed to see them refused.
    posterior = tmp_path / "post.nc"
    if name.startswith("step-"):
        args = ["--step", "-5" if name == "step-negative" else "nan"]
    else:
        counts = tmp_path / "tokens.csv"
        counts.write_text(TOKEN_FILES[name])
        args = ["--token-counts", counts, "--target-tokens", "1e12", "--max-epochs", "4"]
    assert_one_clear_error(invoke("optimize", posterior, *args), re.escape(expect))


def test_map_optimum_is_labelled_a_point_estimate():
    from rich.console import Console

    from bayesmix.cli import optimum_table

    shares = pd.Series([0.5, 0.3, 0.2], index=DOMAINS)
    intervals = pd.DataFrame({"mean": shares, "lo": shares, "hi": shares})  # one draw
    opt = SimpleNamespace(
        as_frame=lambda: pd.concat([shares.rename("recommended"), intervals], axis=1),
        solver="BoTorch",
    )
    console = Console(width=100, record=True)
    console.print(optimum_table(SimpleNamespace(method="map", law="bimix-cross"), opt, 0.9))
    text = console.export_text()
    assert "MAP point estimate" in text
    assert "lo 90%" not in text and "mean" not in text
    console.print(optimum_table(SimpleNamespace(method="laplace", law="bimix-cross"), opt, 0.9))
    assert "lo 90%" in console.export_text()


# ------------------------------------------------------------------ messages and warnings
# (id, input to Observations.from_frame, text of the error; never a numpy repr)
MESSAGE_CASES: list[tuple[str, str, str]] = [
    ("value-nan", "a loss left empty", "run 'run-1', column 'value' (target 'code'): loss nan"),
    ("value-text", "a loss 'abc'", "loss 'abc' is not a finite positive number"),
    ("ratio-nan", "a proportion left empty", "column 'r:web': proportion nan is not a number"),
    ("step-negative", "a step of -5", "run 'run-0', column 'step': -5 is not positive"),
    ("duplicate-final", "one final loss given twice", "run 'run-0': target 'web' appears more"),
]


@pytest.mark.parametrize("case", MESSAGE_CASES, ids=[c[0] for c in MESSAGE_CASES])
def test_messages_write_numbers_plainly(case):
    name, _, expect = case
    frame = tidy_table(runs=3)
    if name == "value-nan":
        frame.loc[4, "value"] = np.nan
    elif name == "value-text":
        frame["value"] = frame["value"].astype(object)
        frame.loc[4, "value"] = "abc"
    elif name == "ratio-nan":
        frame.loc[0, "r:web"] = np.nan
    elif name == "step-negative":
        frame["step"] = 100.0
        frame.loc[0, "step"] = -5.0
    else:
        frame = pd.concat([frame, frame.iloc[:1]])
    with pytest.raises(ObservationsError) as info:
        bm.Observations.from_frame(frame)
    message = str(info.value)
    assert expect in message, message
    assert "np." not in message and "float64" not in message, message


# Legitimate but suspicious input: fitted, with one visible warning line.
WARNING_CASES: list[tuple[str, str, str]] = [
    ("ignored-columns", "a table with columns foo and an index saved", "ignored column(s) Unnam"),
]


def test_ignored_columns_are_named_once(tmp_path):
    frame = tidy_table(runs=8).assign(foo=1.0)
    path = tmp_path / "t.csv"
    frame.to_csv(path)  # the index too: a column 'Unnamed: 0' on reading
    # An unknown law stops the command right after reading: the warning without a fit.
    result = invoke("fit", path, "-o", tmp_path / "post.nc", "--law", "nope")
    assert_one_clear_error(result, "unknown law 'nope'")
    warned = [ln for ln in result.output.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1, result.output
    assert WARNING_CASES[0][2] in warned[0] and "Unnamed: 0, foo" in warned[0]
    with pytest.warns(UserWarning, match="ignored column"):
        bm.Observations.read(path)


# ------------------------------------------------------------------ published releases
def regmix_release(folder: Path) -> tuple[Path, Path]:
    """A release in RegMix's format: four training domains, three of them measured."""
    table = tidy_table(runs=8)
    wide = table.pivot(index="run_id", columns="target", values="value")
    mix = table.groupby("run_id")[[f"r:{d}" for d in DOMAINS]].first()
    mix = mix.assign(**{"r:extra": 0.0})
    mix.iloc[::2] = mix.iloc[::2] * 0.9
    mix.loc[mix.index[::2], "r:extra"] = 0.1
    index = pd.RangeIndex(1, len(mix) + 1, name="index")
    mix_path, loss_path = folder / "mix.csv", folder / "loss.csv"
    mix = mix.set_axis([f"train_the_pile_{c[2:]}" for c in mix.columns], axis=1)
    mix.set_axis(index, axis=0).to_csv(mix_path)
    wide = wide.set_axis([f"metric/the_pile_{d}_val_loss" for d in wide.columns], axis=1)
    wide.set_axis(index, axis=0).to_csv(loss_path)
    return mix_path, loss_path


@pytest.mark.parametrize("release", ["regmix", "olmix"])
def test_fit_reads_a_release(release, tmp_path):
    """The loaders run from the command line (an unknown law then stops it before fitting)."""
    files = regmix_release(tmp_path) if release == "regmix" else olmix_release(tmp_path)
    result = invoke("fit", f"--{release}", *files, "-o", tmp_path / "p.nc", "--law", "nope")
    assert_one_clear_error(result, "unknown law 'nope'")


def test_unmeasured_domains_get_a_note():
    from rich.console import Console

    from bayesmix.cli import UNMEASURED_FOOTNOTE, optimum_table, unmeasured_domains

    shares = pd.Series([0.6, 0.4, 0.0], index=["web", "code", "extra"])
    opt = SimpleNamespace(
        as_frame=lambda: pd.DataFrame(
            {"recommended": shares, "mean": shares, "lo": shares, "hi": shares}
        ),
        solver="closed-form",
    )
    observations = SimpleNamespace(target_domain={"web": "web", "code": "code"})
    post = SimpleNamespace(
        method="nuts", law="bimix", domains=list(shares.index), observations=observations
    )
    assert unmeasured_domains(post) == ["extra"]
    assert unmeasured_domains(SimpleNamespace(**{**vars(post), "law": "bimix-cross"})) == []
    console = Console(width=120, record=True)
    console.print(optimum_table(post, opt, 0.9))
    rows = {ln.split()[1]: ln for ln in console.export_text().splitlines() if ln.startswith("│")}
    assert "no target measures it (*)" in rows["extra"] and "(*)" not in rows["web"]
    assert "kept at its lower bound" in UNMEASURED_FOOTNOTE


@pytest.mark.slow  # two fits: about a minute on a shared 2-core machine
def test_fit_a_regmix_release_without_python_and_see_why_a_share_is_zero(tmp_path):
    mix, loss = regmix_release(tmp_path)
    out = tmp_path / "post.nc"
    args = ("--regmix", mix, loss, "-o", out, "--law", "bimix", "--method", "laplace")
    result = invoke("fit", *args)
    assert result.exit_code == 0, result.output
    assert "Observations(8 runs, 4 domains, 3 targets" in result.output
    result = invoke("optimize", out)
    assert result.exit_code == 0, result.output
    row = next(ln for ln in result.output.splitlines() if " extra " in ln)
    assert "no target measures it (*)" in row
    assert "(*) the own-share law sees a domain only through the target" in result.output
    assert "lo 90%" in result.output  # laplace: real intervals, no point-estimate label
    assert "point estimate" not in result.output


def olmix_release(folder: Path) -> tuple[Path, Path]:
    """A release in Olmix's format: ratios and bits per byte per task, joined on 'run'."""
    table = tidy_table(runs=12, seed=3)
    mix = table.groupby("run_id")[[f"r:{d}" for d in DOMAINS]].first()
    mix = mix.set_axis(["dclm:web", "stack:code", "books"], axis=1).rename_axis("run")
    tasks = table.pivot(index="run_id", columns="target", values="value").rename_axis("run")
    tasks = tasks.set_axis(["arc_easy", "hellaswag", "mmlu"], axis=1)
    ratios, metrics = folder / "ratios.csv", folder / "metrics.csv"
    mix.to_csv(ratios)
    tasks.to_csv(metrics)
    return ratios, metrics


@pytest.mark.slow  # one fit: about half a minute on a shared 2-core machine
def test_fit_an_olmix_release_without_python(tmp_path):
    ratios, metrics = olmix_release(tmp_path)
    out = tmp_path / "post.nc"
    args = ("--olmix", ratios, metrics, "-o", out, "--law", "loglinear", "--method", "map")
    result = invoke("fit", *args)
    assert result.exit_code == 0, result.output
    assert "Observations(12 runs, 3 domains, 3 targets" in result.output and out.is_file()


# --------------------------------------------------------------------------- progress
def fake_fits(monkeypatch) -> None:
    """Fits that take no time (a comparison's bookkeeping is what is tested, not the laws)."""
    import bayesmix.selection as selection

    def fit_quietly(obs, law, seed, options):
        def log_likelihood(held_out):
            return pd.DataFrame(np.zeros((4, len(held_out.run_ids))), columns=held_out.run_ids)

        return SimpleNamespace(log_likelihood=log_likelihood)

    monkeypatch.setattr(selection, "_fit_quietly", fit_quietly)


def test_compare_laws_reports_each_fit_and_the_time_left(monkeypatch):
    from bayesmix.selection import compare_laws

    fake_fits(monkeypatch)
    lines: list[str] = []
    obs = bm.Observations.from_frame(tidy_table(runs=8))
    compare_laws(obs, ["bimix"], method="map", folds=2, progress=lines.append)
    assert lines[0] == "2 fit(s) to run"
    assert re.fullmatch(r"bimix, fold 1 of 2: done, fit 1 of 2 \(\d+ s so far, about \d+ s left\)",
                        lines[1])  # fmt: skip
    assert lines[2].startswith("bimix, fold 2 of 2: done, fit 2 of 2")
    lines.clear()
    few = obs.first_runs(6)  # the cross law cannot be compared on 6 runs: said so
    compare_laws(few, ["bimix", "bimix-cross"], method="map", folds=2, progress=lines.append)
    assert lines[0] == "2 fit(s) to run"
    assert any(ln.startswith("bimix-cross: not compared (") for ln in lines)


def test_compare_laws_command_prints_progress(monkeypatch, tmp_path):
    fake_fits(monkeypatch)
    table = write(tmp_path, tidy_table(runs=8), "t.csv")
    result = invoke("compare-laws", table, "--laws", "bimix", "--method", "map", "--folds", "2")
    assert result.exit_code == 0, result.output
    assert "fitting 1 laws x 2 folds (map) on Observations(8 runs" in result.output
    assert "bimix, fold 2 of 2: done, fit 2 of 2" in result.output
    assert "chosen: bimix" in result.output


def test_compare_laws_defaults_to_loo():
    from bayesmix.selection import compare_laws

    assert compare_laws.__kwdefaults__["method"] == "loo"
    result = invoke("compare-laws", "--help")
    assert "[default: loo]" in result.output


def test_sampling_progress_is_plain_lines_off_a_terminal(monkeypatch, capsys):
    import bayesmix.inference as inference

    monkeypatch.setattr(inference, "PROGRESS_EVERY", 0.05)
    with inference.sampling_progress(True, "NUTS: 4 chains"):
        time.sleep(0.2)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "NUTS: 4 chains: started"
    assert any(re.fullmatch(r"NUTS: 4 chains: \d+ s so far", ln) for ln in lines[1:-1])
    assert re.fullmatch(r"NUTS: 4 chains: done in \d+ s", lines[-1])
    assert all("\r" not in ln and "%" not in ln for ln in lines)  # no redrawn bars
    with inference.sampling_progress(False, "quiet"):
        pass
    assert capsys.readouterr().err == ""


def test_nuts_draws_no_bar_per_chain(monkeypatch, capsys):
    """numpyro's bars (one per chain) are off; our one line replaces them."""
    import jax
    import numpyro
    import numpyro.distributions as dist

    import bayesmix.inference as inference

    seen = {}

    class FakeMCMC:
        def __init__(self, kernel, **kwargs):
            seen.update(kwargs)

        def run(self, *args, **kwargs):
            seen["ran"] = True

        def get_samples(self, group_by_chain):
            return {"x": np.zeros((4, 2))}

        def get_extra_fields(self, group_by_chain):
            return {"diverging": np.zeros((4, 2), dtype=bool)}

    def model():
        numpyro.sample("x", dist.Normal(0, 1))

    laplace = SimpleNamespace(
        flat_draws=lambda rng, n: np.zeros((n, 1)),
        flat_map=np.zeros(1),
        unravel=lambda v: {"x": v[0]},
        cov=np.eye(1),
        positive_definite=True,
        mode={"x": 0.0},
    )
    monkeypatch.setattr(inference, "MCMC", FakeMCMC)
    key = jax.random.PRNGKey(0)
    inference._nuts(model, laplace, key, key, 4, 10, 2, 0.8, 5, "laplace", True)
    assert seen["progress_bar"] is False and seen["ran"]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "NUTS: 4 chains x (10 warm-up + 2) draws: started"
    assert err[-1].startswith("NUTS: 4 chains x (10 warm-up + 2) draws: done in")


# ------------------------------------------------------------- the list of malformed inputs
def test_malformed_inputs_list_is_current():
    """tests/MALFORMED_INPUTS.md is generated from the case lists; regenerate it when they
    change: python tests/malformed_inputs.py"""
    from malformed_inputs import LIST_PATH, render

    assert LIST_PATH.read_text().startswith(render()), "run: python tests/malformed_inputs.py"
