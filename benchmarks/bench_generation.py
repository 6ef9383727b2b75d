"""Local batched generation vs one conversation at a time, through the real LocalChatModel.

    python benchmarks/bench_generation.py                      # embedded model, 32 prompts, 64 new tokens
    python benchmarks/bench_generation.py --device cuda --batch-size 32

Both runs use greedy decoding on the same prompts, so they produce the same replies; the ratio is
the one-at-a-time wall time over the batched wall time for the same work. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOPICS = [
    "my vegetable garden", "learning the cello at forty", "a rainy weekend", "training for a half marathon",
    "my cat's odd habits", "cooking for picky kids", "moving to a new city", "a book I could not put down",
    "fixing an old bicycle", "night shifts at the hospital", "planning a budget trip to Portugal",
    "my first pottery class", "birdwatching at dawn", "a stressful job interview", "baking sourdough",
    "volunteering at the food bank",
]
OPENERS = [
    "Can you tell me something interesting about {topic}?",
    "I have been thinking a lot about {topic} lately. Any thoughts on how to make the most of it, "
    "especially when time is short and motivation comes and goes?",
]


def prompts(count: int) -> list[list[dict]]:
    """`count` chat prompts of varied length (some with a prior exchange), as stages send them."""
    conversations = []
    for index in range(count):
        topic = TOPICS[index % len(TOPICS)]
        question = OPENERS[index % len(OPENERS)].format(topic=topic)
        if index % 3 == 2:
            conversations.append([
                {"role": "user", "content": f"Hi! I want to talk about {topic}."},
                {"role": "assistant", "content": "Sure, I would love to hear about it. What is on your mind?"},
                {"role": "user", "content": question},
            ])
        else:
            conversations.append([{"role": "user", "content": question}])
    return conversations


def main(argv=None) -> int:
    from aloe.cli import add_dtype_arg

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    add_dtype_arg(parser)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when visible)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is faster on a busy shared machine)")
    parser.add_argument("--skip-sequential", action="store_true", help="only time the batched run")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import torch

    from aloe.models import ModelOptions, SamplingParams, load_model
    from aloe.models.local import LocalChatModel

    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.model, ModelOptions(batch_size=args.batch_size, dtype=args.dtype))
    if args.device and isinstance(model, LocalChatModel):
        model.device = args.device
        model.model.to(args.device)
    batch = prompts(args.prompts)
    params = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    model.generate(batch[:2], params.replace(max_new_tokens=4))  # warm-up: first-call allocations

    def timed(run):
        if model.device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        replies = run()
        if model.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - started, replies

    batched_s, batched = timed(lambda: model.generate(batch, params))
    print(f"batched: {batched_s:.1f}s", flush=True)
    rows = [("batched", args.batch_size, batched_s, batched)]
    if not args.skip_sequential:
        single_s, single = timed(lambda: [model.generate([conv], params)[0] for conv in batch])
        rows.insert(0, ("one at a time", 1, single_s, single))
        same = sum(a.text == b.text for a, b in zip(single, batched))
        print(f"one at a time: {single_s:.1f}s", flush=True)

    device = model.device
    print(f"model {args.model}, {args.prompts} prompts, {args.max_new_tokens} new tokens, greedy, "
          f"device {device}, torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print()
    print("| mode | batch size | wall s | new tokens | tokens/s | prompts/s |")
    print("|---|---|---|---|---|---|")
    for name, size, seconds, replies in rows:
        tokens = sum(reply.completion_tokens for reply in replies)
        print(f"| {name} | {size} | {seconds:.1f} | {tokens} | {tokens / seconds:.1f} | {len(replies) / seconds:.2f} |")
    if not args.skip_sequential:
        print()
        print(f"speed-up (one-at-a-time wall / batched wall): **{single_s / batched_s:.1f}x**; "
              f"identical greedy replies: {same}/{len(batch)}")
    if args.json:
        figures = {"model": args.model, "device": device, "dtype": str(getattr(model, "model", model).dtype),
                   "prompts": args.prompts,
                   "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}
        for name, _, seconds, replies in rows:
            key = "batched" if name == "batched" else "one_at_a_time"
            tokens = sum(reply.completion_tokens for reply in replies)
            figures[key] = {"wall_s": seconds, "new_tokens": tokens, "tokens_per_s": tokens / seconds}
        if not args.skip_sequential:
            figures["speedup"] = single_s / batched_s
            figures["identical_replies"] = same
        with open(args.json, "w", encoding="utf-8") as handle:  # benchmarks/gpu_check.py collects it
            json.dump(figures, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
