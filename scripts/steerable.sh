#!/usr/bin/env bash
# Few-shot steerable alignment end to end: the paper's scalar experiment (BTL, DPL, NP-BTL trained at
# the paper's settings, accuracy vs k printed as a table), then the text, UltraFeedback-style and
# ALOE variants and NP-DPO at toy size.
#
#   bash scripts/steerable.sh                       # 3 seeds side by side, about 8 minutes on 2 cores for the scalar part
#   LATENT=1 bash scripts/steerable.sh              # the documented table, with the latent path
#   SEEDS=0 bash scripts/steerable.sh               # one seed
#   SCALAR_ONLY=1 bash scripts/steerable.sh         # skip the toy text/ALOE/NP-DPO runs
#   CONVERSATIONS=runs/pipeline/conversations.jsonl bash scripts/steerable.sh   # ALOE users from your own file
#
# Every step writes under $RUN; see docs/steerable.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then bash scripts/setup.sh; fi  # a fresh clone gets its .venv (idempotent)
PY=${PYTHON:-${ALOE_VENV:-.venv}/bin/python}
RUN=${RUN:-runs/steerable}
SEEDS=${SEEDS:-0 1 2}
JOBS=${JOBS:-$(nproc)}                  # seeds trained at once
LATENT=${LATENT:-0}
THREADS=${THREADS:-1}                   # torch threads per run (1 is fastest on a busy machine)
KS=${KS:-0 1 3 5 10}
TRAIN_ARGS=${TRAIN_ARGS:-}              # e.g. "--steps-per-epoch 50" for a quicker, weaker run
CONVERSATIONS=${CONVERSATIONS:-datasets/steerable/aloe_conversations_sample.jsonl}
POLICY_MODEL=${POLICY_MODEL:-embedded}  # NP-DPO's base model
POLICY_STEPS=${POLICY_STEPS:-2}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
step() { printf '\n== %s\n' "$*"; }

step "1/5 scalar data: the paper's synthetic experiment (seed 0, 20,000 pairs, two users)"
$PY data_generation/synthetic_preferences.py --kind scalar --output "$RUN/scalar"

step "2/5 BTL, DPL, NP-BTL and NP-BTL in the original code's setup, at the paper's settings (seeds: $SEEDS, $JOBS at a time)"
models="btl dpl np-btl np-btl-original"
[ "$LATENT" = 1 ] && models="$models np-btl-latent"
mkdir -p "$RUN/logs"
train_seed() {  # every model of one seed, one after another; the log keeps each run's output
    local seed=$1 name kind flags
    for name in $models; do
        case $name in
            np-btl-latent) kind=np-btl flags="--latent" ;;
            np-btl-original) kind=np-btl flags="--original all" ;;
            *) kind=$name flags="" ;;
        esac
        # shellcheck disable=SC2086  # flag lists on purpose
        $PY training/steerable_reward.py --data "$RUN/scalar" --model "$kind" $flags --seed "$seed" --no-progress \
            --threads "$THREADS" --output "$RUN/scalar-models/$name-s$seed" $TRAIN_ARGS >"$RUN/logs/$name-s$seed.log" 2>&1 \
            || { echo "training $name (seed $seed) failed; see $RUN/logs/$name-s$seed.log" >&2; return 1; }
        tail -n 1 "$RUN/logs/$name-s$seed.log"
    done
}
# Seeds train side by side (one torch thread each); a failed seed stops the script and the others.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
running=0
for seed in $SEEDS; do
    train_seed "$seed" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
while [ "$running" -gt 0 ]; do wait -n; running=$((running - 1)); done
checkpoints=()
for seed in $SEEDS; do for name in $models; do checkpoints+=("$RUN/scalar-models/$name-s$seed"); done; done

step "3/5 accuracy vs k on held-out targets of the test split"
# shellcheck disable=SC2086
$PY evaluation/eval_steerable.py "${checkpoints[@]}" --k $KS 20 50 --output "$RUN/results/scalar.json"

[ "${SCALAR_ONLY:-0}" = 1 ] && exit 0

TOY="--targets 4 --k-max 3 --hidden 64 --heads 4 --batch-size 16 --lr 1e-3 --epochs 4 --steps-per-epoch 150 --val-tasks 64 --threads $THREADS"
step "4/5 toy text users, UltraFeedback-style attributes and ALOE personas"
$PY data_generation/synthetic_preferences.py --kind text --output "$RUN/text"
$PY data_generation/synthetic_preferences.py --kind ultrafeedback --output "$RUN/ultrafeedback"
$PY data_generation/synthetic_preferences.py --kind aloe --conversations "$CONVERSATIONS" --output "$RUN/aloe"
for data in text ultrafeedback aloe; do
    for kind in btl np-btl; do
        # shellcheck disable=SC2086
        $PY training/steerable_reward.py --data "$RUN/$data" --model "$kind" --output "$RUN/$data-models/$kind" $TOY --no-progress
    done
    $PY evaluation/eval_steerable.py "$RUN/$data-models/btl" "$RUN/$data-models/np-btl" --k 0 1 3 --targets 4 \
        --tasks 64 --output "$RUN/results/$data.json"
done

step "5/5 NP-DPO on $POLICY_MODEL (toy): the latent through FiLM vs the context as text"
for conditioning in film text; do
    $PY training/np_dpo.py --data "$RUN/text" --model "$POLICY_MODEL" --conditioning "$conditioning" \
        --steps "$POLICY_STEPS" --threads "$THREADS" --output "$RUN/np-dpo-$conditioning"
done
