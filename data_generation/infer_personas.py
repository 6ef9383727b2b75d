"""Infer the persona behind each side of every preference pair: a chosen persona and a rejected persona.

    python data_generation/infer_personas.py --pairs datasets/preference_pairs/train.jsonl --model embedded \
        --output runs/tailoring/train.personas.jsonl
    python data_generation/infer_personas.py --dataset nbalepur/persona-tailoring --config BeaverTails \
        --split test --model openai:gpt-4o --output runs/tailoring/beavertails.test.jsonl   # hub reachable

The output is the pairs file with chosen_persona and rejected_persona added (raw texts and, where the
model gave nothing usable, the reason kept). A re-run skips pairs already done and asks again about
pairs left without a persona. See docs/tailoring.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from aloe.cli import (
    ArgumentParser, add_model_args, add_raw_text_arg, add_run_args, cli_main, model_pool, non_negative_float,
    positive_int, take_shard,
)
from aloe.errors import AloeError
from aloe.jsonl import JsonlWriter, rewrite_jsonl, write_json
from aloe.models import resolve_spec
from aloe.provenance import provenance
from aloe.runs import RunFiles
from aloe.tailoring.inference import (
    GENERAL, InferenceSettings, check_domains, infer_personas, prompt_names, read_exemplars,
)
from aloe.tailoring.pairs import load_hub_pairs, read_pairs

DATA = Path(__file__).resolve().parents[1] / "datasets" / "preference_pairs"
DEFAULTS = InferenceSettings()


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser)
    add_raw_text_arg(parser)  # a base model continues the few-shot prompt after its final "Persona:"
    parser.set_defaults(max_new_tokens=DEFAULTS.max_new_tokens, temperature=DEFAULTS.temperature)
    source = parser.add_argument_group("pairs")
    source.add_argument("--pairs", default=None, help="pairs file: JSONL, JSON, CSV, Parquet, or ALOE conversations")
    source.add_argument("--dataset", default=None, help="a Hugging Face dataset name instead of --pairs")
    source.add_argument("--config", default=None, help="--dataset's configuration (e.g. BeaverTails)")
    source.add_argument("--split", default="test", help="--dataset's split")
    source.add_argument("--domain", default=GENERAL,
                        help="the prompt for pairs that name no domain (default: general)")
    source.add_argument("--fewshot", default=str(DATA / "fewshot.jsonl"),
                        help="few-shot exemplars with gold personas, five per domain")
    source.add_argument("--shots", type=positive_int, default=DEFAULTS.shots,
                        help=f"exemplars per prompt (default: {DEFAULTS.shots}, the paper's; fewer for quick runs)")
    source.add_argument("--limit", type=positive_int, default=None, help="only the first N pairs")
    parser.add_argument("--max-attempts", type=positive_int, default=DEFAULTS.max_attempts,
                        help="asks per persona: the greedy one, then re-samples of unusable answers")
    parser.add_argument("--resample-temperature", type=non_negative_float, default=DEFAULTS.resample_temperature)
    add_run_args(parser, "pair", required=True, output_help="pairs with personas (JSONL)", group_size=64,
                 group_help="pairs per round (2 asks each, one batch); finished rounds are written at once")
    return parser


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    if (args.pairs is None) == (args.dataset is None):
        raise AloeError("give exactly one of --pairs FILE or --dataset NAME")
    resolve_spec(args.model)
    source = args.pairs or f"{args.dataset}/{args.config}/{args.split}"
    pairs = read_pairs(args.pairs) if args.pairs else load_hub_pairs(args.dataset, args.config, args.split)
    pairs = take_shard(pairs[:args.limit], args.shard)
    exemplars = read_exemplars(args.fewshot)
    check_domains(source, pairs, exemplars, args.domain, args.fewshot)
    settings = InferenceSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, max_attempts=args.max_attempts,
                                 resample_temperature=args.resample_temperature, seed=args.seed,
                                 shots=args.shots)

    run = RunFiles(args.output, args.shard)
    output = run.main
    args.cache = str(run.cache(args.cache))
    with run.open(overwrite=args.overwrite):
        done = {} if not output.exists() else {pair.id: pair for pair in read_pairs(output, allow_empty=True)}
        unfinished = [pair for pair in pairs if pair.id in done
                      and not (done[pair.id].chosen_persona and done[pair.id].rejected_persona)]
        pending = [pair for pair in pairs if pair.id not in done]
        model = model_pool(args, output).get(args.model) if pending or unfinished else None
        if unfinished:
            for pair in infer_personas(model, unfinished, exemplars, args.domain, settings):
                done[pair.id] = pair
            rewrite_jsonl(output, [done[pair.id] for pair in pairs if pair.id in done])
        with JsonlWriter(output) as writer:
            for start in range(0, len(pending), args.group_size):
                for pair in infer_personas(model, pending[start:start + args.group_size], exemplars, args.domain,
                                           settings):
                    writer.write(pair)
                    done[pair.id] = pair
        results = [done[pair.id] for pair in pairs]
        missing = sum(pair.persona(side) is None for pair in results for side in ("chosen", "rejected"))
        domains = sorted({pair.domain or args.domain for pair in pairs})
        write_json(run.provenance, provenance(
            dict(vars(args)), {"model": model.describe() if model else {"spec": args.model}}, prompt_names(domains)))
    print(f"{len(pending) + len(unfinished)} pairs inferred ({len(pairs) - len(pending) - len(unfinished)} already done); "
          f"{2 * len(results) - missing} of {2 * len(results)} personas usable; wrote {output} in "
          f"{time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
