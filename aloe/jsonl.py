"""JSONL reading with validation, and append-only writing that survives interruption."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from aloe.errors import RecordError

T = TypeVar("T", bound=BaseModel)
log = logging.getLogger(__name__)
_DECODER = json.JSONDecoder()


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "record"
    return f"{field}: {first['msg']}"


def iter_records(
    path: str | os.PathLike,
    schema: type[T],
    from_string: Callable[[str], T] | None = None,
) -> Iterator[T]:
    """Yield validated records; any problem raises RecordError naming `file:line: field: problem`.

    `from_string` accepts bare JSON strings (the seed repository's pool format). Consecutive JSON
    values on one line are read as consecutive records, with a warning naming the line. A final line
    without a newline is kept if it is complete JSON, else skipped as an interrupted write.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file not found")
    with path.open(encoding="utf-8") as handle:
        for number, line in _numbered_lines(path, handle):
            for data in _line_values(path, number, line) or ():
                if isinstance(data, str) and from_string is not None:
                    data = from_string(data).model_dump()
                if not isinstance(data, dict):
                    raise RecordError(f"{path}:{number}: record: expected a JSON object, got {type(data).__name__}")
                try:
                    yield schema.model_validate(data)
                except ValidationError as exc:
                    raise RecordError(f"{path}:{number}: {_describe(exc)}") from None


def _numbered_lines(path: Path, handle) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file; bytes that are not UTF-8 are a RecordError naming the line."""
    number = 0
    try:
        for number, line in enumerate(handle, start=1):
            yield number, line
    except UnicodeDecodeError:
        raise RecordError(f"{path}:{number + 1}: record: not UTF-8 text") from None


def _line_values(path: Path, number: int, line: str) -> list[Any] | None:
    """The JSON values on one line; None for a half-written last line (no newline, not valid JSON).

    A line normally holds one value. Published files sometimes hold two back to back (the original
    authors' profile.jsonl, line 6): their reader splits them, so ours does too, with a warning.
    """
    values = []
    position = _skip_space(line, 0)
    while position < len(line):
        try:
            value, position = _DECODER.raw_decode(line, position)
        except json.JSONDecodeError as exc:
            if not line.endswith("\n"):
                return None  # a kill mid-write; the writer drops it on the next open
            raise RecordError(f"{path}:{number}: record: not valid JSON ({exc.msg})") from None
        values.append(value)
        position = _skip_space(line, position)
    if len(values) > 1:
        log.warning("%s:%d: %d JSON values on one line; reading each as a record", path, number, len(values))
    return values


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def read_records(path, schema: type[T], from_string=None, *, allow_empty: bool = False,
                 unique_ids: bool = False) -> list[T]:
    """All records of a file; an empty file is an error unless `allow_empty`.

    With `unique_ids` an id that appears twice is an error naming both records, so a file that was
    appended to twice is never counted twice.
    """
    records = list(iter_records(path, schema, from_string))
    if unique_ids:
        check_unique_ids(path, records)
    if not records and not allow_empty:
        raise RecordError(f"{path}: no records")
    return records


def check_unique_ids(source, records) -> None:
    """An id that appears twice is an error naming both records (numbered from 1); records without one pass."""
    seen: dict[str, int] = {}
    for number, record in enumerate(records, start=1):
        if not getattr(record, "id", None):
            continue
        if record.id in seen:
            raise RecordError(f"{source}: id: {record.id!r} appears twice (records {seen[record.id]} and {number})")
        seen[record.id] = number


def existing_ids(path: str | os.PathLike) -> set[str]:
    """Ids already written to `path` (empty if it does not exist): what a resumed run skips."""
    path = Path(path)
    if not path.exists():
        return set()
    ids = set()
    for _number, record in _complete_lines(path):
        if isinstance(record, dict) and "id" in record:
            ids.add(record["id"])
    return ids


def _complete_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each finished value; a half-written last line is skipped."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            for value in _line_values(path, number, line) or ():
                yield number, value


class JsonlWriter:
    """Appends one JSON object per line and flushes it, so a killed run keeps every finished record.

    Opening drops a half-written last line left by an interrupted run and ends a complete last line
    that lacks its newline (the reader accepts it, so it is kept); `overwrite` starts the file anew.
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite and self.path.exists():
            self.path.unlink()
        _drop_partial_last_line(self.path)
        self._handle = self.path.open("a", encoding="utf-8")

    def write(self, record: BaseModel | dict[str, Any]) -> None:
        data = record.model_dump(mode="json", exclude_none=False) if isinstance(record, BaseModel) else record
        self._handle.write(json.dumps(data, ensure_ascii=False) + "\n")
        self._handle.flush()

    def write_all(self, records: Iterable[BaseModel | dict[str, Any]]) -> None:
        for record in records:
            self.write(record)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drop_partial_last_line(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as handle:
        # Read backwards from the end only as far as the last newline: output files can be large.
        end = handle.seek(0, os.SEEK_END)
        position = end
        start = 0  # where the last line begins
        while position > 0:
            step = min(65536, position)
            position -= step
            handle.seek(position)
            chunk = handle.read(step)
            if position + step == end and chunk.endswith(b"\n"):
                return
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                start = position + newline + 1
                break
        handle.seek(start)
        last = handle.read().decode("utf-8", errors="replace")
        if _line_values(path, 0, last):
            handle.write(b"\n")  # a complete record the reader accepts: keep it, end its line
        else:
            handle.truncate(start)


def read_json(path: str | os.PathLike, hint: str = "") -> Any:
    """A JSON document; a missing or unreadable file is one RecordError naming it (plus `hint`)."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not valid JSON ({getattr(exc, 'msg', exc)}){hint}") from None


def read_json_as(path: str | os.PathLike, schema: type[T] | TypeAdapter, what: str, hint: str = "") -> Any:
    """A JSON document validated by `schema` (a model, or a TypeAdapter such as a discriminated union);
    a missing, cut-short or foreign file is one RecordError: `path: field: problem (not <what>)`."""
    data = read_json(path, hint)
    try:
        return schema.validate_python(data) if isinstance(schema, TypeAdapter) else schema.model_validate(data)
    except ValidationError as exc:
        raise RecordError(f"{path}: {_describe(exc)} (not {what}){hint}") from None


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write a JSON document atomically (temp file + rename), so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def rewrite_jsonl(path: str | os.PathLike, records: Iterable[BaseModel | dict[str, Any]]) -> None:
    """Replace a JSONL file's contents atomically (temp file + rename): an interruption keeps the old file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with JsonlWriter(tmp, overwrite=True) as writer:
            writer.write_all(records)
    except BaseException:  # a record that fails halfway leaves the old file and no temp file behind
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def merge_jsonl(inputs: Iterable[str | os.PathLike], output: str | os.PathLike, key: str = "id") -> tuple[int, int]:
    """Join shard outputs into one file, keeping the first record of each `key`. Returns (kept, dropped)."""
    inputs = [Path(path) for path in inputs]
    output = Path(output)
    for path in inputs:
        if not path.is_file():
            raise RecordError(f"{path}: file not found")
        if path.resolve() == output.resolve():
            raise RecordError(f"{path}: the merge output cannot also be an input; choose another --output")
    counts = {"kept": 0, "dropped": 0}

    def first_of_each_key():
        seen: set[Any] = set()
        for path in inputs:
            for number, record in _complete_lines(path):
                if not isinstance(record, dict) or key not in record:
                    raise RecordError(f"{path}:{number}: {key}: missing (every record needs one to merge)")
                if record[key] in seen:
                    counts["dropped"] += 1
                    continue
                seen.add(record[key])
                counts["kept"] += 1
                yield record

    rewrite_jsonl(output, first_of_each_key())  # atomic: a bad shard line leaves an earlier merge intact
    return counts["kept"], counts["dropped"]
