#!/usr/bin/env bash
# System-message generalization end to end: instructions -> preference sets, system messages and gold
# answers -> sibling pairs -> SFT, DPO (from SFT), ORPO (from the base) and a reward model -> best-of-N
# -> the Multifaceted benchmark for the base and every trained model -> one comparison table.
#
#   bash scripts/system_messages.sh                                        # toy sizes on the embedded model
#   MODEL=openai:gpt-4-turbo BASE_MODEL=hf:mistral-community/Mistral-7B-v0.2 JUDGE_MODEL=openai:gpt-4-turbo \
#       INSTRUCTIONS=my_instructions.jsonl LIMIT=65000 SETS=3 TRAIN_STEPS=-1 EVAL_LIMIT=1000000 RUNS=3 \
#       N=64 GEN_TOKENS=1024 SYSTEM_TOKENS=384 EVAL_TOKENS=1024 JUDGE_TOKENS=1024 JUDGE_ARGS="--judge-temperature 1.0" \
#       RUN=runs/sysmsg_paper \
#       bash scripts/system_messages.sh                                    # paper-like (API + GPU; see docs)
#
# Every stage resumes or replays its response cache: re-running after an interruption continues.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then bash scripts/setup.sh; fi  # a fresh clone gets its .venv (idempotent)
PY=${PYTHON:-${ALOE_VENV:-.venv}/bin/python}
MODEL=${MODEL:-embedded}                 # writes preference sets, system messages and gold answers
BASE_MODEL=${BASE_MODEL:-embedded}       # the model that is trained and evaluated
JUDGE_MODEL=${JUDGE_MODEL:-embedded}     # the rubric judge
RUN=${RUN:-runs/system_messages}
INSTRUCTIONS=${INSTRUCTIONS:-datasets/instructions/instructions.jsonl}
LIMIT=${LIMIT:-2}                        # instructions
SETS=${SETS:-2}                          # preference sets (system messages) per instruction (released: 3)
BATCH=${BATCH:-32}                       # local models: prompts per generate call
GEN_TOKENS=${GEN_TOKENS:-64}             # gold-answer length
SYSTEM_TOKENS=${SYSTEM_TOKENS:-96}          # system-message length (released: about 150-300 tokens)
GEN_ARGS=${GEN_ARGS:-}
TRAIN_STEPS=${TRAIN_STEPS:-2}            # -1: full epochs
TRAIN_ARGS=${TRAIN_ARGS:-}
N=${N:-2}                                # best-of-N samples
EVAL_LIMIT=${EVAL_LIMIT:-2}              # benchmark items of the shipped 31
RUNS=${RUNS:-1}                          # judge runs
EVAL_TOKENS=${EVAL_TOKENS:-32}
JUDGE_TOKENS=${JUDGE_TOKENS:-32}
JUDGE_ARGS=${JUDGE_ARGS:-}               # e.g. "--judge-sees-system --judge-temperature 1.0"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
export ALOE_MODEL_OUTPUT=${ALOE_MODEL_OUTPUT:-$RUN/model_output}
RESULTS=$RUN/results
step() { printf '\n== %s\n' "$*"; }
name=$($PY -c "import sys; from aloe.models import short_name; print(short_name(sys.argv[1]))" "$BASE_MODEL")
trained=$ALOE_MODEL_OUTPUT/${name}_sysmsg

step "1/6 preference sets, system messages and gold answers ($MODEL, $LIMIT instructions x $SETS sets)"
# shellcheck disable=SC2086  # the *_ARGS variables are word lists on purpose
$PY data_generation/generate_system_messages.py --model "$MODEL" --instructions "$INSTRUCTIONS" --limit "$LIMIT" \
    --sets "$SETS" --batch-size "$BATCH" --max-new-tokens "$GEN_TOKENS" --system-max-new-tokens "$SYSTEM_TOKENS" --output "$RUN/rows.jsonl" $GEN_ARGS

step "2/6 sibling pairs"
$PY data_generation/build_system_message_pairs.py --rows "$RUN/rows.jsonl" --output "$RUN/pairs.jsonl"

step "3/6 training $BASE_MODEL: SFT on the rows, DPO from SFT, ORPO from the base, a reward model"
$PY training/sft.py --model "$BASE_MODEL" --train-data "$RUN/rows.jsonl" --output "${trained}_sft" \
    --max-steps "$TRAIN_STEPS" --resume-from-checkpoint $TRAIN_ARGS
$PY training/dpo.py --model "${trained}_sft" --train-data "$RUN/pairs.jsonl" --output "${trained}_dpo" \
    --max-steps "$TRAIN_STEPS" --resume-from-checkpoint $TRAIN_ARGS
$PY training/orpo.py --model "$BASE_MODEL" --train-data "$RUN/pairs.jsonl" --output "${trained}_orpo" \
    --max-steps "$TRAIN_STEPS" --resume-from-checkpoint $TRAIN_ARGS
$PY training/reward_model.py --model "$BASE_MODEL" --train-data "$RUN/pairs.jsonl" --eval-fraction 0.2 \
    --output "${trained}_reward" --max-steps "$TRAIN_STEPS" --resume-from-checkpoint $TRAIN_ARGS

step "4/6 best-of-$N of $BASE_MODEL on the benchmark prompts, picked by the reward model"
$PY evaluation/best_of_n.py --model "$BASE_MODEL" --reward-model "${trained}_reward" --n "$N" \
    --limit "$EVAL_LIMIT" --max-new-tokens "$EVAL_TOKENS" --batch-size "$BATCH" --output "$RUN/best_of_$N.jsonl"

step "5/6 Multifaceted benchmark (judge: $JUDGE_MODEL, $RUNS runs)"
results=()
for evaluated in "$BASE_MODEL" "${trained}_sft" "${trained}_dpo" "${trained}_orpo"; do
    label=$($PY -c "import sys; from aloe.models import short_name; print(short_name(sys.argv[1]))" "$evaluated")
    $PY evaluation/eval_multifaceted.py --model "$evaluated" --judge-model "$JUDGE_MODEL" --limit "$EVAL_LIMIT" \
        --runs "$RUNS" --max-new-tokens "$EVAL_TOKENS" --judge-max-new-tokens "$JUDGE_TOKENS" --batch-size "$BATCH" --output "$RESULTS/$label.json" $JUDGE_ARGS
    results+=("$RESULTS/$label.json")
done
$PY evaluation/eval_multifaceted.py --responses "$RUN/best_of_$N.jsonl" --name "${name}_best_of_$N" \
    --judge-model "$JUDGE_MODEL" --limit "$EVAL_LIMIT" --runs "$RUNS" \
    --judge-max-new-tokens "$JUDGE_TOKENS" --batch-size "$BATCH" --output "$RESULTS/${name}_best_of_$N.json" $JUDGE_ARGS
results+=("$RESULTS/${name}_best_of_$N.json")

step "6/6 comparison"
$PY evaluation/report.py "${results[@]}" --output "$RESULTS/report.md"
