"""The training methods table: each method names its row kind, its trl trainer and config, and its own pieces.

Adding a method is one `Method` entry (plus a script of a few lines in `training/`): the run in
`aloe.training.run` reads only these fields and never asks which method it is running.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from aloe.cli import non_negative_float, positive_float
from aloe.errors import TrainingError
from aloe.jsonl import read_records
from aloe.messages import Message
from aloe.records import ChatMessage, Record

log = logging.getLogger("aloe.training")


@dataclass(frozen=True)
class Method:
    name: str
    description: str  # what the script does, for --help
    rows: str  # the row kind it trains on: a key of formats.ROW_KINDS
    trainer: str  # "module:Class" of the trl trainer
    config: str  # "module:Class" of its config
    lr: float  # default learning rate (for LoRA)
    add_args: Callable[[argparse._ActionsContainer], None] = lambda group: None
    settings: Callable[[argparse.Namespace, Any], dict[str, Any]] = lambda args, model: {}  # config keywords
    trainer_kwargs: Callable[[Any, Any], dict[str, Any]] = lambda prep, dtype: {}
    extra_rows: Callable[[argparse.Namespace, int], list[dict]] = lambda args, count: []
    auto_class: str = "transformers:AutoModelForCausalLM"  # what its model is loaded as
    lora_task: str = "CAUSAL_LM"
    load_kwargs: Callable[[Any], dict[str, Any]] = lambda tokenizer: {}
    evaluate: Callable[[Any, Any], dict[str, Any]] | None = None  # extra held-out metrics (trainer, prep)


def load_class(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


# ---------------------------------------------------------------------------------------------
# SFT: prompt -> completion, loss on the completion, optional general chat data mixed in
# ---------------------------------------------------------------------------------------------

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
    the loss stays on replies only, as for the main examples.
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


def supports_packing(model) -> bool:
    """Packing without padding needs attention that reads sequence boundaries from position ids.

    Models on transformers' attention interface build a block-diagonal mask from them; older or
    remote-code models would attend across packed examples, so they train unpacked.
    """
    return bool(getattr(model, "_supports_attention_backend", False))


def _sft_args(group) -> None:
    group.add_argument("--data", choices=("preferred", "rejected"), default=None,
                       help="which reply is learned: preferred (the chosen one), or rejected (the control condition); "
                            "required for ALOE conversations")
    group.add_argument("--mix", nargs="+", default=[], metavar="FILE",
                       help='general chat JSONL files ({"messages": [...]}) mixed into the training data')
    group.add_argument("--mix-ratio", type=non_negative_float, default=1.0,
                       help="mixed-in examples per training example (default: 1.0)")
    group.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None,
                       help="pack examples into max-length rows (default: on where the model supports it)")


def _sft_settings(args: argparse.Namespace, model) -> dict[str, Any]:
    packing = supports_packing(model) if args.packing is None else args.packing
    if packing and not supports_packing(model):
        raise TrainingError(f"{args.model} cannot pack examples (its attention ignores packed boundaries): "
                            "use --no-packing")
    return dict(completion_only_loss=True, assistant_only_loss=False, packing=bool(packing), packing_strategy="bfd")


# ---------------------------------------------------------------------------------------------
# DPO and ORPO: preference pairs on a causal LM
# ---------------------------------------------------------------------------------------------

def _dpo_args(group) -> None:
    group.add_argument("--beta", type=positive_float, default=0.1, help="DPO beta (default: 0.1; the ALOE paper used 0.9)")
    group.add_argument("--loss-type", nargs="+", default=["sigmoid"],
                       help="trl DPO loss type(s), passed through (default: sigmoid)")
    group.add_argument("--ref-model", default=None,
                       help="reference model spec (default: with LoRA the frozen base, else a copy of --model)")


def _reference_model(prep, dtype) -> dict[str, Any]:
    from aloe.models.local import load_pretrained, local_path

    spec = prep.args.ref_model
    return {"ref_model": load_pretrained(spec, local_path(spec), dtype) if spec else None}


def _orpo_args(group) -> None:
    group.add_argument("--lambda", dest="orpo_lambda", type=positive_float, default=0.1,
                       help="ORPO lambda, the weight of the odds-ratio term (default: 0.1, the paper's; trl calls it beta)")


# ---------------------------------------------------------------------------------------------
# Reward model: Bradley-Terry on preference pairs, a one-output sequence classifier
# ---------------------------------------------------------------------------------------------

def pairwise_accuracy(trainer, prep) -> dict[str, Any]:
    """Share of held-out pairs whose chosen reply the reward model scores above the rejected one.

    Every process scores every pair: the same forwards on each, which sharded weights (FSDP, ZeRO-3) need.
    """
    import torch

    dataset = trainer.eval_dataset
    if dataset is None or len(dataset) == 0:
        return {}
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.eval()
    correct = ties = 0
    margins = []
    device = next(model.parameters()).device
    size = trainer.args.per_device_eval_batch_size
    with torch.no_grad():
        for start in range(0, len(dataset), size):
            batch = trainer.data_collator([dataset[i] for i in range(start, min(start + size, len(dataset)))])
            scores = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits[:, 0].float()
            chosen, rejected = scores.chunk(2)  # the collator stacks every chosen row, then every rejected row
            correct += int((chosen > rejected).sum())
            ties += int((chosen == rejected).sum())
            margins += (chosen - rejected).tolist()
    return {"pairs": len(dataset), "accuracy": correct / len(dataset), "ties": ties,
            "mean_margin": sum(margins) / len(margins)}


def _reward_load_kwargs(tokenizer) -> dict[str, Any]:
    return {"num_labels": 1, "pad_token_id": tokenizer.pad_token_id}


METHODS: dict[str, Method] = {entry.name: entry for entry in (
    Method("sft", "Supervised fine-tuning: prompt -> completion, loss on the completion only.",
           rows="completion", trainer="trl:SFTTrainer", config="trl:SFTConfig", lr=1e-4,
           add_args=_sft_args, settings=_sft_settings,
           extra_rows=lambda args, count: mix_examples(args.mix, args.mix_ratio, count, args.seed)),
    Method("dpo", "DPO on preference pairs (chosen over rejected).",
           rows="preference", trainer="trl:DPOTrainer", config="trl:DPOConfig", lr=5e-5,
           add_args=_dpo_args, settings=lambda args, model: dict(beta=args.beta, loss_type=list(args.loss_type)),
           trainer_kwargs=_reference_model),
    Method("orpo", "ORPO on preference pairs: SFT and an odds-ratio preference term in one stage, no reference model.",
           rows="preference", trainer="trl.experimental.orpo:ORPOTrainer", config="trl.experimental.orpo:ORPOConfig",
           lr=5e-5, add_args=_orpo_args,
           # Its batches carry chosen_/rejected_input_ids, no input_ids for the token counter to read.
           settings=lambda args, model: dict(beta=args.orpo_lambda, include_num_input_tokens_seen="no")),
    Method("reward", "A Bradley-Terry reward model on preference pairs: one score per reply, chosen above rejected.",
           rows="preference", trainer="trl:RewardTrainer", config="trl:RewardConfig", lr=1e-4,
           auto_class="transformers:AutoModelForSequenceClassification", lora_task="SEQ_CLS",
           load_kwargs=_reward_load_kwargs, evaluate=pairwise_accuracy),
)}
