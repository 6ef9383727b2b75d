"""Generate tree-structured multi-turn preference conversations (the ALOE training data).

    python data_generation/generate_conversations.py --model embedded \
        --profiles datasets/seed_profiles.jsonl --personalities datasets/seed_personalities.jsonl \
        --num-conversations 4 --turns 3 --output runs/demo/conversations.jsonl

Finished conversations are appended to --output; a re-run skips them and retries the ones listed
in <output stem>.failures.jsonl. See docs/data_generation.md.
"""

from __future__ import annotations

import sys
import time

from aloe.cli import (
    ArgumentParser, add_model_args, add_run_args, cli_main, model_pool, non_negative_float, positive_int, role_spec,
    sampling_params, take_shard,
)
from aloe.errors import AloeError
from aloe.interaction.conversations import (
    CONTINUE_RULES, ROLES, ConversationGenerator, GenerationSettings, generate_conversations,
)
from aloe.interaction.personas import load_pool, pair_personas
from aloe.judges.preference import JUDGE_PROMPTS, ON_TIE_RULES
from aloe.lockstep import Roles
from aloe.provenance import provenance
from aloe.runs import RunFiles

DEFAULTS = GenerationSettings()


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", required=True, help="profile pool (JSONL of persona records or bare strings)")
    parser.add_argument("--personalities", required=True, help="personality pool (same formats)")
    parser.add_argument("--num-conversations", type=positive_int, default=DEFAULTS.num_conversations,
                        help="distinct (profile, personality) pairs to generate (paper: 3000)")
    parser.add_argument("--turns", type=positive_int, default=DEFAULTS.turns, help="turns per conversation (paper: 10)")
    parser.add_argument("--continue", dest="continue_rule", choices=CONTINUE_RULES, default=DEFAULTS.continue_rule,
                        help="which reply the conversation continues with (paper: random)")
    parser.add_argument("--on-tie", choices=ON_TIE_RULES, default=DEFAULTS.on_tie,
                        help="when the two judge orders disagree or give no verdict: prefer the hinted reply, "
                             "end the conversation there (skip), or pick at random")
    parser.add_argument("--judge-prompt", choices=list(JUDGE_PROMPTS), default=DEFAULTS.judge_prompt,
                        help="the preference judge's prompt: transcript (ours: sees the conversation, gives a short "
                             "reason, then the verdict) or paper (the ALOE paper's layout: persona and the two "
                             "replies only, verdict without analysis); recorded in each conversation's meta")
    parser.add_argument("--judge-temperature", type=non_negative_float, default=DEFAULTS.judge_temperature,
                        help="the preference judge's temperature (default: greedy; the other roles use --temperature)")
    parser.add_argument("--max-attempts", type=positive_int, default=DEFAULTS.max_attempts,
                        help="samples per step before an empty message fails a conversation or a verdict stays unparsed")
    add_run_args(parser, "pair", output="runs/conversations/conversations.jsonl", group_size=DEFAULTS.group_size,
                 group_help="conversations advanced together in lockstep; each group is written when it finishes")
    add_model_args(parser, roles=ROLES)
    return parser


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    run = RunFiles(args.output, args.shard)
    args.cache = str(run.cache(args.cache)) if args.shard else args.cache
    settings = GenerationSettings(
        num_conversations=args.num_conversations, turns=args.turns, continue_rule=args.continue_rule,
        on_tie=args.on_tie, seed=args.seed, max_attempts=args.max_attempts,
        judge_temperature=args.judge_temperature, group_size=args.group_size, judge_prompt=args.judge_prompt)
    pairs = take_shard(pair_personas(load_pool(args.profiles), load_pool(args.personalities),
                                     args.num_conversations, args.seed), args.shard)

    def load_generator() -> ConversationGenerator:
        pool = model_pool(args, run.main)
        models = Roles(**{role: pool.get(role_spec(args, role)) for role in ROLES})
        return ConversationGenerator(models, sampling_params(args), settings)

    def provenance_of(generator: ConversationGenerator) -> dict:
        return provenance(settings=vars(args), models={role: model.describe() for role, model in generator.models.items()},
                          prompts=list(settings.prompts))

    with run.open(overwrite=args.overwrite):
        report = generate_conversations(run, pairs, settings, load_generator, role_spec(args, "judge"), provenance_of)
    print(f"wrote {report.written} conversations to {run.main} ({report.already} already there, "
          f"{report.failed} failed) in {time.perf_counter() - started:.1f}s")
    if report.failed:
        raise AloeError(f"{report.failed} conversations failed (first: {report.first_failure}); they are listed in "
                        f"{run.failures}; re-run the same command to retry them (with a higher --max-attempts if a "
                        "model gave empty output: the response cache replays the samples already drawn)")


if __name__ == "__main__":
    sys.exit(main())
