"""A study's report: one self-contained HTML page (figures inlined) and the same figures as PNGs.

Sections: the optimal mixture as a forest plot of credible intervals next to the natural and
uniform mixtures; observed against predicted losses with intervals; the posterior-expected
objective (and the best observed one) against the number of runs; the proxy loss curves per
domain; the convergence diagnostics; every run. Each figure is drawn from the stored study
alone (runs, observations, posterior snapshots), so a report can be written at any time,
by any process, from the storage URL.
"""

from __future__ import annotations

import base64
import html
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bayesmix.errors import ArgumentError

if TYPE_CHECKING:
    from bayesmix.inference import Posterior
    from bayesmix.study.study import Study


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    png: bytes


def write_report(study: Study, out_dir: str | Path | None = None) -> Path:
    """Write ``report.html`` and the PNGs into ``out_dir`` (default ``<workdir>/report``)."""
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():
        # The page states the posterior's convergence itself, in its diagnostics section.
        warnings.simplefilter("ignore")
        return _write(study, out_dir)


def _write(study: Study, out_dir: str | Path | None) -> Path:
    out = Path(out_dir) if out_dir is not None else study.workdir / "report"
    out.mkdir(parents=True, exist_ok=True)
    obs = study.observations()
    latest = study.latest_posterior()
    post, snap_id = latest if latest is not None else (None, None)
    snaps = study.storage.posteriors(study.id)
    snap = next((s for s in snaps if s.id == snap_id), None)

    figures: list[Figure] = []
    if snap is not None:
        figures.append(_forest(study, snap.summary))
    if post is not None and obs is not None:
        figures.append(_observed_vs_predicted(study, post, obs))
    if post is not None and post.has_sizes:
        figures.append(_optimum_by_size(study, post))
    if obs is not None:
        figures.append(_objective(study, obs, snaps))
    # Every run's losses as trained, of every version of the domain set: the observations
    # a fit uses drop the targets an update touched, but their curves are still the study's.
    raw = study.storage.observations(study.id)
    raw = raw[raw["metric"] == study.config.objective.metric]
    if len(raw):
        figures.append(_loss_curves(study, raw))
    for f in figures:
        (out / f"{f.name}.png").write_bytes(f.png)
    page = _page(study, figures, post, snap)
    path = out / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------ figures
def _png(fig: Any) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _forest(study: Study, summary: dict[str, Any]) -> Figure:
    import matplotlib.pyplot as plt

    domains = list(summary["mixture"])
    natural = study.natural()
    m = len(domains)
    y = np.arange(m)[::-1]
    mean = np.array([summary["mixture"][d] for d in domains])
    lo = np.array([summary["intervals"][d]["lo"] for d in domains])
    hi = np.array([summary["intervals"][d]["hi"] for d in domains])
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * m + 1.4))
    # Caps mark each interval's ends, so a narrow (or zero-width) one still shows, and its
    # numbers are written beside it.
    ax.errorbar(
        mean,
        y,
        xerr=np.vstack([mean - lo, hi - mean]).clip(min=0),
        fmt="none",
        ecolor="#1f5aa6",
        elinewidth=2.5,
        capsize=6,
        capthick=2,
        label=f"{summary['ci']:.0%} credible interval",
    )
    ax.plot(mean, y, "o", color="#1f5aa6", ms=7, label="recommended mixture")
    ax.plot([natural[d] for d in domains], y, "x", color="#c0392b", ms=8, mew=2, label="natural")
    ax.axvline(1 / m, color="#7f8c8d", ls="--", lw=1, label="uniform")
    ax.set_yticks(y, domains)
    ax.set_xlabel("share of the training mixture")
    right = max(1.0 / m, float(hi.max()), max(natural.values())) * 1.08 + 0.01
    ax.set_xlim(0, right + 0.16)  # room for the labels
    for yi, a, b, c in zip(y, mean, lo, hi, strict=True):
        ax.annotate(
            f"{a:.3f} [{b:.3f}, {c:.3f}]",
            (c, yi),
            xytext=(8, 4),
            textcoords="offset points",
            fontsize=7,
            color="#1f5aa6",
        )
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    caption = (
        f"Posterior of the optimal mixture ({summary['method']}, {summary['n_runs']} runs): "
        "dots are the recommended shares, bars the credible intervals of the optimum over "
        "posterior draws; crosses the natural proportions, the dashed line the uniform share."
    )
    return Figure("optimal_mixture", "Optimal mixture", caption, _png(fig))


def optimum_by_size(
    post: Posterior,
    sizes: Sequence[float],
    *,
    tokens_per_parameter: float | None = None,
    ci: float = 0.9,
    **objective: Any,
) -> pd.DataFrame:
    """The optimal mixture at each model size in ``sizes`` (a law with a size axis): one row
    per (size, domain) with the recommended share and its credible interval.

    Each size trains on ``tokens_per_parameter`` x its parameters (None: the law's reference
    step at every size). ``objective``: ``weights`` and ``constraints`` of
    ``Posterior.optimal_mixture``.
    """
    if not post.has_sizes:
        raise ArgumentError(
            "this posterior has no model-size axis: fit runs of several sizes to see how the "
            "optimum moves with size"
        )
    rows = []
    for size in sizes:
        step = None
        if tokens_per_parameter is not None:
            step = post.step_for_tokens(tokens_per_parameter * float(size))
        opt = post.optimal_mixture(model_size=float(size), step=step, ci=ci, **objective)
        for domain, share in opt.mixture.items():
            lo, hi = opt.intervals.loc[domain, ["lo", "hi"]]
            rows.append(
                {"model_size": float(size), "domain": domain, "share": share, "lo": lo, "hi": hi}
            )
    return pd.DataFrame(rows)


def optimum_by_size_figure(frame: pd.DataFrame, fitted: Sequence[float], ci: float) -> Figure:
    """Each domain's optimal share against model size (log axis), its interval shaded, the
    fitted sizes marked: where the optimum moves, and how the intervals widen beyond the
    proxies."""
    import matplotlib.pyplot as plt

    caption = (
        f"The optimal mixture as the model grows: recommended shares, {ci:.0%} credible "
        "intervals shaded. Beyond the largest fitted size the law extrapolates, and the "
        "intervals widen with the distance."
    )
    fig, ax = plt.subplots(figsize=(7.5, 4.4), layout="constrained")
    for domain, g in frame.groupby("domain", sort=False):
        (line,) = ax.plot(g["model_size"], g["share"], "o-", ms=3, label=str(domain))
        ax.fill_between(g["model_size"], g["lo"], g["hi"], color=line.get_color(), alpha=0.15)
    for size in fitted:
        ax.axvline(size, color="#7f8c8d", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("model size (parameters); dotted: the sizes fitted")
    ax.set_ylabel("optimal share")
    ax.set_ylim(0, None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return Figure("optimum_by_size", "Optimal mixture by model size", caption, _png(fig))


def size_range(post: Posterior, upto: float | None = None, points: int = 7) -> list[float]:
    """Log-spaced sizes from the smallest fitted one to ``upto`` (default 100x the largest)."""
    fitted = sorted(post.observations.frame["model_size"].unique())
    top = float(upto) if upto is not None else 100.0 * float(fitted[-1])
    return [float(x) for x in np.geomspace(float(fitted[0]), top, points)]


def _optimum_by_size(study: Study, post: Posterior) -> Figure:
    obj = study.config.objective
    frame = optimum_by_size(
        post, size_range(post), ci=obj.ci, weights=obj.weights, constraints=study.constraints()
    )
    fitted = sorted(post.observations.frame["model_size"].unique())
    return optimum_by_size_figure(frame, fitted, obj.ci)


def _final_rows(obs: Any) -> pd.DataFrame:
    """Each run's rows at its last step (all rows when there is no step axis)."""
    f = obs.frame
    if f["step"].notna().any():
        last = f.groupby("run_id")["step"].transform("max")
        f = f[f["step"] == last]
    return f


def _observed_vs_predicted(study: Study, post: Posterior, obs: Any) -> Figure:
    import matplotlib.pyplot as plt

    ci = study.config.objective.ci
    final = _final_rows(obs)
    mixtures = final.groupby("run_id", sort=False)[obs.ratio_columns].first().reset_index()
    steps = final.groupby("run_id", sort=False)["step"].first()
    q = (1 - ci) / 2
    preds = []
    for step, runs in steps.groupby(steps, dropna=False).groups.items():
        rows = mixtures[mixtures["run_id"].isin(list(runs))]
        s = None if pd.isna(step) else float(step)
        # The median of the predictive draws, not the law's posterior mean: with zero shares
        # a few draws can put the mean far outside the interval it should sit in.
        d = post.predict(rows, step=s, ci=ci, draws=True, max_draws=1000)
        g = d.groupby(["run_id", "target"], sort=False)["predictive"]
        preds.append(
            pd.DataFrame(
                {"mean": g.median(), "lo": g.quantile(q), "hi": g.quantile(1 - q)}
            ).reset_index()
        )
    pred = pd.concat(preds)
    both = final.merge(pred, on=["run_id", "target"], how="inner")
    fig, ax = plt.subplots(figsize=(6.2, 5.4))
    for t, g in both.groupby("target"):
        yerr = np.vstack([g["mean"] - g["lo"], g["hi"] - g["mean"]]).clip(min=0)
        ax.errorbar(g["mean"], g["value"], xerr=yerr, fmt="o", ms=4, alpha=0.8, label=t, capsize=2)
    lim = [both[["value", "lo"]].min().min() * 0.98, both[["value", "hi"]].max().max() * 1.02]
    ax.plot(lim, lim, color="#555", lw=1, ls=":")
    ax.set_xlabel(f"predicted loss (median and {ci:.0%} predictive interval)")
    ax.set_ylabel("observed loss")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    inside = float(((both["value"] >= both["lo"]) & (both["value"] <= both["hi"])).mean())
    fig.tight_layout()
    caption = (
        f"Each completed run's loss per target at its last step against the posterior's "
        f"prediction for its mixture; {inside:.0%} of the observations lie inside their "
        f"{ci:.0%} predictive interval (in-sample)."
    )
    return Figure("observed_vs_predicted", "Observed vs predicted losses", caption, _png(fig))


def observed_objective(study: Study, obs: Any) -> pd.Series:
    """The objective sum_t w_t L_t of each completed run at its last step, in run order."""
    final = _final_rows(obs)
    targets = obs.targets
    weights = study.config.objective.weights
    w = (
        {t: 1.0 / len(targets) for t in targets}
        if weights is None
        else {t: float(weights.get(t, 0.0)) for t in targets}
    )
    wide = final.pivot_table(index="run_id", columns="target", values="value", sort=False)
    return (wide * pd.Series(w)).sum(axis=1).reindex(obs.run_ids)


def _objective(study: Study, obs: Any, snaps: list[Any]) -> Figure:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    observed = observed_objective(study, obs)
    n = np.arange(1, len(observed) + 1)
    ax.plot(n, observed.to_numpy(), ".", color="#95a5a6", label="observed objective of each run")
    ax.step(
        n,
        np.minimum.accumulate(observed.to_numpy()),
        where="post",
        color="#2c3e50",
        label="best observed so far",
    )
    if snaps:
        xs = np.array([s.n_runs for s in snaps])
        ev = np.array([s.summary["expected_objective"] for s in snaps])
        lo = np.array([s.summary["objective_interval"][0] for s in snaps])
        hi = np.array([s.summary["objective_interval"][1] for s in snaps])
        order = np.argsort(xs, kind="stable")
        ax.fill_between(
            xs[order],
            lo[order],
            hi[order],
            color="#1f5aa6",
            alpha=0.2,
            label="interval at the recommended mixture",
        )
        ax.plot(
            xs[order],
            ev[order],
            "o-",
            color="#1f5aa6",
            label="posterior-expected objective at the recommended mixture",
        )
    ax.set_xlabel("completed runs")
    ax.set_ylabel("objective (weighted loss, lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    caption = (
        "The objective the study minimises: each run's observed value, the best so far, and "
        "after each fit the posterior-expected objective of the recommended mixture with its "
        "credible interval."
    )
    return Figure("objective", "Objective against runs", caption, _png(fig))


LEGEND_RUNS = 20  # up to this many runs, a legend names each one; beyond, a colour bar


def _loss_curves(study: Study, frame: pd.DataFrame) -> Figure:
    """``frame``: tidy rows (run_id, step, target, value) of the objective's metric."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    f = frame
    targets = list(dict.fromkeys(f["target"]))
    run_ids = list(dict.fromkeys(f["run_id"]))
    cols = min(3, len(targets))
    rows = int(np.ceil(len(targets) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.0 * rows), squeeze=False)
    few = len(run_ids) <= LEGEND_RUNS
    cmap = plt.get_cmap("tab20" if few else "viridis")

    def colour(i: int) -> Any:
        return cmap(i % 20) if few else cmap(i / max(len(run_ids) - 1, 1))

    has_steps = f["step"].notna().any()
    handles: dict[str, Any] = {}
    for k, t in enumerate(targets):
        ax = axes[k // cols][k % cols]
        g = f[f["target"] == t]
        for run, rg in g.groupby("run_id", sort=False):
            i = run_ids.index(run)
            if has_steps:
                rg = rg.sort_values("step")
                (line,) = ax.plot(rg["step"], rg["value"], color=colour(i), lw=1, alpha=0.85)
            else:
                (line,) = ax.plot([i + 1], rg["value"], "o", color=colour(i))
            handles.setdefault(str(run), line)
        ax.set_title(t, fontsize=10)
        if has_steps:
            ax.set_xscale("log")
            ax.set_xlabel("step")
        else:
            ax.set_xlabel("run number")
        ax.set_ylabel(study.config.objective.metric)
        ax.grid(alpha=0.3)
    for k in range(len(targets), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout()
    if few:
        fig.legend(
            [handles[r] for r in run_ids if r in handles],
            [r for r in run_ids if r in handles],
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            fontsize=7,
            title="run",
        )
        how = "one colour per run, named in the legend"
    else:
        bar = ScalarMappable(Normalize(1, len(run_ids)), cmap)
        fig.colorbar(bar, ax=axes.ravel().tolist(), label="run number (order proposed)")
        how = "coloured by run number (the colour bar)"
    caption = f"Held-out loss per target domain over training, one line per proxy run, {how}."
    return Figure("loss_curves", "Proxy loss curves per domain", caption, _png(fig))


# ------------------------------------------------------------------------------ page
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1000px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f6f8}td:first-child,th:first-child{text-align:left}
.meta{color:#555;font-size:.9em}.warn{background:#fdecea;border-left:4px solid #c0392b;
padding:.5em 1em}.ok{background:#eafaf1;border-left:4px solid #27ae60;padding:.5em 1em}
.note{background:#f4f6f8;border-left:4px solid #7f8c8d;padding:.5em 1em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
td.reason{text-align:left;max-width:28em;overflow-wrap:anywhere}
td.reason details{max-height:12em;overflow:auto}
"""

# The page checks that its own figures decoded (a broken inline image is easy to miss).
SELF_CHECK = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-figures', ok + '/' + imgs.length);
});
</script>
"""


def _table(frame: pd.DataFrame, floatfmt: str = "{:.4g}") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for v in row:
            if isinstance(v, float | np.floating):
                text = "" if not np.isfinite(v) else floatfmt.format(v)
            else:
                text = "" if v is None else str(v)
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


REASON_CHARS = 80  # a failure reason longer than this is folded in its cell


def _runs_table(study: Study, runs: pd.DataFrame) -> str:
    """Every run with its final loss (the objective at its last step); a long failure reason
    folded into a details element (its first line shown), so that no cell grows tall."""
    shown = runs.copy()
    try:
        obs = study.observations()
        final = observed_objective(study, obs) if obs is not None else pd.Series(dtype=float)
    except ValueError:  # no observation of the objective's metric
        final = pd.Series(dtype=float)
    at = list(shown.columns).index("status") + 1
    shown.insert(at, "final loss", shown["run_id"].map(final).astype(float))
    reasons = shown.pop("reason").fillna("")
    table = _table(shown, "{:.3f}")
    head, sep, body = table.partition("<tbody>")
    head = head.replace("</tr></thead>", "<th>reason</th></tr></thead>")
    rows = body.split("</tr>")
    cells = [_reason_cell(str(r)) for r in reasons]
    rows = [row + cell for row, cell in zip(rows, cells, strict=False)] + rows[len(cells) :]
    return head + sep + "</tr>".join(rows)


def _reason_cell(reason: str) -> str:
    if len(reason) <= REASON_CHARS:
        return f'<td class="reason">{html.escape(reason)}</td>'
    short = reason[:REASON_CHARS].rsplit(" ", 1)[0] + " ..."
    return (
        f'<td class="reason" title="{html.escape(reason, quote=True)}"><details>'
        f"<summary>{html.escape(short)}</summary>{html.escape(reason)}</details></td>"
    )


def _figure_html(f: Figure) -> str:
    data = base64.b64encode(f.png).decode()
    return (
        f'<h2 id="{f.name}">{html.escape(f.title)}</h2><figure>'
        f'<img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
    )


def _diagnostics_html(post: Posterior | None, snap: Any) -> str:
    if post is None or snap is None:
        return '<p class="note">No posterior yet: the law is fitted once runs have completed.</p>'
    s = snap.summary
    if post.method != "nuts":
        head = (
            f'<p class="note">Approximate posterior ({html.escape(post.method)}): there are no '
            "Markov chains, so R-hat and effective sample sizes do not apply; the intervals "
            "are those of the approximation. Fit with method nuts for checked intervals.</p>"
        )
        if not s["converged"]:
            head += (
                '<p class="warn">The approximation\'s optimisation did NOT converge: its '
                "intervals are not to be trusted.</p>"
            )
        return head + _fit_table(s)
    cls = "ok" if s["converged"] else "warn"
    verdict = (
        "converged: every R-hat &le; 1.01, every bulk ESS &ge; 400, no divergent transition"
        if s["converged"]
        else "did NOT converge: the intervals above are not to be trusted"
    )
    diag = post.diagnostics().sort_values("r_hat", ascending=False).head(15)
    diag = diag.reset_index().rename(columns={"index": "parameter"})
    return (
        f'<p class="{cls}">NUTS {verdict} (max R-hat {s["max_r_hat"]:.3f}, min bulk ESS '
        f"{s['min_ess_bulk']:.0f}, {s['divergences']} divergences).</p>"
        + _fit_table(s)
        + "<p>The 15 parameters with the largest R-hat:</p>"
        + _table(diag)
    )


def _fit_table(s: dict[str, Any]) -> str:
    rows = pd.DataFrame(
        [
            ("method", s["method"]),
            ("runs fitted", s["n_runs"]),
            ("fit seconds", f"{s.get('fit_seconds', float('nan')):.1f}"),
            ("divergences", s["divergences"]),
            ("warnings", "; ".join(s.get("warnings", [])) or "none"),
        ],
        columns=["", "value"],
    )
    return _table(rows)


def _page(study: Study, figures: list[Figure], post: Posterior | None, snap: Any) -> str:
    cfg = study.config
    counts = study.counts()
    runs = study.runs_frame()
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    law = snap.law if snap is not None else cfg.fit.law_label
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>bayesmix study {html.escape(study.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>Study {html.escape(study.name)}</h1>",
        f"<p class='meta'>{html.escape(cfg.description)} Written {when} from "
        f"{html.escape(study.storage.safe_url)}. "
        f"{html.escape(cfg.spent_label(study.runs()))}: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + f". Law {law} ({cfg.fit.method}); proposer {cfg.proposer.name} (first batch "
        f"{cfg.proposer.first}); trainer {cfg.proxy.trainer}.</p>",
    ]
    if snap is not None:
        s = snap.summary
        natural = study.natural()
        m = len(s["mixture"])
        table = pd.DataFrame(
            [
                {
                    "domain": d,
                    "recommended": s["mixture"][d],
                    f"lo {s['ci']:.0%}": s["intervals"][d]["lo"],
                    f"hi {s['ci']:.0%}": s["intervals"][d]["hi"],
                    "natural": natural[d],
                    "uniform": 1 / m,
                }
                for d in s["mixture"]
            ]
        )
        lo, hi = s["objective_interval"]
        parts.append(
            "<h2>Recommendation</h2>"
            + _table(table, "{:.3f}")
            + f"<p>Posterior-expected objective {s['expected_objective']:.4f} "
            f"({s['ci']:.0%} interval {lo:.4f} to {hi:.4f}), from {snap.n_runs} runs.</p>"
        )
        if snap.method == "nuts" and not snap.converged:
            parts.append('<p class="warn">The posterior did NOT converge (see diagnostics).</p>')
    else:
        parts.append('<p class="note">No posterior yet.</p>')
    parts += [_figure_html(f) for f in figures]
    parts.append("<h2 id='diagnostics'>Convergence diagnostics</h2>")
    parts.append(_diagnostics_html(post, snap))
    if len(runs):
        parts.append("<h2 id='runs'>Runs</h2>" + _runs_table(study, runs))
    parts.append(SELF_CHECK + "</body></html>")
    return "\n".join(parts)
