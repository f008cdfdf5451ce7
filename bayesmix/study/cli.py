"""`bayesmix study ...`: create, run, resume, ask, tell, status, report, list, update,
save-model.

Every command takes ``--storage URL`` (default: $BAYESMIX_STORAGE, else sqlite:///bayesmix.db
in the working directory) and fails with one ``error: ...`` line on bad input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bayesmix.errors import BayesMixError

study_app = typer.Typer(
    help="Studies: a persistent, resumable active-learning loop (create, run, resume, ...).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

DEFAULT_STORAGE = "sqlite:///bayesmix.db"
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage", help="database URL (default: $BAYESMIX_STORAGE or sqlite:///bayesmix.db)"
    ),
]
# The options of the commands that run a study's loop (run, resume).
ExecutorOpt = Annotated[str | None, typer.Option(help="local | ray (default: the config's)")]
ProgressOpt = Annotated[bool, typer.Option(help="progress bars")]


def fail(message: str) -> NoReturn:
    # Escaped: messages quote user input and lists, and rich would eat '[...]' as markup.
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def storage_url(given: str | None) -> str:
    return given or os.environ.get("BAYESMIX_STORAGE") or DEFAULT_STORAGE


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors bad input causes: reported in one line, never as a traceback. The database's own
    errors (a storage URL that does not connect) are the user's to fix too; any other
    exception is a bug in bayesmix and shows its traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    return (BayesMixError, FileNotFoundError, SQLAlchemyError)


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _open(name: str, storage: str | None):  # -> Study
    from bayesmix.study.study import Study

    return Study.load(name, storage_url(storage))


@study_app.command("create")
def create_cmd(
    config: Annotated[Path, typer.Argument(help="the study's YAML file")],
    storage: StorageOpt = None,
    allow_foreign_tables: Annotated[
        bool,
        typer.Option(
            "--allow-foreign-tables",
            help="store the study in a database that holds other tools' tables too",
        ),
    ] = False,
) -> None:
    """Validate a study config, prepare its data, and store the new study."""
    from bayesmix.study.study import Study

    try:
        study = Study.create(
            config,
            storage_url(storage),
            progress=err.is_terminal,
            allow_foreign_tables=allow_foreign_tables,
        )
    except user_errors() as exc:
        fail(_one_line(exc))
    dset = study.domain_set
    natural = dset.natural
    table = Table(
        title=f"study {study.name} created in {study.storage.safe_url}", title_justify="left"
    )
    table.add_column("domain")
    table.add_column("tokens", justify="right")
    table.add_column("natural share", justify="right")
    for d in dset.domains:
        count = dset.token_counts.get(d)
        table.add_row(d, f"{count:,.0f}" if count else "-", f"{natural[d]:.3f}")
    console.print(table)
    cfg = study.config
    warm = study.warm_start
    first = cfg.proposer.first if warm is None else f"{cfg.proposer.name}, warm"
    if warm is not None:
        console.print(
            f"warm start: {warm['source']} ({warm['law']}; {warm['describe']})", highlight=False
        )
    console.print(
        f"budget {cfg.budget_label} in batches of {cfg.batch_size}; proposer {cfg.proposer.name} "
        f"(first batch: {first}); law {cfg.fit.law_label} ({cfg.fit.method}); "
        f"trainer {cfg.proxy.trainer}; executor {cfg.executor.kind}; files in {study.workdir}",
        highlight=False,
    )
    from bayesmix.study.trainers import TRAINERS

    told = TRAINERS[cfg.proxy.trainer].refusal(study.name) is not None  # trained elsewhere
    step = f"ask {study.name} --out runs.csv" if told else f"run {study.name}"
    console.print(f"next: bayesmix study {step}", highlight=False)


def _run(
    name: str,
    storage: str | None,
    budget: int | None,
    executor: str | None,
    progress: bool,
    resume: bool = False,
) -> None:
    from bayesmix.study.loop import run_study

    if budget is not None and budget < 1:
        fail(f"--budget must be a positive number of runs, got {budget}")
    if executor is not None and executor not in ("local", "ray"):
        fail(f"--executor must be local or ray, got {executor!r}")
    try:
        study = _open(name, storage)
        failed_before = study.counts()["failed"]
        if resume:
            counts = study.counts()
            console.print(
                f"resuming {study.name}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
                if any(counts.values())
                else f"resuming {study.name}: no run yet",
                highlight=False,
            )
        result = run_study(
            study,
            budget=budget,
            executor=executor,
            progress=progress and err.is_terminal,
            console=err,
        )
    except user_errors() as exc:
        fail(_one_line(exc))
    except KeyboardInterrupt:
        fail(f"interrupted; `bayesmix study resume {name}` continues where it stopped")
    counts = result.counts
    console.print(
        f"study {study.name}: {counts['completed']} completed, {counts['failed']} failed",
        highlight=False,
    )
    if result.fit is not None:
        print_optimum(study, result.fit.snapshot)
        if study.config.report:
            from bayesmix.report import write_report

            try:
                path = write_report(study)
            except user_errors() as exc:
                fail(f"report: {_one_line(exc)}")
            console.print(f"report: {path}", highlight=False)
    # A script (or CI) that runs a study must notice failed runs: they cost their compute
    # and left holes in the design.
    new_failures = counts["failed"] - failed_before
    if new_failures > 0:
        first = study.runs("failed")[-new_failures]
        fail(
            f"{new_failures} run(s) failed, first {first.name}: {first.reason}; "
            f"`bayesmix study status {name}` lists every reason"
        )


@study_app.command("run")
def run_cmd(
    name: Annotated[str, typer.Argument(help="study name")],
    storage: StorageOpt = None,
    budget: Annotated[
        int | None, typer.Option(help="total runs of the study (default: the config's budget)")
    ] = None,
    executor: ExecutorOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Run the active-learning loop until the study has its budget of runs."""
    _run(name, storage, budget, executor, progress)


@study_app.command("resume")
def resume_cmd(
    name: Annotated[str, typer.Argument(help="study name")],
    storage: StorageOpt = None,
    budget: Annotated[int | None, typer.Option(help="total runs of the study")] = None,
    executor: ExecutorOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Continue a stopped or killed study: dead workers' runs are re-queued once, then failed."""
    _run(name, storage, budget, executor, progress, resume=True)


@study_app.command("ask")
def ask_cmd(
    name: Annotated[str, typer.Argument(help="study name")],
    storage: StorageOpt = None,
    q: Annotated[
        int | None,
        typer.Option(
            "--q", help="runs to propose (default: the first batch's size, then batch_size)"
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="also write the runs to this CSV (run_id, steps, seed, r:<domain>)"
        ),
    ] = None,
) -> None:
    """Propose runs to train elsewhere (trainer 'external', or a study driven by hand); fits
    the law first when the proposer needs it. `study tell` then stores their losses."""
    import pandas as pd

    if q is not None and q < 1:
        fail(f"--q must be a positive number of runs, got {q}")
    try:
        study = _open(name, storage)
        cfg = study.config
        first = not study.runs()
        size = q or ((cfg.proposer.first_batch or cfg.batch_size) if first else cfg.batch_size)
        fit = None
        if study.counts()["completed"] and cfg.needs_posterior:
            n = study.counts()["completed"]
            label = f"fitting {cfg.fit.law_label} ({cfg.fit.method}) on {n} run(s)"
            err.print(label, highlight=False)
            fit = study.fit(progress=err.is_terminal and cfg.fit.method == "nuts")
        runs = study.ask(size, fit)
    except user_errors() as exc:
        fail(_one_line(exc))
    frame = study.runs_frame()
    for table in runs_tables(frame[frame["run_id"].isin([r.name for r in runs])], console.width):
        console.print(table)
    if out is not None:
        rows = [
            {"run_id": r.name, "steps": r.steps, "seed": r.seed}
            | ({} if r.model_size is None else {"model_size": r.model_size})
            | {f"r:{d}": r.mixture.get(d, 0.0) for d in study.domains}
            for r in runs
        ]
        try:
            pd.DataFrame(rows).to_csv(out, index=False)
        except OSError as exc:
            fail(f"--out {out}: {exc.strerror or exc}")
        console.print(f"runs written to {out}", highlight=False)
    console.print(
        f"next: train the {len(runs)} run(s) (each at its steps, with its mixture), then "
        f"bayesmix study tell {study.name} results.csv",
        highlight=False,
    )


@study_app.command("tell")
def tell_cmd(
    name: Annotated[str, typer.Argument(help="study name")],
    table: Annotated[
        Path,
        typer.Argument(
            help="tidy CSV or Parquet: run_id, target, value (step, tokens, metric, r:<domain> "
            "optional)"
        ),
    ],
    run: Annotated[
        str | None, typer.Option(help="the run every row belongs to (a table without run_id)")
    ] = None,
    storage: StorageOpt = None,
) -> None:
    """Store the losses of runs trained elsewhere: all or none, as every run's rows are
    checked before any is stored."""
    import pandas as pd

    if not table.is_file():
        fail(f"{table}: no such file")
    try:
        frame = pd.read_parquet(table) if table.suffix == ".parquet" else pd.read_csv(table)
    except (ValueError, OSError, UnicodeDecodeError) as exc:  # pandas' parse errors too
        fail(f"{table}: not a readable CSV or Parquet table ({_one_line(exc)})")
    if run is not None:
        if "run_id" not in frame.columns:
            frame["run_id"] = run
        elif set(frame["run_id"].astype(str)) != {run}:
            fail(f"{table}: --run {run}, but its run_id column names other runs too")
    try:
        study = _open(name, storage)
        names = study.tell_table(frame)
        counts = study.counts()
    except user_errors() as exc:
        fail(f"{table}: {_one_line(exc)}; nothing was stored")
    waiting = counts["proposed"] + counts["running"]
    console.print(
        f"told {len(names)} run(s) ({', '.join(names)}); study {study.name}: "
        f"{counts['completed']} completed, {waiting} still to tell",
        highlight=False,
    )
    if not waiting:
        console.print(f"next: bayesmix study ask {study.name} --out runs.csv", highlight=False)


def print_optimum(study, snapshot: int | None = None) -> None:  # study: Study
    snaps = study.storage.posteriors(study.id)
    if not snaps:
        console.print("no posterior yet")
        return
    snap = next((s for s in snaps if s.id == snapshot), snaps[-1])
    s = snap.summary
    ci = s.get("ci", 0.9)
    natural = study.natural()
    table = Table(
        title=f"optimal mixture ({snap.law}, {snap.method}, {snap.n_runs} runs)",
        title_justify="left",
    )
    for col in ("domain", "share", f"lo {ci:.0%}", f"hi {ci:.0%}", "natural", "uniform"):
        table.add_column(col, justify="left" if col == "domain" else "right")
    m = len(s["mixture"])
    for d, share in s["mixture"].items():
        iv = s["intervals"][d]
        table.add_row(
            d,
            f"{share:.3f}",
            f"{iv['lo']:.3f}",
            f"{iv['hi']:.3f}",
            f"{natural[d]:.3f}",
            f"{1 / m:.3f}",
        )
    console.print(table)
    lo, hi = s["objective_interval"]
    console.print(
        f"expected objective {s['expected_objective']:.4f} "
        f"({ci:.0%} interval {lo:.4f} to {hi:.4f})",
        highlight=False,
    )
    if s["method"] == "nuts":
        state = "converged" if s["converged"] else "did NOT converge: intervals not to be trusted"
        console.print(
            f"NUTS {state} (max r_hat {s['max_r_hat']}, min ess_bulk {s['min_ess_bulk']}, "
            f"{s['divergences']} divergences)",
            highlight=False,
        )
    else:
        state = (
            "intervals are those of the approximation"
            if s["converged"]
            else "its optimisation did NOT converge: intervals not to be trusted"
        )
        console.print(
            f"approximate posterior ({s['method']}): no chains, so no R-hat; {state}",
            highlight=False,
        )


@study_app.command("status")
def status_cmd(
    name: Annotated[str, typer.Argument(help="study name")],
    storage: StorageOpt = None,
    runs: Annotated[int, typer.Option(help="show the last N runs")] = 20,
) -> None:
    """Runs by status, the last runs, and the latest optimal mixture."""
    try:
        study = _open(name, storage)
        counts = study.counts()
        frame = study.runs_frame()
    except user_errors() as exc:
        fail(_one_line(exc))
    used = study.config.spent_label(list(frame.itertuples()))  # rows carry steps and sizes
    console.print(
        f"study {study.name} ({study.storage.safe_url}): {used}; "
        + ", ".join(f"{v} {k}" for k, v in counts.items()),
        highlight=False,
    )
    if len(frame):
        shown = frame.tail(runs)
        for table in runs_tables(shown, console.width):
            console.print(table)
        failed = shown[shown["status"] == "failed"]
        if len(failed):
            console.print("why the runs failed:", highlight=False)
        for _, r in failed.iterrows():
            # The whole reason, wrapped at the terminal's width (a cut reason hides its cause).
            console.print(
                Text(f"  {r['run_id']}: {r['reason'] or 'no reason recorded'}", overflow="fold")
            )
    print_optimum(study)


def runs_tables(frame, width: int) -> list[Table]:  # frame: Study.runs_frame()
    """The runs as tables no wider than ``width``: the run columns, then the mixture's
    columns in as many tables (each led by the run's name) as it takes to show every header
    whole, instead of rich's cut headers ("propos…")."""
    domains = [c for c in frame.columns if c.startswith("r:")]

    def acq(v: object) -> str:
        return "-" if v is None or v != v else f"{v:.3g}"

    columns: list[tuple[str, list[str]]] = [
        ("run", list(frame["run_id"])),
        ("proposal", [str(v) for v in frame["proposal"]]),
        ("status", list(frame["status"])),
        ("attempts", [str(v) for v in frame["attempts"]]),
        ("acq.", [acq(v) for v in frame["acquisition_value"]]),
        *((c[2:], [f"{v:.3f}" for v in frame[c]]) for c in domains),
    ]
    if "model_size" in frame.columns:  # runs of several sizes: which one to train
        columns.insert(4, ("size", [f"{v:.3g}" for v in frame["model_size"]]))

    def need(col: tuple[str, list[str]]) -> int:  # content, padding and one border
        return max(len(col[0]), *(len(x) for x in col[1])) + 3

    groups: list[list[tuple[str, list[str]]]] = [[]]
    used = 1
    for col in columns:
        if groups[-1] and used + need(col) > width:
            groups.append([columns[0]])  # each further table names its runs
            used = 1 + need(columns[0])
        groups[-1].append(col)
        used += need(col)
    tables = []
    for i, group in enumerate(groups):
        title = f"last {len(frame)} runs" + (f" (continued, {i + 1})" if i else "")
        table = Table(title=title, title_justify="left")
        for header, _ in group:
            left = header in ("run", "status")
            table.add_column(header, justify="left" if left else "right", no_wrap=True)
        for k in range(len(frame)):
            table.add_row(*(cells[k] for _, cells in group))
        tables.append(table)
    return tables


@study_app.command("report")
def report_cmd(
    name: Annotated[str, typer.Argument(help="study name")],
    storage: StorageOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="folder (default: <workdir>/report)")
    ] = None,
) -> None:
    """Write the study's HTML report (self-contained) and its PNG figures."""
    from bayesmix.report import write_report

    try:
        study = _open(name, storage)
        path = write_report(study, out)
    except user_errors() as exc:
        fail(_one_line(exc))
    console.print(f"report: {path}", highlight=False)


@study_app.command("update")
def update_cmd(
    name: Annotated[str, typer.Argument(help="study name")],
    add: Annotated[
        list[str] | None, typer.Option("--add", help="new domain with its tokens: code_rust:1.2e9")
    ] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="domain to remove")] = None,
    split: Annotated[
        list[str] | None,
        typer.Option("--split", help="parent=part:tokens,part:tokens (parts sum to the parent)"),
    ] = None,
    merge: Annotated[
        list[str] | None, typer.Option("--merge", help="a,b=merged (tokens: their sum)")
    ] = None,
    revise: Annotated[
        list[str] | None, typer.Option("--revise", help="domain whose content changed [:tokens]")
    ] = None,
    prior: Annotated[
        Path | None,
        typer.Option("--prior", help="saved posterior (models/NAME) to start from instead"),
    ] = None,
    law_value: Annotated[
        list[str] | None,
        typer.Option(
            "--law-value",
            help="trainer 'law': a domain's known-law value, code_rust:alpha=0.15 "
            "(default: its parent's, its sources' mean, or the old domains' mean)",
        ),
    ] = None,
    storage: StorageOpt = None,
) -> None:
    """Change the study's domain set (a new version): the old posterior becomes the prior."""
    from bayesmix.domains import DomainUpdate

    values = _law_values(law_value or [])
    try:
        upd = DomainUpdate.parse(
            add=add or [],
            remove=remove or [],
            split=split or [],
            merge=merge or [],
            revise=revise or [],
        )
        study = _open(name, storage)
        old = study.domain_set
        rec = study.update(upd, prior=prior, law_values=values)
    except user_errors() as exc:
        fail(_one_line(exc))
    table = Table(
        title=f"study {study.name}: domain set v{old.version} -> v{rec.version} ({upd.describe()})",
        title_justify="left",
    )
    table.add_column("domain")
    table.add_column("tokens", justify="right")
    table.add_column("natural share", justify="right")
    natural = rec.natural
    for d in rec.domains:
        count = rec.token_counts.get(d)
        table.add_row(d, f"{count:,.0f}" if count else "-", f"{natural[d]:.3f}")
    console.print(table)
    source = f"the saved posterior {prior}" if prior else "the study's latest posterior"
    console.print(
        f"the next fit starts from {source} (bayesmix.reuse); next: bayesmix study run {name}",
        highlight=False,
    )


def _law_values(specs: list[str]) -> dict[str, dict[str, float]]:
    """'code_rust:alpha=0.15' -> {'code_rust': {'alpha': 0.15}} (domain names may hold ':')."""
    out: dict[str, dict[str, float]] = {}
    for spec in specs:
        left, eq, text = spec.partition("=")
        domain, colon, key = left.strip().rpartition(":")
        if not (eq and colon and domain and key):
            fail(f"--law-value {spec!r}: expected DOMAIN:KEY=VALUE, as in code_rust:alpha=0.15")
        try:
            value = float(text)
        except ValueError:
            fail(f"--law-value {spec!r}: {text.strip()!r} is not a number")
        out.setdefault(domain, {})[key.strip()] = value
    return out


@study_app.command("save-model")
def save_model_cmd(
    name: Annotated[str, typer.Argument(help="study name")],
    out: Annotated[Path, typer.Argument(help="folder, e.g. models/NAME")],
    data: Annotated[str, typer.Option(help="one line on the data behind the runs")] = "",
    storage: StorageOpt = None,
) -> None:
    """Save the study's latest posterior with a model card, to serve as a later prior."""
    from bayesmix.reuse import save_model

    try:
        study = _open(name, storage)
        latest = study.latest_posterior()
        if latest is None:
            fail(f"study {name!r} has no posterior yet: run it first")
        post, _ = latest
        version = study.domain_set.version
        text = data or f"study {study.name} ({study.storage.safe_url}), domain set v{version}"
        folder = save_model(post, out, data=text, token_counts=study.domain_set.token_counts)
    except user_errors() as exc:
        fail(_one_line(exc))
    console.print(f"model: {folder} (posterior.nc, MODEL_CARD.md)", highlight=False)


@study_app.command("list")
def list_cmd(storage: StorageOpt = None) -> None:
    """The studies in a storage."""
    from bayesmix.study.storage import Storage

    try:
        store = Storage(storage_url(storage), create=False)
        studies = store.studies()
        table = Table("study", "runs", "completed", "failed", "budget", title=store.safe_url)
        for s in studies:
            runs = store.runs(s.id)
            done = sum(r.status == "completed" for r in runs)
            failed = sum(r.status == "failed" for r in runs)
            table.add_row(s.name, str(len(runs)), str(done), str(failed), str(s.config["budget"]))
    except user_errors() as exc:
        fail(_one_line(exc))
    console.print(table)


if __name__ == "__main__":
    study_app()
