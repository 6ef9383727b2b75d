"""Local transformers models: a whole batch goes through one `generate` call.

Prompts are built with the model's own chat template (or, in raw-text mode for base models, are the
one user message's text, continued as plain text), sorted by length and left-padded in chunks
of `batch_size`; the reply is decoded from the new tokens only, so nothing depends on a model's
template markers. Histories longer than the context are truncated from the left at whole messages.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from aloe.errors import ModelCallError, ModelSpecError
from aloe.logs import quiet_weight_loading
from aloe.messages import Message, inline_system_message, truncate_left, validate_messages
from aloe.models import DTYPES
from aloe.models.base import ChatModel, Reply, SamplingParams


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), as oneDNN reports it."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe and probe())
    except RuntimeError:
        return False


def resolve_dtype(choice: str = "auto", device: str | None = None, *, training: bool = False) -> torch.dtype:
    """The torch dtype a `--dtype` choice means on `device`; the one home of `auto`.

    `auto` is bf16 wherever the hardware computes it natively, else fp32: GPUs with bf16, and for
    generation CPUs with AVX512-BF16 or AMX (2.5x fp32 prefill on such an EPYC, see docs/BENCHMARKS.md).
    Training on a CPU stays fp32 even there: CPU autocast training is slow and rounds small updates away.
    """
    if choice != "auto":
        return getattr(torch, DTYPES[choice])
    device = device or default_device()
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_native_bf16() and not training else torch.float32


def inference_dtype(device: str, choice: str = "auto") -> torch.dtype:
    """The generation dtype (see `resolve_dtype`)."""
    return resolve_dtype(choice, device)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")  # bfloat16, float32


def inference_dtype_name(choice: str = "auto", device: str | None = None) -> str:
    """The name of the dtype `choice` means on this machine (or on `device`)."""
    return dtype_name(resolve_dtype(choice, device))


def local_path(spec: str) -> str:
    """Local path or hub id of the weights of a local model spec (the embedded model, hf:, a path, a name)."""
    from aloe.models import resolve_spec

    resolved = resolve_spec(spec)
    if resolved.backend == "embedded":
        from aloe.embedded import embedded_chat_checkpoint

        return str(embedded_chat_checkpoint())
    if resolved.backend != "hf":
        raise ModelSpecError(f"{spec!r} is not a local model, and this needs local weights: use 'embedded', "
                             "'hf:<hub-id-or-path>', a local path or a model_output name")
    return resolved.target


# What a checkpoint folder's replies depend on: weights, config, tokenizer and chat template. Not the
# training summary or a README, which a re-run rewrites without changing the model.
_MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".jinja", ".model", ".txt")
_NOT_MODEL_FILES = {"training_summary.json", "README.md"}
_WHOLE_FILE_LIMIT = 8 << 20  # smaller files are hashed whole
_SAMPLE, _SAMPLES = 64 << 10, 64  # larger ones: first and last MiB plus 64 blocks of 64 KiB spread over the file


def weights_fingerprint(path: str | Path) -> str | None:
    """A short content fingerprint of a local checkpoint folder; None when `path` is not a folder (a hub id).

    Each model file counts with its name, its size and the sha256 of its bytes, or, above 8 MiB, of its
    first and last MiB and 64 blocks spread evenly between them: about 6 MiB read per file, so a 16 GB
    checkpoint takes well under a second, while a retrained model (whose weights change throughout)
    always differs. Content, not modification times: a copy of the same weights on another machine
    (a shard's worker) has the same fingerprint.
    """
    folder = Path(path)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(folder.iterdir()):
        if not file.is_file() or file.suffix not in _MODEL_FILE_SUFFIXES or file.name in _NOT_MODEL_FILES:
            continue
        size = file.stat().st_size
        digest.update(f"{file.name}\0{size}\0".encode())
        with file.open("rb") as handle:
            if size <= _WHOLE_FILE_LIMIT:
                digest.update(handle.read())
                continue
            mib = 1 << 20
            blocks = [(0, mib), (size - mib, mib)]
            blocks += [(mib + i * (size - 3 * mib) // _SAMPLES, _SAMPLE) for i in range(_SAMPLES)]
            for offset, length in blocks:
                handle.seek(offset)
                digest.update(handle.read(length))
    return digest.hexdigest()[:16]


def load_pretrained(spec: str, path: str, dtype: torch.dtype, auto_class=None, **kwargs):
    """Weights of a local model (a causal LM unless `auto_class` says otherwise); a bad path is one ModelSpecError."""
    if auto_class is None:
        from transformers import AutoModelForCausalLM as auto_class
    quiet_weight_loading()
    try:
        return auto_class.from_pretrained(path, dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelSpecError(f"cannot load model {spec!r} from {path}: {str(exc).splitlines()[0]}") from None


def template_hash(tokenizer) -> str:
    """Short sha256 of a tokenizer's chat template, recorded wherever a model's prompts matter."""
    return hashlib.sha256((tokenizer.chat_template or "").encode()).hexdigest()[:16]


def load_tokenizer(path: str, chat_template: str | None = None, *, require_chat_template: bool = True):
    """The tokenizer of a local model, with a pad token; `chat_template` (Jinja text) replaces its own."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if require_chat_template and not tokenizer.chat_template:
        raise ModelSpecError(f"{path} has no chat template: use an instruct/chat model or add a template to its tokenizer")
    return tokenizer


_SYSTEM_PROBE = "aloe-system-probe"
_system_role: dict[str, bool] = {}  # chat template text -> whether it renders a system message


def has_system_role(tokenizer) -> bool:
    """Whether the chat template renders a system message (Mistral's raises or drops it)."""
    template = tokenizer.chat_template or ""
    if template not in _system_role:
        try:
            text = tokenizer.apply_chat_template([{"role": "system", "content": _SYSTEM_PROBE},
                                                  {"role": "user", "content": "hi"}], tokenize=False)
            _system_role[template] = _SYSTEM_PROBE in text
        except Exception:  # noqa: BLE001 - templates refuse with jinja's TemplateError or whatever they raise
            _system_role[template] = False
    return _system_role[template]


def chat_messages(messages: Sequence[Message], tokenizer) -> list[Message]:
    """Messages as this model's template takes them: a system message goes inline where it has no system role.

    Training and generation both pass through here, so a model sees its system message at inference
    exactly where it saw it in training.
    """
    if messages and messages[0]["role"] == "system" and not has_system_role(tokenizer):
        return inline_system_message(messages)
    return list(messages)


def raw_prompt(messages: Sequence[Message]) -> str:
    """The text a raw-text model continues: the conversation's one user message, as it is."""
    if len(messages) != 1 or messages[0]["role"] != "user":
        roles = ", ".join(message["role"] for message in messages)
        raise ModelCallError(f"raw-text prompting continues one user message's text, but this prompt has "
                             f"messages [{roles}]: this stage needs a chat model (drop --raw-text)")
    return messages[0]["content"]


class LocalChatModel(ChatModel):
    raw_text = False  # continue the one user message as plain text instead of rendering the chat template

    def __init__(self, spec: str, path: str, *, batch_size: int = 8, device: str | None = None,
                 dtype: torch.dtype | str = "auto", model=None, tokenizer=None, raw_text: bool = False):
        self.spec = spec
        self.path = str(path)
        self.batch_size = max(1, batch_size)
        self.device = device or default_device()
        self.raw_text = raw_text
        dtype = resolve_dtype(dtype, self.device) if isinstance(dtype, str) else dtype
        try:
            self.tokenizer = tokenizer or load_tokenizer(self.path, require_chat_template=not raw_text)
        except (OSError, ValueError) as exc:
            raise ModelSpecError(f"cannot load model {spec!r} from {self.path}: {str(exc).splitlines()[0]}") from None
        self.model = model or load_pretrained(spec, self.path, dtype)
        self.model.to(self.device).eval()
        self.context_length = getattr(self.model.config, "max_position_embeddings", None) or 2048

    @classmethod
    def from_spec(cls, spec, resolved, options):
        return cls(spec, local_path(spec), batch_size=options.batch_size, dtype=options.dtype,
                   raw_text=options.raw_text)

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.model.dtype)

    def describe(self):
        if self.raw_text:
            return {"spec": self.spec, "path": self.path, "dtype": self.dtype_name, "raw_text": True}
        return {"spec": self.spec, "path": self.path, "dtype": self.dtype_name,
                "chat_template_sha256": template_hash(self.tokenizer)}

    def cache_identity(self):
        # A folder retrained under the same name (model_output/embedded_dpo) must not replay old replies.
        raw = "/raw" if self.raw_text else ""  # plain-text and chat-template prompts get different replies
        return f"{self.spec}@{weights_fingerprint(self.path) or ''}/{self.dtype_name}{raw}"  # bf16 and fp32 replies differ

    def encode(self, messages: Sequence[Message], max_new_tokens: int) -> list[int]:
        """Token ids of the prompt, its history cut from the left to leave room for the reply."""

        def ids(msgs):
            return self.tokenizer.apply_chat_template(chat_messages(msgs, self.tokenizer), add_generation_prompt=True,
                                                      tokenize=True, return_dict=False)

        limit = self.context_length - max_new_tokens
        if limit < 1:
            raise ModelCallError(f"{self.spec}: max_new_tokens={max_new_tokens} leaves no room for the prompt in "
                                 f"its {self.context_length}-token context; lower --max-new-tokens")
        if self.raw_text:
            # The tokenizer adds the BOS token where the model was pretrained with one.
            return self.tokenizer(raw_prompt(messages))["input_ids"][-limit:]
        fitted = truncate_left(messages, lambda msgs: len(ids(msgs)), limit)
        return ids(fitted)[-limit:]

    @torch.inference_mode()
    def generate(self, conversations, params: SamplingParams, sample_indices=None, on_reply=None):
        for conversation in conversations:
            validate_messages(conversation)
        prompts = [self.encode(conv, params.max_new_tokens) for conv in conversations]
        indices = list(sample_indices) if sample_indices is not None else [0] * len(prompts)
        # Longest first: similar lengths share a chunk (little padding), and an out-of-memory shows at once.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        replies: list[Reply | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            for position, reply in zip(chunk, self._generate_chunk([prompts[i] for i in chunk], params,
                                                                    indices[chunk[0]])):
                replies[position] = reply
                if on_reply is not None:
                    on_reply(position, reply)
        return replies  # type: ignore[return-value]

    def _generate_chunk(self, prompts: list[list[int]], params: SamplingParams, sample_index: int) -> list[Reply]:
        pad_id = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        sampling = params.temperature > 0
        if params.seed is not None:
            torch.manual_seed(params.seed + sample_index)
        kwargs = dict(max_new_tokens=params.max_new_tokens, do_sample=sampling, pad_token_id=pad_id)
        if sampling:
            # top_k=None explicitly: transformers would otherwise add its default top-k of 50, a filter the
            # API backends (and SamplingParams) do not have.
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        if self.device == "cpu":
            # The default dynamic cache re-concatenates every layer's keys and values at each step; on CPU at
            # batch 16 that copy costs more than the model (docs/BENCHMARKS.md). Not on GPUs, where a static
            # cache switches on torch.compile, which would recompile for every new batch shape.
            kwargs.update(cache_implementation="static")
            # transformers sizes a static cache to the longest of all earlier calls in this process, so a
            # chunk's attention length (and, in bf16, its replies) would depend on what ran before it: a
            # resumed run, which skips the cached calls, would differ from an uninterrupted one. Sized by
            # the chunk alone, a reply depends only on its chunk (docs/evaluation.md, "Resume").
            self.model._previous_max_cache_length = -1
        started = time.perf_counter()
        output = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        latency = time.perf_counter() - started
        eos_ids = _eos_ids(self.model, self.tokenizer)
        replies = []
        for prompt, row in zip(prompts, output[:, width:].tolist()):
            stop_at = next((i for i, tok in enumerate(row) if tok in eos_ids), None)
            new_tokens = row if stop_at is None else row[:stop_at]
            text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
            stopped = stop_at is not None
            for stop in params.stop:
                if stop in text:
                    text, stopped = text.split(stop)[0], True
            hit_limit = not stopped and len(new_tokens) >= params.max_new_tokens
            replies.append(Reply(text=text.strip(), finish_reason="length" if hit_limit else "stop",
                                 prompt_tokens=len(prompt), completion_tokens=len(new_tokens),
                                 latency_s=latency, model=self.path))
        return replies


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    ids.add(tokenizer.eos_token_id)
    ids.discard(None)
    if tokenizer.pad_token_id is not None:
        ids.add(tokenizer.pad_token_id)
    return ids
