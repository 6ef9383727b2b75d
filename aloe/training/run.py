"""One training run, for any method of the table on any data format: prepare, build the trainer, train, save.

The result is a plain checkpoint (LoRA merged, tokenizer and chat template included) that every
other stage loads as an ordinary model, with `training_summary.json` beside it.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aloe.errors import ModelSpecError, TrainingError
from aloe.jsonl import write_json
from aloe.models.local import chat_messages, load_pretrained, load_tokenizer, local_path, template_hash
from aloe.training.formats import ROW_KINDS, file_sha256, fit_left, is_conversational, read_rows, token_count
from aloe.training.methods import METHODS, load_class
from aloe.training.output import SUMMARY_FILE, check_output_dir, default_output, read_summary, run_marker
from aloe.training.settings import grad_accum_steps, lora_config, training_dtype, world_size

log = logging.getLogger("aloe.training")


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
    data: dict[str, Any] = field(default_factory=dict)  # format, files and hashes, the adapter's report
    eval_examples: list[dict] = field(default_factory=list)


def _fit(rows: list[dict], tokenizer, args: argparse.Namespace, keys) -> tuple[list[dict], int, int]:
    """Rows as the model will see them: system messages placed for its template, histories cut to fit."""
    if any(is_conversational(row) for row in rows):
        if not tokenizer.chat_template:
            raise ModelSpecError(f"{args.model} has no chat template: use an instruct/chat model, pass "
                                 "--chat-template FILE, or train on plain-text rows")
        rows = [{**row, "prompt": chat_messages(row["prompt"], tokenizer)} if is_conversational(row) else row
                for row in rows]
    return fit_left(rows, token_count(tokenizer), args.max_length, keys)


def _hashes(paths) -> list[dict[str, str]]:
    return [{"path": str(path), "sha256": file_sha256(path)} for path in paths]


def _held_out(rows: list[dict], args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows) for --eval-fraction, split by a seeded shuffle."""
    if not args.eval_fraction:
        return rows, []
    count = max(1, round(args.eval_fraction * len(rows)))
    if count >= len(rows):
        raise TrainingError(f"--eval-fraction {args.eval_fraction} of {len(rows)} rows leaves nothing to train on")
    order = list(range(len(rows)))
    random.Random(args.seed).shuffle(order)
    held = set(order[:count])
    return [row for i, row in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def prepare(method_name: str, args: argparse.Namespace) -> Prepared:
    """Read and validate every input, build the rows and the output dir's state; loads no weights."""
    method = METHODS[method_name]
    keys = ROW_KINDS[method.rows]
    path = local_path(args.model)
    output = Path(args.output) if args.output else default_output(method_name, args.model, getattr(args, "data", None))
    marker = run_marker(args, method_name)
    state = check_output_dir(output, marker, args.overwrite, path)
    template = _read_template(args.chat_template)
    # Data files first: a bad one is named before the (slower) tokenizer loads.
    format_name, adapted = read_rows(args.train_data, method.rows, args, args.format)
    held = read_rows(args.eval_data, method.rows, args, args.format)[1] if args.eval_data else None
    tokenizer = load_tokenizer(path, template, require_chat_template=False)
    main, truncated, dropped = _fit(adapted.rows, tokenizer, args, keys)
    main, eval_rows = _held_out(main, args)
    if held is not None:
        eval_rows, _, _ = _fit(held.rows, tokenizer, args, keys)
    mixed, mix_truncated, mix_dropped = _fit(method.extra_rows(args, len(adapted.rows)), tokenizer, args, keys)
    examples = main + mixed
    if not examples:
        raise TrainingError(f"no example fits --max-length {args.max_length} tokens: raise --max-length")
    counts = {**adapted.counts, "mix_examples": len(mixed), "examples": len(examples),
              "truncated_left": truncated + mix_truncated, "dropped_too_long": dropped + mix_dropped}
    data = {"format": format_name, "files": _hashes(args.train_data), "eval_files": _hashes(args.eval_data),
            "mix_files": _hashes(getattr(args, "mix", [])), **adapted.report}
    return Prepared(method=method_name, args=args, path=path, output=output, marker=marker, state=state,
                    tokenizer=tokenizer, examples=examples, counts=counts, grad_accum=grad_accum_steps(args),
                    data=data, eval_examples=eval_rows)


def _read_template(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        template = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"--chat-template {path}: cannot read it ({exc.__class__.__name__})") from None
    if not template.strip():
        raise TrainingError(f"--chat-template {path}: empty file")
    return template


def trainer_settings(prep: Prepared, dtype) -> dict[str, Any]:
    """TrainingArguments keywords every method shares (the method adds its own)."""
    import torch

    args = prep.args
    # Best checkpoint: evaluate at every checkpoint (transformers needs the two aligned), reload the lowest at the end.
    best = dict(eval_strategy="steps", eval_steps=args.save_steps, load_best_model_at_end=True,
                metric_for_best_model="eval_loss", greater_is_better=False) if args.best_checkpoint else {}
    return dict(
        output_dir=str(prep.output), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=prep.grad_accum, learning_rate=args.lr, num_train_epochs=args.epochs,
        max_steps=args.max_steps, lr_scheduler_type=args.scheduler, warmup_steps=args.warmup, seed=args.seed,
        bf16=dtype == torch.bfloat16, fp16=False, gradient_checkpointing=args.gradient_checkpointing,
        max_length=args.max_length, logging_steps=args.logging_steps, save_strategy="steps",
        save_steps=args.save_steps, save_total_limit=2, report_to=[] if args.report_to == "none" else [args.report_to],
        include_num_input_tokens_seen="non_padding", disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available(), **best,
    )


def load_model(prep: Prepared, dtype):
    """The starting weights, loaded as the method's model class."""
    method = METHODS[prep.method]
    return load_pretrained(prep.args.model, prep.path, dtype, load_class(method.auto_class),
                           **method.load_kwargs(prep.tokenizer))


def build_trainer(prep: Prepared):
    """Load the weights and build the trl trainer for a prepared run; returns (trainer, settings, dtype)."""
    from datasets import Dataset

    method = METHODS[prep.method]
    dtype = training_dtype(prep.args.dtype)
    model = load_model(prep, dtype)
    settings = {**trainer_settings(prep, dtype), **method.settings(prep.args, model)}
    try:
        trainer = load_class(method.trainer)(
            model=model, args=load_class(method.config)(**settings), train_dataset=Dataset.from_list(prep.examples),
            eval_dataset=Dataset.from_list(prep.eval_examples) if prep.eval_examples else None,
            processing_class=prep.tokenizer, peft_config=lora_config(prep.args, method.lora_task),
            **method.trainer_kwargs(prep, dtype))
    except ValueError as exc:
        # trl and transformers check their settings with ValueError; they are the user's settings.
        raise TrainingError(f"invalid training settings: {str(exc).splitlines()[0]}") from None
    return trainer, settings, dtype


def train(method_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one training end to end; returns the training summary (also written beside the model)."""
    prep = prepare(method_name, args)
    if _already_done(prep):
        log.info("%s already holds the finished model; pass --overwrite to train again", prep.output)
        return read_summary(prep.output) or {}
    resume = _resume_point(prep.output, args.resume_from_checkpoint)
    trainer, settings, dtype = build_trainer(prep)
    if not (args.keep_checkpoints or args.best_checkpoint):  # the last checkpoint may be the best one
        trainer.add_callback(_skip_final_checkpoint())
    is_main = trainer.accelerator.is_main_process
    if is_main:
        prep.output.mkdir(parents=True, exist_ok=True)
        write_json(prep.output / SUMMARY_FILE, {**prep.marker, "status": "running"})
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - started
    if trainer.state.global_step == 0:
        raise TrainingError("no optimizer step ran: nothing was trained, so no model is saved")
    evaluation = _evaluate(prep, trainer)
    _save_model(prep, trainer, dtype)
    summary = _summary(prep, trainer, result, settings, train_seconds, dtype, evaluation)
    if is_main:
        write_json(prep.output / SUMMARY_FILE, summary)
        if not args.keep_checkpoints:
            for checkpoint in prep.output.glob("checkpoint-*"):
                shutil.rmtree(checkpoint, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return summary


def _already_done(prep: Prepared) -> bool:
    """A finished model is kept; with --resume-from-checkpoint it trains on only if asked for a longer run.

    So a launcher that always passes --resume-from-checkpoint (scripts/train_paper.sh) skips finished
    models and resumes killed ones.
    """
    if prep.state != "finished":
        return False
    if not prep.args.resume_from_checkpoint:
        return True
    flags = (read_summary(prep.output) or {}).get("provenance", {}).get("settings", {}).get("flags", {})
    return (flags.get("max_steps"), flags.get("epochs")) == (prep.args.max_steps, prep.args.epochs)


def _evaluate(prep: Prepared, trainer) -> dict[str, Any] | None:
    """Held-out metrics after training: trl's evaluation loop, plus the method's own (reward accuracy)."""
    if not prep.eval_examples:
        return None
    source = {"files": prep.args.eval_data} if prep.args.eval_data else {"fraction": prep.args.eval_fraction}
    result = {"examples": len(prep.eval_examples), **source, "metrics": trainer.evaluate()}
    extra = METHODS[prep.method].evaluate
    if extra is not None:
        result["pairwise"] = extra(trainer, prep)
    return result


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

        merged = PeftModel.from_pretrained(load_model(prep, dtype), str(adapter_dir)).merge_and_unload()
        shutil.rmtree(adapter_dir, ignore_errors=True)
    else:
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    merged.save_pretrained(output)
    prep.tokenizer.save_pretrained(output)


def _best_checkpoint(trainer) -> dict[str, Any] | None:
    """The checkpoint the saved model was loaded from: its step and held-out loss (None: no evaluation ran)."""
    state = trainer.state
    if state.best_model_checkpoint is None:
        return None
    evaluations: dict[int, float] = {}
    for entry in state.log_history:
        if "eval_loss" in entry:  # the first per step: the evaluation after training repeats the last step
            evaluations.setdefault(entry["step"], entry["eval_loss"])
    return {"checkpoint": Path(state.best_model_checkpoint).name, "step": state.best_global_step,
            "eval_loss": state.best_metric,
            "evaluations": [{"step": step, "eval_loss": loss} for step, loss in evaluations.items()]}


def _summary(prep: Prepared, trainer, result, settings: dict[str, Any], train_seconds: float, dtype,
             evaluation: dict[str, Any] | None) -> dict:
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
        "training_data": prep.data,
        "steps": state.global_step,
        "epochs_done": state.epoch,
        "loss_curve": losses,
        "final_loss": losses[-1]["loss"] if losses else None,
        "eval": evaluation,
        "best_checkpoint": _best_checkpoint(trainer) if args.best_checkpoint else None,
        "tokens_seen": state.num_input_tokens_seen,
        "tokens_per_second": tokens / runtime if runtime and tokens else None,
        "examples_per_second": result.metrics.get("train_samples_per_second"),
        "wall_time_s": round(train_seconds, 3),
        "world_size": world_size(),
        "dtype": str(dtype).removeprefix("torch."),
        "provenance": provenance(
            {"flags": vars(args), "trainer": {k: v for k, v in settings.items() if k != "output_dir"}},
            models={"base": {"spec": args.model, "path": prep.path,
                             "chat_template_sha256": template_hash(prep.tokenizer)}},
        ),
    }
