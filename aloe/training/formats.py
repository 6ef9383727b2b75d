"""Data-format adapters: each turns one kind of training file into trl's rows.

A method asks for one of two row kinds (`ROW_KINDS`): `completion` rows `{"prompt", "completion"}`
(SFT) or `preference` rows `{"prompt", "chosen", "rejected"}` (DPO, ORPO, reward models), either
as chat-message lists (trl's conversational format, rendered through the model's chat template) or
as plain strings (trl's standard format, for base models without a template).

An adapter is one `DataFormat` entry in `FORMATS`: how to recognise a file from its first record,
its record schema, and a builder per row kind taking (records, options) where options are the
parsed flags. A format adds its own flags with `add_args`. To add a format, write the builders and
append an entry; nothing else changes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import model_validator

from aloe.errors import TrainingError
from aloe.jsonl import iter_records, read_records
from aloe.messages import Message, truncate_left
from aloe.records import ChatMessage, Conversation, PreferencePair, Record, SystemMessageRow

# Row kind -> the keys holding what is learned (the prompt is always "prompt").
ROW_KINDS = {"completion": ("completion",), "preference": ("chosen", "rejected")}


@dataclass
class Rows:
    """An adapter's output: trl rows, the counts that describe the input, and anything else the summary reports."""

    rows: list[dict[str, Any]]
    counts: dict[str, int]  # the first key names the input's unit ("conversations": 12)
    report: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[list, argparse.Namespace], Rows]


@dataclass(frozen=True)
class DataFormat:
    name: str
    description: str
    schema: type[Record]
    detect: Callable[[dict], bool]  # on the first record of a file, as a plain dict
    completion: Builder | None  # None: this format cannot give SFT rows
    preference: Builder | None  # None: this format holds no pairs
    add_args: Callable[[argparse._ActionsContainer], None] = lambda group: None


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def assistant(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


def with_system(system: str | None, messages: list[Message]) -> list[Message]:
    return ([{"role": "system", "content": system}] if system else []) + messages


def learned_side(options: argparse.Namespace) -> str:
    """Which reply SFT learns from a pair: the preferred one, or with `--data rejected` the control condition."""
    return "rejected" if getattr(options, "data", None) == "rejected" else "chosen"


# ---------------------------------------------------------------------------------------------
# aloe: the tree-structured conversations
# ---------------------------------------------------------------------------------------------

def sft_examples(conversations: Sequence[Conversation], branch: str) -> list[dict[str, list[Message]]]:
    """One prompt-completion example per turn.

    The prompt is the history along the branch the conversation continued with, up to and including
    the turn's user message; the completion is the turn's `branch` reply. So a `rejected` example
    still sees the conversation that actually happened, and the first user message appears once.
    """
    return [{"prompt": conversation.history_before(index), "completion": assistant(getattr(turn.assistant, branch))}
            for conversation in conversations for index, turn in enumerate(conversation.conversations)]


def dpo_examples(conversations: Sequence[Conversation]) -> list[dict[str, list[Message]]]:
    """One preference pair per turn: the continuing-branch history, `preferred` as chosen, `rejected` as rejected."""
    return [{"prompt": conversation.history_before(index), "chosen": assistant(turn.assistant.preferred),
             "rejected": assistant(turn.assistant.rejected)}
            for conversation in conversations for index, turn in enumerate(conversation.conversations)]


def _aloe_rows(examples: Callable[[list[Conversation]], list[dict]]) -> Builder:
    def build(conversations: list[Conversation], options: argparse.Namespace) -> Rows:
        rows, turns = [], {"decided": 0, "undecided": 0, "unjudged": 0, "kept": 0}
        for conversation in conversations:
            for turn, row in zip(conversation.conversations, examples([conversation])):
                kind = {True: "decided", False: "undecided", None: "unjudged"}[turn.decided]
                turns[kind] += 1
                if turn.decided is not False or options.include_undecided:
                    rows.append(row)
        turns["kept"] = len(rows)
        if not rows and turns["undecided"]:
            raise TrainingError(f"all {turns['undecided']} judged turns are undecided (the judge orders disagreed or "
                                "gave no verdict): nothing to train on; --include-undecided keeps them")
        return Rows(rows, {"conversations": len(conversations), "turns": sum(len(c.conversations) for c in conversations)},
                    {"turns": turns, "include_undecided": options.include_undecided})

    return build


def _aloe_completion(conversations: list[Conversation], options: argparse.Namespace) -> Rows:
    if options.data is None:
        raise TrainingError("--data is required for ALOE conversations: preferred or rejected")
    return _aloe_rows(lambda convs: sft_examples(convs, options.data))(conversations, options)


def _aloe_args(group) -> None:
    group.add_argument("--include-undecided", action="store_true",
                       help="ALOE: also train on turns whose judge orders disagreed or gave no verdict "
                            "(labelled by --on-tie, not by the judge; left out by default)")


# ---------------------------------------------------------------------------------------------
# pairs: {"id", "prompt", "chosen", "rejected", "domain"?, "system"?, "chosen_persona"?, "rejected_persona"?}
# ---------------------------------------------------------------------------------------------

# --persona: which persona sits in the prompt, and so which side is learned (persona tailoring).
PERSONA_SIDES = {"none": (), "chosen": ("chosen",), "rejected": ("rejected",), "all": ("chosen", "rejected")}
OTHER_SIDE = {"chosen": "rejected", "rejected": "chosen"}


def pair_prompt(pair: PreferencePair, options: argparse.Namespace, persona: str | None = None) -> list[Message]:
    """The prompt a pair is trained under: a persona or its optional system message, then the prompt.

    The persona is a system message: an instruct model's template renders it as one, and the paper's
    raw template for base models (training/templates/persona_raw.jinja) as its `Persona:` line.
    """
    return with_system(persona or pair.system, [user(pair.prompt)])


def persona_examples(pairs: list[PreferencePair], options: argparse.Namespace) -> tuple[list[tuple[PreferencePair, str]], dict]:
    """(pair, side) for every persona the run trains with, and the counts of pairs left out.

    A pair whose persona inference gave nothing usable (a reason is stored) is left out and counted;
    a pair that inference never ran on is an error naming it.
    """
    sides = PERSONA_SIDES[getattr(options, "persona", "none")]
    chosen_half = _half(pairs, getattr(options, "half", None))
    selected, skipped = [], 0
    for pair in chosen_half:
        for side in sides:
            if pair.persona(side):
                selected.append((pair, side))
            elif getattr(pair, f"{side}_persona_reason"):
                skipped += 1
            else:
                raise TrainingError(f"pair {pair.id}: {side}_persona: missing; run data_generation/infer_personas.py "
                                    "on the training pairs first, or train with --persona none")
    return selected, {"persona": options.persona, "half": getattr(options, "half", None),
                      "pairs_in_half": len(chosen_half), "persona_missing": skipped}


def _half(pairs: list[PreferencePair], half: str | None) -> list[PreferencePair]:
    """The first or second half of the pairs in file order (SFT and DPO on disjoint halves), or all."""
    if half is None:
        return pairs
    middle = (len(pairs) + 1) // 2
    return pairs[:middle] if half == "first" else pairs[middle:]


def _pairs_completion(pairs: list[PreferencePair], options: argparse.Namespace) -> Rows:
    if getattr(options, "persona", "none") == "none":
        side = learned_side(options)
        used = _half(pairs, getattr(options, "half", None))
        rows = [{"prompt": pair_prompt(pair, options), "completion": assistant(getattr(pair, side))} for pair in used]
        return Rows(rows, {"pairs": len(pairs)}, {"persona": "none", "half": getattr(options, "half", None)})
    selected, report = persona_examples(pairs, options)
    rows = [{"prompt": pair_prompt(pair, options, pair.persona(side)), "completion": assistant(pair.response(side))}
            for pair, side in selected]
    return Rows(rows, {"pairs": len(pairs)}, report)


def _pairs_preference(pairs: list[PreferencePair], options: argparse.Namespace) -> Rows:
    if getattr(options, "persona", "none") == "none":
        used = _half(pairs, getattr(options, "half", None))
        rows = [{"prompt": pair_prompt(pair, options), "chosen": assistant(pair.chosen),
                 "rejected": assistant(pair.rejected)} for pair in used]
        return Rows(rows, {"pairs": len(pairs)}, {"persona": "none", "half": getattr(options, "half", None)})
    # Under the rejected persona, the rejected response is the one that user prefers.
    selected, report = persona_examples(pairs, options)
    rows = [{"prompt": pair_prompt(pair, options, pair.persona(side)), "chosen": assistant(pair.response(side)),
             "rejected": assistant(pair.response(OTHER_SIDE[side]))} for pair, side in selected]
    return Rows(rows, {"pairs": len(pairs)}, report)


def _pairs_args(group) -> None:
    group.add_argument("--persona", choices=tuple(PERSONA_SIDES), default="none",
                       help="pairs: the persona in the prompt (persona tailoring): chosen (learn the chosen response "
                            "under P_C), rejected (the rejected one under P_R), all (both), none (plain baseline)")
    group.add_argument("--half", choices=("first", "second"), default=None,
                       help="pairs: train on the first or second half of the file (SFT and DPO on disjoint halves)")


# ---------------------------------------------------------------------------------------------
# system_messages: Multifaceted Collection rows {"system", "prompt", "output"}
# ---------------------------------------------------------------------------------------------

def _system_completion(rows: list[SystemMessageRow], options: argparse.Namespace) -> Rows:
    out = [{"prompt": with_system(row.system, [user(row.prompt)]), "completion": assistant(row.output)} for row in rows]
    return Rows(out, {"rows": len(rows)})


# ---------------------------------------------------------------------------------------------
# preference: trl's own preference format (strings, or message lists; the prompt may be implicit)
# ---------------------------------------------------------------------------------------------

Text = str | list[ChatMessage]


class TrlPreference(Record):
    prompt: Text | None = None
    chosen: Text
    rejected: Text

    @model_validator(mode="after")
    def _one_shape(self) -> "TrlPreference":
        shapes = {isinstance(value, str) for value in (self.prompt, self.chosen, self.rejected) if value is not None}
        if len(shapes) > 1:
            raise ValueError("prompt, chosen and rejected must all be strings or all be message lists")
        return self

    def row(self) -> dict[str, Any]:
        """Explicit prompt: an implicit one is the messages chosen and rejected share before they differ."""
        def plain(value):
            return value if isinstance(value, str) else [m.model_dump(include={"role", "content"}) for m in value]

        chosen, rejected = plain(self.chosen), plain(self.rejected)
        if self.prompt is not None:
            return {"prompt": plain(self.prompt), "chosen": chosen, "rejected": rejected}
        if isinstance(chosen, str):
            raise ValueError("a string pair needs a prompt")
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        return {"prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}


def _trl_rows(pairs: list[TrlPreference]) -> list[dict[str, Any]]:
    try:
        rows = [pair.row() for pair in pairs]
    except ValueError as exc:
        raise TrainingError(f"trl preference rows: {exc}") from None
    if len({isinstance(row["chosen"], str) for row in rows}) > 1:
        raise TrainingError("trl preference rows mix strings and message lists: use one shape per run")
    return rows


def _trl_completion(pairs: list[TrlPreference], options: argparse.Namespace) -> Rows:
    side = learned_side(options)
    return Rows([{"prompt": row["prompt"], "completion": row[side]} for row in _trl_rows(pairs)], {"pairs": len(pairs)})


def _trl_preference(pairs: list[TrlPreference], options: argparse.Namespace) -> Rows:
    return Rows(_trl_rows(pairs), {"pairs": len(pairs)})


def _is_str(record: dict, *keys: str) -> bool:
    return all(isinstance(record.get(key), str) for key in keys)


# Detection tries the entries in order; the first whose `detect` accepts a file's first record wins
# (pairs before system-message rows: pairs built from system messages may keep an `output` column).
FORMATS: dict[str, DataFormat] = {entry.name: entry for entry in (
    DataFormat("aloe", "ALOE tree-structured conversations", Conversation,
               detect=lambda r: "conversations" in r,
               completion=_aloe_completion, preference=_aloe_rows(dpo_examples), add_args=_aloe_args),
    DataFormat("pairs", 'preference pairs {"id", "prompt", "chosen", "rejected", "system"?, "chosen_persona"?, ...}',
               PreferencePair, detect=lambda r: _is_str(r, "prompt", "chosen", "rejected"),
               completion=_pairs_completion, preference=_pairs_preference, add_args=_pairs_args),
    DataFormat("system_messages", "Multifaceted Collection rows: system, prompt, output", SystemMessageRow,
               detect=lambda r: _is_str(r, "system", "prompt", "output"),
               completion=_system_completion, preference=None),
    DataFormat("trl", "trl's preference format (strings or message lists, prompt optional)", TrlPreference,
               detect=lambda r: "chosen" in r and "rejected" in r,
               completion=_trl_completion, preference=_trl_preference),
)}


def detect_format(path: str | os.PathLike) -> DataFormat:
    """The format of a file, from its first record."""
    first = next(iter(iter_records(path, Record)), None)
    if first is None:
        raise TrainingError(f"{path}: no records")
    record = first.model_dump()
    for entry in FORMATS.values():
        if entry.detect(record):
            return entry
    raise TrainingError(f"{path}: cannot tell the data format from the first record (keys: {', '.join(record)}); "
                        f"known formats: {', '.join(FORMATS)}")


def read_rows(paths: Sequence[str], kind: str, options: argparse.Namespace, format_name: str = "auto") -> tuple[str, Rows]:
    """Rows of `kind` from data files (one format across them), and the format's name."""
    formats = {FORMATS[format_name].name if format_name != "auto" else detect_format(path).name for path in paths}
    if len(formats) > 1:
        raise TrainingError(f"{', '.join(paths)}: the files hold different formats ({', '.join(sorted(formats))}); "
                            "train on one format at a time")
    entry = FORMATS[formats.pop()]
    build = getattr(entry, kind)
    if build is None:
        raise TrainingError(f"{paths[0]}: {entry.description} hold no {kind} pairs for this method; "
                            f"known formats: {', '.join(FORMATS)}")
    records = [record for path in paths for record in read_records(path, entry.schema, unique_ids=True)]
    rows = build(records, options)
    return entry.name, rows


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Fitting rows to the model
# ---------------------------------------------------------------------------------------------

def token_count(tokenizer) -> Callable[[Any], int]:
    """Length in tokens of a message list rendered through the chat template, or of a plain string."""

    def count(value) -> int:
        if isinstance(value, str):
            return len(tokenizer(value, add_special_tokens=True)["input_ids"])
        return len(tokenizer.apply_chat_template(list(value), tokenize=True, return_dict=False))

    return count


def fit_left(examples: list[dict], count: Callable[[Any], int], max_length: int,
             completion_keys: Sequence[str]) -> tuple[list[dict], int, int]:
    """Cut each prompt from the left at whole messages so prompt + longest completion fits `max_length`.

    trl truncates only from the right, which would cut the reply being learned; here the oldest
    exchanges go first. An example whose last user message and reply alone overflow (or a plain-text
    example that overflows) is dropped. Returns (kept examples, how many were truncated, how many were dropped).
    """
    kept, truncated, dropped = [], 0, 0
    for example in examples:
        def length(prompt) -> int:
            return max(count(prompt + example[key]) for key in completion_keys)

        prompt = example["prompt"] if isinstance(example["prompt"], str) else \
            truncate_left(example["prompt"], length, max_length)
        if length(prompt) > max_length:
            dropped += 1
            continue
        if len(prompt) < len(example["prompt"]):
            truncated += 1
            example = {**example, "prompt": prompt}
        kept.append(example)
    return kept, truncated, dropped


def is_conversational(row: dict) -> bool:
    return not isinstance(row["prompt"], str)
