"""Responses for prompts under a condition: any method's generations, in one record and one generator.

A *condition* is whatever a method puts beside the prompt (a persona, a system message) or None.
How prompt and condition become chat messages is the method's business (it hands over a
`ResponseRequest`); this module batches the requests through the backend (cached, so a re-run is
free), keeps prompt, condition and response as separate fields, and flags degenerate outputs
instead of dropping them: a response cut at the token limit, an empty one, or one that repeats an
8-gram (a model stuck in a loop).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from aloe.errors import AloeError, RecordError
from aloe.jsonl import check_unique_ids, read_records
from aloe.lockstep import generate_some
from aloe.messages import Message
from aloe.models.base import ChatModel, SamplingParams
from aloe.progress import Progress
from aloe.prompts import render
from aloe.records import NonBlank, Record

REPEAT_NGRAM = 8
FLAGS = ("truncated", "empty", "repeated_ngram", "prefix_reattached")  # what `flags` may hold


class PromptRecord(Record):
    """A prompt to answer: an id, the prompt, and any other fields (one of them may be the condition)."""

    id: str = Field(min_length=1)
    prompt: NonBlank


class Response(PromptRecord):
    """One generated response. `flags` names what is degenerate about it (empty list: nothing)."""

    condition: str | None = None
    response: str
    finish_reason: str = "stop"
    flags: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class ResponseRequest:
    """What to generate: the messages the model sees, and the fields the record keeps.

    `prefix` is text the response must start with (a forced opening such as "Obfuscate sounds like"):
    when the model does not begin with it, it is re-attached, and the record says so in `flags`;
    with `prefix_in_prompt` the prompt already ends with it (raw text the model continues), so the
    reply is its continuation and the prefix is put back in front without a flag.
    """

    id: str
    prompt: str
    condition: str | None
    messages: tuple[Message, ...]
    prefix: str = ""
    prefix_in_prompt: bool = False
    extra: dict = field(default_factory=dict)  # copied into the record (e.g. the condition's kind)
    sample_index: int = 0  # repeated samples of one prompt (best-of-N) differ here, and so in the cache


# Where the condition goes: a system message (models trained with it there, instruct models), a
# paragraph after the prompt in the user message (models trained without it), or nowhere (baselines).
PLACEMENTS = ("system", "after-prompt", "none")
AFTER_PROMPT = "prompt_with_condition"


def condition_messages(prompt: str, condition: str | None, placement: str) -> tuple[Message, ...]:
    """The chat a model sees for a prompt under a condition placed as `placement`."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if not condition or placement == "none":
        return ({"role": "user", "content": prompt},)
    if placement == "system":
        return ({"role": "system", "content": condition}, {"role": "user", "content": prompt})
    return ({"role": "user", "content": render(AFTER_PROMPT, prompt=prompt, condition=condition)},)


def prompt_requests(path, condition_field: str | None, placement: str) -> list[ResponseRequest]:
    """Requests for a JSONL file of prompt records, the condition read from `condition_field` (None: no condition)."""
    records = read_records(path, PromptRecord, unique_ids=True)
    requests = []
    for number, record in enumerate(records, start=1):
        condition = None
        if condition_field:
            condition = getattr(record, condition_field, None)
            if not isinstance(condition, str) or not condition.strip():
                raise RecordError(f"{path}: record {number}: {condition_field}: missing or empty "
                                  "(the condition this run places beside the prompt)")
        requests.append(ResponseRequest(id=record.id, prompt=record.prompt, condition=condition,
                                        messages=condition_messages(record.prompt, condition, placement)))
    return requests


def repeats_ngram(text: str, n: int = REPEAT_NGRAM) -> bool:
    """Whether some run of n words occurs twice in the text."""
    words = text.split()
    seen = set()
    for start in range(len(words) - n + 1):
        gram = tuple(words[start:start + n])
        if gram in seen:
            return True
        seen.add(gram)
    return False


def degenerate_flags(text: str, finish_reason: str) -> list[str]:
    flags = []
    if finish_reason == "length":
        flags.append("truncated")
    if not text.strip():
        flags.append("empty")
    if repeats_ngram(text):
        flags.append("repeated_ngram")
    return flags


def attach_prefix(text: str, prefix: str, in_prompt: bool = False) -> tuple[str, bool]:
    """(response starting with `prefix`, whether it had to be re-attached: not when the prompt ended with it)."""
    if not prefix:
        return text, False
    stripped = text.lstrip()
    if stripped.lower().startswith(prefix.strip().lower()):
        return stripped, False
    return f"{prefix.strip()} {stripped}".strip(), not in_prompt


def generate_responses(
    model: ChatModel,
    requests: Sequence[ResponseRequest],
    params: SamplingParams,
    on_response: Callable[[Response], None],
    group_size: int = 64,
    on_failure: Callable[[ResponseRequest, str], None] | None = None,
) -> int:
    """Generate every request, `group_size` per backend call, calling `on_response` as each group finishes.

    Records are handed over in request order within a group, so a killed run keeps whole groups and
    the response cache keeps every reply that arrived. A request that failed after the backend's
    retries goes to `on_failure(request, reason)` and the run goes on (a re-run asks it again); without
    `on_failure`, every other request is still made and handed over, then an AloeError names the failed
    ones. Returns the number of responses made.
    """
    made = 0
    failed: list[str] = []
    with Progress(len(requests), "responses", "responses", enabled=bool(requests)) as progress:
        for start in range(0, len(requests), group_size):
            group = requests[start:start + group_size]
            replies, failures = generate_some(model, [request.messages for request in group], params,
                                              [request.sample_index for request in group], progress)
            for position, why in failures.items():
                if on_failure is not None:
                    on_failure(group[position], why)
                failed.append(f"{group[position].id}: {why}")
            for request, reply in zip(group, replies):
                if reply is None:
                    continue
                text, reattached = attach_prefix(reply.text, request.prefix, request.prefix_in_prompt)
                flags = degenerate_flags(reply.text, reply.finish_reason)
                if reattached:
                    flags.append("prefix_reattached")
                on_response(Response(id=request.id, prompt=request.prompt, condition=request.condition,
                                     response=text, finish_reason=reply.finish_reason, flags=flags, **request.extra))
                made += 1
    if failed and on_failure is None:
        raise AloeError(f"{len(failed)} of {len(requests)} requests failed (first: {failed[0]}); the other responses "
                        "are in the response cache: re-run the same command to ask the failed ones again")
    return made


# End-of-text markers that released generations keep as text at the end of a response.
EOS_MARKERS = ("<|end_of_text|>", "<|eot_id|>", "<|endoftext|>", "<|im_end|>", "</s>", "<eos>")


def read_responses(path) -> list[Response]:
    """A responses file: our JSONL of Response records, or a JSON array of {"response", "prompt"}
    (the persona-tailoring authors' released generations, pretty-printed or not; ids are positions).

    Duplicate ids and records without a response or prompt are errors naming file, record and field.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file not found")
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    if not head.startswith(b"["):
        return read_records(path, Response, unique_ids=True)
    records = _read_response_array(path)
    check_unique_ids(path, records)
    return records


def _read_response_array(path: Path) -> list[Response]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: record: not UTF-8 text ({exc.reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # The authors' own reader takes one JSON array per line and joins them.
        data = []
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                part = json.loads(line) if line.strip() else []
            except json.JSONDecodeError as exc:
                raise RecordError(f"{path}:{number}: record: not valid JSON ({exc.msg})") from None
            if not isinstance(part, list):
                raise RecordError(f"{path}:{number}: record: expected a JSON array, got {type(part).__name__}")
            data.extend(part)
    if not data:
        raise RecordError(f"{path}: no records")
    records = []
    for position, item in enumerate(data):
        where = f"{path}: record {position}"
        if not isinstance(item, dict):
            raise RecordError(f"{where}: record: expected a JSON object, got {type(item).__name__}")
        for key in ("prompt", "response"):
            if not isinstance(item.get(key), str):
                raise RecordError(f"{where}: {key}: missing or not a string")
        prompt, persona = split_templated_prompt(item["prompt"])
        if not prompt.strip():
            raise RecordError(f"{where}: prompt: must not be empty")
        text, ended = strip_eos(item["response"].split("Prompt:")[0])
        records.append(Response(id=f"item-{position}", prompt=prompt, condition=persona, response=text,
                                finish_reason="stop" if ended else "unknown",
                                flags=degenerate_flags(text, "stop")))
    return records


def split_templated_prompt(text: str) -> tuple[str, str | None]:
    """(prompt, persona) of a released generation's input: the last "Prompt: ... [Persona: ...] Response:"
    block of the raw template (few-shot exemplars before it are dropped); plain text stays as it is."""
    if "Prompt:" not in text:
        return text.strip(), None
    block = text.split("Prompt:")[-1].split("Response:")[0]
    prompt, _, persona = block.partition("Persona:")
    return prompt.strip(), persona.strip() or None


def strip_eos(text: str) -> tuple[str, bool]:
    """(text without surrounding space and trailing end-of-text markers, whether a marker was there)."""
    text = text.strip()
    ended = False
    while text.endswith(EOS_MARKERS):
        marker = next(marker for marker in EOS_MARKERS if text.endswith(marker))
        text, ended = text[:-len(marker)].rstrip(), True
    return text, ended
