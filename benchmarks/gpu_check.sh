#!/usr/bin/env bash
# One prepared GPU check: the generation, lockstep and training benchmarks on the GPU, their figures in
# gpu_check.json and gpu_check.md (benchmarks/gpu_check.py says what runs; docs/BENCHMARKS.md how to use it).
#
#   bash benchmarks/gpu_check.sh --prepare    # here, where PyPI is reachable: the wheels the GPU machine lacks
#                                             # into .whl/, the model's config and tokenizer into .gpu_check/
#   bash benchmarks/gpu_check.sh              # on the GPU machine (carry .whl and .gpu_check): figures in $OUT
#   bash benchmarks/gpu_check.sh --toy DIR    # a tiny random model on CPU in seconds (the test suite runs this)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# What the GPU machine's image lacks, or holds at other versions than this checkout runs with
# (its python3 is 3.12 with torch, numpy, pyarrow, tokenizers, accelerate...: see the device notes).
CARRY="trl transformers huggingface-hub hf-xet httpx2 httpcore2 truststore click regex fsspec datasets dill
       multiprocess peft pydantic pydantic-core annotated-types typing-inspection tenacity filelock"

if [ "${1:-}" = --prepare ]; then
    # shellcheck disable=SC2086  # CARRY is a word list
    pins=$("$PY" -c 'import sys, importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' $CARRY)
    rm -rf .whl && mkdir .whl
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $pins
    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 "$PY" benchmarks/gpu_check.py --prepare
    du -sh .whl .gpu_check
    exit 0
fi

if [ "${1:-}" != --toy ] && compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site \
        .whl/*.whl
    export PYTHONPATH=/tmp/gpu_check_site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg PYTHONUNBUFFERED=1
command -v nvidia-smi > /dev/null && nvidia-smi -L || true
exec "$PY" benchmarks/gpu_check.py "$@"
