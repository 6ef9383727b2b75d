#!/usr/bin/env bash
# Persona inference and persona tailoring end to end with one set of models and sizes:
# infer personas (train and test pairs) -> persona accuracy -> SFT -> DPO, with personas (PT) and
# without (the baseline) -> responses of both models, and of the untrained model prompted few-shot,
# for the test prompts under retrieved personas -> pairwise win rates of PT over the baseline and over
# the few-shot model: response quality, personalization and dPQ.
#
#   bash scripts/tailoring.sh                                              # toy sizes, embedded model
#   PI_MODEL=openai:gpt-4o JUDGE_MODEL=openai:gpt-4o N_TRAIN=0 N_TEST=0 INFER_ARGS= JUDGE_ARGS= GEN_ARGS= \
#       SFT_ARGS="--config training/recipes/tailoring/llama31_pt_sft.yaml" ... RUN=runs/tailoring_paper \
#       bash scripts/tailoring.sh                                          # paper size (see docs/tailoring.md)
#
# Every stage resumes: re-running after an interruption continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

# From a fresh clone: install first (idempotent; skipped when PYTHON names an interpreter to use).
if [ -z "${PYTHON:-}" ]; then bash scripts/setup.sh; fi
PY=${PYTHON:-${ALOE_VENV:-.venv}/bin/python}
MODEL=${MODEL:-embedded}
PI_MODEL=${PI_MODEL:-$MODEL}             # infers personas
JUDGE_MODEL=${JUDGE_MODEL:-$MODEL}       # persona accuracy and win rates
BASE_MODEL=${BASE_MODEL:-$MODEL}         # the model that is trained (the paper: a base model, raw template)
RUN=${RUN:-runs/tailoring}
TRAIN_PAIRS=${TRAIN_PAIRS:-datasets/preference_pairs/train.jsonl}
TEST_PAIRS=${TEST_PAIRS:-datasets/preference_pairs/test.jsonl}
N_TRAIN=${N_TRAIN:-8}                    # pairs used of each file (0: all); the shipped files interleave domains
N_TEST=${N_TEST:-4}
PERSONA=${PERSONA:-retr-chosen}          # the test-time persona both models get
FEW_SHOT=${FEW_SHOT:-5}                  # exemplars for the untrained BASE_MODEL (0: skip the few-shot baseline)
FEW_SHOT_PAIRS=${FEW_SHOT_PAIRS:-datasets/preference_pairs/fewshot.jsonl}  # exemplars with gold personas
INFER_ARGS=${INFER_ARGS:---max-new-tokens 48 --shots 2}
JUDGE_ARGS=${JUDGE_ARGS:---max-new-tokens 32}
GEN_ARGS=${GEN_ARGS:---max-new-tokens 48}
TRAIN_ARGS=${TRAIN_ARGS:---max-steps 2 --batch-size 2 --max-length 512}
SFT_ARGS=${SFT_ARGS:-}                   # e.g. a --config recipe
DPO_ARGS=${DPO_ARGS:-}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
step() { printf '\n== %s\n' "$*"; }
limit() { if [ "$1" -gt 0 ]; then echo "--limit $1"; fi; }

# shellcheck disable=SC2046,SC2086  # the *_ARGS variables are word lists on purpose
{
step "1/5 persona inference ($PI_MODEL)"
$PY data_generation/infer_personas.py --pairs "$TRAIN_PAIRS" $(limit "$N_TRAIN") --model "$PI_MODEL" \
    --output "$RUN/train.personas.jsonl" $INFER_ARGS
$PY data_generation/infer_personas.py --pairs "$TEST_PAIRS" $(limit "$N_TEST") --model "$PI_MODEL" \
    --output "$RUN/test.personas.jsonl" $INFER_ARGS

step "2/5 persona accuracy ($JUDGE_MODEL)"
$PY evaluation/persona_accuracy.py --pairs "$RUN/test.personas.jsonl" --judge-model "$JUDGE_MODEL" \
    --output "$RUN/persona_accuracy.json" $JUDGE_ARGS

step "3/5 training $BASE_MODEL: SFT on the first half, DPO on the second, with personas (PT) and without"
for variant in pt:chosen base:none; do
    name=${variant%%:*} persona=${variant#*:}
    $PY training/sft.py --model "$BASE_MODEL" --train-data "$RUN/train.personas.jsonl" --format pairs \
        --persona "$persona" --half first --output "$RUN/models/${name}_sft" --resume-from-checkpoint $TRAIN_ARGS $SFT_ARGS
    $PY training/dpo.py --model "$RUN/models/${name}_sft" --train-data "$RUN/train.personas.jsonl" --format pairs \
        --persona "$persona" --half second --output "$RUN/models/${name}_dpo" --resume-from-checkpoint $TRAIN_ARGS $DPO_ARGS
done

step "4/5 responses for the test prompts under $PERSONA personas"
$PY evaluation/generate_responses.py --model "$RUN/models/pt_dpo" --pairs "$RUN/test.personas.jsonl" \
    --persona "$PERSONA" --train-pairs "$RUN/train.personas.jsonl" --placement system \
    --output "$RUN/responses.pt_dpo.jsonl" $GEN_ARGS
# The baseline never saw personas in training: it gets the persona as first-person text after the prompt.
$PY evaluation/generate_responses.py --model "$RUN/models/base_dpo" --pairs "$RUN/test.personas.jsonl" \
    --persona "$PERSONA" --train-pairs "$RUN/train.personas.jsonl" --placement after-prompt \
    --output "$RUN/responses.base_dpo.jsonl" $GEN_ARGS
# The untrained model, prompted with exemplars in the raw Prompt:/Persona:/Response: layout.
if [ "$FEW_SHOT" -gt 0 ]; then
    $PY evaluation/generate_responses.py --model "$BASE_MODEL" --raw-text --few-shot "$FEW_SHOT" \
        --few-shot-pairs "$FEW_SHOT_PAIRS" --pairs "$RUN/test.personas.jsonl" --persona "$PERSONA" \
        --train-pairs "$RUN/train.personas.jsonl" --output "$RUN/responses.fewshot.jsonl" $GEN_ARGS
fi

step "5/5 win rates of PT over the baseline and the few-shot model ($JUDGE_MODEL)"
$PY evaluation/win_rate.py "$RUN/responses.base_dpo.jsonl" "$RUN/responses.pt_dpo.jsonl" \
    --judge-model "$JUDGE_MODEL" --output "$RUN/win_rate.json" $JUDGE_ARGS
results=("$RUN/win_rate.json")
if [ "$FEW_SHOT" -gt 0 ]; then
    $PY evaluation/win_rate.py "$RUN/responses.fewshot.jsonl" "$RUN/responses.pt_dpo.jsonl" \
        --judge-model "$JUDGE_MODEL" --output "$RUN/win_rate.fewshot.json" $JUDGE_ARGS
    results+=("$RUN/win_rate.fewshot.json")
fi
}

step "results"
$PY evaluation/persona_accuracy.py --report "$RUN/persona_accuracy.json"
$PY evaluation/win_rate.py --report "${results[@]}"
