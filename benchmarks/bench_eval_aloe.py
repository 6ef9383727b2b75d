"""ALOE benchmark speed: lockstep batched conversations vs one conversation at a time.

    python benchmarks/bench_eval_aloe.py                          # 100 conversations x 2 turns, embedded model
    python benchmarks/bench_eval_aloe.py --sequential 10          # time 10 conversations one at a time, scale up

Both sides run the real engine (`aloe.interaction.evaluation.AloeEvaluation`) with the same roles, prompts and
sampling settings as `evaluation/eval_aloe.py`'s defaults, without the response cache. The batched
side advances all conversations in lockstep (each role's calls for a turn are one `generate` call,
chunked by --batch-size); the sequential side runs each conversation alone with batch size 1.
When --sequential is below --conversations, its time is scaled to all conversations (say so).
Per-turn times are measured, and the 10-turn figure extrapolates them linearly in the turn index,
since each turn's prompts grow with the history. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


class TurnClock:
    """Wraps the user-simulator model: its first call of each turn (sample index 0) marks a turn start."""

    def __init__(self, model):
        self.model, self.spec = model, model.spec
        self.starts: list[float] = []

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        if not sample_indices or sample_indices[0] == 0:
            self.starts.append(time.perf_counter())
        return self.model.generate(conversations, params, sample_indices, on_reply)


def per_turn(starts: list[float], end: float, turns: int) -> list[float]:
    marks = starts[:turns] + [end]
    return [marks[k + 1] - marks[k] for k in range(turns)]


def extrapolate(turn_times: list[float], target: int) -> float:
    """Total time of `target` turns if each turn costs t1 + (k - 1) * (t2 - t1) (prompts grow linearly)."""
    if len(turn_times) < 2:
        return turn_times[0] * target
    first, growth = turn_times[0], max(0.0, turn_times[1] - turn_times[0])
    return sum(first + k * growth for k in range(target))


def main(argv=None) -> int:
    from aloe.cli import add_dtype_arg

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="one spec for every role (default: embedded)")
    parser.add_argument("--conversations", type=int, default=100, help="persona pairs (the full benchmark: 100)")
    parser.add_argument("--sequential", type=int, default=10,
                        help="conversations timed one at a time (scaled to --conversations)")
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--target-turns", type=int, default=10, help="extrapolate both sides to this many turns")
    parser.add_argument("--batch-size", type=int, default=50,
                        help="prompts per generate call on the batched side (default: the 100 conversations in two)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="one token cap for every role's replies (default: eval_aloe.py's, per role)")
    add_dtype_arg(parser)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    from aloe.interaction.evaluation import AloeEvaluation, EvaluationSettings
    from aloe.interaction.personas import load_pool, ordered_pairs
    from aloe.lockstep import Roles
    from aloe.models import ModelOptions, SamplingParams, load_model

    datasets = os.path.join(ROOT, "datasets", "aloe_eval")
    pairs = ordered_pairs(load_pool(os.path.join(datasets, "profiles.jsonl")),
                          load_pool(os.path.join(datasets, "personalities.jsonl")))[:args.conversations]
    model = load_model(args.model, ModelOptions(batch_size=args.batch_size, dtype=args.dtype))
    stage = EvaluationSettings()  # eval_aloe.py's defaults
    if args.max_new_tokens:
        stage = dataclasses.replace(stage, max_new_tokens=args.max_new_tokens, user_max_new_tokens=args.max_new_tokens,
                                    judge_max_new_tokens=args.max_new_tokens)
    params = stage.role_params(SamplingParams(max_new_tokens=stage.max_new_tokens))
    model.generate([[{"role": "user", "content": "hi"}]], params.judge.replace(max_new_tokens=4))  # warm-up

    def timed(group: list, batch_size: int) -> tuple[float, list[float], int]:
        model.batch_size = batch_size
        clock = TurnClock(model)
        engine = AloeEvaluation(Roles(model=model, user=clock, judge=model), params, args.turns, "bench")
        records = []
        started = time.perf_counter()
        engine.run(group, records.append, group_size=len(group))
        end = time.perf_counter()
        return end - started, per_turn(clock.starts, end, args.turns), sum(len(r.turns) for r in records)

    batched_s, batched_turns, batched_done = timed(pairs, args.batch_size)
    # Printed at once: the sequential side can take much longer, and this figure stands on its own.
    print(f"batched: {batched_s:.0f} s for {batched_done} conversation turns "
          f"(per turn: {', '.join(f'{t:.0f}' for t in batched_turns)} s)", file=sys.stderr, flush=True)
    sequential_s, sequential_turns, sequential_done = 0.0, [0.0] * args.turns, 0
    subset = pairs[:args.sequential]
    for pair in subset:
        seconds, turns, done = timed([pair], 1)
        sequential_s += seconds
        sequential_turns = [a + b for a, b in zip(sequential_turns, turns)]
        sequential_done += done
        print(f"one at a time: {sequential_s:.0f} s so far for {sequential_done} conversation turns",
              file=sys.stderr, flush=True)
    scale = len(pairs) / len(subset)
    sequential_full = sequential_s * scale
    batched_target = extrapolate(batched_turns, args.target_turns)
    sequential_target = extrapolate([t * scale for t in sequential_turns], args.target_turns)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; model {args.model}; "
          f"{len(pairs)} conversations; roles: model, user simulator and judge all {args.model}")
    print()
    print(f"| approach | conversations timed | turns done | wall time, {len(pairs)} x {args.turns} turns "
          f"| est. {len(pairs)} x {args.target_turns} turns |")
    print("|---|---|---|---|---|")
    print(f"| lockstep batched (batch size {args.batch_size}) | {len(pairs)} | {batched_done} | {batched_s:.0f} s "
          f"| {batched_target:.0f} s |")
    scaled = f" (x{scale:g} from {len(subset)})" if scale != 1 else ""
    print(f"| one conversation at a time (batch size 1) | {len(subset)} | {sequential_done} | "
          f"{sequential_full:.0f} s{scaled} | {sequential_target:.0f} s |")
    print(f"| **speed-up** | | | **{sequential_full / batched_s:.1f}x** | **{sequential_target / batched_target:.1f}x** |")
    print()
    print(f"per-turn seconds, batched: {', '.join(f'{t:.0f}' for t in batched_turns)}; "
          f"one at a time (scaled): {', '.join(f'{t * scale:.0f}' for t in sequential_turns)}")
    if args.json:
        figures = {"model": args.model, "device": model.device if hasattr(model, "device") else "api",
                   "conversations": len(pairs), "turns": args.turns, "batch_size": args.batch_size,
                   "max_new_tokens": params.model.max_new_tokens,
                   "batched": {"wall_s": batched_s, "turns_done": batched_done, "per_turn_s": batched_turns},
                   "one_at_a_time": {"conversations_timed": len(subset), "wall_s": sequential_s,
                                     "wall_s_scaled": sequential_full, "turns_done": sequential_done},
                   "speedup": sequential_full / batched_s,
                   f"speedup_at_{args.target_turns}_turns": sequential_target / batched_target}
        with open(args.json, "w", encoding="utf-8") as handle:  # benchmarks/gpu_check.py collects it
            json.dump(figures, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
