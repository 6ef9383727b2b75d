#!/usr/bin/env bash
# The whole ALOE pipeline with one set of models and sizes: personas -> conversations -> SFT and DPO
# -> the ALOE benchmark for the base and the DPO model -> a comparison table.
#
#   MODEL=embedded RUN=runs/demo bash scripts/pipeline.sh                 # toy sizes (the demo)
#   MODEL=openai:gpt-4o-mini BASE_MODEL=qwen2 CONVERSATIONS=3000 TURNS=10 EVAL_LIMIT=100 EVAL_TURNS=10 \
#       TRAIN_STEPS=-1 RUN=runs/paper bash scripts/pipeline.sh            # paper-scale (API + GPU)
#
# Every stage resumes: re-running after an interruption continues where it stopped (generation from
# the records and response cache already written, training from its last checkpoint, every
# --save-steps steps; finished stages are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then bash scripts/setup.sh; fi  # a fresh clone gets its .venv (idempotent)
PY=${PYTHON:-${ALOE_VENV:-.venv}/bin/python}
MODEL=${MODEL:-embedded}                 # generates personas, plays user, extractor, assistant, judge
BASE_MODEL=${BASE_MODEL:-embedded}       # the chat model that is trained and evaluated
RUN=${RUN:-runs/pipeline}
PROFILES=${PROFILES:-60}                 # pool sizes to reach (the seeds count)
PERSONALITIES=${PERSONALITIES:-60}
PERSONA_ARGS=${PERSONA_ARGS:-}           # e.g. "--requests-per-round 16 --max-rounds 50"
CONVERSATIONS=${CONVERSATIONS:-4}
TURNS=${TURNS:-3}
GENERATION_ARGS=${GENERATION_ARGS:-}     # e.g. "--max-new-tokens 300"
TRAIN_STEPS=${TRAIN_STEPS:-4}            # -1: full epochs
TRAIN_ARGS=${TRAIN_ARGS:-}
EVAL_LIMIT=${EVAL_LIMIT:-5}              # persona pairs of the 100 in the benchmark
EVAL_TURNS=${EVAL_TURNS:-3}
EVAL_ARGS=${EVAL_ARGS:-}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
export ALOE_MODEL_OUTPUT=${ALOE_MODEL_OUTPUT:-$RUN/model_output}
RESULTS=$RUN/results
step() { printf '\n== %s\n' "$*"; }

step "1/4 persona pools ($MODEL)"
# shellcheck disable=SC2086  # the *_ARGS variables are word lists on purpose
$PY persona_generation/generate_personas.py --kind profile --model "$MODEL" --target "$PROFILES" \
    --output "$RUN/profiles.jsonl" $PERSONA_ARGS
$PY persona_generation/generate_personas.py --kind personality --model "$MODEL" --target "$PERSONALITIES" \
    --output "$RUN/personalities.jsonl" $PERSONA_ARGS
$PY persona_generation/pool_stats.py "$RUN/profiles.jsonl" "$RUN/personalities.jsonl" \
    --output "$RUN/pool_stats.json" --plot "$RUN/pool_similarity.png"

step "2/4 tree-structured conversations ($MODEL)"
$PY data_generation/generate_conversations.py --model "$MODEL" \
    --profiles "$RUN/profiles.jsonl" --personalities "$RUN/personalities.jsonl" \
    --num-conversations "$CONVERSATIONS" --turns "$TURNS" --output "$RUN/conversations.jsonl" $GENERATION_ARGS
$PY data_generation/dataset_stats.py "$RUN/conversations.jsonl" > /dev/null

step "3/4 training $BASE_MODEL: SFT on preferred replies, then DPO"
name=$($PY -c "import sys; from aloe.models import short_name; print(short_name(sys.argv[1]))" "$BASE_MODEL")
# --resume-from-checkpoint: a killed training continues from its last checkpoint; a finished one is kept.
$PY training/sft.py --model "$BASE_MODEL" --data preferred --train-data "$RUN/conversations.jsonl" \
    --max-steps "$TRAIN_STEPS" --resume-from-checkpoint $TRAIN_ARGS
$PY training/dpo.py --model "$BASE_MODEL" --train-data "$RUN/conversations.jsonl" \
    --max-steps "$TRAIN_STEPS" --resume-from-checkpoint $TRAIN_ARGS

step "4/4 ALOE benchmark: $BASE_MODEL vs ${name}_dpo (user simulator and judge: $MODEL)"
for evaluated in "$BASE_MODEL" "${name}_dpo"; do
    $PY evaluation/eval_aloe.py --model "$evaluated" --user-model "$MODEL" --judge-model "$MODEL" \
        --limit "$EVAL_LIMIT" --turns "$EVAL_TURNS" \
        --output "$RESULTS/$($PY -c "import sys; from aloe.models import short_name; print(short_name(sys.argv[1]))" "$evaluated").json" $EVAL_ARGS
done
$PY evaluation/report.py "$RESULTS/$name.json" "$RESULTS/${name}_dpo.json" --output "$RESULTS/report.md"
printf '\nOutputs in %s (models in %s)\n' "$RUN" "$ALOE_MODEL_OUTPUT"
