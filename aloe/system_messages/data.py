"""Reading the method's files: instructions, system-message rows and benchmark items."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from aloe.errors import RecordError
from aloe.jsonl import read_records
from aloe.system_messages.records import BenchItem, Instruction, SystemMessageRow

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
INSTRUCTIONS = DATASETS / "instructions" / "instructions.jsonl"
BENCH = DATASETS / "multifaceted_bench" / "bench.jsonl"


def _unique(path: Path, ids: Sequence[str], kind: str) -> None:
    seen: set[str] = set()
    for number, value in enumerate(ids, start=1):
        if value in seen:
            raise RecordError(f"{path}: record {number}: id: duplicate {kind} id {value!r}")
        seen.add(value)


def _is_jsonl(path: Path) -> bool:
    if path.suffix in (".jsonl", ".json"):
        return True
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


def read_instructions(path: str | os.PathLike) -> list[Instruction]:
    """JSONL rows with a `prompt` (optional `id`, `source`), or a text file of one instruction per line.

    In a text file every line is an instruction, so an empty line is an error, not a skipped record.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file not found" + (" (a directory)" if path.is_dir() else ""))
    try:
        if _is_jsonl(path):
            instructions = read_records(path, Instruction)
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            instructions = []
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    raise RecordError(f"{path}:{number}: prompt: empty line (one instruction per line; remove it)")
                instructions.append(Instruction(prompt=line.strip(), source=path.stem))
            if not instructions:
                raise RecordError(f"{path}: no records")
    except UnicodeDecodeError:
        raise RecordError(f"{path}: not UTF-8 text") from None
    _unique(path, [instruction.id for instruction in instructions], "instruction")
    return instructions


def _read(path: str | os.PathLike, schema, kind: str) -> list:
    path = Path(path)
    try:
        records = read_records(path, schema)
    except UnicodeDecodeError:
        raise RecordError(f"{path}: not UTF-8 text") from None
    _unique(path, [record.id for record in records], kind)
    return records


def read_rows(path: str | os.PathLike) -> list[SystemMessageRow]:
    return _read(path, SystemMessageRow, "row")


RELEASED_BENCH = "hf:kaist-ai/Multifaceted-Bench"  # the authors' 921 items (needs the hub)


def read_bench(path: str | os.PathLike = BENCH) -> list[BenchItem]:
    """Benchmark items from a JSONL file, or from the hub with `hf:<dataset id>` (the released benchmark)."""
    if str(path).startswith("hf:"):
        return _read_hub_bench(str(path))
    return _read(path, BenchItem, "benchmark item")


def _read_hub_bench(spec: str) -> list[BenchItem]:
    from pydantic import ValidationError

    name = spec.removeprefix("hf:")
    try:
        from datasets import load_dataset

        rows = load_dataset(name, split="train")
    except Exception as exc:  # the hub client raises many kinds (offline, missing, auth)
        raise RecordError(f"{spec}: cannot load the dataset from the hub ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'no message'}); download it and pass "
                          "the JSONL file to --bench") from None
    items = []
    for number, row in enumerate(rows, start=1):
        try:
            items.append(BenchItem.model_validate(dict(row)))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise RecordError(f"{spec}: record {number}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    _unique(Path(name), [item.id for item in items], "benchmark item")
    return items
