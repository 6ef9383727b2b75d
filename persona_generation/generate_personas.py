"""Grow a persona pool from seeds with a chat model and an embedding novelty filter.

    python persona_generation/generate_personas.py --kind profile --model embedded \
        --target 60 --output runs/demo/profiles.jsonl

The output holds the whole pool, seeds first (source "seed", round 0) and then every accepted
persona as it is accepted, so it is the next stage's --profiles / --personalities file. A re-run
resumes toward --target; --overwrite starts over. See docs/persona_generation.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

from aloe.cli import (
    ArgumentParser, add_model_args, cli_main, model_pool, positive_int, sampling_params, shard_arg, shard_path,
)
from aloe.sentence_embeddings import NoveltyFilter, load_embedder
from aloe.errors import AloeError
from aloe.jsonl import JsonlWriter, write_json
from aloe.interaction.personas import KINDS, GrowthSettings, PoolGrowth, load_pool
from aloe.provenance import provenance

log = logging.getLogger("generate_personas")
REPO_ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", required=True, choices=list(KINDS), help="which kind of persona text to grow")
    parser.add_argument("--seeds", default=None,
                        help="seed pool (Persona JSONL or bare JSON strings; default: datasets/seed_<kind>s.jsonl)")
    parser.add_argument("--target", type=positive_int, required=True,
                        help="pool size to reach, seeds included (paper: 331 profiles, 71 personalities)")
    parser.add_argument("--output", default=None, help="pool file to write (default: runs/personas/<kind>s.jsonl)")
    parser.add_argument("--examples-per-prompt", type=positive_int, default=5,
                        help="pool personas shown in each request (paper: 5)")
    parser.add_argument("--per-request", type=positive_int, default=20, help="new personas asked for per request (paper: 20)")
    parser.add_argument("--requests-per-round", type=positive_int, default=2,
                        help="requests sent together as one batch per round; the default suits a CPU demo, "
                             "raise it for API/vLLM models (e.g. 32)")
    parser.add_argument("--max-rounds", type=positive_int, default=3,
                        help="rounds this run may take before it stops short of --target (a re-run continues)")
    parser.add_argument("--threshold", type=float, default=0.6,
                        help="keep a candidate iff its max cosine similarity to the pool is at most this (paper: 0.6)")
    parser.add_argument("--embedder", default="embedded",
                        help="sentence embedder: 'embedded' (all-MiniLM-L6-v2 from its wheel) or a sentence-transformers path")
    parser.add_argument("--min-words", type=positive_int, default=None, help="drop shorter candidates (default: per kind)")
    parser.add_argument("--max-words", type=positive_int, default=None, help="drop longer candidates (default: per kind)")
    parser.add_argument("--shard", type=shard_arg, default=None,
                        help="i/n: worker i of n grows its own pool into <output>.shard-i-of-n.jsonl toward its share "
                             "of the target; join them with persona_generation/merge_pools.py")
    parser.add_argument("--overwrite", action="store_true", help="start the output over instead of resuming")
    add_model_args(parser)
    parser.set_defaults(temperature=0.8, max_new_tokens=None)
    parser.description += (" (--max-new-tokens defaults to --per-request x 120 tokens for profiles, x 90 for "
                           "personalities; --temperature to 0.8, the paper's)")
    return parser


def sidecar(output: Path, name: str) -> Path:
    return output.with_name(f"{output.stem}.{name}.json")


def find_seeds(path: str) -> Path:
    """As given, else relative to the repository, so the default works from any directory."""
    candidate = Path(path)
    if not candidate.exists() and not candidate.is_absolute() and (REPO_ROOT / candidate).exists():
        return REPO_ROOT / candidate
    return candidate


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    kind = KINDS[args.kind]
    if not 0 < args.threshold <= 1:
        raise AloeError(f"--threshold must be in (0, 1], got {args.threshold}")
    min_words = args.min_words or kind.min_words
    max_words = args.max_words or kind.max_words
    if min_words > max_words:
        raise AloeError(f"--min-words {min_words} is more than --max-words {max_words}")
    if args.max_new_tokens is None:
        args.max_new_tokens = args.per_request * kind.tokens_per_persona
    output = shard_path(Path(args.output or f"runs/personas/{KINDS[args.kind].plural}.jsonl"), args.shard)
    shard_index, shard_count = args.shard or (0, 1)
    if args.shard is not None and args.cache is None:
        # One cache per worker: shards on one machine never wait on each other's SQLite lock.
        args.cache = str(output.with_name(f"{output.stem}.responses.sqlite"))

    # Every input is read and checked before the output is touched, so a bad flag loses nothing.
    seeds_path = find_seeds(args.seeds or kind.default_seeds)
    seeds = load_pool(seeds_path)
    existing = [] if args.overwrite or not output.exists() else load_pool(output, allow_empty=True)
    present = {persona.id for persona in existing}
    new_seeds = [seed for seed in seeds if seed.id not in present]
    pool = existing + new_seeds
    if len(pool) < args.examples_per_prompt:
        raise AloeError(f"{seeds_path} holds {len(seeds)} personas but each request shows --examples-per-prompt "
                        f"{args.examples_per_prompt}: add seeds or lower --examples-per-prompt")
    seed_count = sum(persona.source == "seed" for persona in pool)
    target = args.target
    if shard_count > 1:
        # Each worker grows its own share of the generated personas on top of the same seeds.
        target = min(args.target, seed_count + math.ceil(max(0, args.target - seed_count) / shard_count))
    rounds_path = sidecar(output, "rounds")
    history = [] if args.overwrite or not rounds_path.exists() else _read_rounds(rounds_path)

    model = embedder = None
    if len(pool) < target:
        embedder = load_embedder(args.embedder)
        model = model_pool(args, output).get(args.model)
    settings = GrowthSettings(examples_per_prompt=args.examples_per_prompt, per_request=args.per_request,
                              requests_per_round=args.requests_per_round, min_words=min_words,
                              max_words=max_words, seed=args.seed, shard=(shard_index, shard_count))

    this_run: list[dict] = []
    added = 0
    with JsonlWriter(output, overwrite=args.overwrite) as writer:
        writer.write_all(new_seeds)
        if model is not None:
            write_json(sidecar(output, "provenance"), provenance(
                settings={**vars(args), "target_this_shard": target, "seeds": str(seeds_path)},
                models={"generator": model.describe(), "embedder": embedder.describe()},
                prompts=[kind.prompt],
            ))
            novelty = NoveltyFilter(embedder, args.threshold)
            novelty.add([persona.text for persona in pool], [persona.id for persona in pool])
            growth = PoolGrowth(kind, model, sampling_params(args), novelty, pool, settings)
            next_round = max((persona.round for persona in pool), default=0) + 1
            for round_number in range(next_round, next_round + args.max_rounds):
                if len(growth.texts) >= target:
                    break
                result = growth.run_round(round_number, room=target - len(growth.texts))
                writer.write_all(result.accepted)
                added += len(result.accepted)
                this_run.append(result.log)
                write_json(rounds_path, {"kind": args.kind, "output": str(output), "rounds": history + this_run})
                entry = result.log
                log.info("round %d: %d requests, %d candidates parsed, %d novel (%.0f%%), pool %d/%d, %.1fs",
                         round_number, entry["requests"], entry["parsed"], entry["novel"],
                         100 * entry["acceptance_rate"], entry["pool_size"], target, entry["generate_s"] + entry["filter_s"])
            pool_size = len(growth.texts)
        else:
            pool_size = len(pool)
    print(summary(args, output, pool_size, target, seed_count, added, this_run, time.perf_counter() - started))


def _read_rounds(path: Path) -> list[dict]:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8")).get("rounds", [])
    except (json.JSONDecodeError, AttributeError):
        return []  # a damaged log only loses history; the pool itself is the JSONL output


def summary(args, output: Path, pool_size: int, target: int, seeds: int, added: int, rounds: list[dict],
            elapsed: float) -> str:
    parsed = sum(entry["parsed"] for entry in rounds)
    novel = sum(entry["novel"] for entry in rounds)
    rate = f"{novel}/{parsed} parsed candidates novel ({100 * novel / parsed:.1f}%)" if parsed else "no candidates parsed"
    head = (f"{KINDS[args.kind].plural}: pool {pool_size}/{target} in {output} ({seeds} seeds, "
            f"{pool_size - seeds} generated, {added} added by this run in {len(rounds)} rounds; {rate}; {elapsed:.0f}s)")
    if pool_size >= target:
        return f"{head}: target reached"
    return (f"{head}: TARGET NOT REACHED within --max-rounds {args.max_rounds}; re-run the same command to continue, "
            "raise --max-rounds/--requests-per-round, or use a stronger --model")


if __name__ == "__main__":
    sys.exit(main())
