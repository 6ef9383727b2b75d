#!/usr/bin/env bash
# Installs (idempotent), then runs the whole pipeline at toy scale on the embedded SmolLM2-135M:
# persona pools -> tree-structured conversations -> SFT + DPO -> ALOE benchmark of base vs DPO.
# A 135M model shows the machinery working end to end, not alignment quality.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export RUN=${RUN:-runs/demo}
export MODEL=embedded BASE_MODEL=embedded
# Pools: the 48 seeds plus what one small round of the embedded model gets past the novelty filter.
export PROFILES=58 PERSONALITIES=58
export PERSONA_ARGS="--per-request 5 --requests-per-round 2 --max-rounds 1 --max-new-tokens 320"
export CONVERSATIONS=4 TURNS=3 GENERATION_ARGS="--max-new-tokens 48"
# The 135M judge often disagrees with itself across the two orders; the toy run trains on those turns
# too so it always has data (real runs leave undecided turns out, the default).
export TRAIN_STEPS=2 TRAIN_ARGS="--batch-size 2 --max-length 384 --include-undecided"
export EVAL_LIMIT=5 EVAL_TURNS=3 EVAL_ARGS="--max-new-tokens 48 --user-max-new-tokens 48"
time bash scripts/pipeline.sh
