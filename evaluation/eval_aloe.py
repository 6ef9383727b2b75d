"""Evaluate a model on the ALOE evaluation: alignment to a simulated user, scored 1-5 at every turn.

    python evaluation/eval_aloe.py --model embedded --limit 5 --turns 3
    python evaluation/eval_aloe.py --model llama3_dpo \
        --user-model openai:gpt-4o-mini --judge-model openai:gpt-4o-mini      # the paper's protocol

Writes results/aloe/<model>.json (settings, provenance, metrics with bootstrap intervals), the
per-conversation records to results/aloe/<model>.records.jsonl as they finish, and a plot of AL(k)
to results/aloe/<model>.png. A re-run resumes. See docs/evaluation.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from aloe.cli import (
    ArgumentParser, add_model_args, add_run_args, cli_main, model_pool, non_negative_float, non_negative_int,
    positive_int, role_spec, sampling_params, take_shard,
)
from aloe.errors import AloeError
from aloe.interaction.evaluation import PERSONALITIES_USED, ROLES, EvaluationSettings, load_persona_set
from aloe.interaction.results import evaluate, merge_results, run_identity, summary
from aloe.lockstep import Roles
from aloe.models import resolve_spec, short_name
from aloe.runs import RunFiles

DATASETS = Path(__file__).resolve().parents[1] / "datasets" / "aloe_eval"
DEFAULTS = EvaluationSettings()


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser, model_help="the model under test; the user simulator and the judge are --user-model and "
                                      "--judge-model")
    parser.set_defaults(max_new_tokens=DEFAULTS.max_new_tokens)
    group = parser.add_argument_group("evaluation")
    helper = f"(default: {DEFAULTS.helper_model}; paper: openai:gpt-4o-mini)"
    group.add_argument("--user-model", default=None, help=f"user simulator spec {helper}")
    group.add_argument("--judge-model", default=None, help=f"judge spec {helper}")
    group.add_argument("--profiles", default=str(DATASETS / "profiles.jsonl"), help="evaluation profiles (20 shipped)")
    group.add_argument("--personalities", default=str(DATASETS / "personalities.jsonl"),
                       help="evaluation personalities (5 shipped)")
    group.add_argument("--personalities-used", type=positive_int, default=PERSONALITIES_USED,
                       help="pair every profile with the first N personalities of the file (default: the paper's "
                            "5; its evaluation file holds 7)")
    group.add_argument("--turns", type=positive_int, default=DEFAULTS.turns, help="turns per conversation (paper: 10)")
    group.add_argument("--persona-system-message", action="store_true",
                       help="tell the model under test who the user is, in a system message (an upper bound, "
                            "not the paper's protocol; recorded in the result's identity)")
    group.add_argument("--limit", type=positive_int, default=None,
                       help="evaluate only the first N persona pairs (pairs are ordered so any prefix spreads over "
                            "profiles and personalities)")
    group.add_argument("--user-temperature", type=non_negative_float, default=DEFAULTS.user_temperature,
                       help="user simulator sampling temperature")
    group.add_argument("--user-max-new-tokens", type=positive_int, default=DEFAULTS.user_max_new_tokens)
    group.add_argument("--judge-temperature", type=non_negative_float, default=DEFAULTS.judge_temperature,
                       help="judge temperature (default: greedy)")
    group.add_argument("--judge-max-new-tokens", type=positive_int, default=DEFAULTS.judge_max_new_tokens)
    group.add_argument("--max-attempts", type=positive_int, default=DEFAULTS.max_attempts,
                       help="samples of the user simulator before an empty message ends a conversation")
    group.add_argument("--bootstrap", type=non_negative_int, default=DEFAULTS.bootstrap, help="bootstrap samples for the 95%% intervals")
    group.add_argument("--merge", action="store_true",
                       help="join the finished shard results beside --output into one result and stop")
    add_run_args(group, "pair", output_help="result JSON (default: results/aloe/<model>.json)",
                 group_size=DEFAULTS.group_size,
                 group_help="conversations advanced together in lockstep; records are written per finished group",
                 overwrite_help="replace an existing result (of any model or settings) instead of resuming it")
    return parser


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    args.user_model = args.user_model or DEFAULTS.helper_model
    args.judge_model = args.judge_model or DEFAULTS.helper_model
    specs = {role: role_spec(args, role) for role in ROLES}
    for spec in specs.values():
        resolve_spec(spec)  # an unknown spec fails here, before anything is read or written
    run = RunFiles(args.output or Path("results") / "aloe" / f"{short_name(args.model)}.json", args.shard, ".json")
    with run.open(overwrite=args.overwrite, also=("records.jsonl", "png")):
        if args.merge:
            result, note = merge_results(run)
        else:
            personas = load_persona_set(args.profiles, args.personalities, args.personalities_used)
            pairs = personas.pairs()
            pairs = take_shard(pairs[:args.limit] if args.limit else pairs, args.shard)
            settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
            settings["shard"] = list(args.shard) if args.shard else None
            settings["persona_set"] = personas.describe()
            args.cache = str(run.cache(args.cache))
            stage = EvaluationSettings(
                turns=args.turns, max_new_tokens=args.max_new_tokens, user_temperature=args.user_temperature,
                user_max_new_tokens=args.user_max_new_tokens, judge_temperature=args.judge_temperature,
                judge_max_new_tokens=args.judge_max_new_tokens, max_attempts=args.max_attempts,
                group_size=args.group_size, bootstrap=args.bootstrap)

            def load_models() -> Roles:
                pool = model_pool(args, run.main)
                return Roles(**{role: pool.get(spec) for role, spec in specs.items()})

            result = evaluate(run, pairs, run_identity(args, personas.hash), settings,
                              load_models, stage.role_params(sampling_params(args)), stage)
            note = ""
    print(summary(result, run.main, time.perf_counter() - started, note))
    m = result.metrics
    if m["parsed"] == 0 and m["unparsed"]:
        raise AloeError(f"the judge gave no readable score ({m['unparsed']} unparsed; first reason: "
                        f"{result.first_unparsed_reason}); use a stronger --judge-model")


if __name__ == "__main__":
    sys.exit(main())
