#!/usr/bin/env bash
# The acceptance cells of issue 4, most important first, one niced process at a time
# (a shared 2-core machine). Resumable: rerun it and every step skips what is in results/.
#   bash studies/active_learning/acceptance.sh
set -u
cd "$(dirname "$0")/../.."
PY=".venv/bin/python"
RUN="nice -n 10 $PY -m studies.active_learning.run --config full"
PAIR="--methods bayesmix-optimum-variance bayesmix-thompson dirichlet-swarm"
RECS="--recommenders posterior-optimum olmix"
# Olmix's recipe (K = 3(m+1) runs, every KL weight) on every cell run below.
$RUN --methods none --cells synthetic-bimix-7 synthetic-cross-7 synthetic-bimix-17 \
    synthetic-cross-17 regmix-landscape-17 regmix-pool-17 synthetic-bimix-64
# 7 and 17 domains: budgets from 8 to 24 or 32 (m+1 = 8 and 18).
$RUN --cells synthetic-bimix-7 synthetic-cross-7 $PAIR $RECS --max-runs 24
$RUN --cells synthetic-bimix-17 $PAIR $RECS --max-runs 32
$RUN --cells synthetic-cross-17 regmix-landscape-17 $PAIR $RECS --max-runs 24
$RUN --cells regmix-pool-17 --methods bayesmix-optimum-variance dirichlet-swarm \
    --recommenders posterior-optimum --max-runs 24
# The other proposers and recommenders at 7 and 17 domains (session 12).
OTHERS="--methods random-swarm uniform entropy --recommenders posterior-optimum olmix regmix"
$RUN --cells synthetic-bimix-7 synthetic-cross-7 $OTHERS --max-runs 24
$RUN --cells synthetic-bimix-7 synthetic-cross-7 --methods dirichlet-swarm \
    --recommenders regmix posterior-optimum+gp --max-runs 24
$RUN --cells synthetic-bimix-17 synthetic-cross-17 $OTHERS --max-runs 24
# Pile-CC alone (the second table): Olmix's recipe, then the acceptance pair.
PILE="regmix-landscape-17-pile_cc regmix-pool-17-pile_cc"
$RUN --methods none --cells $PILE
$RUN --cells $PILE --methods bayesmix-optimum-variance dirichlet-swarm $RECS --max-runs 24
# The cross-domain law in the loop, in its own results file (results/cross-law.md).
CROSS="$RUN --law bimix-cross --out studies/active_learning/results/cross-law.jsonl"
$CROSS --cells regmix-landscape-17-pile_cc synthetic-cross-7 \
    --methods bayesmix-optimum-variance dirichlet-swarm --recommenders posterior-optimum \
    --max-runs 24 --seeds 0-4
# Which law held-out fit chooses, and the regret of each law's recommendation.
nice -n 5 $PY -m studies.active_learning.law_selection --sizes 8 24 --seeds 0-4
nice -n 5 $PY -m studies.active_learning.law_selection --sizes 24 --recommend-fit nuts
# The cross law fitted by NUTS between batches (results/cross-law-nuts.md).
$RUN --law bimix-cross --fit-method nuts --out studies/active_learning/results/cross-law-nuts.jsonl \
    --cells synthetic-cross-7 --methods bayesmix-optimum-variance \
    --recommenders posterior-optimum --max-runs 24 --seeds 0-4
# The law chosen by held-out fit before every batch, fitted by NUTS (results/held-out-law.md).
# Its file starts with the 7-domain Olmix-recipe lines of full.jsonl (the same reference).
HELD="$RUN --law held-out --out studies/active_learning/results/held-out-law.jsonl --recommenders posterior-optimum"
$HELD --cells synthetic-cross-7 --methods bayesmix-optimum-variance dirichlet-swarm --seeds 0-9
$HELD --cells synthetic-bimix-7 --methods bayesmix-optimum-variance dirichlet-swarm --seeds 0-4
# The same choice recommends; proposals over both laws weighted by stacking (results/averaged-laws.md).
AVG="$RUN --law averaged --out studies/active_learning/results/averaged-laws.jsonl --recommenders posterior-optimum"
$AVG --cells synthetic-cross-7 synthetic-bimix-7 --methods bayesmix-optimum-variance dirichlet-swarm --seeds 0-9
$RUN --law averaged --out studies/active_learning/results/averaged-laws-seeds-10-19.jsonl --recommenders posterior-optimum \
    --cells synthetic-cross-7 --methods bayesmix-optimum-variance dirichlet-swarm --seeds 10-19
# The same trajectories, also recommended from the average of laws (results/model-average.md).
$RUN --law averaged --out studies/active_learning/results/model-average.jsonl \
    --recommenders posterior-optimum posterior-optimum+average \
    --cells synthetic-cross-7 synthetic-bimix-7 --methods bayesmix-optimum-variance dirichlet-swarm --seeds 0-9
# Posterior-free first batches against the swarm at n = m+1 (results/first-batch.md).
nice -n 5 $PY -m studies.active_learning.first_batch
# The peers' own methods at equal budget: Olmix's recommender at 0.05 and at its best KL
# weight on the swarm, RegMix's on the random swarm (cheap: no posterior is fitted).
SWARM="$RUN --methods dirichlet-swarm --recommenders olmix"
$SWARM "olmix kl=best" --max-runs 24 --cells synthetic-bimix-7 synthetic-cross-7 synthetic-cross-17 \
    regmix-landscape-17 regmix-pool-17 regmix-landscape-17-pile_cc regmix-pool-17-pile_cc
$SWARM "olmix kl=best" --cells synthetic-bimix-17 --max-runs 32
$RUN --methods random-swarm --recommenders regmix --max-runs 24 --cells regmix-landscape-17 \
    regmix-pool-17 regmix-landscape-17-pile_cc regmix-pool-17-pile_cc
$SWARM "olmix kl=best" --law averaged --out studies/active_learning/results/averaged-laws.jsonl \
    --cells synthetic-cross-7 synthetic-bimix-7 --seeds 0-9 --max-runs 24
$SWARM "olmix kl=best" --law averaged --cells synthetic-cross-7 --seeds 10-19 --max-runs 24 \
    --out studies/active_learning/results/averaged-laws-seeds-10-19.jsonl
# qLogNEI in the loop at 7 domains.
$RUN --cells synthetic-bimix-7 synthetic-cross-7 --methods bayesmix-qlognei
# 64 domains: bayesmix against Olmix's recipe (K = 195 runs in one swarm).
$RUN --cells synthetic-bimix-64 --methods bayesmix-thompson $RECS --max-runs 64
nice -n 10 $PY -m studies.active_learning.proposal_time 17 64
nice -n 10 $PY -m studies.active_learning.run_length --seeds 0-9   # 3 methods: + checked
$PY -m studies.active_learning.coverage
for f in held-out-law averaged-laws averaged-laws-seeds-10-19; do
    $PY -m studies.active_learning.coverage studies/active_learning/results/$f.jsonl
done
$PY -m studies.active_learning.references
$PY -m studies.active_learning.compare_laws
