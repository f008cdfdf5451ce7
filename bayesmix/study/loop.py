"""The active-learning loop a driver runs: fit, ask, execute, repeat until the budget is spent.

Batches are synchronous: the next proposal is asked for only when every run of the last one
has ended (completed or failed), so each proposal depends on a definite set of observations
and the same study with the same seed proposes the same runs, however its runs were timed.

The loop keeps nothing that the storage does not: killed at any point and started again
(``bayesmix study resume``), it releases the runs whose workers died (re-queued once, then
failed), re-runs what is proposed, and reuses the posterior snapshot of the same runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bayesmix.study.executors import Executor, Finished, make_executor
from bayesmix.study.study import Fit, Study, StudyError
from bayesmix.study.trainers import TRAINERS

POLL_SECONDS = 0.3


@dataclass
class LoopResult:
    counts: dict[str, int]
    fit: Fit | None
    events: list[str]


def run_study(
    study: Study,
    budget: float | None = None,
    executor: str | Executor | None = None,
    *,
    progress: bool = True,
    console: Console | None = None,
    final_fit: bool = True,
    on_event: Callable[[str], None] | None = None,
) -> LoopResult:
    """Run ``study`` until it has spent ``budget`` runs (default: its config's), all ended.

    ``budget`` counts compute in runs of the target length (``proxy.steps``) at the largest
    model size offered: a run of a quarter of the steps (``proposer.options.run_lengths``)
    or of a tenth of the parameters (``model_sizes``) costs a quarter or a tenth of one; a
    config's budget in FLOPs or GPU-hours is converted to those units. Every
    run counts, completed or failed, as Optuna's n_trials counts failed trials: a run that
    failed still cost its compute.
    """
    cfg = study.config
    refusal = TRAINERS[cfg.proxy.trainer].refusal(study.name)
    if refusal is not None:  # runs trained elsewhere: asked for and told, never run here
        raise StudyError(refusal)
    budget = float(budget if budget is not None else cfg.budget_runs)
    if not budget > 0:
        raise StudyError(f"budget must be a positive number of runs, got {budget:g}")
    study.extend_budget(budget)  # stored: status must not later count "16 of 12 runs"
    cfg = study.config
    console = console or Console(stderr=True)
    events: list[str] = []

    def say(msg: str) -> None:
        events.append(msg)
        if on_event is not None:
            on_event(msg)
        if progress:
            bar.console.print(msg, highlight=False)
        else:
            console.print(msg, highlight=False)

    ex = (
        executor
        if executor is not None and not isinstance(executor, str)
        else make_executor(executor or cfg.executor.kind, study.storage.url, study.name, cfg)
    )
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
        transient=False,
    )
    task = bar.add_task(f"study {study.name}", total=budget, state="")
    in_flight: set[str] = set()
    last_fit: Fit | None = None
    try:
        with bar if progress else nullcontext():
            while True:
                for name, status in study.release_dead():
                    verb = "re-queued" if status == "proposed" else "failed"
                    say(f"run {name}: worker died; {verb}")
                for done in ex.poll():
                    in_flight.difference_update(done.task.names)
                    _after_task(study, done, say)
                runs = study.runs()
                counts = _count(runs)
                ended = cfg.spent([r for r in runs if r.status in ("completed", "failed")])
                bar.update(
                    task,
                    completed=min(ended, budget),
                    state=f"{counts['running']} running, {counts['failed']} failed",
                )
                waiting = [r for r in runs if r.status == "proposed" and r.name not in in_flight]
                active = counts["proposed"] + counts["running"] + len(in_flight)
                if active == 0:
                    if cfg.spent(runs) >= budget - 1e-9:
                        break
                    last_fit = _next_batch(study, runs, budget, last_fit, bar, progress, say)
                    continue
                free = ex.slots - ex.busy
                pack = cfg.executor.pack
                while waiting and free > 0:
                    group, waiting = waiting[:pack], waiting[pack:]
                    ex.submit([r.name for r in group])
                    in_flight.update(r.name for r in group)
                    free -= 1
                time.sleep(POLL_SECONDS)
    finally:
        ex.close()
    counts = study.counts()
    fit = None
    if final_fit and cfg.fit.final and counts["completed"]:
        try:
            fit = _fit(study, bar, progress, say, final=True)
        except ValueError as exc:  # e.g. too few distinct mixtures completed to fit the law
            say(f"no recommendation yet: {exc}")
    return LoopResult(counts, fit, events)


def _count(runs: list[Any]) -> dict[str, int]:
    out = dict.fromkeys(("proposed", "running", "completed", "failed"), 0)
    for r in runs:
        out[r.status] += 1
    return out


def _after_task(study: Study, done: Finished, say: Callable[[str], None]) -> None:
    """A worker ended: release the runs it still holds (it died, or stored no outcome).

    A worker that died before it could claim its runs (a broken install, a bad config on that
    node) leaves them proposed; that too is an attempt, or the loop would retry forever.
    """
    token = done.task.token
    max_attempts = study.config.executor.max_attempts
    reason = done.error or "worker ended without storing an outcome"
    held = [r for r in study.runs("running") if r.worker and r.worker.endswith(f":{token}")]
    if done.error is not None:
        for run in study.runs("proposed"):
            if run.name in done.task.names:
                claimed = study.storage.claim(study.id, run.name, f"driver:{token}")
                if claimed is not None:
                    held.append(claimed)
    for run in held:
        new = study.storage.release(study.id, run, reason, max_attempts)
        if new is not None:
            say(f"run {run.name}: {reason}; {'re-queued' if new == 'proposed' else 'failed'}")


def _next_batch(
    study: Study,
    runs: list[Any],
    budget: float,
    last_fit: Fit | None,
    bar: Progress,
    progress: bool,
    say: Callable[[str], None],
) -> Fit | None:
    cfg = study.config
    first = not runs
    q = (cfg.proposer.first_batch or cfg.batch_size) if first else cfg.batch_size
    # The last batch may be smaller; with run lengths, q is its compute in target-length runs.
    q = min(q, math.ceil(budget - cfg.spent(runs) - 1e-9))
    fit = None
    # A warm-started study has a posterior before its first run (the earlier one, carried).
    ready = bool(study.counts()["completed"]) or study.starts_warm
    if cfg.needs_posterior and ready:
        fit = _fit(study, bar, progress, say)
    runs = study.ask(q, fit)
    proposer = cfg.proposer.name if ready else cfg.proposer.first
    say(f"proposal {runs[0].proposal if runs else '?'}: {len(runs)} run(s) from {proposer}")
    return fit or last_fit


def _fit(
    study: Study, bar: Progress, progress: bool, say: Callable[[str], None], final: bool = False
) -> Fit:
    cfg = study.config.fit
    n = study.counts()["completed"]
    label = f"fitting {cfg.law_label} ({cfg.method}) on {n} run(s)" + (" (final)" if final else "")
    warm = study.warm_start if not n else None
    if warm is not None:
        label = f"warm start: carrying the posterior of {warm['source']} over to the study"
    started = time.perf_counter()
    if progress and bar.live.is_started:
        bar.stop()  # NUTS draws its own progress bar
        try:
            bar.console.print(label)
            fit = study.fit(progress=cfg.method == "nuts")
        finally:
            bar.start()
    else:
        if progress:
            bar.console.print(label)
        fit = study.fit(progress=progress and cfg.method == "nuts")
    seconds = time.perf_counter() - started
    post = fit.posterior
    how = "reused snapshot" if fit.reused else f"{seconds:.0f} s"
    state = "converged" if post.converged else "NOT converged"
    say(f"posterior {fit.snapshot} ({how}): {state}")
    return fit
