"""`bayesmix demo`: a whole study on the built-in sample corpus, in minutes on a laptop CPU.

It builds the sample corpus (five domains of real text from this Python installation),
trains CPU-tiny proxies on a first swarm of mixtures (on a GPU when there is one), fits the
law, lets the proposer choose the next runs, and prints the optimal mixture with its
credible intervals and where the report is. Everything goes to one folder (a SQLite file,
shards, runs, report); running the demo again resumes it, ``--fresh`` starts over.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.console import Console

from bayesmix.study.config import load_config


def demo_config_path() -> Path:
    return Path(__file__).resolve().parents[2] / "configs" / "study" / "demo.yaml"


def run_demo(
    folder: Path,
    *,
    fresh: bool = False,
    budget: int | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> Path:
    """Create (or resume) the demo study in ``folder``, run it, and write its report."""
    from bayesmix.report import write_report
    from bayesmix.study.cli import print_optimum
    from bayesmix.study.loop import run_study
    from bayesmix.study.storage import Storage
    from bayesmix.study.study import Study, StudyError

    console = console or Console(stderr=True)
    started = time.perf_counter()
    folder = folder.resolve()
    if fresh and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = load_config(demo_config_path())
    config = config.model_copy(update={"workdir": str(folder / config.name)})
    storage = Storage(f"sqlite:///{folder / 'demo.db'}")
    if any(s.name == config.name for s in storage.studies()):
        console.print(f"resuming the demo study in {folder} (--fresh starts over)")
        study = Study.load(config.name, storage)
    else:
        console.print(
            f"demo: {config.budget} proxy runs ({config.proxy.size}, {config.proxy.steps} steps) "
            f"on the built-in sample corpus; files in {folder}"
        )
        study = Study.create(config, storage, progress=progress)
    result = run_study(study, budget=budget, progress=progress, console=console)
    if result.fit is None:
        raise StudyError("the demo completed no run; see the worker logs in " + str(study.workdir))
    print_optimum(study, result.fit.snapshot)
    report = write_report(study)
    minutes = (time.perf_counter() - started) / 60
    console.print(f"report: {report}", highlight=False)
    console.print(f"demo done in {minutes:.1f} min", highlight=False)
    return report
