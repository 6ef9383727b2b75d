"""System-message generalization: batched vs one at a time, for data generation and reward scoring.

    python benchmarks/bench_system_messages.py                         # 32 instructions, 256 reward chats
    python benchmarks/bench_system_messages.py --instructions 4 --sets 1 --part generation

Generation: the five steps for `--instructions` shipped instructions on the embedded model, every step
one batch over all rows (the stage's way) vs the same steps run for one instruction at a time; same
prompts, sampling settings and seeds, no response cache. Reward scoring: `--chats` benchmark chats
scored by a reward model built from the embedded checkpoint (a one-output head on SmolLM2-135M; the
head is random, the cost is real) in batches of `--reward-batch-size` vs one chat per forward.
Prints a Markdown table of wall times and ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def bench_generation(args) -> tuple[float, float]:
    from aloe.models import ModelOptions, SamplingParams, load_model
    from aloe.system_messages.data import INSTRUCTIONS, read_instructions
    from aloe.system_messages.generation import GenerationSettings, SystemMessageGenerator

    model = load_model("embedded", ModelOptions(batch_size=args.batch_size, dtype=args.dtype))
    instructions = read_instructions(INSTRUCTIONS)[:args.instructions]
    settings = GenerationSettings(sets=args.sets, max_attempts=1, system_tokens=args.system_tokens)
    generator = SystemMessageGenerator(model, SamplingParams(max_new_tokens=args.answer_tokens), settings)
    started = time.perf_counter()
    generator.run(generator.states(instructions))
    batched = time.perf_counter() - started
    started = time.perf_counter()
    for instruction in instructions:
        generator.run(generator.states([instruction]))
    return batched, time.perf_counter() - started


def bench_reward(args) -> tuple[float, float]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from aloe.embedded import embedded_chat_checkpoint
    from aloe.system_messages.best_of_n import RewardModel
    from aloe.system_messages.data import read_bench

    folder = tempfile.mkdtemp(prefix="bench-reward-")
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(embedded_chat_checkpoint(), num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(embedded_chat_checkpoint()).save_pretrained(folder)
    items = read_bench()
    chats = [[{"role": "system", "content": item.system}, {"role": "user", "content": item.prompt},
              {"role": "assistant", "content": item.reference_answer[:40 + 7 * (i % 30)]}]
             for i, item in ((i, items[i % len(items)]) for i in range(args.chats))]
    batched_model = RewardModel(folder, batch_size=args.reward_batch_size, dtype=args.dtype)
    started = time.perf_counter()
    batched_model.score(chats)
    batched = time.perf_counter() - started
    single_model = RewardModel(folder, batch_size=1, dtype=args.dtype)
    started = time.perf_counter()
    single_model.score(chats)
    return batched, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("both", "generation", "reward"), default="both")
    parser.add_argument("--instructions", type=int, default=32)
    parser.add_argument("--sets", type=int, default=3)
    parser.add_argument("--answer-tokens", type=int, default=64)
    parser.add_argument("--system-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32, help="generation: prompts per generate call")
    parser.add_argument("--chats", type=int, default=256)
    parser.add_argument("--reward-batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32"))
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f} at start")
    print("| work | batched | one at a time | speed-up |\n|---|---|---|---|")
    if args.part in ("both", "reward"):
        batched, single = bench_reward(args)
        print(f"| reward scoring, {args.chats} chats (batch {args.reward_batch_size}) | {batched:.1f} s | "
              f"{single:.1f} s | **{single / batched:.1f}x** |", flush=True)
    if args.part in ("both", "generation"):
        batched, single = bench_generation(args)
        print(f"| generation, {args.instructions} instructions x {args.sets} sets, 5 steps (batch {args.batch_size}) "
              f"| {batched:.1f} s | {single:.1f} s | **{single / batched:.1f}x** |", flush=True)


if __name__ == "__main__":
    main()
