"""Training throughput: SFT with packing vs without, DPO pairs per second, and our overhead over bare trl.

    python benchmarks/bench_training.py                      # embedded model, LoRA, 2 steps per run (CPU-sized)
    python benchmarks/bench_training.py --conversations 64 --turns 10 --steps 20 --batch-size 8 --max-length 2048 --repeats 3

Every run trains the same model on the same synthetic conversations for a few optimizer
steps. "ours" is the path `training/sft.py` takes (read and validate the file, build per-turn
examples, truncate from the left, build the trainer, train); "bare trl" builds the same examples
with a few lines of plain Python and hands them to `SFTTrainer` with the same settings. Both
include loading the model and exclude saving it. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOPICS = ["my vegetable garden", "learning the cello", "a half marathon", "my cat", "sourdough", "a trip to Porto",
          "night shifts", "pottery class", "birdwatching", "an old bicycle"]


def synthetic_conversations(count: int, turns: int = 10) -> list[dict]:
    """Deterministic tree-format conversations with replies of realistic length (2-3 sentences)."""
    records = []
    for index in range(count):
        topic = TOPICS[index % len(TOPICS)]
        records.append({
            "id": f"bench-{index:04d}", "profile": f"Talks often about {topic}.", "personality": "Warm, brief.",
            "conversations": [{
                "user": f"Turn {k}: so, about {topic}, I tried something new this week and it went okay I think.",
                "assistant": {
                    "preferred": f"That sounds like real progress with {topic}! What surprised you most this "
                                 f"time? I would love to hear how it compares with last week.",
                    "rejected": f"As an AI assistant, here is some general information about {topic}. "
                                "Many people find it rewarding. Let me know if you have questions.",
                },
                "chosen": "preferred" if (index + k) % 3 else "rejected",
            } for k in range(turns)],
        })
    return records


def training_dtype():
    """What `--dtype auto` trains in here (bf16 on GPUs that have it, else fp32): both sides use it."""
    from aloe.models.local import resolve_dtype

    return resolve_dtype("auto", training=True)


def trl_settings(args, output: str, packing: bool, method: str) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    settings = dict(output_dir=output, per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
                    learning_rate=1e-4, max_steps=args.steps, lr_scheduler_type="cosine", warmup_steps=0.1,
                    seed=0, bf16=training_dtype() == torch.bfloat16, fp16=False, gradient_checkpointing=False,
                    max_length=args.max_length, logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
                    dataloader_pin_memory=cuda, use_cpu=not cuda)
    if method == "sft":
        settings.update(completion_only_loss=True, packing=packing, packing_strategy="bfd")
    return settings


def run_ours(args, conversations: Path, output: Path, method: str, packing: bool) -> dict:
    from aloe.training import build_parser, build_trainer, parse_args, prepare

    flags = ["--model", args.model, "--conversations", str(conversations), "--output", str(output),
             "--max-steps", str(args.steps), "--batch-size", str(args.batch_size),
             "--max-length", str(args.max_length), "--save-steps", "100000", "--overwrite"]
    if method == "sft":
        flags += ["--data", "preferred", "--packing" if packing else "--no-packing"]
    started = time.perf_counter()
    prep = prepare(method, parse_args(build_parser(method), flags))
    trainer, _, _ = build_trainer(prep)
    trainer.args.save_strategy = "no"
    result = trainer.train()
    wall = time.perf_counter() - started
    runtime = result.metrics["train_runtime"]
    return {"wall": wall, "train": runtime, "tokens_per_s": trainer.state.num_input_tokens_seen / runtime,
            "examples_per_s": args.steps * args.batch_size / runtime}


def run_bare_trl(args, conversations: Path, output: Path) -> dict:
    """The same SFT examples and settings straight into trl, with no validation, truncation or bookkeeping."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from aloe.models.local import local_path

    started = time.perf_counter()
    examples = []
    for line in conversations.read_text().splitlines():
        record = json.loads(line)
        history = []
        for turn in record["conversations"]:
            history.append({"role": "user", "content": turn["user"]})
            examples.append({"prompt": list(history),
                             "completion": [{"role": "assistant", "content": turn["assistant"]["preferred"]}]})
            history.append({"role": "assistant", "content": turn["assistant"][turn.get("chosen") or "preferred"]})
    path = local_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=training_dtype())
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=SFTConfig(**trl_settings(args, str(output), False, "sft")),
                         train_dataset=Dataset.from_list(examples), processing_class=tokenizer, peft_config=lora)
    result = trainer.train()
    return {"wall": time.perf_counter() - started, "train": result.metrics["train_runtime"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--conversations", type=int, default=6, help="synthetic conversations")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=2, help="ours/bare pairs, alternated; the fastest counts")
    parser.add_argument("--overhead-only", action="store_true", help="skip the packing and DPO runs")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import torch

    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    conversations = work / "conversations.jsonl"
    records = synthetic_conversations(args.conversations, args.turns)
    conversations.write_text("".join(json.dumps(record) + "\n" for record in records))

    # Import everything first, so neither side pays the one-off import time inside its measurement.
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import trl  # noqa: F401

    import aloe.training  # noqa: F401

    # The "ours" runs are also the unpacked SFT measurement; ours and bare trl alternate, swapping
    # who goes first, and the best of each counts (other jobs on a shared machine only add time).
    ours, bare = [], []
    for repeat in range(args.repeats):
        pair = [lambda: ours.append(run_ours(args, conversations, work / "sft", "sft", packing=False)),
                lambda: bare.append(run_bare_trl(args, conversations, work / "bare"))]
        for run in pair if repeat % 2 == 0 else pair[::-1]:
            run()
    unpacked = min(ours, key=lambda row: row["wall"])
    if not args.overhead_only:
        packed = run_ours(args, conversations, work / "sft", "sft", packing=True)
        dpo = run_ours(args, conversations, work / "dpo", "dpo", packing=False)

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"model {args.model}, LoRA r16, {args.steps} steps x batch {args.batch_size}, max length {args.max_length}, "
          f"{args.conversations} conversations x {args.turns} turns, {device}, torch {torch.__version__}, "
          f"{platform.machine()}")
    print()
    if not args.overhead_only:
        print("| run | train time (s) | tokens/s | rows/s (examples, packed rows or pairs) |")
        print("|---|---|---|---|")
        for name, row in (("SFT, no packing", unpacked), ("SFT, packing (bfd)", packed), ("DPO (pairs)", dpo)):
            print(f"| {name} | {row['train']:.1f} | {row['tokens_per_s']:.0f} | {row['examples_per_s']:.2f} |")
        print()
        print(f"SFT packing / no packing, tokens/s: {packed['tokens_per_s'] / unpacked['tokens_per_s']:.2f}x")
        print()
    best_ours, best_bare = unpacked, min(bare, key=lambda row: row["wall"])
    print(f"| SFT, best of {args.repeats} | wall (s) | of which train() (s) | setup: load, examples, trainer (s) |")
    print("|---|---|---|---|")
    for name, row in (("ours (training/sft.py path)", best_ours), ("bare trl SFTTrainer", best_bare)):
        print(f"| {name} | {row['wall']:.1f} | {row['train']:.1f} | {row['wall'] - row['train']:.1f} |")
    print(f"\noverhead of ours over bare trl, best of each, wall: {100 * (best_ours['wall'] / best_bare['wall'] - 1):+.1f}%, "
          f"train(): {100 * (best_ours['train'] / best_bare['train'] - 1):+.1f}%")
    median_ours, median_bare = (statistics.median(row["wall"] for row in rows) for rows in (ours, bare))
    print(f"median of each, wall: {median_ours:.1f} s vs {median_bare:.1f} s ({100 * (median_ours / median_bare - 1):+.1f}%)")
    print("every run, wall (s): ours " + ", ".join(f"{row['wall']:.1f}" for row in ours)
          + "; bare " + ", ".join(f"{row['wall']:.1f}" for row in bare))
    if args.json:
        figures = {"model": args.model, "device": device, "dtype": str(training_dtype()), "steps": args.steps,
                   "batch_size": args.batch_size, "max_length": args.max_length,
                   "sft": unpacked, "bare_trl_sft": best_bare, "overhead": best_ours["wall"] / best_bare["wall"] - 1}
        if not args.overhead_only:
            figures.update(sft_packed=packed, dpo=dpo, packing_speedup=packed["tokens_per_s"] / unpacked["tokens_per_s"])
        with open(args.json, "w", encoding="utf-8") as handle:  # benchmarks/gpu_check.py collects it
            json.dump(figures, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
