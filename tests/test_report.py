"""The study report: written from the storage alone, self-contained, and rendered by a real
headless Chromium (Debian's; ``.ci/run`` installs it) whose screenshot is checked for content
and whose DOM reports that every inline figure decoded."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from bayesmix.study import Study, parse_config
from bayesmix.study.cli import study_app as app
from bayesmix.study.trainers import LawTrainer, RunSpec

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--hide-scrollbars",
]


def chromium() -> str:
    path = os.environ.get("BAYESMIX_TEST_CHROMIUM") or shutil.which("chromium")
    if not path or not os.path.exists(path):
        msg = "no Chromium (Debian package chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A dry-run study of 8 runs in two proposals, fitted once at the end (Laplace, fast)."""
    root = tmp_path_factory.mktemp("report")
    cfg = parse_config(
        {
            "name": "rep",
            "seed": 1,
            "description": "Report test on a known law.",
            "data": {
                "domains": ["web", "code", "books"],
                "token_counts": {"web": 6e9, "code": 3e9, "books": 1e9},
            },
            "proxy": {"trainer": "law", "steps": 1000, "law": {"points": 4, "noise": 0.01}},
            "fit": {"method": "laplace"},
            "proposer": {"name": "dirichlet-swarm"},
            "batch_size": 4,
            "budget": 8,
        }
    )
    study = Study.create(cfg, f"sqlite:///{root / 'rep.db'}")
    trainer = LawTrainer(cfg.proxy.law, study.domains, cfg.proxy.steps)
    for _ in range(2):
        for run in study.ask(4):
            rows = trainer.train([RunSpec(run.name, run.mixture, run.steps, run.seed)])[0].rows
            study.tell(run.name, rows)
    study.fit()
    return root, study


@pytest.fixture(scope="module")
def written(fitted):
    """The report, written once through the CLI."""
    root, study = fitted
    out = root / "out"
    result = CliRunner().invoke(
        app, ["report", "rep", "--storage", study.storage.url, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out / "report.html"


def test_report_files_and_sections(fitted, written):
    _, study = fitted
    out = written.parent
    page = written.read_text()
    for name in ("optimal_mixture", "observed_vs_predicted", "objective", "loss_curves"):
        assert (out / f"{name}.png").stat().st_size > 10_000
        assert f'id="{name}"' in page
    assert page.count("data:image/png;base64,") == 4
    assert not re.search(r'src="(?!data:)', page)  # self-contained: nothing fetched
    assert "Convergence diagnostics" in page and "Approximate posterior (laplace)" in page
    assert "r0008" in page and "natural" in page
    # status prints the same recommendation the report shows
    status = CliRunner().invoke(app, ["status", "rep", "--storage", study.storage.url])
    assert status.exit_code == 0
    assert "optimal mixture (bimix-cross, laplace, 8 runs)" in status.output


def test_report_in_headless_chromium(written, tmp_path):
    page = written
    browser = chromium()
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*common, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-1000:]
    assert 'data-figures="4/4"' in dom.stdout  # every inline PNG decoded in the browser
    shot = tmp_path / "report.png"
    subprocess.run(
        [*common, "--window-size=1100,2600", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] == 2600 and img.shape[1] == 1100
    # Not blank: a good share of the page is drawn (text, tables, figures) in several colours.
    ink = (img[..., :3].mean(axis=-1) < 0.9).mean()
    assert ink > 0.03, ink
    colours = np.unique((img[..., :3] * 15).round().reshape(-1, 3), axis=0)
    assert len(colours) > 20
    keep = os.environ.get("BAYESMIX_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
