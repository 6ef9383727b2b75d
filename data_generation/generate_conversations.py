"""Generate tree-structured multi-turn preference conversations (the ALOE training data).

    python data_generation/generate_conversations.py --model embedded \
        --profiles datasets/seed_profiles.jsonl --personalities datasets/seed_personalities.jsonl \
        --num-conversations 4 --turns 3 --output runs/demo/conversations.jsonl

Finished conversations are appended to --output; a re-run skips them and retries the ones listed
in <output stem>.failures.jsonl. See docs/data_generation.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from pathlib import Path

from aloe.cli import (
    ArgumentParser, add_model_args, cli_main, model_pool, positive_int, role_spec, sampling_params, shard_arg,
    shard_path, take_shard,
)
from aloe.interaction.conversations import (
    CONTINUE_RULES, PROMPTS, ROLES, ConversationGenerator, GenerationSettings, RoleModels,
    pair_personas,
)
from aloe.errors import AloeError
from aloe.judges.preference import ON_TIE_RULES
from aloe.jsonl import JsonlWriter, existing_ids, read_records, rewrite_jsonl, write_json
from aloe.interaction.personas import load_pool
from aloe.provenance import provenance
from aloe.records import Conversation

log = logging.getLogger("generate_conversations")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", required=True, help="profile pool (JSONL of persona records or bare strings)")
    parser.add_argument("--personalities", required=True, help="personality pool (same formats)")
    parser.add_argument("--num-conversations", type=positive_int, default=10,
                        help="distinct (profile, personality) pairs to generate (paper: 3000)")
    parser.add_argument("--turns", type=positive_int, default=10, help="turns per conversation (paper: 10)")
    parser.add_argument("--continue", dest="continue_rule", choices=CONTINUE_RULES, default="random",
                        help="which reply the conversation continues with (paper: random)")
    parser.add_argument("--on-tie", choices=ON_TIE_RULES, default="hinted",
                        help="when the two judge orders disagree or give no verdict: prefer the hinted reply, "
                             "end the conversation there (skip), or pick at random")
    parser.add_argument("--max-attempts", type=positive_int, default=2,
                        help="samples per step before an empty message fails a conversation or a verdict stays unparsed")
    parser.add_argument("--group-size", type=positive_int, default=64,
                        help="conversations advanced together in lockstep; each group is written when it finishes")
    parser.add_argument("--shard", type=shard_arg, default=None,
                        help="i/n: generate only every n-th pair starting at i, into <output>.shard-i-of-n.jsonl")
    parser.add_argument("--output", default="runs/conversations/conversations.jsonl")
    parser.add_argument("--overwrite", action="store_true", help="start the output over instead of resuming")
    add_model_args(parser, roles=ROLES)
    return parser


def sidecar(output: Path, name: str) -> Path:
    """A file beside the output named after it: conversations.jsonl -> conversations.<name>."""
    return output.with_name(f"{output.stem}.{name}")


def generate_groups(generator: ConversationGenerator, pending: list, group_size: int, output: Path,
                    failures_path: Path) -> tuple[int, int, str]:
    """Run the pairs in lockstep groups, appending each finished conversation and each failure as it
    comes. Returns (written, failed, first failure reason)."""
    written = failed = 0
    first_failure = ""
    try:
        with JsonlWriter(output) as writer, JsonlWriter(failures_path, overwrite=True) as failures:

            def finish(conversation):
                nonlocal written
                writer.write(conversation)
                written += 1

            def fail(pair, turn_index, reason):
                nonlocal failed, first_failure
                failures.write({"id": pair.id, "profile_id": pair.profile.id, "personality_id": pair.personality.id,
                                "turn": turn_index + 1, "reason": reason,
                                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
                failed += 1
                first_failure = first_failure or reason

            for start in range(0, len(pending), group_size):
                group = pending[start:start + group_size]
                try:
                    generator.run(group, finish, fail)
                except AloeError as exc:
                    raise AloeError(f"{exc} ({written} finished conversations are saved in {output}; "
                                    "re-run the same command to resume)") from None
                log.info("group %d-%d done: %d written, %d failed so far", start + 1, start + len(group), written, failed)
    finally:
        if failures_path.exists() and failures_path.stat().st_size == 0:
            failures_path.unlink()  # no failures this run (or it was interrupted before any)
    return written, failed, first_failure


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    output = shard_path(Path(args.output), args.shard)
    if args.shard is not None and args.cache is None:
        # One cache per worker: shards on one machine never wait on each other's SQLite lock.
        args.cache = str(sidecar(output, "responses.sqlite"))
    settings = GenerationSettings(turns=args.turns, continue_rule=args.continue_rule, on_tie=args.on_tie,
                                  seed=args.seed, max_attempts=args.max_attempts)

    profiles = load_pool(args.profiles)
    personalities = load_pool(args.personalities)
    pairs = take_shard(pair_personas(profiles, personalities, args.num_conversations, args.seed), args.shard)
    if args.overwrite and output.exists():
        output.unlink()
    # Read once: the finished ids are what resuming skips, the records what re-judging looks at.
    stored = read_records(output, Conversation, allow_empty=True) if output.exists() else []
    done = {conversation.id for conversation in stored}
    failures_path = sidecar(output, "failures.jsonl")
    previously_failed = existing_ids(failures_path)
    pending = [pair for pair in pairs if pair.id not in done]
    retrying = sum(pair.id in previously_failed for pair in pending)
    log.info("%d conversations: %d already in %s, %d to generate (%d retried after failing before)",
             len(pairs), len(pairs) - len(pending), output, len(pending), retrying)

    # DESIGN: an order the judge left without a verdict is asked again on the next run (same judge and rules).
    covered = {pair.id for pair in pairs}
    unparsed = [conversation for conversation in stored if conversation.id in covered
                and conversation.meta.get("models", {}).get("judge") == role_spec(args, "judge")
                and conversation.meta.get("on_tie") == args.on_tie
                and any(turn.verdict_missing for turn in conversation.conversations)]

    written = failed = 0
    first_failure = ""
    if pending or unparsed:
        pool = model_pool(args, output)
        specs = {role: role_spec(args, role) for role in ROLES}
        models = RoleModels(**{role: pool.get(spec) for role, spec in specs.items()})
        generator = ConversationGenerator(models, sampling_params(args), settings)
    if unparsed:
        changed = generator.rejudge(unparsed)
        rewrite_jsonl(output, stored)
        still = sum(turn.verdict_missing for conversation in unparsed for turn in conversation.conversations)
        log.info("asked the judge again about %d conversations with unparsed verdicts: %d turns still unparsed "
                 "(%d conversations rewritten in %s)", len(unparsed), still, len(changed), output)
    if pending:
        write_json(sidecar(output, "provenance.json"), provenance(
            settings=vars(args),
            models={role: getattr(models, role).describe() for role in ROLES},
            prompts=list(PROMPTS),
        ))
        written, failed, first_failure = generate_groups(generator, pending, args.group_size, output, failures_path)
    elapsed = time.perf_counter() - started
    print(f"wrote {written} conversations to {output} ({len(pairs) - len(pending)} already there, "
          f"{failed} failed) in {elapsed:.1f}s")
    if failed:
        raise AloeError(f"{failed} conversations failed (first: {first_failure}); they are listed in {failures_path}; "
                        "re-run the same command to retry them (with a higher --max-attempts if a model gave empty "
                        "output: the response cache replays the samples already drawn)")


if __name__ == "__main__":
    sys.exit(main())
