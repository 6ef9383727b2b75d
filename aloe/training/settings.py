"""The flags every training script shares, plus its method's and the data formats' own; and what follows from them.

Settings layer as defaults < `--config` recipe YAML < command-line flags (`aloe.cli.ArgumentParser`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from aloe.cli import (
    ArgumentParser, add_recipe_arg, fraction, non_negative_float, output_folder, positive_float, positive_int,
)
from aloe.errors import TrainingError
from aloe.models import DTYPE_CHOICES
from aloe.training.formats import FORMATS
from aloe.training.methods import METHODS

REPORT_TO = ("none", "wandb", "tensorboard")


def max_steps(text: str) -> int:
    value = int(text)
    if value < 1 and value != -1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (or -1 for --epochs), got {value}")
    return value


def build_parser(method_name: str) -> ArgumentParser:
    """The flags of `training/<method>.py`; a `--config` YAML may set any of them by its flag name."""
    method = METHODS[method_name]
    parser = ArgumentParser(prog=f"training/{method_name}.py", description=method.description)
    add_recipe_arg(parser)
    parser.add_argument("--model", default="embedded", help="model spec to start from (default: embedded)")
    data = parser.add_argument_group("data")
    data.add_argument("--train-data", "--conversations", dest="train_data", nargs="+", default=None, metavar="FILE",
                      help="training data JSONL file(s): ALOE conversations, preference pairs, system-message "
                           "rows or trl preference rows (--conversations is the older name)")
    data.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                      help="data format (default: detected from the first record)")
    data.add_argument("--eval-data", nargs="+", default=[], metavar="FILE",
                      help="held-out data (same format) scored after training")
    data.add_argument("--eval-fraction", type=fraction, default=0.0,
                      help="hold out this share of the training rows (seeded) instead of --eval-data")
    for entry in FORMATS.values():
        entry.add_args(data)
    method.add_args(parser.add_argument_group(method_name))
    parser.add_argument("--output", type=output_folder, default=None,
                        help=f"output dir (default: model_output/<model>_{method_name}[_<data>])")
    parser.add_argument("--overwrite", action="store_true", help="train again into an output dir that holds a model")
    parser.add_argument("--chat-template", default=None, metavar="JINJA_FILE",
                        help="chat template to train (and save) the model with, replacing the tokenizer's own; "
                             "base models without one need it for chat-format data")
    group = parser.add_argument_group("optimisation")
    group.add_argument("--lr", type=positive_float, default=method.lr,
                       help=f"learning rate (default: {method.lr:g}, for LoRA; full fine-tuning wants ~10x less)")
    group.add_argument("--epochs", type=positive_float, default=1.0)
    group.add_argument("--max-steps", type=max_steps, default=-1,
                       help="stop after this many optimizer steps (default: run --epochs)")
    group.add_argument("--batch-size", type=positive_int, default=4, help="examples per device per step")
    group.add_argument("--grad-accum", type=positive_int, default=1, help="gradient accumulation steps")
    group.add_argument("--global-batch-size", type=positive_int, default=None,
                       help="effective batch over all devices; sets --grad-accum from --batch-size and the world size")
    group.add_argument("--max-length", type=positive_int, default=2048,
                       help="tokens per example; longer histories lose their oldest messages")
    group.add_argument("--warmup", type=non_negative_float, default=0.1,
                       help="warm-up steps, or a fraction of all steps if < 1 (default: 0.1)")
    group.add_argument("--scheduler", default="cosine", help="transformers lr scheduler type (default: cosine)")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=False,
                       help="recompute activations in the backward pass (less memory, ~20%% slower)")
    group.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                       help="weights and autocast dtype (auto: bf16 on GPUs that have it, fp32 on CPU)")
    group = parser.add_argument_group("LoRA (default) or full fine-tuning")
    group.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    group.add_argument("--lora-r", type=positive_int, default=16)
    group.add_argument("--lora-alpha", type=positive_int, default=32)
    group.add_argument("--lora-dropout", type=fraction, default=0.05)
    group.add_argument("--lora-target", nargs="+", default=["all-linear"],
                       help="module names to adapt (default: all-linear)")
    group.add_argument("--merge", action=argparse.BooleanOptionalAction, default=True,
                       help="save LoRA merged into a plain checkpoint (default); --no-merge saves the adapter")
    group = parser.add_argument_group("run")
    group.add_argument("--report-to", choices=REPORT_TO, default="none")
    group.add_argument("--logging-steps", type=positive_int, default=1)
    group.add_argument("--save-steps", type=positive_int, default=200, help="checkpoint every N steps (for resuming)")
    group.add_argument("--best-checkpoint", action=argparse.BooleanOptionalAction, default=False,
                       help="evaluate the held-out loss at every checkpoint and save the checkpoint where it was "
                            "lowest instead of the last (needs --eval-fraction or --eval-data)")
    group.add_argument("--keep-checkpoints", action="store_true",
                       help="keep checkpoint-* folders after a finished run (default: remove them)")
    group.add_argument("--resume-from-checkpoint", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                       help="resume from CHECKPOINT, or with no value from the last checkpoint in the output dir")
    return parser


def parse_args(parser: ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags over `--config` YAML over defaults, then the checks that span several flags."""
    args = parser.parse_args(argv)
    if not args.train_data:
        parser.error("--train-data is required (on the command line or in the --config recipe)")
    if args.eval_data and args.eval_fraction:
        parser.error("--eval-data and --eval-fraction both choose held-out data: give one")
    if args.best_checkpoint and not (args.eval_data or args.eval_fraction):
        parser.error("--best-checkpoint picks by held-out loss: give --eval-fraction or --eval-data")
    return args


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


def training_dtype(choice: str):
    """What `--dtype` means for training here (`aloe.models.local.resolve_dtype`); bf16 needs a GPU that has it."""
    import torch

    from aloe.models.local import default_device, resolve_dtype

    if choice == "bf16" and not (default_device() == "cuda" and torch.cuda.is_bf16_supported()):
        raise TrainingError("--dtype bf16 needs a GPU with bfloat16 support; use --dtype auto or fp32 here")
    return resolve_dtype(choice, training=True)


def lora_config(args: argparse.Namespace, task_type: str = "CAUSAL_LM"):
    """LoRA settings for peft, or None for full fine-tuning."""
    if args.full:
        return None
    from peft import LoraConfig

    target = args.lora_target[0] if args.lora_target == ["all-linear"] else list(args.lora_target)
    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=target, task_type=task_type)
