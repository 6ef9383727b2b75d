"""Preference pairs: a prompt, the response a user chose, the one they rejected, and (after inference)
the persona that explains each side.

Readers take JSONL, JSON (an array), CSV and Parquet files, a Hugging Face dataset by name when the
hub is reachable, and ALOE conversation files (each turn's preferred/rejected replies, with the
chat before it as the prompt). The persona-tailoring authors' columns map onto the schema:
`chosen_persona_gold`/`rejected_persona_gold` are `chosen_persona`/`rejected_persona`, and their
retrieved personas keep the names `chosen_persona_retr`/`rejected_persona_retr`. A record without an
id gets one from its position and content.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from aloe.errors import RecordError
from aloe.messages import Message, format_transcript
from aloe.records import Conversation, Record

SIDES = ("chosen", "rejected")
DOMAINS = ("safety_qa", "community_qa", "assistant_dialogue", "mnemonics")  # the shipped data's domains
# The authors' dataset configs -> the domain whose prompts suit them.
DOMAIN_ALIASES = {"BeaverTails": "safety_qa", "SHP": "community_qa", "HHH": "assistant_dialogue",
                  "Anthropic_HHH": "assistant_dialogue", "Mnemonic": "mnemonics"}
# The authors' released column names -> ours.
AUTHOR_COLUMNS = {"chosen_persona_gold": "chosen_persona", "rejected_persona_gold": "rejected_persona"}


class PreferencePair(Record):
    """One preference pair. Personas are None until inference has run (or failed, with a reason)."""

    id: str = Field(min_length=1)
    prompt: str
    chosen: str
    rejected: str
    domain: str | None = None
    chosen_persona: str | None = None
    rejected_persona: str | None = None
    chosen_persona_raw: str | None = None  # the inferring model's text, kept for re-parsing
    rejected_persona_raw: str | None = None
    chosen_persona_reason: str | None = None  # why chosen_persona is None after inference
    rejected_persona_reason: str | None = None
    chosen_persona_retr: str | None = None  # a retrieved persona, as the authors' files carry it
    rejected_persona_retr: str | None = None
    history: list[dict[str, str]] | None = None  # ALOE pairs: the chat before the turn, as messages

    @field_validator("prompt", "chosen", "rejected")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    def persona(self, side: str) -> str | None:
        return getattr(self, f"{side}_persona")

    def response(self, side: str) -> str:
        return getattr(self, side)


def pair_id(position: int, prompt: str, chosen: str, rejected: str) -> str:
    digest = hashlib.sha1(json.dumps([prompt, chosen, rejected]).encode()).hexdigest()[:10]
    return f"pair-{position:05d}-{digest}"


def _validate(data: Any, where: str, position: int, domain: str | None) -> PreferencePair:
    if not isinstance(data, dict):
        raise RecordError(f"{where}: record: expected an object, got {type(data).__name__}")
    data = {AUTHOR_COLUMNS.get(key, key): value for key, value in data.items()}
    data = {key: (None if _is_missing(value) else value) for key, value in data.items()}
    if data.get("id") in (None, ""):
        data["id"] = pair_id(position, *(str(data.get(key) or "") for key in ("prompt", "chosen", "rejected")))
    elif not isinstance(data["id"], str):
        data["id"] = str(data["id"])
    if domain and not data.get("domain"):
        data["domain"] = domain
    try:
        return PreferencePair.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "record"
        message = "missing" if first["type"] == "missing" else first["msg"]
        raise RecordError(f"{where}: {field}: {message}") from None


def _is_missing(value: Any) -> bool:
    """Empty cells of CSV/Parquet files (NaN, None) are missing values, not text."""
    return value is None or (isinstance(value, float) and value != value)


def _rows(path: Path) -> list[tuple[str, Any]]:
    """(where, raw record) for every record of a file, by its suffix."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as handle:
                return [(f"{path}: row {n}", row) for n, row in enumerate(csv.DictReader(handle), start=2)]
        if suffix == ".parquet":
            import pandas as pd

            frame = pd.read_parquet(path)
            return [(f"{path}: record {n}", row) for n, row in enumerate(frame.to_dict(orient="records"), start=1)]
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecordError(f"{path}: record: not UTF-8 text") from None
    except (OSError, ValueError, ImportError) as exc:
        raise RecordError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{path}: record: not valid JSON ({exc.msg})") from None
        return [(f"{path}: record {n}", item) for n, item in enumerate(data, start=1)]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            if number == len(text.splitlines()) and not text.endswith("\n"):
                break  # a half-written last line of an interrupted run
            raise RecordError(f"{path}:{number}: record: not valid JSON ({exc.msg})") from None
    return rows


def read_pairs(path: str | Path, domain: str | None = None, *, allow_empty: bool = False) -> list[PreferencePair]:
    """Every pair of a file (JSONL, JSON, CSV, Parquet, or ALOE conversations), validated.

    `domain` fills records that have none. Problems raise RecordError naming file, record and field;
    duplicate ids are an error, since outputs are keyed by id.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file not found" + (" (it is a directory)" if path.is_dir() else ""))
    rows = _rows(path)
    if not rows and not allow_empty:
        raise RecordError(f"{path}: no records")
    pairs: list[PreferencePair] = []
    for where, row in rows:
        if isinstance(row, dict) and "conversations" in row:
            pairs.extend(conversation_pairs(row, where))
        else:
            pairs.append(_validate(row, where, len(pairs), domain))
    check_unique(path, pairs)
    return pairs


def check_unique(source: Any, pairs: list[PreferencePair]) -> None:
    seen: dict[str, int] = {}
    for number, pair in enumerate(pairs, start=1):
        if pair.id in seen:
            raise RecordError(f"{source}: record {number}: id: {pair.id!r} repeats record {seen[pair.id]}")
        seen[pair.id] = number


def conversation_pairs(data: dict, where: str) -> list[PreferencePair]:
    """One pair per turn of an ALOE conversation: the chat so far is the prompt, the turn's preferred
    and rejected replies are chosen and rejected."""
    try:
        conversation = Conversation.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RecordError(f"{where}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    pairs = []
    for index, turn in enumerate(conversation.conversations):
        history: list[Message] = conversation.history_before(index)
        pairs.append(PreferencePair(
            id=f"{conversation.id}-turn-{index + 1}", prompt=format_transcript(history), history=history,
            chosen=turn.assistant.preferred, rejected=turn.assistant.rejected, domain="aloe"))
    return pairs


def load_hub_pairs(name: str, config: str | None, split: str) -> list[PreferencePair]:
    """A Hugging Face dataset's split as pairs (e.g. nbalepur/persona-tailoring, config BeaverTails)."""
    try:
        from datasets import load_dataset

        dataset = load_dataset(name, config, split=split)
    except Exception as exc:  # the hub client raises many types; all mean "not available here"
        raise RecordError(f"{name} ({config or 'default'}/{split}): cannot load from the Hugging Face hub "
                          f"({str(exc).splitlines()[0]}); download it where the hub is reachable and pass the "
                          "file instead") from None
    where = f"{name}/{config or 'default'}/{split}"
    domain = DOMAIN_ALIASES.get(config or "", config)
    pairs = [_validate(row, f"{where}: record {n}", n - 1, domain) for n, row in enumerate(dataset, start=1)]
    check_unique(where, pairs)
    return pairs
