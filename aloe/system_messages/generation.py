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

import datetime as dt
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aloe.jsonl import existing_ids, iter_records, write_json
from aloe.lockstep import REQUEST_FAILED, Check, ItemState, Outcome, generate_checked, run_lockstep
from aloe.messages import Message
from aloe.models.base import ChatModel, SamplingParams
from aloe.prompts import render
from aloe.records import Record
from aloe.runs import RunFiles
from aloe.system_messages.records import DIMENSIONS, Instruction, Preference, SystemMessageRow

PROMPTS = tuple(f"sysmsg_{name}" for name in
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
log = logging.getLogger("generate_system_messages")

KNOWN_ASPECTS = tuple(aspect for _, _, aspects in DIMENSION_GUIDE.values() for aspect in aspects)
STEPS = ("subdimension", "preference", "description", "system", "output")


@dataclass(frozen=True)
class GenerationSettings:
    sets: int = 3  # preference sets (system messages) per instruction, as in the released data
    max_attempts: int = 3  # samples per field before a row fails for this run
    # A subdimension no sample named falls back to the dimension's first example aspect no sibling took
    # (recorded in the row's raw texts), so small models get through; off: such a row fails.
    subdimension_fallback: bool = True
    system_tokens: int = 256  # a system message; the gold answer follows the run's max_new_tokens
    group_size: int = 64  # instructions run together through the five steps; rows are written per group
    # Tokens of the field steps: short on purpose, so small models stay on task.
    field_tokens: tuple[tuple[str, int], ...] = (("subdimension", 16), ("preference", 32), ("description", 96))


def row_id(instruction: Instruction, set_index: int) -> str:
    return f"{instruction.id}-s{set_index}"


@dataclass
class RowState:
    """One row in progress: the fields found so far and every raw text drawn for them."""

    instruction: Instruction
    set_index: int
    fields: dict[str, str] = field(default_factory=dict)  # "subdimension:style" -> "conciseness", "system" -> ...
    raw: dict[str, list[str]] = field(default_factory=dict)
    failure: str | None = None
    failed_step: str | None = None

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
    """The first sentence of the first line that holds something, without labels, bullets, quotes or a final stop."""
    for line in text.splitlines():
        phrase = _strip_wrapping(_SENTENCE_END.split(_strip_wrapping(line))[0].rstrip(".;:,")).rstrip(".;:,").strip()
        if phrase:
            words = len(phrase.split())
            if words > max_words:
                return None, f"{words} words where at most {max_words} were asked for"
            return phrase, None
    return None, "empty answer"


_QUOTED = re.compile(r"[\"“'‘*]+([^\"”'’*\n]{2,60})[\"”'’*]+")
_IS_X = re.compile(r"\b(?:is|are|be|:)\s+(?:the\s+|an?\s+)?(?:aspect\s+of\s+)?([^.,;:\n]{2,60}?)\s*[.!,;\n]", re.IGNORECASE)


def parse_subdimension(text: str, known: Sequence[str] = ()) -> tuple[list[str] | None, str | None]:
    """Candidate aspect names in order of preference: an "Aspect: X" line, a short quoted phrase,
    "... is X.", known aspect names the reply mentions (in order), and a short first line.

    Small models rarely answer with the bare name; each candidate is at most six words.
    """
    candidates: list[str] = []
    for line in text.splitlines():
        match = re.match(r"^\W*aspect\s*[:：]\s*(.+)$", line.strip(), re.IGNORECASE)
        if match:
            candidates.append(match.group(1))
    candidates += _QUOTED.findall(text) + _IS_X.findall(text + "\n")
    lowered = text.lower()
    mentioned = sorted((lowered.find(name), name) for name in known if name.lower() in lowered)
    candidates += [name for _, name in mentioned]
    candidates += [line for line in text.splitlines() if line.strip()][:1]
    cleaned: list[str] = []
    for candidate in candidates:
        phrase, before = candidate, None
        while phrase != before:  # "Aspect: Aspect: Format" -> "Format"
            before, phrase = phrase, _strip_wrapping(phrase).rstrip(".;:,!").strip()
        if phrase and len(phrase.split()) <= 6 and phrase.lower() not in (c.lower() for c in cleaned):
            cleaned.append(phrase)
    if not cleaned:
        return None, "no aspect name of at most six words in the answer"
    return cleaned, None


def parse_description(text: str) -> tuple[str | None, str | None]:
    """Up to three sentences of the answer's first paragraph, at least four words."""
    paragraph = next((part for part in re.split(r"\n\s*\n", text.strip()) if _strip_wrapping(part)), "")
    joined = " ".join(_strip_wrapping(line) for line in paragraph.splitlines() if line.strip())
    sentences = [s for s in _SENTENCE_END.split(joined) if s.strip()][:3]
    description = " ".join(sentences).strip()
    if len(description.split()) < 4:
        return None, "description shorter than four words"
    return description, None


def parse_system_message(text: str) -> tuple[str | None, str | None]:
    """One paragraph of at least ten words, ending at its last whole sentence (a reply may stop mid-sentence)."""
    body = " ".join(_strip_wrapping(line) for line in text.strip().splitlines() if line.strip())
    if body and body[-1] not in ".!?":
        cut = max(body.rfind(". "), body.rfind("! "), body.rfind("? "))
        body = body[:cut + 1] if cut > 0 else body.rstrip() + "."
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
    return _user(render("sysmsg_subdimension", instruction=state.instruction.prompt,
                        dimension_meaning=meaning, examples=", ".join(rotated)))


def preference_messages(state: RowState, dimension: str) -> list[Message]:
    return _user(render("sysmsg_preference", instruction=state.instruction.prompt,
                        dimension_name=DIMENSION_GUIDE[dimension][0],
                        subdimension=state.fields[f"subdimension:{dimension}"]))


def description_messages(state: RowState, dimension: str) -> list[Message]:
    return _user(render("sysmsg_description", instruction=state.instruction.prompt,
                        dimension_name=DIMENSION_GUIDE[dimension][0],
                        preference=state.fields[f"preference:{dimension}"]))


def format_preferences(preferences: Sequence[Preference]) -> str:
    return "\n".join(render("sysmsg_preference_line", dimension_name=DIMENSION_GUIDE[p.dimension][0],
                            subdimension=p.subdimension, preference=p.preference, description=p.description)
                     for p in preferences)


def system_message_messages(state: RowState) -> list[Message]:
    return _user(render("sysmsg_system_message", preferences=format_preferences(state.preference_set())))


def answer_messages(state: RowState) -> list[Message]:
    return [{"role": "system", "content": state.fields["system"]}, *_user(state.instruction.prompt)]


# ---------------------------------------------------------------- the engine


class SystemMessageGenerator:
    """Runs the five steps over a group of rows, each step one checked batch on the lockstep engine."""

    def __init__(self, model: ChatModel, params: SamplingParams, settings: GenerationSettings | None = None,
                 first_sample: int = 0):
        self.model = model
        self.params = params
        self.settings = settings or GenerationSettings()
        self.tokens = {**dict(self.settings.field_tokens), "system": self.settings.system_tokens}
        # A re-run that retries failed rows starts past the samples they drew (the cache replays those).
        self.first_sample = first_sample

    def states(self, instructions: Sequence[Instruction], skip: set[str] = frozenset()) -> list[RowState]:
        """The rows to generate: `sets` per instruction, minus the ids in `skip`."""
        return [RowState(instruction, s) for instruction in instructions for s in range(self.settings.sets)
                if row_id(instruction, s) not in skip]

    def run(self, states: Sequence[RowState]) -> None:
        """Fill every state's fields; a state that cannot be finished gets `failure` set."""
        for step in STEPS:
            self.run_step(step, states)

    def run_step(self, step: str, states: Sequence[RowState]) -> None:
        """One of the five steps (STEPS) for the states that have not failed, as one checked batch."""
        live = [state for state in states if not state.failure]
        if step == "subdimension":
            self._subdimensions(live)
        elif step in ("preference", "description"):
            build, parse = ((preference_messages, lambda text: parse_phrase(text, 20)) if step == "preference"
                            else (description_messages, parse_description))
            self._step(step, [(s, f"{step}:{d}", build(s, d)) for s in live for d in DIMENSIONS], parse)
        elif step == "system":
            # A system message cut at the token limit keeps its whole sentences (parse_system_message).
            self._step(step, [(s, "system", system_message_messages(s)) for s in live], parse_system_message)
        else:
            self._step(step, [(s, "output", answer_messages(s)) for s in live], parse_answer)

    def _params(self, step: str) -> SamplingParams:
        return self.params.replace(max_new_tokens=self.tokens[step]) if step in self.tokens else self.params

    def _record(self, state: RowState, key: str, outcome: Outcome) -> None:
        state.raw.setdefault(key, []).append(outcome.raw)
        if outcome.ok:
            state.fields[key] = outcome.value

    def _fail(self, state: RowState, step: str, key: str, reason: str) -> None:
        if not state.failure:
            state.failed_step, state.failure = step, f"{key}: {reason}"

    def _step(self, step: str, asks: list[tuple[RowState, str, list[Message]]], parse: Check) -> None:
        outcomes = generate_checked(self.model, [messages for _, _, messages in asks], self._params(step), parse,
                                    self.settings.max_attempts, first_sample=self.first_sample)
        for (state, key, _), outcome in zip(asks, outcomes):
            self._record(state, key, outcome)
            if not outcome.ok:
                self._fail(state, step, key, outcome.reason)

    @staticmethod
    def _parse_subdimension(text: str):
        return parse_subdimension(text, KNOWN_ASPECTS)

    def _subdimensions(self, states: Sequence[RowState]) -> None:
        """Like `_step`, plus: sibling sets of one instruction take different subdimensions of a dimension.

        One checked batch per attempt, so a subdimension a sibling already took is re-sampled like a
        parse failure; within an attempt the lower set index keeps a shared answer.
        """
        siblings: dict[str, list[RowState]] = {}
        for state in states:
            siblings.setdefault(state.instruction.id, []).append(state)
        pending = [(s, f"subdimension:{d}", subdimension_messages(s, d)) for s in states for d in DIMENSIONS]
        reasons: dict[tuple[int, str], str] = {}
        for attempt in range(self.settings.max_attempts):
            outcomes = generate_checked(self.model, [messages for _, _, messages in pending],
                                        self._params("subdimension"), self._parse_subdimension, 1,
                                        first_sample=self.first_sample + attempt)
            still = []
            for (state, key, messages), outcome in sorted(zip(pending, outcomes), key=lambda pair: pair[0][0].set_index):
                if outcome.ok:
                    # The first candidate no sibling has taken for this dimension.
                    taken = {other.fields.get(key, "").lower() for other in siblings[state.instruction.id]}
                    free = [candidate for candidate in outcome.value if candidate.lower() not in taken]
                    outcome = (Outcome(free[0], None, outcome.raw, 1) if free else
                               Outcome(None, f"{outcome.value[0]!r} is already a sibling set's subdimension",
                                       outcome.raw, 1))
                self._record(state, key, outcome)
                if not outcome.ok:
                    reasons[(id(state), key)] = outcome.reason
                    still.append((state, key, messages))
            pending = still
            if not pending:
                return
        for state, key, _ in pending:
            # A fallback stands in for a model that never named an aspect, not for a request that failed.
            if self.settings.subdimension_fallback and not reasons[(id(state), key)].startswith(REQUEST_FAILED):
                dimension = key.split(":")[1]
                taken = {other.fields.get(key, "").lower() for other in siblings[state.instruction.id]}
                free = [aspect for aspect in DIMENSION_GUIDE[dimension][2] if aspect.lower() not in taken]
                if free:
                    state.fields[key] = free[0]
                    state.raw.setdefault("fallback", []).append(key)
                    continue
            self._fail(state, "subdimension", key,
                       f"{reasons[(id(state), key)].removesuffix(' after 1 attempts')} "
                       f"(after {self.settings.max_attempts} attempts)")


# ---------------------------------------------------------------- the stage


@dataclass
class GenerationReport:
    """What one run of the stage did, for its one-line summary."""

    rows: int  # rows this run covers (instructions x sets)
    already: int  # rows already in the output
    written: int = 0
    failed: int = 0
    first_failure: str = ""


class _Failure(Record):
    id: str
    next_sample: int = 0


def next_first_sample(failures: Path) -> int:
    """Where the last run's failed rows stopped drawing samples: a retry draws new ones (the cache replays old ones)."""
    if not failures.exists():
        return 0
    return max((record.next_sample for record in iter_records(failures, _Failure)), default=0)


def generate_rows(run: RunFiles, instructions: Sequence[Instruction], settings: GenerationSettings,
                  params: SamplingParams, load_model: Callable[[], ChatModel],
                  provenance_of: Callable[[ChatModel], dict]) -> GenerationReport:
    """Generate every instruction's `settings.sets` rows into `run`'s files, resuming what is there.

    Finished rows are appended to the main file group by group; a row that failed goes to the failures
    file (rewritten each run) with its raw texts, and the next run retries it with samples it has not
    drawn. `load_model` is called only when a row is left to generate.
    """
    done = existing_ids(run.main)
    first_sample = next_first_sample(run.failures)
    missing = {instruction.id: sum(row_id(instruction, s) not in done for s in range(settings.sets))
               for instruction in instructions}
    report = GenerationReport(rows=settings.sets * len(instructions),
                              already=settings.sets * len(instructions) - sum(missing.values()))
    pending = [instruction for instruction in instructions if missing[instruction.id]]
    log.info("%d rows: %d already in %s, the rest from sample %d on", report.rows, report.already, run.main,
             first_sample)
    if not pending:
        return report
    model = load_model()
    generator = SystemMessageGenerator(model, params, settings, first_sample)
    write_json(run.provenance, provenance_of(model))
    with run.writers("rows", lambda: report.written) as (writer, failures):

        def fail(row: RowState, step: str, reason: str) -> None:
            failures.write({"id": row.id, "instruction_id": row.instruction.id, "set_index": row.set_index,
                            "step": step, "reason": reason, "next_sample": first_sample + settings.max_attempts,
                            "fields": row.fields, "raw": row.raw,
                            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
            report.failed += 1
            report.first_failure = report.first_failure or f"{row.id}: {reason}"

        def finish(state: ItemState[list[RowState]]) -> None:
            for row in state.item:
                if row.failure is None:
                    writer.write(row.row())
                    report.written += 1
                else:
                    fail(row, row.failed_step, row.failure)

        def fail_all(state: ItemState[list[RowState]], step: int, reason: str) -> None:
            for row in state.item:  # a model call failed for good: nothing of this group was written
                fail(row, STEPS[step], reason)

        def advance(active: list[ItemState[list[RowState]]], step: int) -> None:
            generator.run_step(STEPS[step], [row for state in active for row in state.item])

        def progress(start: int, end: int) -> None:
            log.info("instructions %d-%d done: %d rows written, %d failed so far", start + 1, end,
                     report.written, report.failed)

        # One item per instruction, so sibling sets always share a group (their subdimensions differ).
        run_lockstep([generator.states([instruction], done) for instruction in pending], len(STEPS), advance,
                     finish, fail_all, group_size=settings.group_size, on_group=progress, desc="instructions", unit="steps")
    return report
