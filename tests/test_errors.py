"""Errors: every error class of the package derives from BayesMixError (and keeps its old
built-in base), the top level exports what the API returns and raises, and the command line
reports a BayesMixError in one line but lets any other exception show as the bug it is."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bayesmix as bm
from bayesmix.errors import BayesMixError

PACKAGE = Path(bm.__file__).parent
BUILT_IN = {"Exception", "ValueError", "RuntimeError", "KeyError", "TypeError", "OSError"}


def error_classes() -> list[tuple[str, ast.ClassDef]]:
    """(module path, class) for every class in the package whose name ends in Error."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        found += [
            (str(path.relative_to(PACKAGE)), node)
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error")
        ]
    return found


def test_every_error_class_derives_from_bayesmix_error() -> None:
    classes = error_classes()
    assert len(classes) >= 15  # the scan sees the package's error classes
    for where, node in classes:
        if node.name == "BayesMixError":
            continue
        bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
        # Directly, or through another error of the package (RepetitionError(ProxyDataError)).
        assert "BayesMixError" in bases or not bases & BUILT_IN, f"{where}: {node.name}"
        assert bases - BUILT_IN, f"{where}: {node.name} derives from built-ins only"


def test_the_top_level_exports_the_errors_and_returned_types() -> None:
    for name in bm.__all__:
        assert getattr(bm, name) is not None, name
    errors = [getattr(bm, n) for n in bm.__all__ if n.endswith("Error")]
    assert len(errors) >= 15
    for error in errors:
        assert issubclass(error, BayesMixError), error
    # The built-in bases stay, so callers catching ValueError keep working.
    assert issubclass(bm.ObservationsError, ValueError)
    assert issubclass(bm.NotConvergedError, RuntimeError)


def test_the_cli_reports_a_user_error_in_one_line_and_a_bug_as_a_bug(monkeypatch, tmp_path):
    import bayesmix.posterior
    from bayesmix.cli import app

    runner = CliRunner()
    path = tmp_path / "p.nc"
    path.write_text("x")

    def user_mistake(_path: object) -> None:
        raise bm.PosteriorFileError(f"{path}: not a bayesmix posterior file")

    monkeypatch.setattr(bayesmix.posterior.Posterior, "load", staticmethod(user_mistake))
    result = runner.invoke(app, ["optimize", str(path)])
    assert result.exit_code == 1 and "error:" in result.output
    assert "not a bayesmix posterior file" in result.output

    def bug(_path: object) -> None:
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(bayesmix.posterior.Posterior, "load", staticmethod(bug))
    result = runner.invoke(app, ["optimize", str(path)])
    assert isinstance(result.exception, ValueError)  # not turned into an error: line
    assert "error:" not in result.output


def test_a_file_that_is_not_a_posterior_is_a_user_error(tmp_path) -> None:
    path = tmp_path / "p.nc"
    path.write_text("not netcdf")
    with pytest.raises(bm.PosteriorFileError, match="not a bayesmix posterior file"):
        bm.Posterior.load(path)
