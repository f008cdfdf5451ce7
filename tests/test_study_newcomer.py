"""What a new user hit (issue 21): the README's study commands on the dry-run config, domain
updates that keep what the study knew, and bad input that gets one clear error."""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bayesmix.study import Study, load_config, parse_config
from bayesmix.study.cli import study_app as app
from bayesmix.study.storage import Storage
from bayesmix.study.trainers import LawTrainer, RunSpec

ROOT = Path(__file__).resolve().parents[1]
DRY_RUN = ROOT / "configs" / "study" / "dry-run.yaml"
# The dry-run config with test-sized fits: 100 Laplace draws, independent noise.
FAST_FIT = {
    "method": "laplace",
    "options": {"num_chains": 1, "num_samples": 100, "noise": "normal"},
}


def dry_run_config(tmp: Path, **changes: object) -> Path:
    """configs/study/dry-run.yaml with ``changes`` (top-level keys), written under ``tmp``."""
    data = yaml.safe_load(DRY_RUN.read_text())
    data["fit"] = {**data["fit"], **FAST_FIT}
    data.update(changes)
    path = tmp / "dry-run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def one_error(code: int, output: str, expect: str) -> None:
    assert code == 1, output
    assert "Traceback" not in output
    errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, output
    assert expect in errors[0], errors[0]
    assert "np.float64" not in output and "('" not in output


def run_batch(study: Study, q: int) -> None:
    """Propose ``q`` runs and tell them the known law's losses (no executor: fast)."""
    cfg = study.config
    trainer = LawTrainer(cfg.proxy.law, study.domains, cfg.proxy.steps)
    for run in study.ask(q):
        rows = trainer.train([RunSpec(run.name, run.mixture, run.steps, run.seed)])[0].rows
        study.tell(run.name, rows)


def copy_db(src: str, dst: Path) -> str:
    """A consistent copy of a SQLite study database (its WAL included)."""
    with sqlite3.connect(src.split("///", 1)[1]) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return f"sqlite:///{dst}"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The dry-run study after 8 runs and one fit (version 1 of its domain set), as the
    smoke test's first run leaves it (the same shapes: its fit reuses this one's compiled
    code)."""
    root = tmp_path_factory.mktemp("newcomer")
    url = f"sqlite:///{root / 'base.db'}"
    study = Study.create(load_config(dry_run_config(root)), url)
    for _ in range(2):
        run_batch(study, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = study.fit()
    return root, url, fit.snapshot


def fresh(fitted, tmp_path: Path) -> tuple[str, Study]:
    """A copy of the fitted study, to change freely."""
    _, url, _ = fitted
    copy = copy_db(url, tmp_path / "copy.db")
    return copy, Study.load("dry-run", copy)


# ------------------------------------------------------------------------------ item 1
def test_revise_keeps_what_the_study_knew(fitted, tmp_path, monkeypatch):
    """`update --revise web` with no new run: web keeps a share near its old one, with a wider
    interval (not 0.000-0.000), and stays in the report's plots."""
    url, study = fresh(fitted, tmp_path)
    before = study.storage.posteriors(study.id)[-1].summary
    code, out = cli(["update", "dry-run", "--revise", "web", "--storage", url])
    assert code == 0, out
    study = Study.load("dry-run", url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = study.fit()
    after = study.storage.posteriors(study.id)[-1].summary
    assert fit.posterior.domains == ["web", "code", "books", "papers"]
    # The posterior mean of web's optimal share: the recommendation itself, the optimum of
    # the expected objective, may move far on a posterior this flat (8 runs, 0-0.55).
    old, new = before["intervals"]["web"]["mean"], after["intervals"]["web"]["mean"]
    assert old > 0.05 and abs(new - old) < 0.5 * old, (old, new)
    w_old = before["intervals"]["web"]["hi"] - before["intervals"]["web"]["lo"]
    w_new = after["intervals"]["web"]["hi"] - after["intervals"]["web"]["lo"]
    assert w_new > w_old and after["intervals"]["web"]["hi"] > 0.01, (w_old, w_new)
    assert after["n_runs"] == 8
    # every domain stays in the plots: the forest plot and the loss curves
    import bayesmix.report as report

    figures = []
    monkeypatch.setattr(report, "_png", lambda fig: figures.append(fig) or b"png")
    report.write_report(study, tmp_path / "report")
    texts = {t.get_text() for fig in figures for ax in fig.axes for t in ax.get_yticklabels()}
    titles = {ax.get_title() for fig in figures for ax in fig.axes}
    assert "web" in texts and "web" in titles, (texts, titles)


# ------------------------------------------------------------------------------ item 2
def test_added_domain_gets_a_law_value(fitted, tmp_path):
    """The README's `update --add code_rust:1.2e9` on the dry-run study: the known law gets a
    value for code_rust (the old domains' mean, or --law-value), and later runs succeed."""
    url, study = fresh(fitted, tmp_path)
    code, out = cli(
        ["update", "dry-run", "--add", "code_rust:1.2e9", "--add", "docs:2e9", "--storage", url]
        + ["--law-value", "docs:alpha=0.2"]
    )
    assert code == 0, out
    study = Study.load("dry-run", url)
    law = study.config.proxy.law
    assert law.alpha["code_rust"] == pytest.approx((0.05 + 0.12 + 0.08 + 0.10) / 4)
    assert law.alpha["docs"] == 0.2 and set(law.alpha) == set(study.domains)
    assert study.config.data.domains == study.domains
    trainer = LawTrainer(law, study.domains, study.config.proxy.steps)  # raised before the fix
    assert trainer.world.alpha.shape == (6, 6)
    run_batch(study, 2)
    assert study.counts()["completed"] == 10


def test_bad_law_value(fitted, tmp_path):
    url, _ = fresh(fitted, tmp_path)
    before = Storage(url).fingerprint()
    for args, expect in (
        (["--law-value", "rust=0.1"], "expected DOMAIN:KEY=VALUE"),
        (["--law-value", "rust:alpha=abc"], "'abc' is not a number"),
        (["--law-value", "rust:gamma=1"], "per-domain values are alpha and loss"),
        (["--law-value", "rust:alpha=-1"], "must be a positive number"),
        (["--law-value", "ghost:alpha=0.1"], "unknown domain 'ghost'"),
    ):
        code, out = cli(["update", "dry-run", "--add", "rust:1e9", "--storage", url, *args])
        one_error(code, out, expect)
    assert Storage(url).fingerprint() == before


def test_run_fails_loudly_and_status_shows_the_whole_reason(fitted, tmp_path):
    """A run that failed makes `study run` exit 1, and status prints its whole reason."""
    url, study = fresh(fitted, tmp_path)
    reason = "ValueError: proxy.law.alpha: no value for domain(s) code_rust " + "x" * 120
    for run in study.ask(2):
        study.fail(run.name, reason)
    code, out = cli(["status", "dry-run", "--storage", url])
    assert code == 0, out
    flat = "".join(out.split())  # wrapped over lines, never cut
    assert "".join(reason.split()) in flat and "…" not in out
    # run: the state an update left before the fix (a domain the known law has no value for),
    # so that every run of the next batch fails in its worker
    rec = study.domain_set
    study.storage.add_domain_set(
        study.id,
        rec.version,
        [*rec.domains, "code_rust"],
        {**rec.token_counts, "code_rust": 1.2e9},
        None,
        {"update": {"ops": [{"kind": "add", "name": "code_rust", "tokens": 1.2e9}]}},
    )
    stored = study.record.config
    study.storage.set_config(study.id, {**stored, "fit": {**stored["fit"], "final": False}})
    code, out = cli(["run", "dry-run", "--budget", "14", "--storage", url, "--no-progress"])
    one_error(code, out, "4 run(s) failed, first r0011: ")
    assert "no value for domain(s) code_rust" in out
    # the budget given to run is the study's from now on
    assert Study.load("dry-run", url).config.budget == 14
    code, out = cli(["status", "dry-run", "--storage", url])
    assert "14 of 14 runs" in out, out


# ------------------------------------------------------------------------------ item 3
def test_update_leaving_one_domain_is_refused(fitted, tmp_path):
    url, _ = fresh(fitted, tmp_path)
    before = Storage(url).fingerprint()
    code, out = cli(["update", "dry-run", "--remove", "web,code,books", "--storage", url])
    one_error(code, out, "would leave one domain (papers); a mixture needs at least two")
    assert Storage(url).fingerprint() == before


# ------------------------------------------------------------------------------ item 4
def test_foreign_sqlite_file_is_refused_unless_asked(tmp_path):
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    config = dry_run_config(tmp_path)
    url = f"sqlite:///{db}"
    code, out = cli(["create", str(config), "--storage", url])
    one_error(code, out, "holds tables that are not bayesmix's (invoices)")
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"invoices"}  # nothing added
    code, out = cli(["create", str(config), "--storage", url, "--allow-foreign-tables"])
    assert code == 0, out
    assert Study.load("dry-run", url).domains == ["web", "code", "books", "papers"]


def test_storage_that_is_not_a_database_names_the_file(tmp_path):
    junk = tmp_path / "notes.db"
    junk.write_text("these are my notes, not a database\n" * 100)
    code, out = cli(["status", "dry-run", "--storage", f"sqlite:///{junk}"])
    one_error(code, out, f"{junk}: file is not a database")
    code, out = cli(["create", str(dry_run_config(tmp_path)), "--storage", f"sqlite:///{junk}"])
    one_error(code, out, f"{junk}: file is not a database")


# ------------------------------------------------------------------------------ item 5
@pytest.mark.parametrize(
    ("data", "expect"),
    [
        ({"domains": []}, "data: domains is empty: list the training domains"),
        ({"paths": {}}, "data: paths is empty: list the training domains"),
    ],
)
def test_empty_domain_list(tmp_path, data, expect):
    path = tmp_path / "empty.yaml"
    path.write_text(yaml.safe_dump({"name": "e", "data": data, "proxy": {"trainer": "law"}}))
    code, out = cli(["create", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}"])
    one_error(code, out, expect)
    with pytest.raises(ValueError, match="domains is empty"):
        parse_config({"name": "e", "data": {"domains": []}})


# ------------------------------------------------------------------------------ item 6
def test_status_headers_are_never_cut(tmp_path, monkeypatch):
    """At 80 columns the runs table keeps every header whole (the mixture moves to tables of
    its own), with the dry-run's four domains and with twelve."""
    import bayesmix.study.cli as study_cli

    monkeypatch.setattr(study_cli.console, "_width", 80)
    domains = [f"domain_{i:02d}" for i in range(12)]
    for name, names in (("four", ["web", "code", "books", "papers"]), ("wide", domains)):
        url = f"sqlite:///{tmp_path / f'{name}.db'}"
        cfg = {"name": name, "data": {"domains": names}, "proxy": {"trainer": "law"}}
        study = Study.create(parse_config(cfg), url)
        for run in study.ask(3):
            study.fail(run.name, "worker died")
        code, out = cli(["status", name, "--storage", url])
        assert code == 0, out
        assert "…" not in out, out
        header_lines = [ln for ln in out.splitlines() if "┃" in ln]
        headers = {h.strip() for ln in header_lines for h in ln.split("┃")}
        assert {"run", "proposal", "status", "attempts", "acq.", *names} <= headers, out
        assert max(len(ln) for ln in out.splitlines()) <= 80


def test_copied_database_writes_its_own_files(fitted, tmp_path, monkeypatch):
    """A copy of a study's SQLite file finds its workdir beside the copy: its report does not
    overwrite the original study's."""
    import bayesmix.report as report

    root, _, _ = fitted
    url, study = fresh(fitted, tmp_path)
    assert study.workdir == (tmp_path / "copy-studies" / "dry-run").resolve()
    monkeypatch.setattr(report, "_png", lambda fig: b"png")
    path = report.write_report(study)
    assert path.is_relative_to(tmp_path.resolve())
    assert not (root / "base-studies" / "dry-run" / "report").exists()


def test_two_drivers_fit_once(fitted, tmp_path, monkeypatch):
    """Two drivers asking for the same fit at once: one fits, the other waits for its
    snapshot (a lease on the fit, as on runs)."""
    import threading
    import time

    import bayesmix

    url, study = fresh(fitted, tmp_path)
    run_batch(study, 2)  # runs no snapshot covers yet
    old = study.load_posterior(study.storage.posteriors(study.id)[-1].id)
    calls = []

    def slow_fit(*args, **kwargs):
        calls.append(1)
        time.sleep(2.0)
        return old

    monkeypatch.setattr(bayesmix, "fit", slow_fit)
    fits = []
    drivers = [
        threading.Thread(target=lambda: fits.append(Study.load("dry-run", url).fit()))
        for _ in range(2)
    ]
    for d in drivers:
        d.start()
    for d in drivers:
        d.join(120)
    assert len(calls) == 1 and len(fits) == 2
    assert fits[0].snapshot == fits[1].snapshot and sorted(f.reused for f in fits) == [0, 1]
    assert len(study.storage.posteriors(study.id)) == 2


# ------------------------------------------------------------------------------ item 7
def test_report_shows_narrow_intervals_runs_and_reasons(fitted, tmp_path, monkeypatch):
    import bayesmix.report as report

    url, study = fresh(fitted, tmp_path)
    (run,) = study.ask(1)
    reason = "RuntimeError: " + "a long traceback line " * 60
    study.fail(run.name, reason)
    figures = {}

    def keep(fig):
        figures[len(figures)] = fig
        return b"png"

    monkeypatch.setattr(report, "_png", keep)
    page = report.write_report(study, tmp_path / "report").read_text()
    forest, *_, curves = figures.values()
    # every interval has caps and its numbers beside it, however narrow
    ax = forest.axes[0]
    assert any(getattr(c, "has_xerr", False) for c in ax.containers)
    labels = [t.get_text() for t in ax.texts]
    assert len(labels) == 4 and all("[" in t for t in labels), labels
    # the loss curves name their runs
    assert curves.legends, "no legend"
    names = {t.get_text() for t in curves.legends[0].get_texts()}
    assert {f"r{i:04d}" for i in range(1, 9)} <= names
    # the runs table: each run's final loss; a long reason folded in its cell
    assert "<th>final loss</th>" in page
    obs = study.observations()
    final = report.observed_objective(study, obs)
    assert f"<td>{final['r0001']:.3f}</td>" in page
    assert "<details><summary>RuntimeError: a long traceback line" in page
    summary = page.split("<summary>", 1)[1].split("</summary>", 1)[0]
    assert len(summary) < 100 and reason in page.replace("&#x27;", "'")


# ------------------------------------------------------------------------------ item 8
def test_readme_study_commands_on_the_dry_run(tmp_path):
    """The README's study commands, in order, on configs/study/dry-run.yaml (test-sized
    budget and fits): each exits 0, and the last prints a recommendation over the new set."""
    from bayesmix.cli import app as bayesmix_app

    config = dry_run_config(
        tmp_path, budget=8, executor={"kind": "local", "parallel": 2, "pack": 4}
    )
    url = f"sqlite:///{tmp_path / 'bayesmix.db'}"

    def bayesmix_cmd(*args: str) -> str:
        result = CliRunner().invoke(bayesmix_app, ["study", *args, "--storage", url])
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output and "np.float64" not in result.output
        return result.output

    bayesmix_cmd("create", str(config))
    out = bayesmix_cmd("run", "dry-run", "--no-progress")
    assert "8 completed, 0 failed" in out and "optimal mixture" in out
    out = bayesmix_cmd("status", "dry-run")
    assert "8 of 8 runs" in out
    out = bayesmix_cmd("report", "dry-run")
    assert "report.html" in out
    out = bayesmix_cmd("update", "dry-run", "--add", "code_rust:1.2e9")
    assert "v1 -> v2" in out
    out = bayesmix_cmd("run", "dry-run", "--budget", "12", "--no-progress")
    assert "12 completed, 0 failed" in out
    table = out[out.index("optimal mixture") :]
    assert "code_rust" in table and "expected objective" in table
    out = bayesmix_cmd("status", "dry-run")
    assert "12 of 12 runs" in out


def test_fit_options_carry_the_early_step_rule(tmp_path):
    """`fit.options.early_steps` reaches the fit: a study's runs lose their first half."""
    fit_section = {**FAST_FIT, "options": {**FAST_FIT["options"], "early_steps": 0.5}}
    path = dry_run_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["fit"] = {**config["fit"], **fit_section}
    path.write_text(yaml.safe_dump(config))
    study = Study.create(load_config(path), f"sqlite:///{tmp_path / 'early.db'}")
    run_batch(study, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = study.fit()
    obs = study.observations()
    assert obs is not None and obs.has_steps
    expected = len(obs) - len(obs.late_steps(0.5))
    assert expected > 0 and fit.posterior.info["early_rows"] == expected
    assert fit.posterior.settings.early_steps == 0.5
