"""Observations: the tidy table's validation, and the loaders of public releases."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix.datasets import olmix_priors, pile_natural_proportions
from bayesmix.observations import ObservationsError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason="needs ../shared/data (RegMix and Olmix releases)"
)


def table(**changes) -> pd.DataFrame:
    """Two runs x two targets over three domains, valid unless changed."""
    frame = pd.DataFrame(
        {
            "run_id": ["a", "a", "b", "b"],
            "target": ["web", "code", "web", "code"],
            "value": [3.1, 2.0, 3.4, 1.8],
            "r:web": [0.5, 0.5, 0.2, 0.2],
            "r:code": [0.3, 0.3, 0.6, 0.6],
            "r:books": [0.2, 0.2, 0.2, 0.2],
        }
    )
    for column, (row, value) in changes.items():
        frame.loc[row, column.replace("__", ":")] = value
    return frame


def test_valid_table_and_default_target_map():
    obs = bm.Observations.from_frame(table())
    assert obs.domains == ["web", "code", "books"]
    assert obs.targets == ["web", "code"]
    assert obs.target_domain == {"web": "web", "code": "code"}
    assert obs.run_ids == ["a", "b"]
    assert not obs.has_steps
    assert obs.mixtures().loc["b", "r:code"] == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"r__web": (0, 0.6), "r__code": (0, 0.35)}, "run 'a'"),  # row sums differ within a run
        ({"value": (1, np.nan)}, "run 'a', column 'value'"),
        ({"value": (2, -1.0)}, "not a finite positive number"),
        ({"r__books": (3, 1.5)}, "column 'r:books'"),
        ({"r__books": (2, -0.1)}, "is not a number in [0, 1]"),
        ({"target": (0, "Web Text")}, "not canonical"),
    ],
)
def test_each_violation_is_one_clear_error(changes, message):
    with pytest.raises(ObservationsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        bm.Observations.from_frame(table(**changes))


def test_proportions_must_sum_to_one():
    frame = table()
    frame.loc[frame.run_id == "b", "r:books"] = 0.3
    with pytest.raises(ObservationsError, match=r"run 'b', columns r:\*: proportions sum to 1.1"):
        bm.Observations.from_frame(frame)


def test_missing_columns_and_unknown_domains():
    with pytest.raises(ObservationsError, match="missing required column"):
        bm.Observations.from_frame(table().drop(columns="value"))
    with pytest.raises(ObservationsError, match="no training-domain columns"):
        bm.Observations.from_frame(table().drop(columns=["r:web", "r:code", "r:books"]))
    with pytest.raises(ObservationsError, match="not a training domain"):
        bm.Observations.from_frame(table(), target_domain={"web": "news"})
    with pytest.raises(ObservationsError, match="which has no rows"):
        bm.Observations.from_frame(table(), target_domain={"math": "web"})


def test_duplicate_rows_and_partial_steps():
    frame = pd.concat([table(), table().iloc[:1]])
    with pytest.raises(ObservationsError, match="appears more than once"):
        bm.Observations.from_frame(frame)
    frame = table().assign(step=[100.0, 100.0, np.nan, np.nan])
    with pytest.raises(ObservationsError, match="column 'step' is empty"):
        bm.Observations.from_frame(frame)


def test_late_steps_leave_out_each_runs_warm_up():
    """Each run keeps its evaluations from the fraction of its own last step on: a short run
    (last step 100) keeps step 20, a long one (last step 1000) does not."""
    long, short = table().iloc[:2], table().iloc[2:]
    frame = pd.concat(
        [long.assign(step=s) for s in (20.0, 100.0, 1000.0)]
        + [short.assign(step=s) for s in (5.0, 20.0, 100.0)]
    )
    obs = bm.Observations.from_frame(frame)
    kept = obs.late_steps(0.1).frame.groupby("run_id")["step"].unique()
    assert sorted(kept["a"]) == [100.0, 1000.0] and sorted(kept["b"]) == [20.0, 100.0]
    assert obs.late_steps(0.0) is obs
    with pytest.raises(ObservationsError, match="early-step fraction must be in"):
        obs.late_steps(1.0)


def test_renormalisation_is_counted(caplog):
    frame = table()
    frame.loc[frame.run_id == "a", "r:books"] = 0.205  # off by 0.005: a rounded release
    with pytest.raises(ObservationsError):
        bm.Observations.from_frame(frame)
    with caplog.at_level(logging.INFO):
        obs = bm.Observations.from_frame(frame, renormalise_below=0.01)
    assert obs.mixtures().sum(axis=1).to_numpy() == pytest.approx([1.0, 1.0])
    assert "renormalised the proportions of 1 run(s)" in caplog.text


def test_read_write_round_trip(tmp_path):
    obs = bm.Observations.from_frame(table().assign(step=1000.0))
    for name in ("obs.csv", "obs.parquet"):
        obs.write(tmp_path / name)
        back = bm.Observations.read(tmp_path / name)
        pd.testing.assert_frame_equal(back.frame, obs.frame, check_dtype=False)
    (tmp_path / "bad.csv").write_text("run_id,target\n\x00\x01")
    with pytest.raises(ObservationsError):
        bm.Observations.read(tmp_path / "bad.csv")
    with pytest.raises(ObservationsError, match="no such file"):
        bm.Observations.read(tmp_path / "missing.csv")


@needs_shared
def test_regmix_release():
    regmix = SHARED / "regmix"
    obs = bm.datasets.load_regmix(
        regmix / "train_mixture_1m.csv", regmix / "train_pile_loss_1m.csv", prefix="regmix-train"
    )
    assert len(obs.run_ids) == 512 and len(obs.domains) == 17 and len(obs.targets) == 13
    assert obs.run_ids[:2] == ["regmix-train-1", "regmix-train-2"]
    assert set(obs.target_domain) == set(obs.targets)  # every Pile target has its domain
    assert np.allclose(obs.mixtures().sum(axis=1), 1.0, atol=1e-9)
    zeros = (obs.mixtures().to_numpy() == 0).mean()
    assert 0.3 < zeros < 0.7
    p0 = pile_natural_proportions(SHARED / "doremi" / "pile_baseline_50kvocab.json", obs.domains)
    assert p0["natural_proportion"].sum() == pytest.approx(1.0)


@needs_shared
def test_olmix_release_drops_metrics_and_aggregates_mmlu():
    olmix = SHARED / "olmix"
    obs = bm.datasets.load_olmix(
        olmix / "full_recomputation_ratios.csv",
        olmix / "full_recomputation_metrics.csv",
        mmlu_categories=olmix / "mmlu_categories.csv",
    )
    assert len(obs.domains) == 64 and len(obs.run_ids) == 512
    assert len(obs.targets) == 52
    assert obs.target_domain == {}  # tasks are not training domains
    priors = olmix_priors(olmix / "priors_full_recomputation.csv")
    assert set(priors.index) == set(obs.domains)
