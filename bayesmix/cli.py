"""The `bayesmix` command line: one typer app, each stage's commands mounted on it.

Every command fails with one clear line (``error: ...``, exit code 1) on bad input and prints
tables a person can read. Heavy imports (JAX, arviz, torch) happen inside the commands, so
``bayesmix --help`` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, get_type_hints

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bayesmix.acquisition import ACQUISITIONS
from bayesmix.errors import ArgumentError, BayesMixError
from bayesmix.laws import LAW_NAMES
from bayesmix.proxy.cli import proxy_app
from bayesmix.study.cli import study_app

if TYPE_CHECKING:
    from bayesmix.optimize import OptimalMixture
    from bayesmix.posterior import FittedLaw, Posterior

app = typer.Typer(
    help="bayesmix: the pretraining data mixture to use, with credible intervals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(proxy_app, name="proxy")
app.add_typer(study_app, name="study")

console = Console()
err = Console(stderr=True)

# Errors a user can cause with bad input: reported in one line, never as a traceback. Any
# other exception is a bug in bayesmix and shows its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (BayesMixError, FileNotFoundError)


def fail(message: str) -> NoReturn:
    """Print one clear error line and exit with status 1."""
    # Messages quote user input (paths, domain names with brackets): never parse it as markup.
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def parse_assignments(items: list[str] | None, what: str) -> dict[str, float]:
    """['web=0.1', 'code=0.2'] -> {'web': 0.1, 'code': 0.2}; a bad item is a clear error."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            fail(f"{what}: {item!r} is not domain=value")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            fail(f"{what}: {item!r}: {value!r} is not a number")
    return out


def mixture_table(frame, title: str, notes: dict[str, str] | None = None) -> Table:
    """A rich table of a frame of shares (one row per domain), formatted to 3 decimals, with a
    note column where ``notes`` (domain -> text) has any."""
    table = Table(title=title, title_justify="left")
    table.add_column("domain")
    for col in frame.columns:
        table.add_column(str(col), justify="right")
    if notes:
        table.add_column("note")
    for name, row in frame.iterrows():
        cells = [f"{v:.3f}" for v in row.to_numpy(dtype=float)]
        if notes:
            cells.append(escape(notes.get(str(name), "")))
        table.add_row(escape(str(name)), *cells)
    return table


@app.command("fit")
def fit_cmd(
    observations: Annotated[
        Path | None, typer.Argument(help="tidy table (.csv or .parquet); or --regmix/--olmix")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="posterior file to write (.nc)")
    ] = None,
    law: Annotated[
        str | None,
        typer.Option(
            help=f"{' | '.join(LAW_NAMES)}; default: bimix-cross (cross-scaling "
            "when runs of several model sizes are mixed)"
        ),
    ] = None,
    method: Annotated[str, typer.Option(help="nuts | laplace | svi | map")] = "nuts",
    metric: Annotated[
        str | None, typer.Option(help="metric to fit, if the table has several")
    ] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    regmix: Annotated[
        tuple[Path, Path] | None,
        typer.Option(help="RegMix's release instead of a tidy table: MIXTURE.csv LOSS.csv"),
    ] = None,
    olmix: Annotated[
        tuple[Path, Path] | None,
        typer.Option(help="Olmix's release instead of a tidy table: RATIOS.csv METRICS.csv"),
    ] = None,
) -> None:
    """Fit a data-mixing law to observations and save its posterior."""
    import bayesmix as bm

    inputs = [p for p in (observations, *(regmix or ()), *(olmix or ())) if p is not None]
    given = [what for what, v in (("a table", observations), ("--regmix", regmix),
                                  ("--olmix", olmix)) if v is not None]  # fmt: skip
    if len(given) != 1:
        fail(f"give exactly one of a tidy table, --regmix or --olmix (got {len(given)})")
    if out is None:
        fail("give the posterior file to write with -o/--out, e.g. -o post.nc")
    check_output_path(out, inputs)
    try:
        if regmix is not None:
            obs = bm.datasets.load_regmix(*regmix)
        elif olmix is not None:
            obs = bm.datasets.load_olmix(*olmix)
        else:
            obs = read_one_metric(observations, metric)
        if metric is not None and observations is None:
            obs = obs.select(metric=metric)
        post = bm.fit(obs, law=law, method=method, seed=seed)
        post.save(out)
    except USER_ERRORS as exc:
        fail(str(exc))
    except OSError as exc:  # the disk filled, or the folder went away during the fit
        out.with_name(out.name + ".tmp").unlink(missing_ok=True)
        fail(f"-o {out}: cannot write the posterior ({exc.strerror or exc})")
    console.print(f"{obs!r}")
    console.print(post.summary_line())
    console.print(f"posterior written to {out}")


def check_output_path(out: Path, inputs: list[Path]) -> None:
    """Refuse, before minutes of fitting, an output that cannot or must not be written."""
    if out.is_dir():
        fail(f"-o {out} is a folder; give a file name, e.g. -o {out / 'post.nc'}")
    if any(out.resolve() == p.resolve() for p in inputs):
        fail(f"-o {out} is an input file; writing the posterior there would overwrite it")
    folder = out.parent
    if not folder.is_dir():
        fail(f"-o {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        fail(f"-o {out}: folder {folder} is not writable")


def read_one_metric(path: Path, metric: str | None) -> Any:
    """The observations in ``path`` of ``metric``; a table of several metrics needs one named.

    Warnings of the read (ignored columns) are printed once, as ``warning:`` lines.
    """
    import bayesmix as bm
    from bayesmix.observations import ObservationsError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        obs = bm.Observations.read(path)
    for warning in caught:
        text = escape(str(warning.message))
        err.print(f"[yellow]warning:[/yellow] {text}", highlight=False, soft_wrap=True)
    if metric is None and len(obs.metrics) > 1:
        raise ObservationsError(
            f"{path} holds {len(obs.metrics)} metrics ({', '.join(obs.metrics)}): "
            "choose one with --metric"
        )
    return obs.select(metric=metric) if metric is not None else obs


# Options shared by the commands that take a user's constraints and objective.
TokenCountsOption = Annotated[
    Path | None, typer.Option(help="CSV with columns domain,token_count (repetition caps)")
]
TargetTokensOption = Annotated[float | None, typer.Option(help="tokens of the target run")]
MaxEpochsOption = Annotated[float | None, typer.Option(help="most epochs of any domain")]
LowerOption = Annotated[list[str] | None, typer.Option(help="domain=share lower bound")]
UpperOption = Annotated[list[str] | None, typer.Option(help="domain=share upper bound")]
WeightOption = Annotated[list[str] | None, typer.Option(help="target=weight of the objective")]


@dataclass(frozen=True)
class ObjectiveOptions:
    """The options above, as one parameter of a command (optimize, propose): typer has no
    groups of options, so ``with_objective_options`` gives the command each of them."""

    token_counts: TokenCountsOption = None
    target_tokens: TargetTokensOption = None
    max_epochs: MaxEpochsOption = None
    lower: LowerOption = None
    upper: UpperOption = None
    weight: WeightOption = None

    def constraints(self) -> Any:
        """bm.Constraints from the command-line options; a bad value is one clear error."""
        import bayesmix as bm

        counts = read_token_counts(self.token_counts) if self.token_counts is not None else None
        try:
            return bm.Constraints(
                lower=parse_assignments(self.lower, "--lower"),
                upper=parse_assignments(self.upper, "--upper"),
                token_counts=counts,
                target_tokens=self.target_tokens,
                max_epochs=self.max_epochs,
            )
        except USER_ERRORS as exc:
            fail(str(exc))

    def weights(self) -> dict[str, float] | None:
        """The objective's weight per target; None (equal weights) when none is given."""
        return parse_assignments(self.weight, "--weight") or None


def with_objective_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` as typer should see it: its ``ObjectiveOptions`` parameter spread into
    that class's options, in the parameter's place; the command still gets one object."""
    signature = inspect.signature(command, eval_str=True)
    (grouped,) = [p for p in signature.parameters.values() if p.annotation is ObjectiveOptions]
    hints = get_type_hints(ObjectiveOptions, include_extras=True)
    spread = [
        grouped.replace(name=f.name, default=f.default, annotation=hints[f.name])
        for f in fields(ObjectiveOptions)
    ]
    params = [q for p in signature.parameters.values() for q in (spread if p is grouped else [p])]

    @functools.wraps(command)
    def with_options(**given: Any) -> None:
        options = {f.name: given.pop(f.name) for f in fields(ObjectiveOptions)}
        command(**given, **{grouped.name: ObjectiveOptions(**options)})

    with_options.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return with_options


ModelSizeOption = Annotated[
    float | None,
    typer.Option(help="parameters of the model the mixture is for (a law with a size axis)"),
]
AverageLawsOption = Annotated[
    str | None,
    typer.Option(
        "--average-laws",
        help="e.g. bimix,bimix-cross: refit these laws by NUTS on the posterior's runs and "
        "use all of them, weighted by held-out fit (minutes)",
    ),
]


def average_of_laws(post: Posterior, spec: str, seed: int) -> Any:
    """``bm.average_laws`` of the laws named in ``spec``, refitted on ``post``'s runs."""
    import bayesmix as bm

    laws = [name.strip() for name in spec.split(",") if name.strip()]
    say(f"fitting {len(laws)} laws and comparing them")
    return bm.average_laws(post.observations, laws, seed=seed, progress=say)


@app.command("optimize")
@with_objective_options
def optimize_cmd(
    posterior: Annotated[Path, typer.Argument(help="posterior file written by `bayesmix fit`")],
    ci: Annotated[float, typer.Option(help="credible level of the intervals")] = 0.9,
    step: Annotated[float | None, typer.Option(help="training step to optimise at")] = None,
    model_size: ModelSizeOption = None,
    tokens: Annotated[
        float | None,
        typer.Option(
            help="training tokens of that model (instead of --step; the fit's runs "
            "must record tokens)"
        ),
    ] = None,
    objective: ObjectiveOptions = ObjectiveOptions(),
    strict: Annotated[bool, typer.Option(help="refuse a posterior that did not converge")] = False,
    average_laws: AverageLawsOption = None,
    seed: Annotated[int, typer.Option(help="random seed (--average-laws)")] = 0,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="PNG of the optimum against model size, from the fitted sizes to "
            "--model-size (default 100x the largest); a law with a size axis"
        ),
    ] = None,
) -> None:
    """The optimal mixture with credible intervals, under bounds and repetition caps; with
    --average-laws, the optimum of the laws' weighted average, intervals over every law."""
    import bayesmix as bm

    check_step(step)
    if tokens is not None and step is not None:
        fail("give --tokens or --step, not both")
    if model_size is not None and average_laws is not None:
        fail("--average-laws answers at the fitted model size; leave out --model-size")
    for name, value in (("--model-size", model_size), ("--tokens", tokens)):
        if value is not None and not (math.isfinite(value) and value > 0):
            fail(f"{name} must be a positive number, got {value:g}")
    cons = objective.constraints()
    weights = objective.weights()
    try:
        post = bm.Posterior.load(posterior)
        if tokens is not None:
            step = post.step_for_tokens(tokens)
        if average_laws is not None:
            post = average_of_laws(post, average_laws, seed)
        settings = dict(weights=weights, step=step, constraints=cons, ci=ci, strict=strict)
        if average_laws is None:
            opt = post.optimal_mixture(**settings, model_size=model_size)
        else:
            from bayesmix.acquisition import optimal_mixture  # torch: only for an average

            opt = optimal_mixture(post, **settings)
    except USER_ERRORS as exc:  # NotConvergedError (strict) among them
        fail(str(exc))
    console.print(post.summary_line() if average_laws is None else escape(str(post)))
    console.print(optimum_table(post, opt, ci))
    if unmeasured_domains(post):
        console.print(UNMEASURED_FOOTNOTE, highlight=False)
    if plot is not None:
        plot_optimum_by_size(post, plot, model_size, tokens, settings)
    lo, hi = opt.objective_interval
    if is_point_estimate(post):
        console.print(
            f"expected objective {opt.expected_objective:.4f} (point estimate: a MAP fit has no "
            "interval; fit by nuts or laplace for one)"
        )
    else:
        console.print(
            f"expected objective {opt.expected_objective:.4f} "
            f"({ci:.0%} interval {lo:.4f} to {hi:.4f})"
        )


def plot_optimum_by_size(
    post: FittedLaw,
    path: Path,
    model_size: float | None,
    tokens: float | None,
    settings: dict[str, Any],
) -> None:
    """Draw how the optimum moves with size up to ``model_size``, at the tokens per parameter
    of ``--tokens`` (else at the law's reference step), and print the shares per size."""
    import matplotlib

    matplotlib.use("Agg")
    from bayesmix.report import optimum_by_size, optimum_by_size_figure, size_range

    if not getattr(post, "has_sizes", False):
        fail("--plot draws the optimum against model size: the posterior has no size axis")
    per_parameter = tokens / model_size if tokens is not None and model_size else None
    objective = {k: settings[k] for k in ("weights", "constraints")}
    try:
        frame = optimum_by_size(
            post,
            size_range(post, model_size),
            tokens_per_parameter=per_parameter,
            ci=settings["ci"],
            **objective,
        )
    except USER_ERRORS as exc:
        fail(str(exc))
    fitted = sorted(post.observations.frame["model_size"].unique())
    path.write_bytes(optimum_by_size_figure(frame, fitted, settings["ci"]).png)
    table = frame.pivot(index="domain", columns="model_size", values="share")
    table.columns = [f"{c:.3g}" for c in table.columns]
    console.print(mixture_table(table.loc[post.domains], "optimal share by model size", {}))
    console.print(f"wrote {path}", highlight=False)


def is_point_estimate(post: FittedLaw) -> bool:
    """A MAP fit is one draw: its 'intervals' have zero width and mean nothing."""
    return getattr(post, "method", None) == "map"


def unmeasured_domains(post: FittedLaw) -> list[str]:
    """Domains no target measures, under an own-share law: nothing in the data speaks for
    them, so the optimum keeps them at their lower bound (0 without one)."""
    from bayesmix.laws import get_law

    if not hasattr(post, "law") or not get_law(post.law).own_share:
        return []
    measured = set(post.observations.target_domain.values())
    return [d for d in post.domains if d not in measured]


def optimum_table(post: FittedLaw, opt: OptimalMixture, ci: float) -> Table:
    """The optimal mixture per domain, saying why a share is what it is where the numbers
    alone mislead: a MAP's point estimate, a domain the own-share law cannot see."""
    frame = opt.as_frame().rename(columns={"lo": f"lo {ci:.0%}", "hi": f"hi {ci:.0%}"})
    title = f"optimal mixture ({opt.solver})"
    if is_point_estimate(post):  # no interval columns: they would all have zero width
        frame = frame[["recommended"]].rename(columns={"recommended": "MAP point estimate"})
    note = "no target measures it (*)"
    return mixture_table(frame, title, {d: note for d in unmeasured_domains(post)})


UNMEASURED_FOOTNOTE = (
    "(*) the own-share law sees a domain only through the target that measures it; a domain "
    "no target measures is kept at its lower bound, as nothing in the data says what it is "
    "worth. Give it a --lower bound, or fit --law bimix-cross, which sees every share."
)


@app.command("propose")
@with_objective_options
def propose_cmd(
    posterior: Annotated[Path, typer.Argument(help="posterior file written by `bayesmix fit`")],
    q: Annotated[int, typer.Option("--q", help="runs to propose (one batch)")] = 8,
    acq: Annotated[str, typer.Option("--acq", help=" | ".join(ACQUISITIONS))] = "optimum-variance",
    step: Annotated[float | None, typer.Option(help="target step of the objective")] = None,
    objective: ObjectiveOptions = ObjectiveOptions(),
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    run_lengths: Annotated[
        str | None,
        typer.Option(
            "--run-lengths",
            help="e.g. 2500,5000,10000: let optimum-variance choose each run's length "
            "(steps), spending the compute of q target-length runs",
        ),
    ] = None,
    model_size: ModelSizeOption = None,
    model_sizes: Annotated[
        str | None,
        typer.Option(
            "--model-sizes",
            help="e.g. 1e6,6e7: let optimum-variance choose each run's model size, "
            "pricing runs at 6 N D FLOPs (a law with a size axis)",
        ),
    ] = None,
    tokens: Annotated[
        float | None,
        typer.Option(help="tokens each run trains (with --model-sizes, a law without steps)"),
    ] = None,
    flops: Annotated[
        float | None, typer.Option(help="the batch's budget in FLOPs (with --model-sizes)")
    ] = None,
    average_laws: AverageLawsOption = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the batch as CSV")] = None,
) -> None:
    """The next q proxy runs to train, each with its expected gain."""
    import torch

    import bayesmix as bm
    from bayesmix.acquisition import propose

    check_step(step)
    cons = objective.constraints()
    weights = objective.weights()
    torch.set_num_threads(1)  # small tensors: threads only add contention
    try:
        post = bm.Posterior.load(posterior)
        post.check_usable()
        lengths = parse_numbers(run_lengths, "--run-lengths", "numbers of steps")
        sizes = parse_numbers(model_sizes, "--model-sizes", "parameter counts")
        if average_laws is not None:
            post = average_of_laws(post, average_laws, seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            batch = propose(
                post,
                q,
                acq,
                weights=weights,
                step=step,
                constraints=cons,
                seed=seed,
                run_lengths=lengths,
                model_size=model_size,
                model_sizes=sizes,
                tokens=tokens,
                flops=flops,
            )
    except USER_ERRORS as exc:
        fail(str(exc))
    for warning in caught:
        err.print(f"[yellow]warning:[/yellow] {escape(str(warning.message))}", highlight=False)
    console.print(post.summary_line() if average_laws is None else escape(str(post)))
    shares = batch[[f"r:{d}" for d in post.domains]].T
    shares.index = list(post.domains)
    shares.columns = [f"run {i + 1}" for i in range(len(batch))]
    console.print(mixture_table(shares, f"{len(batch)} proposed runs ({acq})"))
    gains = "  ".join(
        f"run {i + 1}: {g:.4f}" for i, g in enumerate(batch["expected_gain"].to_numpy())
    )
    console.print(f"expected gain over the best observed run (objective units): {gains}")
    if "steps" in batch:
        lengths_text = "  ".join(f"run {i + 1}: {s:g}" for i, s in enumerate(batch["steps"]))
        console.print(f"run lengths (steps): {lengths_text}")
    if "model_size" in batch:
        sizes_text = "  ".join(
            f"run {i + 1}: {n:.3g} ({c:.3g} FLOPs)"
            for i, (n, c) in enumerate(zip(batch["model_size"], batch["flops"], strict=True))
        )
        console.print(f"model sizes (parameters): {sizes_text}")
    if out is not None:
        batch.to_csv(out, index=False)
        console.print(f"proposals written to {out}")


@app.command("check-steps")
def check_steps_cmd(
    observations: Annotated[Path, typer.Argument(help="tidy table (.csv or .parquet)")],
    short: Annotated[
        float | None, typer.Option(help="early step (default: the smallest recorded)")
    ] = None,
    long: Annotated[float | None, typer.Option(help="late step (default: the largest)")] = None,
    metric: Annotated[
        str | None, typer.Option(help="metric to check, if the table has several")
    ] = None,
) -> None:
    """Do short runs show the mixture's effect that long ones do? (before --run-lengths)"""
    from bayesmix.separability import check_separability

    try:
        check = check_separability(read_one_metric(observations, metric), short, long)
    except USER_ERRORS as exc:
        fail(str(exc))
    console.print(
        f"log exponent at step {check.short_step:g} minus at {check.long_step:g}, per target",
        soft_wrap=True,
    )
    table = Table()
    for col in ("target", "mean", "sd", "z"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for name, row in check.log_ratio.iterrows():
        table.add_row(str(name), *(f"{v:.3f}" for v in row.to_numpy(dtype=float)))
    console.print(table)
    console.print(str(check), highlight=False, soft_wrap=True)


@app.command("compare-laws")
def compare_laws_cmd(
    observations: Annotated[Path, typer.Argument(help="tidy table (.csv or .parquet)")],
    laws: Annotated[
        str, typer.Option(help="candidate laws, comma-separated, the default first")
    ] = "bimix,bimix-cross",
    method: Annotated[
        str,
        typer.Option(
            help="loo (one NUTS fit per law, Pareto-smoothed leave-one-run-out; the fastest "
            "with intervals) | K folds fitted by nuts (posterior, K fits per law) or map "
            "(fast, plug-in)"
        ),
    ] = "loo",
    folds: Annotated[
        int, typer.Option(help="K folds (runs held out together); loo: most refits per law")
    ] = 5,
    metric: Annotated[
        str | None, typer.Option(help="metric to compare on, if the table has several")
    ] = None,
    seed: Annotated[int, typer.Option(help="random seed of the folds")] = 0,
) -> None:
    """Which law predicts held-out runs best? (cross-validation by run)"""
    from bayesmix.selection import compare_laws

    candidates = [name.strip() for name in laws.split(",") if name.strip()]
    try:
        obs = read_one_metric(observations, metric)
        fits = "once, and influential runs again" if method == "loo" else f"x {folds} folds"
        say(f"fitting {len(candidates)} laws {fits} ({method}) on {obs!r}")
        comparison = compare_laws(
            obs, candidates, method=method, folds=folds, seed=seed, progress=say
        )
    except USER_ERRORS as exc:
        fail(str(exc))
    console.print(str(comparison), highlight=False, soft_wrap=True)


def say(line: str) -> None:
    """A progress line on stderr (stdout keeps the results)."""
    err.print(escape(line), highlight=False, soft_wrap=True)


def parse_numbers(text: str | None, flag: str, what: str) -> list[float] | None:
    """ "2500,5000,10000" -> [2500.0, 5000.0, 10000.0]; one clear error for anything else."""
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ArgumentError(f"{flag} must be comma-separated {what}, got {text!r}") from None


def read_token_counts(path: Path) -> dict[str, float]:
    """domain,token_count CSV -> mapping; one clear error for a missing file or column, a
    domain listed twice, or a count that is not a positive number (naming its line)."""
    import numpy as np
    import pandas as pd

    if not path.is_file():
        fail(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, dtype={"domain": str, "token_count": str})
    except Exception as exc:  # pandas raises many types for unreadable files
        fail(f"{path}: cannot be read as CSV ({exc})")
    if not {"domain", "token_count"} <= set(frame.columns):
        fail(
            f"{path}: expected columns domain,token_count, got {', '.join(map(str, frame.columns))}"
        )
    domains = frame["domain"].fillna("").str.strip()
    twice = sorted(set(domains[domains.duplicated()]))
    if twice:
        fail(f"{path}: domain(s) {', '.join(twice)} listed more than once (one row per domain)")
    counts = pd.to_numeric(frame["token_count"].str.strip(), errors="coerce").to_numpy(float)
    bad = ~np.isfinite(counts) | (counts <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        given = frame["token_count"].iloc[i]
        shown = "(empty)" if pd.isna(given) else repr(given)
        fail(
            f"{path}, line {i + 2} (domain {domains.iloc[i]!r}): token_count {shown} "
            "is not a positive number of tokens"
        )
    return dict(zip(domains, counts.tolist(), strict=True))


def check_step(step: float | None) -> None:
    """--step is a training step (or token count) of the law: positive and finite."""
    if step is not None and not (math.isfinite(step) and step > 0):
        fail(f"--step must be a positive number of training steps, got {step:g}")


# `bayesmix proxy entropy` is registered here, not in bayesmix.proxy.cli: BiMix's entropy
# mixture is a proposer's (bayesmix.proposers.swarms), a layer above the proxy package.
@proxy_app.command("entropy")
def entropy_cmd(
    shards: Annotated[Path, typer.Option(help="shard folder written by `prepare`")],
    kind: Annotated[str, typer.Option(help="conditional | shannon | joint")] = "conditional",
) -> None:
    """BiMix's entropy mixture r = softmax(H): a first design with no proxy run."""
    from bayesmix.proposers.swarms import entropy_mixture
    from bayesmix.proxy.entropy import domain_entropies

    try:
        h = domain_entropies(shards)
        r = entropy_mixture(shards, kind=kind)
    except BayesMixError as exc:
        fail(str(exc))
    t = Table("domain", "shannon", "conditional", "joint", f"r ({kind})")
    for d in r.index:
        t.add_row(
            d,
            f"{h.loc[d, 'shannon']:.3f}",
            f"{h.loc[d, 'conditional']:.3f}",
            f"{h.loc[d, 'joint']:.3f}",
            f"{r[d]:.4f}",
        )
    console.print(t)


@app.command("demo")
def demo_cmd(
    folder: Annotated[Path, typer.Option("--dir", help="folder for the demo's files")] = Path(
        "bayesmix-demo"
    ),
    fresh: Annotated[bool, typer.Option(help="start over instead of resuming")] = False,
    budget: Annotated[int | None, typer.Option(help="proxy runs (default: the demo's)")] = None,
) -> None:
    """A whole study on the built-in sample corpus: proxies, fit, proposals, report."""
    from sqlalchemy.exc import SQLAlchemyError

    from bayesmix.study.demo import run_demo

    if budget is not None and budget < 1:
        fail(f"--budget must be a positive number of runs, got {budget}")
    try:
        run_demo(folder, fresh=fresh, budget=budget, progress=err.is_terminal, console=err)
    except (*USER_ERRORS, SQLAlchemyError) as exc:
        from rich.markup import escape

        text = str(exc).strip()
        fail(escape(text.splitlines()[0]) if text else type(exc).__name__)
    except KeyboardInterrupt:
        fail("interrupted; `bayesmix demo` again resumes where it stopped")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
