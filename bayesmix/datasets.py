"""Loaders for public mixture -> loss releases (RegMix, Olmix) and their natural proportions.

Every loader takes paths, so a user can point it at their own download of the same release.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from bayesmix.mixtures import SUM_TOLERANCE
from bayesmix.observations import Observations, ObservationsError, canonical_name, ratio_column

log = logging.getLogger(__name__)

# Public releases round proportions to 1e-3; DESIGN.md: renormalise below 0.01, reject above.
RELEASE_RENORMALISE_BELOW = 0.01

REGMIX_TRAIN_PREFIX = "train_the_pile_"
REGMIX_LOSS_PREFIX = "metric/the_pile_"
REGMIX_LOSS_SUFFIX = "_val_loss"
PILE_TOKENS = 300e9  # approximate size of the Pile in tokens (DESIGN.md)

# Olmix drops these metrics before fitting (olmix/fit at commit 9586977).
OLMIX_DROPPED_METRICS = (
    "qasper_yesno",
    "sciriff_yesno",
    "lab_bench_dbqa",
    "lab_bench_protocolqa",
    "medqa_en",
)

# The Pile's display names (DoReMi's weight files) -> RegMix's canonical names.
_PILE_NAMES = {
    "ArXiv": "arxiv",
    "FreeLaw": "freelaw",
    "NIH ExPorter": "nih_exporter",
    "PubMed Central": "pubmed_central",
    "Wikipedia (en)": "wikipedia_en",
    "DM Mathematics": "dm_mathematics",
    "Github": "github",
    "PhilPapers": "philpapers",
    "StackExchange": "stackexchange",
    "Enron Emails": "enron_emails",
    "Gutenberg (PG-19)": "gutenberg_pg_19",
    "Pile-CC": "pile_cc",
    "Ubuntu IRC": "ubuntu_irc",
    "EuroParl": "europarl",
    "HackerNews": "hackernews",
    "PubMed Abstracts": "pubmed_abstracts",
    "USPTO Backgrounds": "uspto_backgrounds",
    "OpenWebText2": "openwebtext2",
    "Books3": "books3",
    "YoutubeSubtitles": "youtubesubtitles",
    "BookCorpus2": "bookcorpus2",
    "OpenSubtitles": "opensubtitles",
}


def _read_csv(path: str | Path, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise ObservationsError(f"{what}: {path}: no such file")
    try:
        return pd.read_csv(path)
    except Exception as exc:
        raise ObservationsError(f"{what}: {path}: cannot be read as CSV ({exc})") from exc


def load_regmix(
    mix_csv: str | Path, loss_csv: str | Path, *, prefix: str = "regmix"
) -> Observations:
    """RegMix's release: proportions of 17 Pile domains and final losses on 13 of them.

    Run ids are ``<prefix>-<index>``; the prefix defaults to ``regmix`` and is best set to the
    split (``regmix-train``, ``regmix-test``) so that ids stay unique across files. Only final
    losses are released, so ``step`` is empty.
    """
    mix = _read_csv(mix_csv, "RegMix mixtures")
    loss = _read_csv(loss_csv, "RegMix losses")
    for name, df in (("mixtures", mix), ("losses", loss)):
        if "index" not in df.columns:
            raise ObservationsError(f"RegMix {name}: no 'index' column to join on")
    train_cols = [c for c in mix.columns if c.startswith(REGMIX_TRAIN_PREFIX)]
    loss_cols = [
        c
        for c in loss.columns
        if c.startswith(REGMIX_LOSS_PREFIX) and c.endswith(REGMIX_LOSS_SUFFIX)
    ]
    if not train_cols:
        raise ObservationsError(f"RegMix mixtures: no '{REGMIX_TRAIN_PREFIX}*' columns")
    if not loss_cols:
        raise ObservationsError(
            f"RegMix losses: no '{REGMIX_LOSS_PREFIX}*{REGMIX_LOSS_SUFFIX}' columns"
        )
    domains = {c: canonical_name(c[len(REGMIX_TRAIN_PREFIX) :]) for c in train_cols}
    targets = {
        c: canonical_name(c[len(REGMIX_LOSS_PREFIX) : -len(REGMIX_LOSS_SUFFIX)]) for c in loss_cols
    }
    joined = mix[["index", *train_cols]].merge(loss[["index", *loss_cols]], on="index", how="inner")
    if len(joined) == 0:
        raise ObservationsError("RegMix: the mixture and loss files share no 'index'")
    joined = joined.sort_values("index", kind="stable")
    long = joined.melt(
        id_vars=["index", *train_cols], value_vars=loss_cols, var_name="col", value_name="value"
    )
    long["target"] = long["col"].map(targets)
    long["run_id"] = prefix + "-" + long["index"].astype(int).astype(str)
    long["metric"] = "loss"
    long = long.rename(columns={c: ratio_column(d) for c, d in domains.items()})
    # Keep runs in index order, targets in file order within a run.
    long["_order"] = long["col"].map({c: i for i, c in enumerate(loss_cols)})
    long = long.sort_values(["index", "_order"], kind="stable")
    frame = long[
        ["run_id", "target", "value", "metric", *[ratio_column(d) for d in domains.values()]]
    ]
    return Observations.from_frame(frame, renormalise_below=RELEASE_RENORMALISE_BELOW)


def load_olmix(
    ratios_csv: str | Path,
    metrics_csv: str | Path,
    *,
    drop_metrics: bool = True,
    mmlu_categories: str | Path | None = None,
    prefix: str = "olmix",
) -> Observations:
    """Olmix's release: ratios over the swarm's domains and bits-per-byte per task.

    Args:
        drop_metrics: drop the metrics Olmix drops before fitting (OLMIX_DROPPED_METRICS).
        mmlu_categories: Olmix's ``mmlu_categories.csv``; when given, the 57 MMLU subjects are
            replaced by their 4 example-count-weighted category means, as Olmix fits them.
    """
    ratios = _read_csv(ratios_csv, "Olmix ratios")
    metrics = _read_csv(metrics_csv, "Olmix metrics")
    for name, df in (("ratios", ratios), ("metrics", metrics)):
        if "run" not in df.columns:
            raise ObservationsError(f"Olmix {name}: no 'run' column to join on")
    meta = {"run", "name", "index"} | {c for c in ratios.columns if str(c).startswith("Unnamed")}
    meta |= {""}
    domain_cols = [c for c in ratios.columns if c not in meta]
    task_cols = [c for c in metrics.columns if c not in meta and not str(c).startswith("Unnamed")]
    task_frame = metrics[["run", *task_cols]].set_index("run")
    if drop_metrics:
        drop = [c for c in task_cols if c.split(":")[0] in OLMIX_DROPPED_METRICS]
        task_frame = task_frame.drop(columns=drop)
    if mmlu_categories is not None:
        task_frame = _aggregate_mmlu(task_frame, _read_csv(mmlu_categories, "MMLU categories"))
    domains = {c: canonical_name(c) for c in domain_cols}
    mix = ratios[["run", *domain_cols]].rename(
        columns={c: ratio_column(d) for c, d in domains.items()}
    )
    long = task_frame.reset_index().melt(id_vars="run", var_name="target", value_name="value")
    long["target"] = long["target"].map(canonical_name)
    long = mix.merge(long, on="run", how="inner")
    if len(long) == 0:
        raise ObservationsError("Olmix: the ratio and metric files share no 'run'")
    long["run_id"] = prefix + "-" + long["run"].astype(str)
    long["metric"] = "bpb"
    frame = long[
        ["run_id", "target", "value", "metric", *[ratio_column(d) for d in domains.values()]]
    ]
    return Observations.from_frame(frame, renormalise_below=RELEASE_RENORMALISE_BELOW)


def _aggregate_mmlu(tasks: pd.DataFrame, categories: pd.DataFrame) -> pd.DataFrame:
    need = {"metric", "category", "weight"}
    if not need <= set(categories.columns):
        raise ObservationsError(f"MMLU categories: expected columns {', '.join(sorted(need))}")
    out = tasks.copy()
    for category, rows in categories.groupby("category", sort=True):
        present = [m for m in rows["metric"] if m in out.columns]
        if not present:
            raise ObservationsError(
                f"MMLU categories: no metric of {category!r} in the metrics file"
            )
        w = rows.set_index("metric").loc[present, "weight"].to_numpy(dtype=float)
        out[category] = out[present].to_numpy(dtype=float) @ (w / w.sum())
        out = out.drop(columns=present)
    return out


def pile_natural_proportions(
    weights_json: str | Path, domains: list[str] | None = None
) -> pd.DataFrame:
    """The Pile's natural proportions (DoReMi's baseline weights) restricted to ``domains``.

    Returns a frame indexed by domain with ``natural_proportion`` (renormalised over the
    domains) and ``token_count`` (p0 x 300e9 tokens, DESIGN.md).
    """
    path = Path(weights_json)
    if not path.exists():
        raise ObservationsError(f"Pile weights: {path}: no such file")
    try:
        raw = json.loads(path.read_text())["train_domain_weights"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise ObservationsError(f"Pile weights: {path}: not a DoReMi weight file ({exc})") from exc
    weights = {_PILE_NAMES.get(k, canonical_name(k)): float(v) for k, v in raw.items()}
    if domains is not None:
        unknown = [d for d in domains if d not in weights]
        if unknown:
            raise ObservationsError(f"Pile weights: no weight for domain(s) {', '.join(unknown)}")
        weights = {d: weights[d] for d in domains}
    p = pd.Series(weights, dtype=float)
    tokens = p * PILE_TOKENS
    p = p / p.sum()
    return pd.DataFrame({"natural_proportion": p, "token_count": tokens}).rename_axis("domain")


def olmix_priors(priors_csv: str | Path) -> pd.DataFrame:
    """Olmix's natural proportions and token counts, indexed by canonical domain name."""
    df = _read_csv(priors_csv, "Olmix priors")
    need = {"domain", "natural_proportion", "token_count"}
    if not need <= set(df.columns):
        raise ObservationsError(f"Olmix priors: expected columns {', '.join(sorted(need))}")
    df["domain"] = df["domain"].map(canonical_name)
    out = df.set_index("domain")[["natural_proportion", "token_count"]].astype(float)
    if abs(out["natural_proportion"].sum() - 1.0) > SUM_TOLERANCE:
        raise ObservationsError("Olmix priors: natural proportions do not sum to 1")
    return out
