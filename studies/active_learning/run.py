"""Active-learning benchmark: simple regret of the recommended mixture after each batch of runs.

Every (cell, seed, proposer) trajectory is a ``bm.Study`` kept in memory: it asks the study
for q runs at a time (the study's proposer), trains them on an oracle instead of proxies
(``bayesmix.benchmarks.OracleTrainer``) and tells the study their losses, refits the law
(warm-started from the previous posterior when ``bm.fit`` accepts ``init=``; ``Study.fit``
neither warm-starts nor chooses the law, which ``--law held-out`` needs), and scores every
recommender's mixture by its simple regret (true objective minus the best achievable).
Olmix's reference recipe, a Dirichlet swarm of K = 3(m+1) runs in one batch + Olmix's
recommender, is run per seed too.

Results are appended, one JSON line per (cell, seed, proposer, budget, recommender), to
``results/<config>.jsonl``; a rerun skips what is there (resumable, run it in pieces). CPU
seconds of each batch (proposal, fit, recommendations) are recorded with each line.

    python -m studies.active_learning.run --config full [--cells synthetic-bimix-7 ...]
        [--seeds 0-9] [--proposers ...]          # runs (or resumes) the benchmark
    python -m studies.active_learning.run --config full --table   # writes the table only
"""

from __future__ import annotations

from studies import _common

_common.one_thread_per_library()  # before numpy, jax and torch load

import argparse  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Iterable  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = _common.DATA
Q = 8


# ------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class Cell:
    """One oracle: kind ("synthetic-bimix", "synthetic-cross", "regmix-landscape",
    "regmix-pool"), number of domains m, objective target (None: mean of all targets)."""

    kind: str
    m: int
    target: str | None = None
    max_runs: int | None = None  # default: Olmix's K = 3 (m + 1), rounded up to a batch

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.m}" + (f"-{self.target}" if self.target else "")

    @property
    def olmix_k(self) -> int:
        return 3 * (self.m + 1)

    def budgets(self) -> list[int]:
        top = self.max_runs or self.olmix_k
        return list(range(Q, top + Q, Q))[: int(np.ceil(top / Q))]


@dataclass(frozen=True)
class Method:
    """A proposer (with options) whose trajectory every listed recommender scores."""

    proposer: str
    options: dict[str, Any] = field(default_factory=dict)
    recommenders: tuple[str, ...] = ("posterior-optimum", "olmix", "regmix")
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.proposer


ALL_RECOMMENDERS = ("posterior-optimum", "olmix", "regmix")
GP = "posterior-optimum+gp"
# --law averaged: the optimum of the law-weighted expected objective (model averaging).
MODEL_AVERAGE = "posterior-optimum+average"
# Olmix's recommender at the KL weight of OLMIX_KL_WEIGHTS whose mixture is best in truth:
# the most favourable reading of Olmix's method at equal budget, as its recipe's reference.
OLMIX_BEST = "olmix kl=best"
OLMIX_LINES = ("olmix", OLMIX_BEST)  # scored together from one fit per batch (olmix_by_kl)
BAYESMIX = Method(
    "bayesmix", {"acquisition": "thompson"}, (*ALL_RECOMMENDERS, GP), "bayesmix-thompson"
)
SWARMS = [
    Method("dirichlet-swarm", recommenders=(*ALL_RECOMMENDERS, GP)),
    Method("random-swarm"),
    Method("uniform"),
    Method("entropy"),
]


FIT_METHODS = {
    "laplace": {"method": "laplace", "num_chains": 1, "num_samples": 256},
    # The cross law's Laplace approximation misplaces its mass (a funnel between the
    # exponents and their population scale): NUTS, 2 chains x 300 draws, ~1 CPU minute.
    "nuts": {"method": "nuts", "num_chains": 2, "num_warmup": 300, "num_samples": 300},
}


# --law held-out: before each batch, the law that predicts left-out runs best
# (bayesmix.selection, method "loo"), fitted by NUTS; --fit-method does not apply.
CHOSEN_BY_HELD_OUT_FIT = "held-out"
# --law averaged: the same choice recommends; proposals are over both laws' NUTS fits
# weighted by stacking (bayesmix.selection.average_laws).
AVERAGED_OVER_LAWS = "averaged"
CHOSEN_BEFORE_EVERY_BATCH = (CHOSEN_BY_HELD_OUT_FIT, AVERAGED_OVER_LAWS)


@dataclass
class Config:
    name: str
    cells: list[Cell]
    methods: list[Method]
    seeds: list[int]
    law: str = "bimix"
    fit: dict[str, Any] = field(default_factory=lambda: dict(FIT_METHODS["laplace"]))
    max_draws: int = 256
    # methods run only on some cells (e.g. 64 domains: bayesmix against Olmix's recipe)
    only: dict[str, list[str]] = field(default_factory=dict)


def configs() -> dict[str, Config]:
    bayesmix_variants = [
        BAYESMIX,
        Method("bayesmix", {"acquisition": "qlognei"}, ("posterior-optimum",), "bayesmix-qlognei"),
        Method(
            "bayesmix",
            {"acquisition": "optimum-variance"},
            ("posterior-optimum",),
            "bayesmix-optimum-variance",
        ),
        Method(
            "bayesmix",
            {"acquisition": "qlognei", "discrepancy": True},
            ("posterior-optimum", GP),
            "bayesmix-qlognei-gp",
        ),
    ]
    full_cells = [
        Cell("synthetic-bimix", 7),
        Cell("synthetic-cross", 7),
        Cell("synthetic-bimix", 17),
        Cell("synthetic-cross", 17),
        Cell("regmix-landscape", 17),
        Cell("regmix-pool", 17),
        Cell("regmix-landscape", 17, "pile_cc"),
        Cell("regmix-pool", 17, "pile_cc"),
        Cell("synthetic-bimix", 64, max_runs=64),
        Cell("synthetic-cross", 64, max_runs=64),
    ]
    big = [c.name for c in full_cells if c.m < 64]
    return {
        "full": Config(
            "full",
            full_cells,
            [*bayesmix_variants, *SWARMS],
            list(range(10)),
            only={
                "random-swarm": big,
                "uniform": big,
                "entropy": big,
                "bayesmix-qlognei": big,
                "bayesmix-optimum-variance": big,
                "bayesmix-qlognei-gp": big,
            },
        ),
        # CI: one small world, two seeds, the acceptance pair and one swarm.
        "small": Config(
            "small",
            [Cell("synthetic-bimix", 4, max_runs=16)],
            [
                Method("bayesmix", {"acquisition": "thompson"}, ("posterior-optimum",)),
                Method("dirichlet-swarm", recommenders=("olmix", OLMIX_BEST)),
            ],
            [0, 1],
            fit={"method": "laplace", "num_chains": 1, "num_samples": 64},
            max_draws=64,
        ),
    }


# ----------------------------------------------------------------------------- oracles
def make_oracle(cell: Cell, seed: int, cache: Path) -> Any:
    from bayesmix.benchmarks import PoolOracle, RegMixLandscape, SyntheticOracle

    if cell.kind.startswith("synthetic-"):
        law = {"synthetic-bimix": "bimix", "synthetic-cross": "bimix-cross"}[cell.kind]
        return SyntheticOracle(
            cell.m, law=law, world_seed=seed, optimum_cache=cache / "synthetic_optima.json"
        )
    if cell.kind not in ("regmix-landscape", "regmix-pool"):
        raise ValueError(f"unknown cell kind {cell.kind!r}")
    if cell.m != 17:
        raise ValueError(f"{cell.kind} has RegMix's 17 domains, not {cell.m}")
    if cell.kind == "regmix-landscape":
        return RegMixLandscape(
            DATA / "regmix", cache=cache / "regmix_landscape.pt", target=cell.target
        )
    return PoolOracle(DATA / "regmix", target=cell.target)


def entropies(oracle: Any, seed: int) -> dict[str, float]:
    """Per-domain entropies for BiMix's proposer: for RegMix's Pile domains the published
    conditional-entropy mixture (softmax(H) = CE, so H = log CE up to a constant); synthetic
    worlds have no text, so they get uninformative entropies ~ N(0, 0.5) from the seed."""
    if oracle.name.startswith("regmix"):
        table = pd.read_csv(DATA / "bimix_paper" / "pile_mixtures_table4.csv")
        from bayesmix.observations import canonical_name

        names = {"Github": "github", "GitHub": "github", "Wikipedia (en)": "wikipedia_en"}
        table["domain"] = [names.get(d, canonical_name(d)) for d in table["domain"]]
        ce = table.set_index("domain")["CE"]
        return {d: float(np.log(ce[d])) for d in oracle.domains}
    rng = np.random.default_rng([seed, 99])
    return dict(zip(oracle.domains, rng.normal(0.0, 0.5, len(oracle.domains)), strict=True))


def oracle_context(oracle: Any, seed: int, obs: Any = None, post: Any = None) -> Any:
    """What a proposer or recommender sees of an oracle's world: its domains, natural
    proportions, objective and pool, with the runs observed so far and their posterior."""
    from bayesmix.benchmarks import weights_mapping
    from bayesmix.proposers import ProposalContext

    return ProposalContext(
        oracle.domains,
        observations=obs,
        posterior=post,
        natural=oracle.natural,
        weights=dict(weights_mapping(oracle)),
        seed=seed,
        candidates=getattr(oracle, "candidates", None),
    )


# --------------------------------------------------------------------------- trajectory
def _fit(obs: Any, config: Config, seed: int, previous: Any) -> Any:
    import bayesmix as bm

    if config.law == CHOSEN_BY_HELD_OUT_FIT:
        # 3 refits per law at most: the choice + the fit in ~8 NUTS fits per batch.
        return bm.compare_laws(obs, method="loo", folds=3, seed=seed).posterior
    if config.law == AVERAGED_OVER_LAWS:
        return bm.average_laws(obs, folds=3, seed=seed)
    options = dict(config.fit)
    if previous is not None and "init" in inspect.signature(bm.fit).parameters:
        options["init"] = previous  # warm start: cheap refits between batches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bm.fit(obs, law=config.law, seed=seed, progress=False, **options)


def study_config(
    cell: Cell, seed: int, method: Method, config: Config, oracle: Any, workdir: Path
) -> Any:
    """The in-memory study of one trajectory: the oracle's domains (their natural proportions
    as token counts), its objective, the method's proposer (its first batch by itself where
    it can propose without observations, else by a Dirichlet swarm, as the bayesmix
    proposer does) and the seed."""
    from bayesmix.benchmarks import weights_mapping
    from bayesmix.study import parse_config
    from bayesmix.study.config import FIRST_PROPOSERS

    options = dict(method.options)
    if method.proposer == "entropy":
        options["entropies"] = entropies(oracle, seed)
    if method.proposer == "bayesmix":
        options.update(law=config.law, fit_options=config.fit, max_draws=config.max_draws)
    weights = dict(weights_mapping(oracle))
    equal = len(weights) == len(oracle.targets) and len(set(weights.values())) == 1
    return parse_config(
        {
            "name": f"{cell.name}-{method.name}-{seed}",
            "seed": seed,
            "workdir": str(workdir / f"{cell.name}-{method.name}-{seed}"),
            "data": {"domains": list(oracle.domains), "token_counts": dict(oracle.natural)},
            # The runs are trained by the oracle (OracleTrainer), not by the study's trainer.
            "proxy": {"trainer": "law", "steps": 1},
            "objective": {"weights": None if equal else weights},
            "proposer": {
                "name": method.proposer,
                "first": method.proposer
                if method.proposer in FIRST_PROPOSERS
                else "dirichlet-swarm",
                "options": options,
            },
            "batch_size": Q,
            "budget": cell.budgets()[-1],
            "report": False,
        }
    )


def trajectory(
    cell: Cell, seed: int, method: Method, config: Config, cache: Path, done: set[tuple]
) -> Iterable[dict[str, Any]]:
    """Yield one result line per (budget, recommender) not already in ``done``."""
    import bayesmix as bm
    from bayesmix.benchmarks import OracleTrainer, train_and_tell, weights_mapping
    from bayesmix.law_average import LawAverage, chosen_posterior

    oracle = make_oracle(cell, seed, cache)
    pool = getattr(oracle, "candidates", None)
    weights = dict(weights_mapping(oracle))
    study = bm.Study.create(
        study_config(cell, seed, method, config, oracle, cache / "studies"), storage=None
    )
    trainer = OracleTrainer(oracle, np.random.default_rng([seed, 2024]))
    recommenders = {
        name: make_recommender(name, config)
        for name in method.recommenders
        if name not in OLMIX_LINES
    }
    post = None
    for budget in cell.budgets():
        started, wall = time.process_time(), time.perf_counter()
        # Every proposal seeded by the trajectory's seed, as the benchmark's loop did before
        # it drove a Study (whose default derives a seed per proposal).
        train_and_tell(study, trainer, study.ask(Q, post, candidates=pool, seed=seed))
        obs = study.observations()
        propose_cpu = time.process_time() - started
        todo = [name for name in method.recommenders if (budget, name) not in done]
        needs_post = method.proposer == "bayesmix" or any(
            name.startswith("posterior-optimum") for name in todo
        )
        fit_started = time.process_time()
        if needs_post:
            post = _fit(obs, config, seed, post)
        fit_cpu = time.process_time() - fit_started
        ctx = oracle_context(oracle, seed, obs, post)
        by_kl: dict[float, tuple[np.ndarray, float]] = {}  # Olmix's fit, once per batch
        for name in todo:
            rec_started = time.process_time()
            extra: dict[str, Any] = {}
            if name in OLMIX_LINES:
                by_kl = by_kl or {kl: (mix, v) for kl, mix, v in olmix_by_kl(ctx, oracle)}
                kl = OLMIX_KL_WEIGHT if name == "olmix" else min(by_kl, key=lambda k: by_kl[k][1])
                mixture, value = by_kl[kl]
                if name == OLMIX_BEST:
                    extra["kl_weight"] = kl
            else:
                mixture = recommenders[name].recommend(ctx).reindex(oracle.domains).to_numpy()
                value = float(oracle.objective(mixture[None])[0])
            line = {
                "cell": cell.name,
                "seed": seed,
                "method": method.name,
                "budget": budget,
                "recommender": name,
                "regret": value - oracle.best_value,
                "objective": value,
                "best": oracle.best_value,
                "mixture": mixture.round(6).tolist(),
                "cpu_s": {
                    "propose": propose_cpu,
                    "fit": fit_cpu,
                    "recommend": time.process_time() - rec_started,
                },
                "wall_s": time.perf_counter() - wall,
                "law": None if post is None else chosen_posterior(post).law,
                "commit": COMMIT,
                "host": HOST,
                **extra,
            }
            if isinstance(post, LawAverage):
                line["law_weights"] = dict(post.weights)
            if name == "posterior-optimum" and pool is None:
                line["ci90"] = optimum_interval(
                    chosen_posterior(post), weights, config, oracle.best_mixture
                )
            yield line


def optimum_interval(
    post: Any, weights: dict[str, float], config: Config, truth: np.ndarray
) -> dict[str, Any]:
    """The 90 % credible intervals of the optimal mixture (per-draw optima; memoised, so the
    recommendation already paid for them) and whether each holds the true optimum."""
    from bayesmix.acquisition import objective_weights, optimal_mixture
    from bayesmix.benchmarks import coverage

    w = objective_weights(weights, list(post.targets))
    opt = optimal_mixture(
        post, dict(zip(post.targets, w, strict=True)), None, None, config.max_draws
    )
    cov = coverage(opt.intervals, truth, list(post.domains))
    return {
        "lo": cov.lo.round(6).tolist(),
        "hi": cov.hi.round(6).tolist(),
        "truth": cov.truth.round(6).tolist(),
        "covered": cov.covered,
        "width": cov.width,
    }


COMMIT = _common.commit()  # each result line carries where and from what code it came
HOST = _common.host()


def make_recommender(name: str, config: Config) -> Any:
    """A recommender by benchmark name; "posterior-optimum+gp" adds the GP discrepancy,
    "posterior-optimum+average" recommends from the average of laws."""
    from bayesmix.proposers import get_recommender

    if name.startswith("posterior-optimum"):
        return get_recommender(
            "posterior-optimum",
            law=config.law,
            fit_options=config.fit,
            max_draws=config.max_draws,
            discrepancy=name == GP,
            model_average=name == MODEL_AVERAGE,
        )
    return get_recommender(name)


OLMIX_KL_WEIGHT = 0.05  # Olmix's own (its paper), the recommender's default
OLMIX_KL_WEIGHTS = (OLMIX_KL_WEIGHT, 0.1, 0.2, 0.5, 1.0)


def olmix_reference(cell: Cell, seed: int, cache: Path) -> list[dict[str, Any]]:
    """Olmix's recipe: one Dirichlet swarm of K = 3(m+1) runs, Olmix's recommender.

    One line per KL weight in ``OLMIX_KL_WEIGHTS`` (one fit shared by all): Olmix's 0.05
    (its paper) and 0.1 (its README) were tuned on bits per byte, whose spread over a swarm
    is 3 to 6 times smaller than these nats, so the same pull towards the natural
    proportions needs a larger weight here. The table takes the best weight per cell (chosen
    with the truth, so the most favourable reading of Olmix's recipe) as the reference.
    """
    import bayesmix as bm
    from bayesmix.proposers import get_proposer

    started = time.process_time()
    oracle = make_oracle(cell, seed, cache)
    batch = get_proposer("dirichlet-swarm").propose(oracle_context(oracle, seed), cell.olmix_k)
    r = batch[[f"r:{d}" for d in oracle.domains]].to_numpy()
    ids = [f"olmix-{i}" for i in range(len(r))]
    obs = bm.Observations.from_frame(oracle.observe(r, np.random.default_rng([seed, 7]), ids))
    lines = []
    for kl, mixture, value in olmix_by_kl(oracle_context(oracle, seed, obs), oracle):
        lines.append(
            {
                "cell": cell.name,
                "seed": seed,
                "method": "olmix-recipe",
                "budget": cell.olmix_k,
                "recommender": olmix_name(kl),
                "regret": value - oracle.best_value,
                "objective": value,
                "best": oracle.best_value,
                "mixture": mixture.round(6).tolist(),
                # One fit serves every weight: the recipe's CPU is on its first line.
                "cpu_s": {"total": time.process_time() - started if not lines else 0.0},
                "commit": COMMIT,
                "host": HOST,
            }
        )
    return lines


def olmix_by_kl(ctx: Any, oracle: Any) -> list[tuple[float, np.ndarray, float]]:
    """Olmix's recommender fitted once to the context's runs, solved at every KL weight of
    ``OLMIX_KL_WEIGHTS``: (weight, mixture, true objective) per weight."""
    from bayesmix.proposers import get_recommender

    recommender = get_recommender("olmix")
    params = recommender.fit_context(ctx)
    out = []
    for kl in OLMIX_KL_WEIGHTS:
        mixture = replace(recommender, kl_weight=kl).solve(ctx, params)
        mixture = mixture.reindex(oracle.domains).to_numpy()
        out.append((kl, mixture, float(oracle.objective(mixture[None])[0])))
    return out


def olmix_name(kl: float) -> str:
    return "olmix" if kl == OLMIX_KL_WEIGHT else f"olmix kl={kl:g}"


# ---------------------------------------------------------------------------------- run
def load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _jax_compilation_cache(cache: Path) -> None:
    """Keep XLA's compiled programs on disk: every fit of the same shape reuses them."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(cache / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run(
    config: Config, out: Path, cache: Path, cells: list[str] | None, methods: list[str] | None
) -> None:
    import torch

    torch.set_num_threads(1)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    _jax_compilation_cache(cache)
    rows = load(out)
    done = {(r["cell"], r["seed"], r["method"], r["budget"], r["recommender"]) for r in rows}
    header = {
        "config": config.name,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "law": config.law,
        "fit": config.fit,
    }
    print(json.dumps(header), flush=True)
    with out.open("a") as fh:
        for cell in config.cells:
            if cells and cell.name not in cells:
                continue
            for seed in config.seeds:
                recipe = {
                    (cell.name, seed, "olmix-recipe", cell.olmix_k, olmix_name(kl))
                    for kl in OLMIX_KL_WEIGHTS
                }
                if recipe <= done:
                    continue
                for line in olmix_reference(cell, seed, cache):
                    fh.write(json.dumps(line) + "\n")
                    fh.flush()
                    print(
                        f"{cell.name} seed {seed} olmix-recipe {line['recommender']} "
                        f"regret {line['regret']:.5f}",
                        flush=True,
                    )
            # Method-major, so that a run stopped early has every seed of the first methods.
            for method in config.methods:
                if methods and method.name not in methods:
                    continue
                if method.name in config.only and cell.name not in config.only[method.name]:
                    continue
                for seed in config.seeds:
                    mine = {
                        (b, r)
                        for (c, s, m, b, r) in done
                        if (c, s, m) == (cell.name, seed, method.name)
                    }
                    wanted = {(b, r) for b in cell.budgets() for r in method.recommenders}
                    if wanted <= mine:
                        continue
                    for line in trajectory(cell, seed, method, config, cache, mine):
                        fh.write(json.dumps(line) + "\n")
                        fh.flush()
                        print(
                            f"{cell.name} seed {seed} {method.name} n={line['budget']} "
                            f"{line['recommender']} regret {line['regret']:.5f} "
                            f"cpu {sum(line['cpu_s'].values()):.1f}s",
                            flush=True,
                        )


# -------------------------------------------------------------------------------- table
def table(rows: list[dict[str, Any]], config: Config) -> str:
    """Markdown: mean regret per (method, recommender) and budget; runs needed to reach
    Olmix's K = 3(m+1) regret; seeds where bayesmix beats the Dirichlet swarm."""
    if not rows:
        return "no results yet\n"
    df = pd.DataFrame(rows)
    out = [f"# Active-learning benchmark ({config.name})", ""]
    cpu = _cpu_seconds(rows)
    fitted = (
        "`bayesmix.selection` (NUTS, 2 x 200 draws)"
        if config.law in CHOSEN_BEFORE_EVERY_BATCH
        else f"`{config.fit}`"
    )
    out.append(
        f"{len(df)} result lines, {df.groupby(['cell', 'seed']).ngroups} (cell, seed) pairs, "
        f"{cpu / 3600:.2f} CPU hours recorded; law `{config.law}`, fit {fitted}, "
        f"q = {Q}. Regret = true objective of the recommended mixture minus the best "
        "achievable (nats, lower is better); mean over seeds (number of seeds in brackets). "
        + _common.commits_and_hosts(rows)
    )
    for cell_name, cdf in df.groupby("cell", sort=False):
        m = int(cell_name.split("-")[2]) if cell_name.split("-")[2].isdigit() else 17
        ref = cdf[cdf["method"] == "olmix-recipe"]
        by_kl = ref.groupby("recommender")["regret"].agg(["mean", "count"])
        ref_regret = by_kl["mean"].min() if len(by_kl) else np.nan
        out += ["", f"## {cell_name}", ""]
        out.append(
            f"Olmix's recipe (Dirichlet swarm, K = 3(m+1) = {3 * (m + 1)} runs, Olmix's "
            f"recommender): mean regret {ref_regret:.5f}, the best KL weight's ("
            + ", ".join(f"{k}: {v['mean']:.5f} ({int(v['count'])})" for k, v in by_kl.iterrows())
            + "); the runs to reach it are counted against the best."
        )
        body = cdf[cdf["method"] != "olmix-recipe"]
        if body.empty:
            continue
        budgets = sorted(body["budget"].unique())
        out += [
            "",
            "| method | recommender | "
            + " | ".join(f"n={b}" for b in budgets)
            + " | runs to Olmix's K regret |",
            "|---|---|" + "---:|" * (len(budgets) + 1),
        ]
        for (method, rec), g in body.groupby(["method", "recommender"], sort=False):
            means = g.groupby("budget")["regret"].agg(["mean", "count"])
            cells_ = [
                f"{means.loc[b, 'mean']:.5f} ({int(means.loc[b, 'count'])})"
                if b in means.index
                else ""
                for b in budgets
            ]
            reach = [b for b in budgets if b in means.index and means.loc[b, "mean"] <= ref_regret]
            out.append(
                f"| {method} | {rec} | "
                + " | ".join(cells_)
                + f" | {reach[0] if reach else '>' + str(budgets[-1])} |"
            )
        out += ["", _wins(body, m)]
        if config.law in CHOSEN_BEFORE_EVERY_BATCH:
            out += ["", _laws_chosen(body), "", _cpu_per_batch(body)]
        if MODEL_AVERAGE in set(body["recommender"]):
            out += ["", _average_by_comparison(body)]
    return "\n".join(out) + "\n"


def _laws_chosen(body: pd.DataFrame) -> str:
    """How many seeds' posteriors had each law, per proposer and budget (--law held-out,
    averaged: the law chosen to recommend from)."""
    ours = body[body["recommender"] == "posterior-optimum"].dropna(subset=["law"])
    lines = []
    for method, g in ours.groupby("method", sort=False):
        counts = g.groupby("budget")["law"].value_counts().unstack(fill_value=0)
        per = [
            f"n={b}: " + ", ".join(f"{law} {n}" for law, n in row.items() if n)
            for b, row in counts.iterrows()
        ]
        lines.append(f"law chosen by held-out fit, {method} (seeds): " + "; ".join(per))
    return "  \n".join(lines)


def _average_by_comparison(body: pd.DataFrame) -> str:
    """Mean regret of the chosen law's and the average's recommendation, split by whether
    every law had been compared (held-out weights) or one still had its prior weight 1/K
    (too few distinct mixtures to compare it: stacking never gives exactly 1/K)."""
    lines = []
    for method, g in body.groupby("method", sort=False):
        if not {"posterior-optimum", MODEL_AVERAGE} <= set(g["recommender"]):
            continue
        wide = g.pivot_table(index=["seed", "budget"], columns="recommender", values="regret")
        weights = g[g["recommender"] == "posterior-optimum"].set_index(["seed", "budget"])
        prior = weights["law_weights"].map(
            lambda w: any(abs(v - 1 / len(w)) < 1e-12 for v in w.values())
        )
        per = []
        for (budget, uncompared), cell in wide.groupby([wide.index.get_level_values(1), prior]):
            per.append(
                f"n={budget}, {'a law not yet compared' if uncompared else 'all compared'} "
                f"({len(cell)}): {cell['posterior-optimum'].mean():.5f} / "
                f"{cell[MODEL_AVERAGE].mean():.5f}"
            )
        lines.append(f"chosen law / average of laws, {method}: " + "; ".join(per))
    return "  \n".join(lines)


def _cpu_seconds(rows: list[dict[str, Any]]) -> float:
    """CPU seconds recorded: a batch's proposal and fit once (every recommender's line
    repeats them), each recommendation once."""
    batches: dict[tuple, float] = {}
    total = 0.0
    for r in rows:
        cpu = r["cpu_s"]
        key = (r["cell"], r["seed"], r["method"], r["budget"])
        batches[key] = max(batches.get(key, 0.0), cpu.get("propose", 0.0) + cpu.get("fit", 0.0))
        total += cpu.get("recommend", 0.0) + cpu.get("total", 0.0)
    return total + sum(batches.values())


def _cpu_per_batch(body: pd.DataFrame) -> str:
    """Mean CPU seconds of the proposal and of the fit (the law's choice included) before
    and after each batch, per proposer and budget."""
    ours = body[body["recommender"] == "posterior-optimum"]
    lines = []
    for method, g in ours.groupby("method", sort=False):
        cpu = pd.DataFrame(list(g["cpu_s"]), index=g.index)
        means = cpu.groupby(g["budget"])[["propose", "fit"]].mean()
        per = [f"n={b}: {r['propose']:.0f} + {r['fit']:.0f}" for b, r in means.iterrows()]
        lines.append(f"CPU s per batch, proposal + fit, {method} (mean): " + "; ".join(per))
    return "  \n".join(lines)


def _score(g: pd.DataFrame) -> str:
    """ "wins/seeds", and the ties (same runs, e.g. the shared first swarm) when there are."""
    tied = np.isclose(g["regret"], g["regret_d"], rtol=0, atol=1e-12)
    wins = int(((g["regret"] < g["regret_d"]) & ~tied).sum())
    return f"{wins}/{len(g)}" + (f" ({int(tied.sum())} tied)" if tied.any() else "")


def _wins(body: pd.DataFrame, m: int) -> str:
    """Seeds (of those run) where each bayesmix proposer + our recommender (posterior-optimum,
    and posterior-optimum+average where scored) has lower regret than the Dirichlet swarm with
    Olmix's recommender (at KL weight 0.05, and at its best weight where scored) and the
    random swarm with RegMix's, and than every other proposer with the same recommender, at
    equal budget, from n >= m+1 on (or the largest budget run, when that is below m+1)."""
    lines = []
    methods = list(body["method"].unique())
    bayesmix_methods = [x for x in methods if x.startswith("bayesmix")]
    ours_recs = [r for r in ("posterior-optimum", MODEL_AVERAGE) if r in set(body["recommender"])]
    for method, our_rec in [(x, r) for x in bayesmix_methods for r in ours_recs]:
        ours = body[(body["method"] == method) & (body["recommender"] == our_rec)]
        # The peers' own methods (their proposer with their recommender), then the proposer's
        # own merit: every other proposer with the same recommender.
        peers = [
            ("dirichlet-swarm", "olmix"),
            ("dirichlet-swarm", OLMIX_BEST),
            ("random-swarm", "regmix"),
        ]
        baselines = peers * (our_rec == "posterior-optimum") + [
            (x, our_rec) for x in methods if not x.startswith("bayesmix")
        ]
        for other, rec in baselines:
            theirs = body[(body["method"] == other) & (body["recommender"] == rec)]
            both = ours.merge(theirs, on=["seed", "budget"], suffixes=("", "_d"))
            if both.empty:
                continue
            both = both[both["budget"] >= min(m + 1, both["budget"].max())]
            per = both.groupby("budget").apply(_score, include_groups=False)
            lines.append(
                f"{method} + {our_rec} beats {other} + {rec} in: "
                + ", ".join(f"n={b}: {v}" for b, v in per.items())
            )
    for method in methods:  # the GP discrepancy against the same runs without it
        plain = body[(body["method"] == method) & (body["recommender"] == "posterior-optimum")]
        gp = body[(body["method"] == method) & (body["recommender"] == GP)]
        both = gp.merge(plain, on=["seed", "budget"], suffixes=("", "_d"))
        if not both.empty:
            per = both.groupby("budget").apply(_score, include_groups=False)
            lines.append(
                f"{method} + {GP} beats {method} + posterior-optimum in: "
                + ", ".join(f"n={b}: {v}" for b, v in per.items())
            )
    return "  \n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="full", choices=sorted(configs()))
    p.add_argument("--cells", nargs="*", help="cell names to run (default: all)")
    p.add_argument("--methods", nargs="*", help="method names to run (default: all)")
    p.add_argument("--recommenders", nargs="*", help="recommenders to score (default: all)")
    p.add_argument("--seeds", help="e.g. 0-9 or 0,3,5 (default: the config's)")
    p.add_argument(
        "--law",
        help=f"law of the posterior (default: the config's); {CHOSEN_BY_HELD_OUT_FIT!r}: the "
        "law that predicts left-out runs best, chosen again before every batch; "
        f"{AVERAGED_OVER_LAWS!r}: that law recommends, proposals average the laws",
    )
    p.add_argument(
        "--fit-method",
        choices=sorted(FIT_METHODS),
        help="how the law is fitted between batches (default: the config's, Laplace)",
    )
    p.add_argument("--out", type=Path, help="results file (default results/<config>.jsonl)")
    p.add_argument("--cache", type=Path, default=HERE / "cache")
    p.add_argument("--max-runs", type=int, help="cap every cell's budget at this many runs")
    p.add_argument("--table", action="store_true", help="only write the table")
    a = p.parse_args(argv)
    config = configs()[a.config]
    if a.max_runs:
        config.cells = [
            replace(c, max_runs=min(c.max_runs or c.olmix_k, a.max_runs)) for c in config.cells
        ]
    if a.seeds:
        config.seeds = _parse_seeds(a.seeds)
    if a.law:
        config.law = a.law
    if a.fit_method:
        config.fit = FIT_METHODS[a.fit_method]
    if a.recommenders:
        keep = set(a.recommenders)
        config.methods = [
            replace(m, recommenders=tuple(r for r in _offered(m) if r in keep))
            for m in config.methods
        ]
    out = a.out or HERE / "results" / f"{config.name}.jsonl"
    if not a.table:
        run(config, out, a.cache, a.cells, a.methods)
    text = table(load(out), config)
    (out.with_suffix(".md")).write_text(text)
    print(text)


def _offered(method: Method) -> tuple[str, ...]:
    """The recommenders --recommenders may pick for a method: its own, the model average
    wherever our posterior-optimum scores it (the same posterior; they differ with --law
    averaged only, so it is scored when asked for, not by default), and Olmix's at its best
    KL weight wherever Olmix's scores."""
    extra = (MODEL_AVERAGE,) if "posterior-optimum" in method.recommenders else ()
    extra += (OLMIX_BEST,) if "olmix" in method.recommenders else ()
    return (*method.recommenders, *extra)


def _parse_seeds(spec: str) -> list[int]:
    if "-" in spec:
        lo, hi = spec.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in spec.split(",")]


if __name__ == "__main__":
    main()
