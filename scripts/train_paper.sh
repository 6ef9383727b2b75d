#!/usr/bin/env bash
# Paper-scale training: SFT (preferred, rejected) and DPO for the four models of the ALOE paper,
# full fine-tuning in bf16 on one node of GPUs (default 8, DeepSpeed ZeRO-3).
#
#   bash scripts/train_paper.sh                          # every model, every method
#   MODELS="llama3 qwen2" METHODS="dpo" bash scripts/train_paper.sh
#   NUM_PROCESSES=4 ACCELERATE_CONFIG=training/configs/fsdp.yaml bash scripts/train_paper.sh
#   bash scripts/train_paper.sh --conversations runs/my/conversations.jsonl   # extra flags go to every run
#
# Outputs: model_output/<model>_sft_preferred, <model>_sft_rejected, <model>_dpo (evaluation --model names).
# A killed run resumes from its last checkpoint when re-run (--resume-from-checkpoint); finished ones are
# skipped (they train on only when a recipe asks for more steps or epochs than they ran).
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS=${MODELS:-"llama3 mistral qwen2 olmo"}
METHODS=${METHODS:-"sft_preferred sft_rejected dpo"}
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-training/configs/deepspeed_zero3.yaml}
NUM_PROCESSES=${NUM_PROCESSES:-8}
PY=${ALOE_VENV:-.venv}/bin/python
export TOKENIZERS_PARALLELISM=false

for model in $MODELS; do
    for method in $METHODS; do
        script=training/${method%%_*}.py
        echo "== $model $method"
        "$PY" -m accelerate.commands.launch --config_file "$ACCELERATE_CONFIG" --num_processes "$NUM_PROCESSES" \
            "$script" --config "training/recipes/${model}_${method}.yaml" --resume-from-checkpoint "$@"
    done
done
