"""SFT and DPO on the tree-structured conversations: examples, settings, the trainer run and its outputs.

`training/sft.py` and `training/dpo.py` are thin CLIs over this module. Examples follow the branch
each conversation actually continued with, histories are cut from the left at whole messages,
settings layer as defaults < `--config` YAML < flags, and the result is a plain checkpoint (LoRA
merged, tokenizer and chat template included) that every other stage loads as an ordinary model.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from aloe.messages import truncate_left
from aloe.cli import positive_int
from aloe.errors import AloeError, ModelSpecError
from aloe.jsonl import read_records, write_json
from aloe.models import model_output_dir, resolve_spec, short_name
from aloe.messages import Message
from aloe.records import Branch, Conversation, Record

log = logging.getLogger("aloe.training")

METHODS = ("sft", "dpo")
BRANCHES: tuple[Branch, ...] = ("preferred", "rejected")
SUMMARY_FILE = "training_summary.json"
REPORT_TO = ("none", "wandb", "tensorboard")
DTYPES = ("auto", "bf16", "fp32")
# What --overwrite deletes from an output dir: only what a training run writes there, never other files.
RUN_ARTEFACTS = ("checkpoint-*", "adapter_*", "model*.safetensors", "model.safetensors.index.json",
                 "pytorch_model*.bin", "config.json", "generation_config.json", "tokenizer*", "chat_template.jinja",
                 "special_tokens_map.json", "vocab.json", "merges.txt", "runs", SUMMARY_FILE, "README.md")


class TrainingError(AloeError):
    """A training setting or input that cannot work; raised before any training starts."""


# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------

def sft_examples(conversations: Sequence[Conversation], branch: Branch) -> list[dict[str, list[Message]]]:
    """One prompt-completion example per turn.

    The prompt is the history along the branch the conversation continued with, up to and including
    the turn's user message; the completion is the turn's `branch` reply. So a `rejected` example
    still sees the conversation that actually happened, and the first user message appears once.
    """
    examples = []
    for conversation in conversations:
        for index, turn in enumerate(conversation.conversations):
            examples.append({
                "prompt": conversation.history_before(index),
                "completion": [{"role": "assistant", "content": getattr(turn.assistant, branch)}],
            })
    return examples


def dpo_examples(conversations: Sequence[Conversation]) -> list[dict[str, list[Message]]]:
    """One preference pair per turn: the continuing-branch history, `preferred` as chosen, `rejected` as rejected."""
    examples = []
    for conversation in conversations:
        for index, turn in enumerate(conversation.conversations):
            examples.append({
                "prompt": conversation.history_before(index),
                "chosen": [{"role": "assistant", "content": turn.assistant.preferred}],
                "rejected": [{"role": "assistant", "content": turn.assistant.rejected}],
            })
    return examples


def chat_token_count(tokenizer) -> Callable[[Sequence[Message]], int]:
    """Length in tokens of a message list rendered through the model's own chat template."""

    def count(messages: Sequence[Message]) -> int:
        return len(tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=False))

    return count


def fit_left(examples: list[dict], count: Callable[[Sequence[Message]], int], max_length: int,
             completion_keys: Sequence[str]) -> tuple[list[dict], int, int]:
    """Cut each prompt from the left at whole messages so prompt + longest completion fits `max_length`.

    trl truncates only from the right, which would cut the reply being learned; here the oldest
    exchanges go first. An example whose last user message and reply alone overflow is dropped.
    Returns (kept examples, how many were truncated, how many were dropped).
    """
    kept, truncated, dropped = [], 0, 0
    for example in examples:
        def length(prompt: Sequence[Message]) -> int:
            return max(count(list(prompt) + example[key]) for key in completion_keys)

        prompt = truncate_left(example["prompt"], length, max_length)
        if length(prompt) > max_length:
            dropped += 1
            continue
        if len(prompt) < len(example["prompt"]):
            truncated += 1
            example = {**example, "prompt": prompt}
        kept.append(example)
    return kept, truncated, dropped


def read_conversations(path: str | os.PathLike) -> list[Conversation]:
    """Validated conversations; a missing reply or an empty file is a RecordError naming file:line."""
    return read_records(path, Conversation)


class ChatMessage(Record):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatExample(Record):
    """A general-purpose chat example for `--mix`: `{"messages": [...]}` ending with an assistant reply."""

    messages: list[ChatMessage] = Field(min_length=2)

    @field_validator("messages")
    @classmethod
    def _ends_with_reply(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "assistant":
            raise ValueError("the last message must be the assistant's reply (the part that is learned)")
        return messages


def mix_examples(paths: Sequence[str], ratio: float, main_count: int, seed: int) -> list[dict[str, list[Message]]]:
    """`ratio * main_count` examples sampled (without replacement, capped at what exists) from `--mix` files.

    Each becomes prompt = all but the last message, completion = the last (assistant) message, so
    the loss stays on replies only, as for the conversation examples.
    """
    if not paths:
        return []
    pool = []
    for path in paths:
        for record in read_records(path, ChatExample):
            messages = [{"role": m.role, "content": m.content} for m in record.messages]
            pool.append({"prompt": messages[:-1], "completion": messages[-1:]})
    wanted = min(len(pool), round(ratio * main_count))
    if wanted < round(ratio * main_count):
        log.info("mix: wanted %d examples, the --mix files hold %d; using all", round(ratio * main_count), len(pool))
    return random.Random(seed).sample(pool, wanted)


# ---------------------------------------------------------------------------------------------
# Settings: flags, recipes, output dir
# ---------------------------------------------------------------------------------------------

def build_parser(method: str) -> argparse.ArgumentParser:
    """The flags of `training/<method>.py`; a `--config` YAML may set any of them by its dest name."""
    sft = method == "sft"
    parser = argparse.ArgumentParser(
        prog=f"training/{method}.py",
        description=("Supervised fine-tuning on one branch of" if sft else "DPO on the preference pairs of")
        + " tree-structured ALOE conversations.",
    )
    parser.add_argument("--config", default=None, help="recipe YAML; its keys are flag names (flags given here win)")
    parser.add_argument("--model", default="embedded", help="model spec to start from (default: embedded)")
    parser.add_argument("--conversations", default=None, help="conversations JSONL (the tree format)")
    if sft:
        parser.add_argument("--data", choices=BRANCHES, default=None,
                            help="which reply each turn teaches: preferred, or rejected (the control condition)")
        parser.add_argument("--mix", nargs="+", default=[], metavar="FILE",
                            help='general chat JSONL files ({"messages": [...]}) mixed into the training data')
        parser.add_argument("--mix-ratio", type=float, default=1.0,
                            help="mixed-in examples per conversation example (default: 1.0)")
        parser.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None,
                            help="pack examples into max-length rows (default: on where the model supports it)")
    else:
        parser.add_argument("--beta", type=float, default=0.1, help="DPO beta (default: 0.1; the paper used 0.9)")
        parser.add_argument("--loss-type", nargs="+", default=["sigmoid"],
                            help="trl DPO loss type(s), passed through (default: sigmoid)")
        parser.add_argument("--ref-model", default=None,
                            help="reference model spec (default: with LoRA the frozen base, else a copy of --model)")
    parser.add_argument("--output", default=None, help=f"output dir (default: model_output/<model>_{method}"
                        + ("_<data>)" if sft else ")"))
    parser.add_argument("--overwrite", action="store_true", help="train again into an output dir that holds a model")
    group = parser.add_argument_group("optimisation")
    group.add_argument("--lr", type=float, default=1e-4 if sft else 5e-5,
                       help="learning rate (defaults suit LoRA; the paper's full fine-tuning used 1e-5)")
    group.add_argument("--epochs", type=float, default=1.0)
    group.add_argument("--max-steps", type=int, default=-1,
                       help="stop after this many optimizer steps (default: run --epochs)")
    group.add_argument("--batch-size", type=positive_int, default=4, help="examples per device per step")
    group.add_argument("--grad-accum", type=positive_int, default=1, help="gradient accumulation steps")
    group.add_argument("--global-batch-size", type=positive_int, default=None,
                       help="effective batch over all devices; sets --grad-accum from --batch-size and the world size")
    group.add_argument("--max-length", type=positive_int, default=2048,
                       help="tokens per example; longer histories lose their oldest messages")
    group.add_argument("--warmup", type=float, default=0.1, help="warm-up steps, or a fraction of all steps if < 1")
    group.add_argument("--scheduler", default="cosine", help="transformers lr scheduler type (default: cosine)")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=False,
                       help="recompute activations in the backward pass (less memory, ~20%% slower)")
    group.add_argument("--dtype", choices=DTYPES, default="auto",
                       help="weights and autocast dtype (auto: bf16 on GPUs that have it, fp32 on CPU)")
    group = parser.add_argument_group("LoRA (default) or full fine-tuning")
    group.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    group.add_argument("--lora-r", type=positive_int, default=16)
    group.add_argument("--lora-alpha", type=positive_int, default=32)
    group.add_argument("--lora-dropout", type=float, default=0.05)
    group.add_argument("--lora-target", nargs="+", default=["all-linear"],
                       help="module names to adapt (default: all-linear)")
    group.add_argument("--merge", action=argparse.BooleanOptionalAction, default=True,
                       help="save LoRA merged into a plain checkpoint (default); --no-merge saves the adapter")
    group = parser.add_argument_group("run")
    group.add_argument("--report-to", choices=REPORT_TO, default="none")
    group.add_argument("--logging-steps", type=positive_int, default=1)
    group.add_argument("--save-steps", type=positive_int, default=200, help="checkpoint every N steps (for resuming)")
    group.add_argument("--keep-checkpoints", action="store_true",
                       help="keep checkpoint-* folders after a finished run (default: remove them)")
    group.add_argument("--resume-from-checkpoint", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                       help="resume from CHECKPOINT, or with no value from the last checkpoint in the output dir")
    return parser


_UNSET = object()


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: recipe not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TrainingError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TrainingError(f"{path}: expected a mapping of flag names to values, got {type(data).__name__}")
    return data


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags over `--config` YAML over defaults. An unknown YAML key, or a bad value, is a TrainingError."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.config:
        actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
        # argparse only fills defaults into attributes a namespace lacks, so a pre-filled namespace tells
        # which flags the command line really gave.
        given = parser.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(actions, _UNSET)))
        for key, value in load_recipe(args.config).items():
            dest = str(key).replace("-", "_")
            if dest not in actions:
                raise TrainingError(f"{args.config}: {key}: unknown key; known keys: {', '.join(sorted(actions))}")
            if getattr(given, dest) is _UNSET:
                setattr(args, dest, _recipe_value(actions[dest], value, f"{args.config}: {key}"))
    if not args.conversations:
        parser.error("--conversations is required (on the command line or in the --config recipe)")
    if getattr(args, "data", "") is None:
        parser.error("--data is required: preferred or rejected")
    return args


def _recipe_value(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise TrainingError(f"{where}: expected true or false, got {value!r}")
        return value
    if action.nargs in ("+", "*"):
        values = value if isinstance(value, list) else [value]
        return [_convert(action, item, where) for item in values]
    return _convert(action, value, where)


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    if action.type is not None and value is not None:
        try:
            value = action.type(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise TrainingError(f"{where}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        raise TrainingError(f"{where}: must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return value


def default_output(method: str, model: str, data: str | None = None) -> Path:
    """`model_output/<short model name>_sft_<data>` or `..._dpo`: the names evaluation's --model accepts."""
    suffix = f"{method}_{data}" if data else method
    return model_output_dir() / f"{short_name(model)}_{suffix}"


def run_marker(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """What identifies a run's model in its output dir: a different marker there means a different model."""
    return {"base_model": args.model, "method": method, "data": getattr(args, "data", None)}


def check_output_dir(output: Path, marker: dict[str, Any], overwrite: bool, model_path: str | None) -> str:
    """Refuse an output dir that holds another model; returns "new", "resume" or "finished"."""
    if model_path and output.resolve() == Path(model_path).resolve():
        raise TrainingError(f"--output {output} is the model being trained from: choose another output dir")
    if not output.exists() or not any(output.iterdir()):
        return "new"
    if overwrite:
        for pattern in RUN_ARTEFACTS:
            for path in output.glob(pattern):
                # Every process of a multi-GPU launch runs this check; another may have deleted it first.
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        return "new"
    summary = _read_summary(output)
    if summary is None:
        raise TrainingError(f"{output} already holds files from something else (no {SUMMARY_FILE}): "
                            "pass --overwrite to replace them or choose another --output")
    theirs = {key: summary.get(key) for key in marker}
    if theirs != marker:
        raise TrainingError(f"{output} holds a model trained with {theirs}, not {marker}: "
                            "pass --overwrite to replace it or choose another --output")
    return "finished" if summary.get("status") == "finished" else "resume"


def _read_summary(output: Path) -> dict | None:
    import json

    path = output / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

def model_path(spec: str) -> str:
    """Local path or hub id of a trainable model spec (the embedded model, hf:, a path, a model_output name)."""
    resolved = resolve_spec(spec)
    if resolved.backend == "embedded":
        from aloe.embedded import embedded_chat_checkpoint

        return str(embedded_chat_checkpoint())
    if resolved.backend != "hf":
        raise ModelSpecError(f"cannot train {spec!r}: training needs local weights "
                             "('embedded', 'hf:<hub-id-or-path>', a local path or a model_output name)")
    return resolved.target


def training_dtype(choice: str):
    """bf16 on GPUs that support it and fp32 on CPU for `auto`; an explicit choice is checked."""
    import torch

    from aloe.models.local import default_device, default_dtype

    if choice == "fp32":
        return torch.float32
    device = default_device()
    if choice == "bf16":
        if device == "cpu" or not torch.cuda.is_bf16_supported():
            raise TrainingError("--dtype bf16 needs a GPU with bfloat16 support; use --dtype auto or fp32 here")
        return torch.bfloat16
    return default_dtype(device)


def load_causal_lm(spec: str, path: str, dtype):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelSpecError(f"cannot load model {spec!r} from {path}: {str(exc).splitlines()[0]}") from None


def lora_config(args: argparse.Namespace):
    """LoRA settings for peft, or None for full fine-tuning."""
    if args.full:
        return None
    from peft import LoraConfig

    target = args.lora_target[0] if args.lora_target == ["all-linear"] else list(args.lora_target)
    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=target, task_type="CAUSAL_LM")


def supports_packing(model) -> bool:
    """Packing without padding needs attention that reads sequence boundaries from position ids.

    Models on transformers' attention interface build a block-diagonal mask from them; older or
    remote-code models would attend across packed examples, so they train unpacked.
    """
    return bool(getattr(model, "_supports_attention_backend", False))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def grad_accum_steps(args: argparse.Namespace) -> int:
    """--grad-accum, or what makes --global-batch-size on this many processes (which must divide it)."""
    if args.global_batch_size is None:
        return args.grad_accum
    per_step = args.batch_size * world_size()
    if args.global_batch_size % per_step:
        raise TrainingError(f"--global-batch-size {args.global_batch_size} is not a multiple of --batch-size "
                            f"{args.batch_size} x {world_size()} processes")
    return args.global_batch_size // per_step


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

@dataclass
class Prepared:
    """Everything checked and built before training starts (no weights loaded yet)."""

    method: str
    args: argparse.Namespace
    path: str  # local path or hub id of the starting model
    output: Path
    marker: dict[str, Any]
    state: str  # of the output dir: "new", "resume" or "finished"
    tokenizer: Any
    examples: list[dict]
    counts: dict[str, int]
    grad_accum: int


def prepare(method: str, args: argparse.Namespace) -> Prepared:
    """Read and validate every input, build the examples and the output dir's state; loads no weights."""
    from aloe.models.local import load_tokenizer

    conversations = read_conversations(args.conversations)
    path = model_path(args.model)
    output = Path(args.output) if args.output else default_output(method, args.model, getattr(args, "data", None))
    marker = run_marker(args, method)
    state = check_output_dir(output, marker, args.overwrite, path)
    tokenizer = load_tokenizer(path)
    if method == "sft":
        examples, keys = sft_examples(conversations, args.data), ("completion",)
    else:
        examples, keys = dpo_examples(conversations), ("chosen", "rejected")
    main_count = len(examples)
    mixed = mix_examples(args.mix, args.mix_ratio, main_count, args.seed) if method == "sft" else []
    examples, truncated, dropped = fit_left(examples + mixed, chat_token_count(tokenizer), args.max_length, keys)
    if not examples:
        raise TrainingError(f"no example fits --max-length {args.max_length} tokens: raise --max-length")
    counts = {"conversations": len(conversations), "turns": main_count, "mix_examples": len(mixed),
              "examples": len(examples), "truncated_left": truncated, "dropped_too_long": dropped}
    return Prepared(method=method, args=args, path=path, output=output, marker=marker, state=state,
                    tokenizer=tokenizer, examples=examples, counts=counts, grad_accum=grad_accum_steps(args))


def trainer_settings(prep: Prepared, dtype, packing: bool | None) -> dict[str, Any]:
    """TrainingArguments/SFTConfig/DPOConfig keywords shared by both methods plus the method's own."""
    import torch

    args = prep.args
    bf16 = dtype == torch.bfloat16
    settings = dict(
        output_dir=str(prep.output), per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=prep.grad_accum, learning_rate=args.lr, num_train_epochs=args.epochs,
        max_steps=args.max_steps, lr_scheduler_type=args.scheduler, warmup_steps=args.warmup, seed=args.seed,
        bf16=bf16, fp16=False, gradient_checkpointing=args.gradient_checkpointing, max_length=args.max_length,
        logging_steps=args.logging_steps, save_strategy="steps", save_steps=args.save_steps, save_total_limit=2,
        report_to=[] if args.report_to == "none" else [args.report_to],
        include_num_input_tokens_seen="non_padding", disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available(),
    )
    if prep.method == "sft":
        settings.update(completion_only_loss=True, assistant_only_loss=False, packing=bool(packing),
                        packing_strategy="bfd")
    else:
        settings.update(beta=args.beta, loss_type=list(args.loss_type))
    return settings


def build_trainer(prep: Prepared):
    """Load the weights and build the trl trainer for a prepared run; returns (trainer, settings, dtype)."""
    args = prep.args
    dtype = training_dtype(args.dtype)
    model = load_causal_lm(args.model, prep.path, dtype)
    packing = None
    if prep.method == "sft":
        packing = supports_packing(model) if args.packing is None else args.packing
        if packing and not supports_packing(model):
            raise TrainingError(f"{args.model} cannot pack examples (its attention ignores packed boundaries): "
                                "use --no-packing")
    settings = trainer_settings(prep, dtype, packing)
    return _make_trainer(prep, model, settings, dtype), settings, dtype


def train(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one SFT or DPO training end to end; returns the training summary (also written beside the model)."""
    prep = prepare(method, args)
    if prep.state == "finished" and not args.resume_from_checkpoint:
        log.info("%s already holds the finished model; pass --overwrite to train again", prep.output)
        return _read_summary(prep.output) or {}
    resume = _resume_point(prep.output, args.resume_from_checkpoint)
    trainer, settings, dtype = build_trainer(prep)
    if not args.keep_checkpoints:
        trainer.add_callback(_skip_final_checkpoint())
    is_main = trainer.accelerator.is_main_process
    if is_main:
        prep.output.mkdir(parents=True, exist_ok=True)
        write_json(prep.output / SUMMARY_FILE, {**prep.marker, "status": "running"})
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - started
    _save_model(prep, trainer, dtype)
    summary = _summary(prep, trainer, result, settings, train_seconds, dtype)
    if is_main:
        write_json(prep.output / SUMMARY_FILE, summary)
        if not args.keep_checkpoints:
            for checkpoint in prep.output.glob("checkpoint-*"):
                shutil.rmtree(checkpoint, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return summary


def _skip_final_checkpoint():
    """A callback that saves no checkpoint at the last step: the finished model is saved right after it.

    For a 7-8B full fine-tune that checkpoint (weights plus optimizer state) is ~100 GB of writes.
    """
    from transformers import TrainerCallback

    class SkipFinalCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = False
            return control

    return SkipFinalCheckpoint()


def _resume_point(output: Path, requested: str | None) -> str | None:
    if requested is None:
        return None
    if requested != "auto":
        if not Path(requested).is_dir():
            raise TrainingError(f"--resume-from-checkpoint {requested}: no such checkpoint folder")
        return requested
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(output)) if output.is_dir() else None
    if last is None:
        log.info("no checkpoint in %s to resume from: starting from the beginning", output)
    return last


def _make_trainer(prep: Prepared, model, settings: dict[str, Any], dtype):
    from datasets import Dataset

    args = prep.args
    dataset = Dataset.from_list(prep.examples)
    peft_config = lora_config(args)
    try:
        if prep.method == "sft":
            from trl import SFTConfig, SFTTrainer

            return SFTTrainer(model=model, args=SFTConfig(**settings), train_dataset=dataset,
                              processing_class=prep.tokenizer, peft_config=peft_config)
        from trl import DPOConfig, DPOTrainer

        ref_model = None
        if args.ref_model:
            ref_model = load_causal_lm(args.ref_model, model_path(args.ref_model), dtype)
        return DPOTrainer(model=model, ref_model=ref_model, args=DPOConfig(**settings), train_dataset=dataset,
                          processing_class=prep.tokenizer, peft_config=peft_config)
    except ValueError as exc:
        # trl and transformers check their settings with ValueError; they are the user's settings.
        raise TrainingError(f"invalid training settings: {str(exc).splitlines()[0]}") from None


def _save_model(prep: Prepared, trainer, dtype) -> None:
    """A plain checkpoint with tokenizer and chat template (LoRA merged), or the adapter with --no-merge."""
    output = str(prep.output)
    if prep.args.full or not prep.args.merge:
        trainer.save_model(output)  # gathers sharded weights under FSDP/ZeRO-3 and saves the tokenizer
        return
    sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
    if sharded:
        # Shards hold pieces of the adapter: save it gathered, then merge into a fresh copy of the base.
        adapter_dir = prep.output / "adapter"
        trainer.save_model(str(adapter_dir))
    trainer.accelerator.wait_for_everyone()
    if not trainer.accelerator.is_main_process:
        return
    if sharded:
        from peft import PeftModel

        base = load_causal_lm(prep.args.model, prep.path, dtype)
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        shutil.rmtree(adapter_dir, ignore_errors=True)
    else:
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    merged.save_pretrained(output)
    prep.tokenizer.save_pretrained(output)


def _summary(prep: Prepared, trainer, result, settings: dict[str, Any], train_seconds: float, dtype) -> dict:
    from aloe.provenance import provenance

    state = trainer.state
    losses = [{"step": entry["step"], "loss": entry["loss"]} for entry in state.log_history if "loss" in entry]
    # A resumed run's state counts the earlier session's tokens too; the rate is for this session.
    tokens = state.num_input_tokens_seen - getattr(trainer, "_initial_num_input_tokens_seen", 0)
    runtime = result.metrics.get("train_runtime") or train_seconds
    args = prep.args
    return {
        **prep.marker,
        "status": "finished",
        "output": str(prep.output),
        "saved": "adapter" if not (args.full or args.merge) else "merged" if not args.full else "full",
        "data_counts": prep.counts,
        "steps": state.global_step,
        "epochs_done": state.epoch,
        "loss_curve": losses,
        "final_loss": losses[-1]["loss"] if losses else None,
        "tokens_seen": state.num_input_tokens_seen,
        "tokens_per_second": tokens / runtime if runtime else None,
        "examples_per_second": result.metrics.get("train_samples_per_second"),
        "wall_time_s": round(train_seconds, 3),
        "world_size": world_size(),
        "dtype": str(dtype).removeprefix("torch."),
        "provenance": provenance(
            {"flags": vars(args), "trainer": {k: v for k, v in settings.items() if k != "output_dir"}},
            models={"base": {"spec": args.model, "path": prep.path,
                             "chat_template_sha256": _template_hash(prep.tokenizer)}},
        ),
    }


def _template_hash(tokenizer) -> str:
    import hashlib

    return hashlib.sha256(tokenizer.chat_template.encode()).hexdigest()[:16]


def one_line(summary: dict[str, Any]) -> str:
    """The scripts' final line: what was trained, how far, and where it is."""
    if summary.get("status") != "finished":
        return "nothing trained"
    counts = summary["data_counts"]
    curve = summary["loss_curve"]
    loss = f", loss {curve[0]['loss']:.3f} -> {curve[-1]['loss']:.3f}" if curve else ""
    rate = summary.get("tokens_per_second")
    speed = f", {rate:.0f} tokens/s" if rate else ""
    return (f"{summary['method']} {summary['base_model']}: {counts['examples']} examples from "
            f"{counts['conversations']} conversations, {summary['steps']} steps{loss}{speed}, "
            f"{summary['wall_time_s']:.0f}s; saved {summary['saved']} model to {summary['output']}")


__all__ = [
    "BRANCHES", "METHODS", "TrainingError", "build_parser", "parse_args", "sft_examples", "dpo_examples",
    "fit_left", "chat_token_count", "mix_examples", "read_conversations", "default_output", "check_output_dir",
    "lora_config", "training_dtype", "supports_packing", "prepare", "build_trainer", "train", "one_line",
]
