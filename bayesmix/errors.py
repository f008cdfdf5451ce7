"""The base of every error bayesmix raises for a user's mistake or an unusable result.

Each stage keeps its own error class next to its code (``ObservationsError``, ``LawError``,
``ConfigError``...), all derived from ``BayesMixError``, and from ``ValueError`` or
``RuntimeError`` as before, so that ``except ValueError`` in callers keeps working. The
command line reports a ``BayesMixError`` (and a missing file) in one line; any other
exception is a bug in bayesmix and shows its traceback.
"""

from __future__ import annotations


class BayesMixError(Exception):
    """An input bayesmix cannot use, or a result it cannot give; the message says which."""


class ArgumentError(BayesMixError, ValueError):
    """An argument outside its domain: a step that is not positive, ci outside (0, 1),
    weights naming an unknown target."""
