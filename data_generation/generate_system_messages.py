"""Generate Multifaceted-Collection-style rows: preference sets, system messages and gold answers.

    python data_generation/generate_system_messages.py --model embedded \
        --instructions datasets/instructions/instructions.jsonl --limit 8 --output runs/sysmsg/rows.jsonl

Rows use the released Multifaceted Collection's columns (main_source, preference_set, system, prompt,
output) plus id, instruction_id, set_index and the raw model texts. Finished rows are appended to
--output; a re-run skips them and retries the rows listed in <output stem>.failures.jsonl with fresh
samples. See docs/system_messages.md.
"""

from __future__ import annotations

import sys
import time

from aloe.cli import (
    ArgumentParser, add_model_args, add_run_args, cli_main, model_pool, positive_int, sampling_params,
    take_shard,
)
from aloe.errors import AloeError
from aloe.provenance import provenance
from aloe.runs import RunFiles
from aloe.system_messages.data import INSTRUCTIONS, read_instructions
from aloe.system_messages.generation import PROMPTS, GenerationSettings, generate_rows


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
    add_run_args(parser, "instruction", output="runs/system_messages/rows.jsonl", group_size=GenerationSettings.group_size,
                 group_help="instructions run together through the five steps; rows are written per group")
    add_model_args(parser)
    parser.set_defaults(max_new_tokens=256)
    return parser


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    run = RunFiles(args.output, args.shard)
    if run.main.is_dir():
        raise AloeError(f"{run.main}: is a directory; --output must be a JSONL file path")
    args.cache = str(run.cache(args.cache))
    instructions = read_instructions(args.instructions)
    instructions = take_shard(instructions[:args.limit] if args.limit else instructions, args.shard)
    settings = GenerationSettings(sets=args.sets, max_attempts=args.max_attempts, system_tokens=args.system_max_new_tokens,
                                  subdimension_fallback=not args.no_subdimension_fallback, group_size=args.group_size)

    def provenance_of(model) -> dict:
        return provenance(settings={key: (list(value) if isinstance(value, tuple) else value)
                                    for key, value in vars(args).items()},
                          models={"generator": model.describe()}, prompts=list(PROMPTS))

    with run.open(overwrite=args.overwrite):
        report = generate_rows(run, instructions, settings, sampling_params(args),
                               lambda: model_pool(args, run.main).get(args.model), provenance_of)
    print(f"wrote {report.written} system-message rows to {run.main} ({report.already} already there, "
          f"{report.failed} failed) in {time.perf_counter() - started:.1f}s")
    if report.failed:
        # Failed rows do not stop the method (the others are complete); a run that wrote nothing does.
        message = (f"{report.failed} rows failed (first: {report.first_failure}); their raw texts are in "
                   f"{run.failures}; re-run the same command to retry them with fresh samples")
        if not report.already + report.written:
            raise AloeError(message)
        print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
