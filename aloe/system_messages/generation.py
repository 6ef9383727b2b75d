"""Multifaceted data generation: instruction -> preference sets -> system messages -> gold answers.

For every instruction, `sets` preference sets are written, each with one preference per dimension,
in five steps. Each step is one batch over every row of the group (local batching or API
concurrency), a short call that asks for one field:

1. subdimension, per (row, dimension): an aspect of the dimension that matters for this instruction;
2. preference, per (row, dimension): what exactly the user wants about that aspect (a phrase);
3. description, per (row, dimension): one to three sentences on that preference;
4. system message, per row: the four preferences written as one persona-style paragraph;
5. gold answer, per row: the instruction answered under that system message (system role).

Parsing is lenient (labels, quotes, bullets and extra lines are dropped) and every answer is checked;
an answer that fails its check is re-sampled, up to `max_attempts` samples. Sibling sets of one
instruction must differ: a subdimension already taken by a sibling for that dimension is re-sampled.
A row that still fails is reported with its raw texts and tried again on the next run with fresh
sample indices; a row is only handed on once every step has succeeded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aloe.messages import Message
from aloe.models.base import ChatModel, SamplingParams
from aloe.prompts import render
from aloe.system_messages.records import DIMENSIONS, Instruction, Preference, SystemMessageRow

PROMPTS = tuple(f"system_messages/{name}" for name in
                ("subdimension", "preference", "description", "system_message", "preference_line"))

# What each dimension means to the generator, and example aspects (the released data's frequent ones).
DIMENSION_GUIDE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "style": ("style", "how the answer is written: its length, tone, structure and format",
              ("conciseness", "clarity", "vividness", "formality", "format")),
    "background_knowledge": ("background knowledge", "how much the reader already knows about the topic",
                             ("novice", "intermediate", "expert", "familiarity with basic terms")),
    "informativeness": ("informativeness", "what kind of content the answer should hold",
                        ("practicality", "depth", "creativity", "efficiency", "relevance")),
    "harmlessness": ("harmlessness", "how the answer stays safe, accurate and respectful",
                     ("safety", "accuracy", "sensitivity", "trustworthiness", "morality")),
}
STEPS = ("subdimension", "preference", "description", "system", "output")


@dataclass(frozen=True)
class GenerationSettings:
    sets: int = 3  # preference sets (system messages) per instruction, as in the released data
    max_attempts: int = 3  # samples per field before a row fails for this run
    # Tokens per step: the field steps are short on purpose, so small models stay on task.
    step_tokens: tuple[tuple[str, int], ...] = (("subdimension", 16), ("preference", 32), ("description", 96),
                                                ("system", 256))


def row_id(instruction: Instruction, set_index: int) -> str:
    return f"{instruction.id}-s{set_index}"


@dataclass
class RowState:
    """One row in progress: the fields found so far and every raw text drawn for them."""

    instruction: Instruction
    set_index: int
    first_sample: int = 0  # sample indices start here: a retried row draws samples it has not drawn before
    fields: dict[str, str] = field(default_factory=dict)  # "subdimension:style" -> "conciseness", "system" -> ...
    raw: dict[str, list[str]] = field(default_factory=dict)
    failure: str | None = None
    failed_step: str | None = None
    samples_drawn: int = 0

    @property
    def id(self) -> str:
        return row_id(self.instruction, self.set_index)

    def preference_set(self) -> list[Preference]:
        return [Preference(dimension=d, subdimension=self.fields[f"subdimension:{d}"],
                           preference=self.fields[f"preference:{d}"], description=self.fields[f"description:{d}"])
                for d in DIMENSIONS]

    def row(self) -> SystemMessageRow:
        return SystemMessageRow(
            id=self.id, main_source=self.instruction.source, preference_set=self.preference_set(),
            system=self.fields["system"], prompt=self.instruction.prompt, output=self.fields["output"],
            instruction_id=self.instruction.id, set_index=self.set_index, raw=self.raw,
        )


# ---------------------------------------------------------------- lenient parsers: (value, None) or (None, reason)

_LABEL = re.compile(r"^\s*(?:[-*•>#\d.)\s]+)?\s*(?:\*\*)?\s*(?:answer|aspect|subdimension|preference|description|"
                    r"system message|system prompt|response)\s*(?:\*\*)?\s*[:：-]\s*", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•>#]+|\d+[.)])\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _strip_wrapping(text: str) -> str:
    text = _LABEL.sub("", text.strip())
    text = _BULLET.sub("", text)
    return text.strip().strip("*_`\"'“”‘’ ").strip()


def parse_phrase(text: str, max_words: int) -> tuple[str | None, str | None]:
    """The first line that holds something, without labels, bullets, quotes or a final full stop."""
    for line in text.splitlines():
        phrase = _strip_wrapping(line).rstrip(".;:,").strip()
        if phrase:
            words = len(phrase.split())
            if words > max_words:
                return None, f"{words} words where at most {max_words} were asked for"
            return phrase, None
    return None, "empty answer"


def parse_description(text: str) -> tuple[str | None, str | None]:
    """Up to three sentences of the answer's first paragraph, at least four words."""
    paragraph = next((part for part in re.split(r"\n\s*\n", text.strip()) if _strip_wrapping(part)), "")
    joined = " ".join(_strip_wrapping(line) for line in paragraph.splitlines() if line.strip())
    sentences = [s for s in _SENTENCE_END.split(joined) if s.strip()][:3]
    description = " ".join(sentences).strip()
    if len(description.split()) < 4:
        return None, "description shorter than four words"
    return description, None


def parse_system_message(text: str, truncated: bool = False) -> tuple[str | None, str | None]:
    """One paragraph of at least ten words; a reply cut at the token limit keeps its whole sentences."""
    body = " ".join(_strip_wrapping(line) for line in text.strip().splitlines() if line.strip())
    if truncated:
        cut = max(body.rfind(". "), body.rfind("! "), body.rfind("? "))
        body = body[:cut + 1] if cut > 0 else body
        if body and body[-1] not in ".!?":
            body = body.rstrip() + "."
    if len(body.split()) < 10:
        return None, "system message shorter than ten words"
    return body, None


def parse_answer(text: str) -> tuple[str | None, str | None]:
    answer = text.strip()
    return (answer, None) if answer else (None, "empty answer")


# ---------------------------------------------------------------- prompts


def _user(prompt: str) -> list[Message]:
    return [{"role": "user", "content": prompt}]


def subdimension_messages(state: RowState, dimension: str) -> list[Message]:
    name, meaning, examples = DIMENSION_GUIDE[dimension]
    # Sibling sets see the examples in a different order, which steers them toward different aspects.
    shift = state.set_index % len(examples)
    rotated = examples[shift:] + examples[:shift]
    return _user(render("system_messages/subdimension", instruction=state.instruction.prompt,
                        dimension_meaning=meaning, examples=", ".join(rotated)))


def preference_messages(state: RowState, dimension: str) -> list[Message]:
    return _user(render("system_messages/preference", instruction=state.instruction.prompt,
                        dimension_name=DIMENSION_GUIDE[dimension][0],
                        subdimension=state.fields[f"subdimension:{dimension}"]))


def description_messages(state: RowState, dimension: str) -> list[Message]:
    return _user(render("system_messages/description", instruction=state.instruction.prompt,
                        dimension_name=DIMENSION_GUIDE[dimension][0],
                        preference=state.fields[f"preference:{dimension}"]))


def format_preferences(preferences: Sequence[Preference]) -> str:
    return "\n".join(render("system_messages/preference_line", dimension_name=DIMENSION_GUIDE[p.dimension][0],
                            subdimension=p.subdimension, preference=p.preference, description=p.description)
                     for p in preferences)


def system_message_messages(state: RowState) -> list[Message]:
    return _user(render("system_messages/system_message", preferences=format_preferences(state.preference_set())))


def answer_messages(state: RowState) -> list[Message]:
    return [{"role": "system", "content": state.fields["system"]}, *_user(state.instruction.prompt)]


# ---------------------------------------------------------------- the engine

Ask = tuple[RowState, str]  # (row, field key)


class SystemMessageGenerator:
    """Runs the five steps over a group of rows, each step one batch with bounded re-sampling."""

    def __init__(self, model: ChatModel, params: SamplingParams, settings: GenerationSettings | None = None):
        self.model = model
        self.params = params
        self.settings = settings or GenerationSettings()
        self.tokens = dict(self.settings.step_tokens)

    def states(self, instructions: Sequence[Instruction], first_samples: dict[str, int] | None = None,
               skip: set[str] = frozenset()) -> list[RowState]:
        """The rows to generate: `sets` per instruction, minus `skip`, retried rows starting past their old samples."""
        first_samples = first_samples or {}
        return [RowState(instruction, s, first_samples.get(row_id(instruction, s), 0))
                for instruction in instructions for s in range(self.settings.sets)
                if row_id(instruction, s) not in skip]

    def run(self, states: Sequence[RowState]) -> None:
        """Fill every state's fields; a state that cannot be finished gets `failure` set."""
        by_instruction: dict[str, list[RowState]] = {}
        for state in states:
            by_instruction.setdefault(state.instruction.id, []).append(state)

        def sibling_taken(state: RowState, key: str, value: str) -> str | None:
            taken = {s.fields.get(key, "").lower() for s in by_instruction[state.instruction.id] if s is not state}
            return f"{value!r} is already a sibling set's {key.split(':')[1]} subdimension" if value.lower() in taken else None

        per_dimension = [(state, dimension) for state in states for dimension in DIMENSIONS]
        self._step("subdimension", [(s, f"subdimension:{d}", subdimension_messages(s, d)) for s, d in per_dimension],
                   lambda reply: parse_phrase(reply.text, 6), sibling_taken)
        self._step("preference", [(s, f"preference:{d}", preference_messages(s, d)) for s, d in per_dimension
                                  if not s.failure], lambda reply: parse_phrase(reply.text, 20))
        self._step("description", [(s, f"description:{d}", description_messages(s, d)) for s, d in per_dimension
                                   if not s.failure], lambda reply: parse_description(reply.text))
        self._step("system", [(s, "system", system_message_messages(s)) for s in states if not s.failure],
                   lambda reply: parse_system_message(reply.text, reply.finish_reason == "length"))
        self._step("output", [(s, "output", answer_messages(s)) for s in states if not s.failure],
                   lambda reply: parse_answer(reply.text))

    def _step(self, step: str, asks: list[tuple[RowState, str, list[Message]]],
              parse: Callable, conflict: Callable[[RowState, str, str], str | None] | None = None) -> None:
        params = self.params.replace(max_new_tokens=self.tokens[step]) if step in self.tokens else self.params
        pending = list(asks)
        reasons: dict[tuple[int, str], str] = {}
        for attempt in range(self.settings.max_attempts):
            pending = [ask for ask in pending if not ask[0].failure]
            if not pending:
                return
            replies = self.model.generate([messages for _, _, messages in pending], params,
                                          [state.first_sample + attempt for state, _, _ in pending])
            still = []
            # In set order, so the first set keeps a subdimension and its later siblings re-sample.
            for (state, key, messages), reply in sorted(zip(pending, replies), key=lambda pair: pair[0][0].set_index):
                state.raw.setdefault(key, []).append(reply.text)
                state.samples_drawn = max(state.samples_drawn, attempt + 1)
                value, reason = parse(reply)
                if value is not None and conflict is not None:
                    reason = conflict(state, key, value)
                    value = None if reason else value
                if value is None:
                    reasons[(id(state), key)] = reason
                    still.append((state, key, messages))
                else:
                    state.fields[key] = value
            pending = still
        for state, key, _ in pending:
            if not state.failure:
                state.failed_step = step
                state.failure = (f"{key}: {reasons[(id(state), key)]} "
                                 f"(after {self.settings.max_attempts} samples)")
