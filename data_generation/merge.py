"""Join the shard files of a sharded conversation run into one file, dropping duplicate ids.

    python data_generation/merge.py --output runs/big/conversations.jsonl
        (joins runs/big/conversations.shard-*-of-*.jsonl)
    python data_generation/merge.py --output all.jsonl a.jsonl b.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

from aloe.cli import ArgumentParser, cli_main, output_file
from aloe.errors import RecordError
from aloe.jsonl import merge_jsonl, read_records
from aloe.records import Conversation
from aloe.runs import RunFiles


def check_inputs(paths: list[Path]) -> None:
    """Every record must validate and carry an id, once per file: merging keys on it. An empty file is an error
    (a shard that never ran), as is an id twice in one file (two runs wrote it)."""
    for path in paths:
        for number, record in enumerate(read_records(path, Conversation, unique_ids=True), start=1):
            if not record.id:
                raise RecordError(f"{path}:{number}: id: missing; merging needs ids "
                                  "(files written by generate_conversations.py have them)")


@cli_main
def main(argv=None):
    parser = ArgumentParser(description="Join conversation shard files, dropping duplicate ids.")
    parser.add_argument("inputs", nargs="*", help="files to join (default: the shard files of --output)")
    parser.add_argument("--output", type=output_file, required=True, help="merged file (overwritten)")
    args = parser.parse_args(argv)
    output = Path(args.output)
    inputs = [Path(p) for p in args.inputs] or [path for _, path in RunFiles(output).shard_files()]
    if not inputs:
        raise RecordError(f"no input files given and no {output.stem}.shard-*-of-*{output.suffix} files "
                          f"beside {output}")
    if output.resolve() in {path.resolve() for path in inputs}:
        raise RecordError(f"{output}: the output is also an input; write the merge to a new file")
    check_inputs(inputs)
    with RunFiles(output).lock():
        kept, dropped = merge_jsonl(inputs, output)
    print(f"merged {len(inputs)} files into {output}: {kept} conversations, {dropped} duplicates dropped")


if __name__ == "__main__":
    sys.exit(main())
