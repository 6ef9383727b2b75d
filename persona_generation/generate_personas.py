"""Grow a persona pool from seeds with a chat model and an embedding novelty filter.

    python persona_generation/generate_personas.py --kind profile --model embedded \
        --target 60 --output runs/demo/profiles.jsonl

The output holds the whole pool, seeds first (source "seed", round 0) and then every accepted
persona as it is accepted, so it is the next stage's --profiles / --personalities file. A re-run
resumes toward --target; --overwrite starts over. See docs/persona_generation.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from aloe.cli import (
    ArgumentParser, add_model_args, cli_main, model_pool, output_file, positive_int, sampling_params, shard_arg,
)
from aloe.errors import AloeError
from aloe.interaction.personas import KINDS, GrowthSettings, grow_pool, load_pool
from aloe.provenance import provenance
from aloe.runs import RunFiles

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = GrowthSettings()


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", required=True, choices=list(KINDS), help="which kind of persona text to grow")
    parser.add_argument("--seeds", default=None,
                        help="seed pool (Persona JSONL or bare JSON strings; default: datasets/seed_<kind>s.jsonl)")
    parser.add_argument("--target", type=positive_int, required=True,
                        help="pool size to reach, seeds included (paper: 331 profiles, 71 personalities)")
    parser.add_argument("--output", type=output_file, default=None, help="pool file to write (default: runs/personas/<kind>s.jsonl)")
    parser.add_argument("--examples-per-prompt", type=positive_int, default=DEFAULTS.examples_per_prompt,
                        help="pool personas shown in each request (paper: 5)")
    parser.add_argument("--per-request", type=positive_int, default=DEFAULTS.per_request, help="new personas asked for per request (paper: 20)")
    parser.add_argument("--requests-per-round", type=positive_int, default=DEFAULTS.requests_per_round,
                        help="requests sent together as one batch per round; the default suits a CPU demo, "
                             "raise it for API/vLLM models (e.g. 32)")
    parser.add_argument("--max-rounds", type=positive_int, default=DEFAULTS.max_rounds,
                        help="rounds this run may take before it stops short of --target (a re-run continues)")
    parser.add_argument("--threshold", type=float, default=DEFAULTS.threshold,
                        help="keep a candidate iff its max cosine similarity to the pool is at most this (paper: 0.6)")
    parser.add_argument("--embedder", default=DEFAULTS.embedder,
                        help="sentence embedder: 'embedded' (all-MiniLM-L6-v2 from its wheel) or a sentence-transformers path")
    parser.add_argument("--min-words", type=positive_int, default=None, help="drop shorter candidates (default: per kind)")
    parser.add_argument("--max-words", type=positive_int, default=None, help="drop longer candidates (default: per kind)")
    parser.add_argument("--shard", type=shard_arg, default=None,
                        help="i/n: worker i of n grows its own pool into <output>.shard-i-of-n.jsonl toward its share "
                             "of the target; join them with persona_generation/merge_pools.py")
    parser.add_argument("--overwrite", action="store_true", help="start the output over instead of resuming")
    add_model_args(parser)
    parser.set_defaults(temperature=DEFAULTS.temperature, max_new_tokens=None)
    parser.description += (" (--max-new-tokens defaults to --per-request x 120 tokens for profiles, x 90 for "
                           "personalities; --temperature to 0.8, the paper's)")
    return parser


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
    run = RunFiles(args.output or f"runs/personas/{KINDS[args.kind].plural}.jsonl", args.shard)
    output = run.main
    shard_index, shard_count = args.shard or (0, 1)
    args.cache = str(run.cache(args.cache)) if args.shard else args.cache

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
    settings = GrowthSettings(examples_per_prompt=args.examples_per_prompt, per_request=args.per_request,
                              requests_per_round=args.requests_per_round, min_words=min_words, max_words=max_words,
                              seed=args.seed, shard=(shard_index, shard_count), max_rounds=args.max_rounds,
                              threshold=args.threshold, embedder=args.embedder, temperature=args.temperature)

    # Specs and keys are checked now, before the (slow) embedder loads; the model itself loads after it.
    models = model_pool(args, output) if len(pool) < target else None

    def load_model():
        return models.get(args.model)

    def provenance_of(model, embedder) -> dict:
        return provenance(settings={**vars(args), "target_this_shard": target, "seeds": str(seeds_path)},
                          models={"generator": model.describe(), "embedder": embedder.describe()}, prompts=[kind.prompt])

    with run.lock():
        pool_size, added, this_run = grow_pool(run, kind, pool, new_seeds, target, settings, load_model,
                                               sampling_params(args), provenance_of, args.overwrite)
    print(summary(args, output, pool_size, target, seed_count, added, this_run, time.perf_counter() - started))


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
