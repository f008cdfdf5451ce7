"""The tidy table every law is fitted to: one row per (run, step, target).

Only pandas and numpy are imported here, so that proxy training (on machines without the
inference stack) can build and validate its output.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix.errors import BayesMixError
from bayesmix.mixtures import RATIO_PREFIX, SUM_TOLERANCE, ratio_column

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("run_id", "target", "value")
OPTIONAL_COLUMNS = ("step", "tokens", "metric", "model_size", "seed")
_CANONICAL = re.compile(r"^[a-z0-9][a-z0-9_:.\-]*$")


class ObservationsError(BayesMixError, ValueError):
    """The table breaks the Observations contract (DESIGN.md, data contracts)."""


def canonical_name(name: str) -> str:
    """Lower-case, spaces and dashes-in-words to underscores: 'Pile-CC' -> 'pile_cc'."""
    out = re.sub(r"[\s()\-]+", "_", str(name).strip().lower()).strip("_")
    return re.sub(r"_+", "_", out)


def check_domain_name(name: str, where: str) -> str:
    if not isinstance(name, str) or not _CANONICAL.match(name):
        raise ObservationsError(
            f"{where}: domain name {name!r} is not canonical "
            "(lower case letters, digits and _ : . - only, as in 'pile_cc' or 'dclm:politics')"
        )
    return name


@dataclass(frozen=True)
class Observations:
    """Per-run mixtures and per-target losses, validated.

    Attributes:
        frame: the tidy table (columns ``run_id, step, tokens, target, value, metric`` and one
            ``r:<domain>`` per training domain); ``step`` is NaN where runs have one final value.
        target_domain: target -> training domain it measures (only targets that have one).
    """

    frame: pd.DataFrame
    target_domain: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        target_domain: Mapping[str, str] | None = None,
        *,
        renormalise_below: float = 0.0,
    ) -> Observations:
        """Validate a tidy table and return Observations.

        Args:
            df: the tidy table of DESIGN.md.
            target_domain: target -> training domain. By default a target maps to the training
                domain of the same name, where there is one.
            renormalise_below: rows whose proportions sum to 1 within this tolerance (but not
                within 1e-3) are rescaled to sum to 1 and counted in a log line; loaders of
                rounded public releases pass 0.01. Larger deviations are always errors.
        """
        if not isinstance(df, pd.DataFrame):
            raise ObservationsError(f"expected a pandas DataFrame, got {type(df).__name__}")
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            raise ObservationsError(f"missing required column(s): {', '.join(missing)}")
        domains = [c[len(RATIO_PREFIX) :] for c in df.columns if str(c).startswith(RATIO_PREFIX)]
        if not domains:
            raise ObservationsError(
                "no training-domain columns: expected one 'r:<domain>' per domain"
            )
        for d in domains:
            check_domain_name(d, f"column 'r:{d}'")
        if len(df) == 0:
            raise ObservationsError("the table has no rows")

        frame = df.copy().reset_index(drop=True)
        frame["run_id"] = frame["run_id"].astype(str)
        frame["target"] = frame["target"].astype(str)
        for t in frame["target"].unique():
            check_domain_name(t, "column 'target'")
        for col in ("step", "tokens"):
            if col not in frame.columns:
                frame[col] = np.nan
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
        if "metric" not in frame.columns:
            frame["metric"] = "loss"
        frame["metric"] = frame["metric"].astype(str)

        _check_values(frame)
        _check_scale(frame)
        _check_steps(frame)
        if "model_size" in frame.columns:
            frame["model_size"] = _check_model_sizes(frame)
        ratio_cols = [ratio_column(d) for d in domains]
        frame[ratio_cols] = _check_ratios(frame, ratio_cols, renormalise_below)

        dup = frame.duplicated(["run_id", "step", "target", "metric"], keep=False)
        if dup.any():
            row = frame[dup].iloc[0]
            at = f" at step {plain(row.step)}" if np.isfinite(row.step) else ""
            raise ObservationsError(
                f"run {row.run_id!r}: target {row.target!r}{at} appears more "
                "than once (one row per run, step, target and metric)"
            )

        mapping = _target_map(frame["target"].unique(), domains, target_domain)
        extra = [c for c in frame.columns if c not in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)]
        extra = [c for c in extra if not str(c).startswith(RATIO_PREFIX)]
        ordered = ["run_id", "step", "tokens", "target", "value", "metric"]
        ordered += [c for c in OPTIONAL_COLUMNS if c in frame.columns and c not in ordered]
        frame = frame[ordered + extra + ratio_cols]
        return cls(frame=frame, target_domain=mapping)

    @classmethod
    def read(cls, path: str | Path, target_domain: Mapping[str, str] | None = None) -> Observations:
        """Read the tidy table from CSV or Parquet."""
        path = Path(path)
        if not path.exists():
            raise ObservationsError(f"{path}: no such file")
        try:
            if path.suffix.lower() in (".parquet", ".pq"):
                df = pd.read_parquet(path)
            elif path.suffix.lower() in (".csv", ".txt"):
                df = pd.read_csv(path)
            else:
                raise ObservationsError(f"{path}: unknown format (expected .csv or .parquet)")
        except ObservationsError:
            raise
        except Exception as exc:  # pandas raises many types for unreadable files
            raise ObservationsError(f"{path}: cannot be read as a table ({exc})") from exc
        obs = cls.from_frame(df, target_domain)
        ignored = unknown_columns(df)
        if ignored:
            # Said once, here where a file comes in: a typo ('vaule') or a saved index
            # ('Unnamed: 0') is kept in the frame but no law reads it.
            warnings.warn(
                f"{path}: ignored column(s) {', '.join(map(str, ignored))} (not part of the "
                "tidy table: run_id, step, tokens, target, value, metric, model_size, seed, "
                "r:<domain>)",
                UserWarning,
                stacklevel=2,
            )
        return obs

    def write(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix.lower() in (".parquet", ".pq"):
            self.frame.to_parquet(path, index=False)
        else:
            self.frame.to_csv(path, index=False)

    # ------------------------------------------------------------------ views
    @property
    def domains(self) -> list[str]:
        return [c[len(RATIO_PREFIX) :] for c in self.frame.columns if c.startswith(RATIO_PREFIX)]

    @property
    def ratio_columns(self) -> list[str]:
        return [ratio_column(d) for d in self.domains]

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys(self.frame["target"]))

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(self.frame["metric"]))

    @property
    def run_ids(self) -> list[str]:
        return list(dict.fromkeys(self.frame["run_id"]))

    @property
    def has_steps(self) -> bool:
        """True when the table has a step axis with more than one distinct value."""
        steps = self.frame["step"].dropna().unique()
        return len(steps) > 1

    @property
    def has_sizes(self) -> bool:
        """True when runs of more than one model size (parameters) are mixed: the laws then
        gain a size term, and ``step`` counts tokens so that every size shares it."""
        return "model_size" in self.frame.columns and self.frame["model_size"].nunique() > 1

    @property
    def max_model_size(self) -> float | None:
        if "model_size" not in self.frame.columns:
            return None
        return float(self.frame["model_size"].max())

    @property
    def max_step(self) -> float | None:
        steps = self.frame["step"].dropna()
        return float(steps.max()) if len(steps) else None

    def mixtures(self) -> pd.DataFrame:
        """One row per run: its proportions, indexed by run_id."""
        return self.frame.groupby("run_id", sort=False)[self.ratio_columns].first()

    def select(
        self,
        runs: list[str] | None = None,
        targets: list[str] | None = None,
        metric: str | None = None,
    ) -> Observations:
        """A validated subset (runs, targets, one metric)."""
        f = self.frame
        if runs is not None:
            unknown = sorted(set(runs) - set(f["run_id"]))
            if unknown:
                raise ObservationsError(f"unknown run id(s): {', '.join(unknown[:5])}")
            f = f[f["run_id"].isin(runs)]
        if targets is not None:
            unknown = sorted(set(targets) - set(f["target"]))
            if unknown:
                raise ObservationsError(f"unknown target(s): {', '.join(unknown[:5])}")
            f = f[f["target"].isin(targets)]
        if metric is not None:
            if metric not in set(f["metric"]):
                raise ObservationsError(
                    f"unknown metric {metric!r}; the table has {', '.join(self.metrics)}"
                )
            f = f[f["metric"] == metric]
        mapping = {t: d for t, d in self.target_domain.items() if t in set(f["target"])}
        return Observations(frame=f.reset_index(drop=True), target_domain=mapping)

    def late_steps(self, fraction: float) -> Observations:
        """The evaluations at or past ``fraction`` of their run's last step (rows without a
        step are kept).

        A run's first evaluations sit in its warm-up, near the initial loss, where no power
        law in the step holds: the project's GPU swarm (studies/proxy_throughput) loses 5.9
        nats at step 13 of 400 and 2.2 at step 400, and fitted from step 13 the step law left
        NUTS at R-hat 1.19 with 63 divergences. The laws describe training past that.
        """
        if not 0.0 <= fraction < 1.0:
            raise ObservationsError(f"the early-step fraction must be in [0, 1), got {fraction!r}")
        f = self.frame
        last = f.groupby("run_id", sort=False)["step"].transform("max")
        keep = f["step"].isna() | (f["step"] >= fraction * last)
        if keep.all():
            return self
        return Observations(frame=f[keep].reset_index(drop=True), target_domain=self.target_domain)

    def first_runs(self, n: int) -> Observations:
        """The first n runs in table order."""
        return self.select(runs=self.run_ids[:n])

    def concat(self, other: Observations) -> Observations:
        """Both tables in one (same domains); run ids must not collide."""
        if self.domains != other.domains:
            raise ObservationsError(
                "cannot join observations over different domains: "
                f"{', '.join(self.domains)} vs {', '.join(other.domains)}"
            )
        both = set(self.run_ids) & set(other.run_ids)
        if both:
            raise ObservationsError(
                f"run id(s) present in both tables: {', '.join(sorted(both)[:5])}"
            )
        mapping = {**self.target_domain, **other.target_domain}
        return Observations.from_frame(pd.concat([self.frame, other.frame]), mapping)

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return (
            f"Observations({len(self.run_ids)} runs, {len(self.domains)} domains, "
            f"{len(self.targets)} targets, {len(self.frame)} rows, "
            f"steps={'yes' if self.has_steps else 'no'})"
        )


def _check_values(frame: pd.DataFrame) -> None:
    values = pd.to_numeric(frame["value"], errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=float)) | (values.to_numpy(dtype=float) <= 0)
    if bad.any():
        row = frame[bad].iloc[0]
        raise ObservationsError(
            f"run {row.run_id!r}, column 'value' (target {row.target!r}): loss "
            f"{plain(row.value)} is not a finite positive number"
        )
    frame["value"] = values.astype(float)


def plain(value: object) -> str:
    """A value as a person reads it in a message: 3.1, nan, 1e+300, 'abc'; never
    ``np.float64(nan)`` (the repr numpy 2 gives its scalars)."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"{float(value):.6g}"
    return repr(str(value))


# Losses in nats or bits per byte are O(0.1-20): a value above this is not one (a perplexity,
# or a unit mistake such as every loss times 1e12).
MAX_LOSS = 1e3
# A row whose loss is this factor away from the median of its metric's losses is an error in
# the table (one loss of 1e300 among losses near 3), not something a law should bend to.
OUTLIER_FACTOR = 100.0


def _check_scale(frame: pd.DataFrame) -> None:
    """Refuse losses no law of nats or bits per byte can mean, naming the rows."""
    values = frame["value"].to_numpy(dtype=float)
    log_v = np.log(values)
    median = frame.groupby("metric")["value"].transform(lambda v: np.exp(np.log(v).median()))
    far = np.abs(log_v - np.log(median.to_numpy(dtype=float))) > np.log(OUTLIER_FACTOR)
    huge = values > MAX_LOSS
    if huge.mean() > 0.5:
        raise ObservationsError(
            f"column 'value': {int(huge.sum())} of {len(values)} losses are above "
            f"{MAX_LOSS:g} (median {plain(np.median(values))}); losses in nats or bits per "
            "byte are O(0.1-20): is this a perplexity, or are the values scaled?"
        )
    bad = huge | far
    if bad.any():
        rows = frame[bad]
        listed = "; ".join(
            f"run {r.run_id!r}, target {r.target!r}"
            + (f", step {plain(r.step)}" if np.isfinite(r.step) else "")
            + f": {plain(r.value)}"
            for r in rows.head(5).itertuples()
        )
        more = f"; and {len(rows) - 5} more" if len(rows) > 5 else ""
        raise ObservationsError(
            f"column 'value': {len(rows)} loss(es) above {MAX_LOSS:g} or more than "
            f"{OUTLIER_FACTOR:g}x from the median of their metric "
            f"(the others' median is {plain(float(np.median(values[~bad])))}): {listed}{more}; "
            "fix or drop these rows"
        )


def unknown_columns(df: pd.DataFrame) -> list[str]:
    """Columns of a tidy table that no part of bayesmix reads (typos, saved indexes)."""
    known = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
    return [c for c in df.columns if c not in known and not str(c).startswith(RATIO_PREFIX)]


def _check_steps(frame: pd.DataFrame) -> None:
    step = frame["step"].to_numpy(dtype=float)
    bad = np.isfinite(step) & (step <= 0)
    bad |= np.isinf(step)
    if bad.any():
        row = frame[bad].iloc[0]
        raise ObservationsError(
            f"run {row.run_id!r}, column 'step': {plain(row.step)} is not positive"
        )
    has = np.isfinite(step)
    if has.any() and not has.all():
        row = frame[~has].iloc[0]
        raise ObservationsError(
            f"run {row.run_id!r}, column 'step' is empty while other rows have steps "
            "(use steps throughout, or leave the column empty everywhere)"
        )


def _check_model_sizes(frame: pd.DataFrame) -> pd.Series:
    """model_size: a positive parameter count on every row, one per run."""
    sizes = pd.to_numeric(frame["model_size"], errors="coerce").astype(float)
    bad = ~np.isfinite(sizes.to_numpy()) | (sizes.to_numpy() <= 0)
    if bad.any():
        row = frame[bad].iloc[0]
        raise ObservationsError(
            f"run {row.run_id!r}, column 'model_size': {plain(row.model_size)} is not a positive "
            "parameter count (give every row its run's model size, or drop the column)"
        )
    per_run = sizes.groupby(frame["run_id"]).nunique()
    if (per_run > 1).any():
        run = per_run.index[int(np.argmax(per_run.to_numpy() > 1))]
        raise ObservationsError(
            f"run {run!r}, column 'model_size': one run has several model sizes "
            "(a run trains one model; give runs of other sizes their own run_id)"
        )
    return sizes


def _check_ratios(frame: pd.DataFrame, cols: list[str], renormalise_below: float) -> pd.DataFrame:
    ratios = frame[cols].apply(pd.to_numeric, errors="coerce")
    arr = np.array(ratios.to_numpy(dtype=float), copy=True)
    for j, col in enumerate(cols):
        bad = ~np.isfinite(arr[:, j]) | (arr[:, j] < 0) | (arr[:, j] > 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise ObservationsError(
                f"run {frame.run_id.iloc[i]!r}, column {col!r}: proportion "
                f"{plain(frame[col].iloc[i])} is not a number in [0, 1]"
            )
    sums = arr.sum(axis=1)
    off = np.abs(sums - 1.0)
    fixable = (off > SUM_TOLERANCE) & (off < renormalise_below)
    bad = (off > SUM_TOLERANCE) & ~fixable
    if bad.any():
        i = int(np.argmax(bad))
        raise ObservationsError(
            f"run {frame.run_id.iloc[i]!r}, columns r:*: proportions sum to {sums[i]:.6g}, "
            f"not 1 (tolerance {SUM_TOLERANCE:g})"
        )
    if fixable.any():
        runs = frame.loc[fixable, "run_id"].nunique()
        log.info(
            "renormalised the proportions of %d run(s) that summed to 1 within %g",
            runs,
            renormalise_below,
        )
    # Rows within the tolerance are rescaled too, silently: laws see exact sums.
    arr = arr / sums[:, None]
    out = pd.DataFrame(arr, columns=cols, index=frame.index)
    per_run = out.groupby(frame["run_id"]).nunique().max(axis=1)
    if (per_run > 1).any():
        run = per_run.index[int(np.argmax(per_run.to_numpy() > 1))]
        raise ObservationsError(f"run {run!r}: rows of the same run have different proportions")
    return out


def _target_map(
    targets: np.ndarray, domains: list[str], given: Mapping[str, str] | None
) -> dict[str, str]:
    if given is None:
        return {t: t for t in targets if t in domains}
    mapping: dict[str, str] = {}
    for t, d in given.items():
        if t not in set(targets):
            raise ObservationsError(f"target_domain names target {t!r}, which has no rows")
        if d not in domains:
            raise ObservationsError(
                f"target_domain maps {t!r} to {d!r}, which is not a training domain "
                f"(no column 'r:{d}')"
            )
        mapping[t] = d
    return mapping
