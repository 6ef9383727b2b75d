"""Persona inference: one batch per round vs one call at a time, locally and over the OpenAI path.

    python benchmarks/bench_persona_inference.py                        # 8 local pairs (16 calls), 64 API pairs (128 calls)
    python benchmarks/bench_persona_inference.py --local-pairs 64 --shots 5 --max-new-tokens 200   # the paper's sizes

Local: the embedded model runs `infer_personas` on the same pairs twice, once with all asks in one
`generate` call (batched, `--batch-size`) and once with each ask in its own call; greedy, so both
give the same personas. API: `infer_personas` through the real OpenAIChatModel against a local
stub that answers every request after 200 ms, at concurrency 16 vs 1. No response cache. Prints
Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_api_concurrency import start_stub  # noqa: E402  (the same 200 ms stub as the API benchmark)

DATA = Path(__file__).resolve().parents[1] / "datasets" / "preference_pairs"


class OneAtATime:
    """A model wrapper that sends every conversation of a batch as its own generate call."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        indices = list(sample_indices) if sample_indices is not None else [0] * len(conversations)
        replies = []
        for conversation, index in zip(conversations, indices):
            self.calls += 1
            replies.extend(self.model.generate([conversation], params, [index]))
        return replies


class Counting(OneAtATime):
    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        self.calls += 1
        return self.model.generate(conversations, params, sample_indices)


def pairs(count: int):
    from aloe.tailoring.pairs import read_pairs

    pool = read_pairs(DATA / "train.jsonl") + read_pairs(DATA / "test.jsonl")
    return pool[:count]


def run(model, items, exemplars, settings):
    from aloe.tailoring.inference import infer_personas

    started = time.perf_counter()
    result = infer_personas(model, items, exemplars, settings=settings)
    return time.perf_counter() - started, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local-pairs", type=int, default=8)
    parser.add_argument("--api-pairs", type=int, default=64)
    parser.add_argument("--shots", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--delay-ms", type=float, default=200.0)
    args = parser.parse_args(argv)

    from aloe.models import ModelOptions, load_model
    from aloe.tailoring.inference import InferenceSettings, read_exemplars

    exemplars = read_exemplars(DATA / "fewshot.jsonl")
    settings = InferenceSettings(max_new_tokens=args.max_new_tokens, shots=args.shots, max_attempts=1)

    if args.local_pairs:
        items = pairs(args.local_pairs)
        model = load_model("embedded", ModelOptions(batch_size=args.batch_size))
        rows = []
        for label, wrapped in (("one call at a time", OneAtATime(model)), (f"one batch per round (batch {args.batch_size})", Counting(model))):
            seconds, result = run(wrapped, items, exemplars, settings)
            rows.append((label, wrapped.calls, seconds, result))
        same = sum(a.chosen_persona == b.chosen_persona and a.rejected_persona == b.rejected_persona
                   for a, b in zip(rows[0][3], rows[1][3]))
        print(f"Local: embedded model ({model.dtype_name}), {len(items)} pairs = {2 * len(items)} asks, "
              f"{args.shots}-shot prompts, greedy, up to {args.max_new_tokens} new tokens")
        print()
        print("| mode | generate calls | wall s | speed-up |")
        print("|---|---|---|---|")
        for label, calls, seconds, _ in rows:
            print(f"| {label} | {calls} | {seconds:.1f} | {rows[0][2] / seconds:.2f}x |")
        print(f"\nidentical personas: {same}/{len(items)} pairs\n")

    if args.api_pairs:
        items = pairs(args.api_pairs)
        server = start_stub(args.delay_ms / 1000)
        base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        rows = []
        try:
            for concurrency in (1, args.concurrency):
                model = load_model("openai:stub-model", ModelOptions(base_url=base_url, concurrency=concurrency))
                seconds, result = run(model, items, exemplars, settings)
                assert all(pair.chosen_persona for pair in result)
                rows.append((concurrency, seconds))
        finally:
            server.shutdown()
        print(f"API: OpenAIChatModel against a local stub ({args.delay_ms:.0f} ms per request), "
              f"{len(items)} pairs = {2 * len(items)} requests")
        print()
        print("| concurrency | wall s | requests/s | speed-up |")
        print("|---|---|---|---|")
        for concurrency, seconds in rows:
            print(f"| {concurrency} | {seconds:.2f} | {2 * len(items) / seconds:.1f} | {rows[0][1] / seconds:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
