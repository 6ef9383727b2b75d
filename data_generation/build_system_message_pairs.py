"""Build sibling preference pairs from system-message rows (for DPO, ORPO and the reward model).

    python data_generation/build_system_message_pairs.py --rows runs/sysmsg/rows.jsonl \
        --output runs/sysmsg/pairs.jsonl

For each system message: chosen = its own gold answer, rejected = a sibling system message's answer
to the same instruction. Reads our rows and the released Multifaceted Collection's (siblings are the
rows that share a prompt there). Written in trl's conversational preference format with the system
message in the prompt. See docs/system_messages.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aloe.cli import ArgumentParser, cli_main, output_file
from aloe.errors import AloeError
from aloe.jsonl import rewrite_jsonl
from aloe.system_messages.data import read_rows
from aloe.system_messages.pairs import sibling_pairs


@cli_main
def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", required=True, help="system-message rows (generate_system_messages.py output)")
    parser.add_argument("--output", type=output_file, required=True, help="pairs JSONL (replaced)")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.is_dir():
        raise AloeError(f"{output}: is a directory; --output must be a JSONL file path")
    rows = read_rows(args.rows)
    pairs, stats = sibling_pairs(rows)
    if not pairs:
        raise AloeError(f"{args.rows}: no pairs: {stats.without_sibling} rows have no sibling and "
                        f"{stats.same_answer} share their sibling's answer; generate --sets 2 or more per instruction")
    output.parent.mkdir(parents=True, exist_ok=True)
    rewrite_jsonl(output, pairs)
    print(f"wrote {stats.pairs} pairs from {len(rows)} rows to {output} ({stats.without_sibling} without a sibling, "
          f"{stats.same_answer} with the same answer as their sibling)")


if __name__ == "__main__":
    sys.exit(main())
