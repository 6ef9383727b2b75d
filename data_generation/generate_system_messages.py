"""Generate Multifaceted-Collection-style rows: preference sets, system messages and gold answers.

    python data_generation/generate_system_messages.py --model embedded \
        --instructions datasets/instructions/instructions.jsonl --limit 8 --output runs/sysmsg/rows.jsonl

Rows use the released Multifaceted Collection's columns (main_source, preference_set, system, prompt,
output) plus id, instruction_id, set_index and the raw model texts. Finished rows are appended to
--output; a re-run skips them and retries the rows listed in <output stem>.failures.jsonl with fresh
samples. See docs/system_messages.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from pathlib import Path

from aloe.cli import (
    ArgumentParser, add_model_args, cli_main, model_pool, output_file, positive_int, sampling_params, shard_arg,
    take_shard,
)
from aloe.errors import AloeError
from aloe.jsonl import JsonlWriter, existing_ids, iter_records, write_json
from aloe.provenance import provenance
from aloe.records import Record
from aloe.runs import RunFiles
from aloe.system_messages.data import INSTRUCTIONS, read_instructions
from aloe.system_messages.generation import PROMPTS, GenerationSettings, SystemMessageGenerator

log = logging.getLogger("generate_system_messages")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instructions", default=str(INSTRUCTIONS),
                        help="JSONL rows with a prompt (optional id, source), or a text file of one instruction per line")
    parser.add_argument("--limit", type=positive_int, default=None, help="use only the first N instructions")
    parser.add_argument("--sets", type=positive_int, default=GenerationSettings.sets,
                        help="preference sets (system messages) per instruction (released data: 3)")
    parser.add_argument("--max-attempts", type=positive_int, default=GenerationSettings.max_attempts,
                        help="samples per field before a row fails for this run")
    parser.add_argument("--no-subdimension-fallback", action="store_true",
                        help="fail a row whose subdimension no sample named, instead of taking the dimension's "
                             "first example aspect no sibling took (recorded under raw.fallback)")
    parser.add_argument("--system-max-new-tokens", type=positive_int, default=GenerationSettings.system_tokens,
                        help="token limit of a system message (released ones: about 150-300 tokens)")
    parser.add_argument("--group-size", type=positive_int, default=64,
                        help="instructions run together through the five steps; rows are written per group")
    parser.add_argument("--shard", type=shard_arg, default=None,
                        help="i/n: only every n-th instruction starting at i, into <output>.shard-i-of-n.jsonl")
    parser.add_argument("--output", type=output_file, default="runs/system_messages/rows.jsonl")
    parser.add_argument("--overwrite", action="store_true", help="start the output over instead of resuming")
    add_model_args(parser)
    parser.set_defaults(max_new_tokens=256)
    return parser


def next_first_sample(failures: Path) -> int:
    """Where the last run's failed rows stopped drawing samples: a retry draws new ones (the cache replays old ones)."""
    if not failures.exists():
        return 0
    return max((int(getattr(record, "next_sample", 0)) for record in iter_records(failures, _Failure)), default=0)


class _Failure(Record):
    id: str


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    run = RunFiles(args.output, args.shard)
    output = run.main
    if output.is_dir():
        raise AloeError(f"{output}: is a directory; --output must be a JSONL file path")
    args.cache = str(run.cache(args.cache))
    instructions = read_instructions(args.instructions)
    instructions = take_shard(instructions[:args.limit] if args.limit else instructions, args.shard)
    if args.overwrite and output.exists():
        output.unlink()
    failures_path = run.failures
    first_sample = 0 if args.overwrite else next_first_sample(failures_path)
    settings = GenerationSettings(sets=args.sets, max_attempts=args.max_attempts, system_tokens=args.system_max_new_tokens,
                                  subdimension_fallback=not args.no_subdimension_fallback)
    done = existing_ids(output)
    total = len(instructions) * args.sets

    written = failed = 0
    first_failure = ""
    pending_instructions = [i for i in instructions
                            if any(f"{i.id}-s{s}" not in done for s in range(args.sets))]
    log.info("%d rows: %d already in %s, the rest from sample %d on", total, len(done & {
        f"{i.id}-s{s}" for i in instructions for s in range(args.sets)}), output, first_sample)
    if pending_instructions:
        with run.lock():
            pool = model_pool(args, output)
            model = pool.get(args.model)
            generator = SystemMessageGenerator(model, sampling_params(args), settings, first_sample)
            write_json(run.provenance, provenance(
                settings={key: (list(value) if isinstance(value, tuple) else value) for key, value in vars(args).items()},
                models={"generator": model.describe()}, prompts=list(PROMPTS)))
            with JsonlWriter(output) as writer, JsonlWriter(failures_path, overwrite=True) as failures:
                for start in range(0, len(pending_instructions), args.group_size):
                    states = generator.states(pending_instructions[start:start + args.group_size], done)
                    generator.run(states)
                    for state in states:
                        if state.failure is None:
                            writer.write(state.row())
                            written += 1
                            continue
                        failed += 1
                        first_failure = first_failure or f"{state.id}: {state.failure}"
                        failures.write({"id": state.id, "instruction_id": state.instruction.id,
                                        "set_index": state.set_index, "step": state.failed_step,
                                        "reason": state.failure, "next_sample": first_sample + settings.max_attempts,
                                        "fields": state.fields, "raw": state.raw,
                                        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
                    log.info("instructions %d-%d done: %d rows written, %d failed so far", start + 1,
                             start + args.group_size, written, failed)
    if failures_path.exists() and failures_path.stat().st_size == 0:
        failures_path.unlink()
    print(f"wrote {written} system-message rows to {output} ({len(done)} already there, {failed} failed) "
          f"in {time.perf_counter() - started:.1f}s")
    if failed:
        # Failed rows do not stop the method (the others are complete); a run that wrote nothing does.
        message = (f"{failed} rows failed (first: {first_failure}); their raw texts are in {failures_path}; "
                   "re-run the same command to retry them with fresh samples")
        if not output.exists() or output.stat().st_size == 0:
            raise AloeError(message)
        print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
