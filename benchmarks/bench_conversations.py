"""Conversation generation: lockstep batched vs one conversation at a time, on the embedded model.

    python benchmarks/bench_conversations.py            # 16 conversations x 3 turns, the stage's 256 new tokens
    python benchmarks/bench_conversations.py --conversations 8 --max-new-tokens 32

Both modes run the same engine (aloe.interaction.conversations) on the same loaded model with no response cache:
lockstep advances every conversation together, so each role's calls for a turn are one batched
`generate` call; the plain approach runs one conversation after another with batch size 1, one
prompt per forward pass (how the original code ran). `--max-attempts 1` keeps the count at exactly
4 calls per turn, 6 prompts per conversation (user, extractor, 2 replies in one call, 2 judge orders
in one call); with a small
model the judge rarely writes a parsable verdict, and re-asks would only add equal work to both modes.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from aloe.cli import add_dtype_arg, sampling_params
from aloe.interaction.conversations import ConversationGenerator, GenerationSettings, RoleModels, pair_personas
from aloe.interaction.personas import load_pool
from aloe.models import ModelOptions, load_model
from aloe.models.base import ChatModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "data_generation"))
from generate_conversations import build_parser  # noqa: E402  the stage's defaults


class Counting(ChatModel):
    """Counts generate calls, prompts and generated tokens of the model it wraps."""

    def __init__(self, model):
        self.model, self.spec = model, model.spec
        self.calls = self.prompts = self.tokens = 0

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        replies = self.model.generate(conversations, params, sample_indices, on_reply)
        self.calls += 1
        self.prompts += len(conversations)
        self.tokens += sum(reply.completion_tokens for reply in replies)
        return replies


def run(model, pairs, params, settings, batch_size, one_at_a_time):
    model.batch_size = batch_size
    counting = Counting(model)
    generator = ConversationGenerator(RoleModels(counting, counting, counting, counting), params, settings)
    finished, failed = [], []
    started = time.perf_counter()
    for group in ([[pair] for pair in pairs] if one_at_a_time else [pairs]):
        generator.run(group, finished.append, lambda *failure: failed.append(failure))
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "calls": counting.calls, "prompts": counting.prompts, "tokens": counting.tokens,
            "finished": len(finished), "failed": len(failed)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--conversations", type=int, default=16)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="per reply, every role (default: generate_conversations.py's)")
    parser.add_argument("--batch-size", type=int, default=32, help="lockstep: prompts per forward pass")
    add_dtype_arg(parser)
    parser.add_argument("--baseline-conversations", type=int, default=None,
                        help="time the one-at-a-time mode on this many conversations and scale linearly to "
                             "--conversations (it runs them strictly one after another); default: all")
    parser.add_argument("--profiles", default=str(ROOT / "datasets" / "seed_profiles.jsonl"))
    parser.add_argument("--personalities", default=str(ROOT / "datasets" / "seed_personalities.jsonl"))
    args = parser.parse_args(argv)

    pairs = pair_personas(load_pool(args.profiles), load_pool(args.personalities),
                          args.conversations, seed=0)
    model = load_model(args.model, ModelOptions(batch_size=args.batch_size, dtype=args.dtype))
    stage = build_parser().parse_args(["--profiles", args.profiles, "--personalities", args.personalities])
    params = sampling_params(stage, max_new_tokens=args.max_new_tokens or stage.max_new_tokens)  # the stage's
    args.max_new_tokens = params.max_new_tokens
    settings = GenerationSettings(turns=args.turns, max_attempts=1)
    run(model, pairs[:1], params, GenerationSettings(turns=1, max_attempts=1), 1, True)  # warm-up

    results = {"lockstep batched": run(model, pairs, params, settings, args.batch_size, one_at_a_time=False)}
    subset = min(args.baseline_conversations or args.conversations, args.conversations)
    sequential = run(model, pairs[:subset], params, settings, 1, one_at_a_time=True)
    scale = args.conversations / subset
    label = "one conversation at a time" + (f" (measured on {subset}, scaled x{scale:g})" if scale != 1 else "")
    results[label] = {**sequential, **{key: sequential[key] * scale for key in ("seconds", "calls", "prompts", "tokens")}}
    baseline = results[label]["seconds"]
    conversation_turns = args.conversations * args.turns
    print(f"\n{args.conversations} conversations x {args.turns} turns, model {args.model}, "
          f"max_new_tokens {args.max_new_tokens}, device {'cuda' if torch.cuda.is_available() else 'cpu'} "
          f"({platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()})\n")
    print("| mode | wall s | generate calls | calls per turn | prompts | generated tokens | tokens/s | speedup |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        per_turn = r["calls"] / args.turns if mode == "lockstep batched" else r["calls"] / conversation_turns
        unit = "(all conversations)" if mode == "lockstep batched" else "(per conversation)"
        print(f"| {mode} | {r['seconds']:.1f} | {r['calls']:.0f} | {per_turn:.0f} {unit} | {r['prompts']:.0f} | {r['tokens']:.0f} | "
              f"{r['tokens'] / r['seconds']:.1f} | {baseline / r['seconds']:.2f}x |")
    for mode, r in results.items():
        if r["failed"]:
            print(f"\nnote: {mode}: {r['failed']} conversations failed (empty messages), {r['finished']} finished")


if __name__ == "__main__":
    main()
