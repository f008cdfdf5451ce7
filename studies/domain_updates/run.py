"""Domain-update benchmark: warm start from the old posterior vs Olmix's mixture reuse.

A synthetic ground truth (the own-share BiMix law, ``bayesmix.benchmarks.SyntheticOracle``'s
parameter draw at m = 20 domains, final losses only, RegMix's noise level) goes through five
updates like Olmix's: add one domain; add three; revise one; remove one; split one (a large
one) into four. The world changes accordingly (documented in ``World``). After each update
every method spends proxy runs and recommends a mixture; its regret is the true objective
(mean loss over the domains) minus the true optimum of the new world.

Methods, per seed (all start from the same 3(m+1)-run Dirichlet swarm at version 1):

- ``scratch``: full recomputation: a new Olmix swarm of K = 3(m+1) runs over the new set,
  the bayesmix law fitted to it (Laplace), its posterior-expected optimum.
- ``olmix-recompute``: the same swarm, Olmix's recommender (log-linear law, Huber, KL 0.05).
- ``olmix-full-reuse``: Olmix's reuse: unaffected domains frozen at their ratios in Olmix's
  previous mixture as one virtual domain; a swarm of 3(m'+1) runs over the m' reduced
  domains (virtual + affected), Olmix's recommender there (no run when nothing is affected).
- ``olmix-partial-reuse``: the same with the three largest frozen domains re-opened (Olmix
  chooses by hand; taking the largest is the natural manual choice).
- ``warm``: bayesmix warm start: the old posterior becomes the prior (``bayesmix.reuse``),
  exactly mappable old runs stay in the likelihood, and runs are proposed by the
  optimum-variance acquisition (``bm.propose``: the runs that most reduce the posterior
  variance of the optimal mixture, which an update has just made uncertain; config
  ``thompson``: Thompson sampling) from the transferred posterior, then from each refit; evaluated
  after 0 runs (the transferred posterior alone) and after as many runs as Olmix's full
  reuse spends on that update (one refit per update keeps the benchmark under an hour).
- ``warm-reuse``: the same, its runs restricted to bayesmix's own reuse plan (frozen domains
  at their ratios in bayesmix's previous mixture, re-opened by ``choose_reopen``).

Results: one JSON line per (seed, update, method, runs) in ``results/<config>.jsonl``
(resumable: finished seeds are skipped), then ``README.md`` gets the table.

    python -m studies.domain_updates.run --config full      # 10 seeds (~1 h, one core)
    python -m studies.domain_updates.run --config ci        # seconds-sized, for tests
    python -m studies.domain_updates.run --config full --table   # table only
"""

from __future__ import annotations

from studies import _common

_common.one_thread_per_library()  # before numpy, jax and torch load

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent
FIT = {
    "method": "laplace",
    "num_chains": 1,
    "num_samples": 400,
    "progress": False,
    "noise": "normal",  # the synthetic noise is independent per row; old runs lack new targets
}
MAX_DRAWS = 200
CI = 0.9


@dataclass(frozen=True)
class Config:
    name: str
    m: int
    seeds: tuple[int, ...]
    updates: tuple[str, ...]
    first_batch: int = 0  # an extra checkpoint after this many warm-start runs (0: none)
    acquisition: str = "optimum-variance"  # how warm starts propose their runs
    reopen_partial: int = 3
    split_parts: int = 4


FULL = Config("full", 20, tuple(range(10)), ("add1", "add3", "revise1", "remove1", "split4"))
CONFIGS = {
    "full": FULL,
    "thompson": replace(FULL, name="thompson", acquisition="thompson"),
    "ci": Config("ci", 3, (0,), ("add1", "remove1"), reopen_partial=1),
}


# ------------------------------------------------------------------------------ world
@dataclass
class World:
    """The true own-share law over the current domains; changes with each update.

    Start: ``SyntheticOracle(m, world_seed=seed)``'s draw (log K ~ log U(1.5, 3), alpha ~
    LogNormal(log 0.05, 0.5), eps = 0.005, natural shares ~ normalised LogNormal(0, 1),
    1e12 tokens in all). Updates: an added domain draws fresh parameters from those
    distributions and a token count like the others'; a revised domain's alpha is
    multiplied by exp(N(0, 0.3)) and its log K moved by N(0, 0.05), its tokens by U(0.7, 1.3);
    a removed domain is dropped; split parts take the parent's parameters with alpha times
    exp(N(0, 0.2)) and log K + N(0, 0.03), and Dirichlet(2)-shares of its tokens.
    """

    domains: list[str]
    logk: dict[str, float]
    alpha: dict[str, float]
    tokens: dict[str, float]
    noise: float
    eps: float = 0.005
    names_used: int = 0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    @classmethod
    def initial(cls, m: int, seed: int) -> World:
        from bayesmix.benchmarks import REGMIX_LOG_NOISE, SyntheticOracle

        o = SyntheticOracle(m, law="bimix", world_seed=seed)
        d = list(o.domains)
        return cls(
            domains=d,
            logk=dict(zip(d, o.world.logk.tolist(), strict=True)),
            alpha=dict(zip(d, np.diag(o.world.alpha).tolist(), strict=True)),
            tokens={k: v * 1e12 for k, v in o.natural.items()},
            noise=REGMIX_LOG_NOISE,
            names_used=m,
            rng=np.random.default_rng([seed, 6]),
        )

    def new_name(self) -> str:
        self.names_used += 1
        return f"d{self.names_used - 1:02d}"

    @property
    def natural(self) -> dict[str, float]:
        total = sum(self.tokens[d] for d in self.domains)
        return {d: self.tokens[d] / total for d in self.domains}

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.array([self.logk[d] for d in self.domains]),
            np.array([self.alpha[d] for d in self.domains]),
        )

    def law(self) -> Any:
        """The world's law now, as the one simulator of a known law (final losses only)."""
        from bayesmix.laws.world import LawWorld

        logk, alpha = self.arrays()
        eps = np.full(len(logk), self.eps)
        return LawWorld.own_share(self.domains, alpha, logk=logk, eps=eps, noise=self.noise)

    def objective(self, r: np.ndarray) -> np.ndarray:
        return np.exp(self.law().log_loss(np.atleast_2d(r))).mean(axis=1)

    def optimum(self) -> tuple[np.ndarray, float]:
        from bayesmix.optimize import own_share_optimum

        logk, alpha = self.arrays()
        m = len(logk)
        w = np.full(m, 1.0 / m)
        r = own_share_optimum(
            (np.log(w) + logk)[None],
            alpha[None],
            np.full((1, m), self.eps),
            np.arange(m),
            np.zeros(m),
            np.ones(m),
        )[0]
        return r, float(self.objective(r)[0])

    def observe(self, r: np.ndarray, run_ids: list[str], rng: np.random.Generator) -> pd.DataFrame:
        return self.law().observe(np.atleast_2d(r), rng, run_ids)

    def update(self, kind: str, n_split: int) -> Any:
        """Apply one benchmark update to the world; returns the matching DomainUpdate."""
        from bayesmix.domains import DomainUpdate

        rng = self.rng
        mean_tokens = float(np.mean([self.tokens[d] for d in self.domains]))
        if kind.startswith("add"):
            upd = DomainUpdate()
            for _ in range(int(kind[3:])):
                name = self.new_name()
                self.logk[name] = float(np.log(rng.uniform(1.5, 3.0)))
                self.alpha[name] = float(rng.lognormal(np.log(0.05), 0.5))
                self.tokens[name] = float(mean_tokens * rng.lognormal(0.0, 1.0) / np.exp(0.5))
                self.domains.append(name)
                upd = upd + DomainUpdate.add(name, self.tokens[name])
            return upd
        if kind.startswith("revise"):
            d = self.domains[int(rng.integers(len(self.domains)))]
            self.alpha[d] *= float(np.exp(rng.normal(0, 0.3)))
            self.logk[d] += float(rng.normal(0, 0.05))
            self.tokens[d] *= float(rng.uniform(0.7, 1.3))
            return DomainUpdate.revise(d, self.tokens[d])
        if kind.startswith("remove"):
            d = self.domains[int(rng.integers(len(self.domains)))]
            self.domains.remove(d)
            return DomainUpdate.remove(d)
        if kind.startswith("split"):
            order = sorted(self.domains, key=lambda x: -self.tokens[x])
            parent = order[int(rng.integers(min(3, len(order))))]
            shares = rng.dirichlet(np.full(n_split, 2.0))
            parts = {}
            pos = self.domains.index(parent)
            self.domains.remove(parent)
            for i in range(n_split):
                name = f"{parent}.{i}"
                self.alpha[name] = self.alpha[parent] * float(np.exp(rng.normal(0, 0.2)))
                self.logk[name] = self.logk[parent] + float(rng.normal(0, 0.03))
                self.tokens[name] = self.tokens[parent] * float(shares[i])
                parts[name] = self.tokens[name]
                self.domains.insert(pos + i, name)
            return DomainUpdate.split(parent, parts)
        raise ValueError(f"unknown update {kind!r}")


# ------------------------------------------------------------------------------ helpers
def swarm(domains: list[str], natural: dict[str, float], n: int, seed: int) -> np.ndarray:
    """Olmix's Dirichlet swarm of n mixtures over ``domains``."""
    from bayesmix.proposers import ProposalContext, get_proposer

    ctx = ProposalContext(list(domains), natural=natural, seed=seed)
    frame = get_proposer("dirichlet-swarm").propose(ctx, n)
    return frame[[f"r:{d}" for d in domains]].to_numpy(dtype=float)


def olmix_recommend(r: np.ndarray, frame: pd.DataFrame, domains: list[str], natural) -> np.ndarray:
    """Olmix's recommender on runs over ``domains`` (possibly reduced coordinates)."""
    import bayesmix as bm
    from bayesmix.proposers import ProposalContext, get_recommender

    obs = bm.Observations.from_frame(frame, target_domain={})
    ctx = ProposalContext(list(domains), observations=obs, natural=natural, seed=0)
    return get_recommender("olmix").recommend(ctx).reindex(domains).to_numpy(dtype=float)


def reduced_frame(frame: pd.DataFrame, r_reduced: np.ndarray, names: list[str]) -> pd.DataFrame:
    """The runs' table with the reduced coordinates (virtual + free) as its mixtures."""
    from bayesmix.observations import ratio_column

    out = frame[[c for c in frame.columns if not str(c).startswith("r:")]].copy()
    rows = np.repeat(r_reduced, len(frame) // len(r_reduced), axis=0)
    for j, d in enumerate(names):
        out[ratio_column(d)] = rows[:, j]
    return out


def fit(obs: Any, prior: Any = None, seed: int = 0) -> Any:
    import bayesmix as bm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bm.fit(obs, law="bimix", seed=seed, prior=prior, **FIT)


def evaluate(post: Any, world: World) -> dict[str, Any]:
    """Regret of the posterior-expected optimum, and coverage of the 90 % intervals."""
    from bayesmix.acquisition import optimal_mixture
    from bayesmix.benchmarks import coverage, regret

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = optimal_mixture(post, None, None, None, MAX_DRAWS)
    r = opt.mixture.reindex(world.domains).to_numpy(dtype=float)
    best_r, best_v = world.optimum()
    cov = coverage(opt.intervals, best_r, world.domains)
    return {
        "regret": regret(world.objective, r, best_v),
        "coverage": cov.share,
        "covered": cov.covered,
        "n_domains": len(best_r),
        "mixture": dict(zip(world.domains, r.round(6).tolist(), strict=True)),
        "optimum": opt,
    }


def proposed_runs(post: Any, q: int, acquisition: str, seed: int) -> np.ndarray:
    import bayesmix as bm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = bm.propose(post, q, acquisition, seed=seed, max_draws=MAX_DRAWS)
    return frame[[f"r:{d}" for d in post.domains]].to_numpy(dtype=float)


# ------------------------------------------------------------------------------ one seed
@dataclass
class Chain:
    """A bayesmix warm-start chain: its posterior, its real observations, its last mixture."""

    post: Any
    obs: Any
    mixture: dict[str, float]


def run_seed(cfg: Config, seed: int, out: Path) -> None:
    import bayesmix as bm
    from bayesmix import reuse
    from bayesmix.domains import DomainSet

    world = World.initial(cfg.m, seed)
    rng = np.random.default_rng([seed, 1])
    counter = iter(range(10**6))

    def runs(r: np.ndarray, tag: str) -> pd.DataFrame:
        return world.observe(r, [f"{tag}-{next(counter)}" for _ in range(len(r))], rng)

    def write(**row: Any) -> None:
        row.update(seed=seed, config=cfg.name)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")

    # Version 1: the common start.
    t0 = time.process_time()
    m = len(world.domains)
    r0 = swarm(world.domains, world.natural, 3 * (m + 1), seed)
    frame0 = runs(r0, "v1")
    obs0 = bm.Observations.from_frame(frame0)
    post0 = fit(obs0, seed=seed)
    ev = evaluate(post0, world)
    olmix0 = olmix_recommend(r0, frame0, world.domains, world.natural)
    best_r, best_v = world.optimum()
    nat = np.array([world.natural[d] for d in world.domains])
    write(
        update=0,
        kind="start",
        method="start",
        runs=len(r0),
        regret=ev["regret"],
        coverage=ev["coverage"],
        olmix_regret=float(world.objective(olmix0)[0] - best_v),
        natural_regret=float(world.objective(nat)[0] - best_v),
        cpu_s=time.process_time() - t0,
    )
    dset = DomainSet.create(dict(world.tokens))
    chains = {
        "warm": Chain(post0, obs0, ev["mixture"]),
        "warm-reuse": Chain(post0, obs0, ev["mixture"]),
    }
    olmix_mix = {
        "olmix-full-reuse": dict(zip(world.domains, olmix0, strict=True)),
        "olmix-partial-reuse": dict(zip(world.domains, olmix0, strict=True)),
    }
    for u, kind in enumerate(cfg.updates, start=1):
        update = world.update(kind, cfg.split_parts)
        new_set = dset.apply(update)
        assert list(new_set.domains) == world.domains, (new_set.domains, world.domains)
        m = len(world.domains)
        best_r, best_v = world.optimum()
        natural = world.natural
        nat = np.array([natural[d] for d in world.domains])
        base = {
            "update": u,
            "kind": kind,
            "natural_regret": float(world.objective(nat)[0] - best_v),
        }

        # Full recomputation: a fresh swarm over the new set.
        t0 = time.process_time()
        k_full = 3 * (m + 1)
        rs = swarm(world.domains, natural, k_full, seed * 100 + u)
        fs = runs(rs, f"v{u + 1}s")
        post = fit(bm.Observations.from_frame(fs), seed=seed)
        ev = evaluate(post, world)
        write(
            **base,
            method="scratch",
            runs=k_full,
            regret=ev["regret"],
            coverage=ev["coverage"],
            cpu_s=time.process_time() - t0,
        )
        t0 = time.process_time()
        mix = olmix_recommend(rs, fs, world.domains, natural)
        write(
            **base,
            method="olmix-recompute",
            runs=k_full,
            regret=float(world.objective(mix)[0] - best_v),
            cpu_s=time.process_time() - t0,
        )

        # Olmix's mixture reuse, full and partial.
        k_reuse = {}
        for name in ("olmix-full-reuse", "olmix-partial-reuse"):
            t0 = time.process_time()
            prev = olmix_mix[name]
            plan = reuse.reuse_plan(prev, update, domain_set=dset)
            if name == "olmix-partial-reuse" and plan.frozen:
                largest = sorted(plan.frozen, key=lambda d: -prev[d])[: cfg.reopen_partial]
                plan = reuse.with_reopened(plan, largest)
            red_nat_full = plan.to_reduced(nat[None])[0]
            k = 3 * (len(plan.reduced_domains) + 1) if len(plan.reduced_domains) > 1 else 0
            k_reuse[name] = k
            if k == 0:
                mix = plan.to_full(np.ones((1, 1)))[0]
            else:
                red_names = [f"v.{d}" for d in plan.reduced_domains]
                red_nat = dict(zip(red_names, red_nat_full / red_nat_full.sum(), strict=True))
                rr = swarm(red_names, red_nat, k, seed * 100 + u + 50)
                fr = runs(plan.to_full(rr), f"v{u + 1}{name[6]}")
                mix_red = olmix_recommend(rr, reduced_frame(fr, rr, red_names), red_names, red_nat)
                mix = plan.to_full(mix_red[None])[0]
            olmix_mix[name] = dict(zip(world.domains, mix, strict=True))
            write(
                **base,
                method=name,
                runs=k,
                regret=float(world.objective(mix)[0] - best_v),
                reopened=list(plan.reopened),
                cpu_s=time.process_time() - t0,
            )

        # bayesmix warm start, with and without its own reuse.
        checkpoints = sorted({cfg.first_batch, k_reuse["olmix-full-reuse"]} - {0})
        for name, chain in chains.items():
            t0 = time.process_time()
            mapped = (
                reuse.map_observations(
                    chain.obs,
                    update,
                    domain_set=dset,
                    own_share=True,
                    carried=chain.post.info.get("prior_targets", []),
                )
                if chain.obs is not None
                else reuse.MappedObservations(None, [], [], 0, 0)
            )
            transferred = reuse.transfer_posterior(chain.post, update, domain_set=dset, seed=seed)
            ev = evaluate(transferred, world)
            reopened: list[str] = []
            plan = None
            if name == "warm-reuse":
                plan = reuse.reuse_plan(chain.mixture, update, domain_set=dset)
                reopened = reuse.choose_reopen(transferred, plan, optimum=ev["optimum"])
                plan = reuse.with_reopened(plan, reopened)
            write(
                **base,
                method=name,
                runs=0,
                regret=ev["regret"],
                coverage=ev["coverage"],
                covered=ev["covered"],
                n_domains=ev["n_domains"],
                reopened=reopened,
                kept_runs=mapped.runs_kept,
                cpu_s=time.process_time() - t0,
            )
            current, new_frames, n = transferred, [], 0
            data = mapped.observations
            # Own reuse with nothing left to optimise (every domain frozen): no run at all.
            todo = [] if plan is not None and not plan.free else checkpoints
            for c in todo:
                t0 = time.process_time()
                batch = proposed_runs(current, c - n, cfg.acquisition, seed * 1000 + u * 10 + n)
                if plan is not None:
                    batch = plan.restrict(batch)
                new_frames.append(runs(batch, f"v{u + 1}{name}"))
                n = c
                new_obs = bm.Observations.from_frame(pd.concat(new_frames, ignore_index=True))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    current = reuse.warm_fit(
                        chain.post,
                        update,
                        new_obs,
                        old_observations=chain.obs,
                        domain_set=dset,
                        seed=seed,
                        **FIT,
                    )
                data = current.observations
                ev = evaluate(current, world)
                write(
                    **base,
                    method=name,
                    runs=c,
                    regret=ev["regret"],
                    coverage=ev["coverage"],
                    covered=ev["covered"],
                    n_domains=ev["n_domains"],
                    reopened=reopened,
                    cpu_s=time.process_time() - t0,
                )
            chains[name] = Chain(current, data, ev["mixture"])
        dset = new_set
    write(update=-1, kind="done", method="done", runs=0)


# ------------------------------------------------------------------------------ table
def table(cfg: Config, results: Path) -> str:
    rows = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
    df = pd.DataFrame([r for r in rows if r["update"] > 0 and r["method"] != "done"])
    done = sorted({r["seed"] for r in rows if r["method"] == "done"})
    df = df[df["seed"].isin(done)]
    if df.empty:
        return "no finished seed yet\n"
    lines = []
    final = (
        df.sort_values("runs").groupby(["seed", "update", "method"]).tail(1)
    )  # each method's last evaluation per update
    piv = final.pivot_table(index="method", columns="update", values="regret", aggfunc="mean")
    runs = final.pivot_table(index="method", columns="update", values="runs", aggfunc="mean")
    kinds = df.groupby("update")["kind"].first()
    lines.append(f"seeds finished: {len(done)} ({', '.join(map(str, done))})\n")
    lines.append("### Final regret (mean over seeds) and proxy runs after each update\n")
    head = "| method | " + " | ".join(f"{u}: {kinds[u]}" for u in piv.columns) + " | runs total |"
    lines.append(head)
    lines.append("|---" * (len(piv.columns) + 2) + "|")
    for meth in piv.index:
        cells = [f"{piv.loc[meth, u]:.4f} ({runs.loc[meth, u]:.0f})" for u in piv.columns]
        lines.append(f"| {meth} | " + " | ".join(cells) + f" | {runs.loc[meth].sum():.0f} |")
    lines.append("")
    # Runs-to-reach: per seed and update, the fewest warm-start runs whose regret is at most
    # the scratch regret (same seed, update). Where no evaluated budget reaches it, the pair
    # is reported as not reached (no saving is claimed for it).
    scratch = final[final["method"] == "scratch"].set_index(["seed", "update"])["regret"]
    k_scratch = final[final["method"] == "scratch"].groupby("seed")["runs"].sum()
    for meth in ("warm", "warm-reuse"):
        sub = df[df["method"] == meth]
        recs = []
        for (s, u), g in sub.groupby(["seed", "update"]):
            ok = g[g["regret"] <= scratch.loc[(s, u)] + 1e-12]
            recs.append(
                {
                    "seed": s,
                    "update": u,
                    "reached": len(ok) > 0,
                    "need": ok["runs"].min() if len(ok) else g["runs"].max(),
                }
            )
        per = pd.DataFrame(recs)
        tot = per.groupby("seed")["need"].sum()
        all_seeds = per.groupby("seed")["reached"].all()
        saving = 1 - tot / k_scratch.reindex(tot.index)
        missed = per[~per["reached"]].groupby("update").size()
        miss_txt = ", ".join(f"{kinds[u]} in {n}" for u, n in missed.items()) or "none"
        lines.append(
            f"- **{meth}**: reaches scratch's final regret in {int(per['reached'].sum())} "
            f"of {len(per)} (seed, update) pairs within its budget (not reached: {miss_txt}); "
            f"seeds where every update reached it: {int(all_seeds.sum())} of {len(all_seeds)}"
            + (
                f", needing {tot[all_seeds].mean():.1f} runs vs {k_scratch.mean():.0f} for "
                f"scratch (saving {saving[all_seeds].mean():.1%})"
                if all_seeds.any()
                else ""
            )
        )
        # Mean curves: per update, the fewest runs whose mean regret over seeds is at most
        # scratch's mean regret.
        mean_curve = sub.groupby(["update", "runs"])["regret"].mean()
        mean_scr = scratch.groupby(level=1).mean()
        parts = []
        for u in sorted(sub["update"].unique()):
            cur = mean_curve.loc[u]
            ok = cur[cur <= mean_scr.loc[u]]
            parts.append(
                f"{kinds[u]} {ok.index.min():.0f}"
                if len(ok)
                else f"{kinds[u]} not reached ({cur.iloc[-1]:.4f} vs {mean_scr.loc[u]:.4f})"
            )
        lines.append(
            "  - on the mean curves, runs to reach scratch's mean regret: " + "; ".join(parts)
        )
        n_meth, n_scr = runs.loc[meth].sum(), runs.loc["scratch"].sum()
        tot_reg = final[final["method"] == meth].groupby("seed")["regret"].sum().mean()
        scr_reg = final[final["method"] == "scratch"].groupby("seed")["regret"].sum().mean()
        lines.append(
            f"  - regret summed over the five updates: {tot_reg:.4f} with "
            f"{runs.loc[meth].sum():.0f} runs vs scratch's {scr_reg:.4f} with "
            f"{n_scr:.0f} runs ({1 - n_meth / n_scr:.1%} fewer)"
        )
    # Per update, paired over seeds: the method's final regret minus scratch's.
    lines.append("\n### Paired with scratch, per update (final regret, 10^-5 nats)\n")
    lines.append("| method | update | method mean | scratch mean | difference +- se | seeds <= |")
    lines.append("|---|---|---:|---:|---:|---:|")
    for meth in ("warm", "warm-reuse"):
        mine = final[final["method"] == meth].set_index(["seed", "update"])["regret"]
        diff = (mine - scratch.reindex(mine.index)).groupby(level=1)
        for u, d in diff:
            lines.append(
                f"| {meth} | {kinds[u]} | {1e5 * mine.xs(u, level=1).mean():.1f} | "
                f"{1e5 * scratch.xs(u, level=1).mean():.1f} | {1e5 * d.mean():.1f} +- "
                f"{1e5 * d.std() / np.sqrt(len(d)):.1f} | {int((d <= 1e-12).sum())} of {len(d)} |"
            )
    lines.append("")
    # Equal runs: bayesmix at Olmix's full-reuse budget vs Olmix full and partial reuse.
    for meth in ("warm", "warm-reuse"):
        for olx in ("olmix-full-reuse", "olmix-partial-reuse"):
            wins = 0
            for s in done:
                a = final[(final["seed"] == s) & (final["method"] == meth)]["regret"].sum()
                b = final[(final["seed"] == s) & (final["method"] == olx)]["regret"].sum()
                wins += int(a < b)
            lines.append(
                f"- {meth} (at Olmix full reuse's runs) vs {olx}: lower regret summed over "
                f"the updates in {wins} of {len(done)} seeds"
            )
    # Per update, per seed wins at equal runs
    lines.append("")
    cov = df[df["method"].isin(["warm", "warm-reuse"]) & df["coverage"].notna()]
    if len(cov):
        lines.append("### Coverage of the 90 % intervals on the optimal mixture (warm start)\n")
        lines.append(
            "| method | runs after update | "
            + " | ".join(f"{u}: {kinds[u]}" for u in sorted(cov["update"].unique()))
            + " | all |"
        )
        lines.append("|---" * (len(cov["update"].unique()) + 3) + "|")
        for meth in ("warm", "warm-reuse"):
            sub = cov[cov["method"] == meth]
            for stage, g in (
                ("0", sub[sub["runs"] == 0]),
                ("final", sub.sort_values("runs").groupby(["seed", "update"]).tail(1)),
            ):
                per_u = g.groupby("update").apply(
                    lambda x: x["covered"].sum() / x["n_domains"].sum(), include_groups=False
                )
                allv = g["covered"].sum() / g["n_domains"].sum()
                lines.append(
                    f"| {meth} | {stage} | "
                    + " | ".join(f"{v:.2f}" for v in per_u)
                    + f" | {allv:.2f} |"
                )
        scr = df[(df["method"] == "scratch")]
        lines.append(
            f"\nscratch posterior coverage (per-domain mean): {scr['coverage'].mean():.2f}"
        )
    cpu = df.groupby("method")["cpu_s"].sum() / len(done)
    lines.append("\n### CPU seconds per seed\n")
    lines.append(" | ".join(f"{k} {v:.0f}" for k, v in cpu.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="full", choices=sorted(CONFIGS))
    parser.add_argument("--seeds", default=None, help="e.g. 0-4 (default: the config's)")
    parser.add_argument("--table", action="store_true", help="write the table only")
    parser.add_argument("--out", default=None, help="results folder (default: results/)")
    args = parser.parse_args(argv)
    cfg = CONFIGS[args.config]
    folder = Path(args.out) if args.out else HERE / "results"
    folder.mkdir(parents=True, exist_ok=True)
    results = folder / f"{cfg.name}.jsonl"
    meta = folder / f"{cfg.name}.meta.json"
    if not args.table:
        seeds = cfg.seeds
        if args.seeds:
            a, _, b = args.seeds.partition("-")
            seeds = tuple(range(int(a), int(b or a) + 1))
        done = set()
        if results.exists():
            rows = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
            done = {r["seed"] for r in rows if r["method"] == "done"}
            keep = [r for r in rows if r["seed"] in done]  # drop half-finished seeds
            results.write_text("".join(json.dumps(r) + "\n" for r in keep))
        started, cpu0 = time.time(), time.process_time()
        for s in seeds:
            if s in done:
                continue
            t = time.process_time()
            run_seed(cfg, s, results)
            print(f"seed {s}: {time.process_time() - t:.0f} CPU s", flush=True)
        info = json.loads(meta.read_text()) if meta.exists() else {"sessions": []}
        info["sessions"].append(
            {
                "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started)),
                "wall_s": round(time.time() - started, 1),
                "cpu_s": round(time.process_time() - cpu0, 1),
                "host": socket.gethostname(),
                "platform": platform.platform(),
                "python": sys.version.split()[0],
                "command": " ".join(
                    ["python -m studies.domain_updates.run", *(argv or sys.argv[1:])]
                ),
            }
        )
        meta.write_text(json.dumps(info, indent=1))
    text = table(cfg, results)
    info = json.loads(meta.read_text()) if meta.exists() else {"sessions": []}
    ran = "\n".join(
        f"- {s['started_utc']} UTC on {s['host']} ({s['platform']}, Python {s['python']}): "
        f"`{s['command']}`, {s['cpu_s']:.0f} CPU s, {s['wall_s']:.0f} s wall"
        for s in info["sessions"]
    )
    (folder / f"{cfg.name}.md").write_text(f"## config {cfg.name}\n\nWhat ran:\n{ran}\n\n{text}")
    print(text)


if __name__ == "__main__":
    main()
