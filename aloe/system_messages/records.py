"""Record types of system-message generalization, in the released Multifaceted Collection's columns.

Released rows (`main_source`, `preference_set`, `system`, `prompt`, `output`) and the released
benchmark's items (`source`, `preference_set`, `system`, `prompt`, `reference_answer`, `rubrics`) read
unchanged; ours add an id, the raw model texts and provenance beside those columns.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from aloe.records import Record, content_id
from aloe.records import SystemMessageRow as TrainingRow

Dimension = Literal["style", "background_knowledge", "informativeness", "harmlessness"]
DIMENSIONS: tuple[Dimension, ...] = ("style", "background_knowledge", "informativeness", "harmlessness")
SCORE_KEYS = ("1", "2", "3", "4", "5")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


class Preference(Record):
    """One dimension of a preference set: e.g. style -> conciseness -> "bullet points" + why."""

    dimension: Dimension
    subdimension: str
    preference: str
    description: str

    _check = field_validator("subdimension", "preference", "description")(_not_blank)


def check_preference_set(preferences: list[Preference]) -> list[Preference]:
    """Exactly the four dimensions, each once, in the canonical order."""
    names = [preference.dimension for preference in preferences]
    if sorted(names) != sorted(DIMENSIONS):
        raise ValueError(f"needs one preference for each of {', '.join(DIMENSIONS)}, got {', '.join(names) or 'none'}")
    return sorted(preferences, key=lambda preference: DIMENSIONS.index(preference.dimension))


class Instruction(Record):
    """An instruction to write preference sets for. A file may omit ids (derived from the text)."""

    id: str = ""
    prompt: str
    source: str = "unknown"

    _check = field_validator("prompt")(_not_blank)

    @model_validator(mode="after")
    def _stable_id(self) -> "Instruction":
        if not self.id:
            self.id = content_id("instr-", self.prompt)
        return self


class SystemMessageRow(TrainingRow):
    """The training row (system, prompt, output) with what this method adds: the validated preference set,
    the instruction it answers (siblings share it), which set it is, and the raw model texts."""

    main_source: str = "unknown"
    original_source: str | None = None
    preference_set: list[Preference]
    instruction_id: str | None = None
    set_index: int | None = None  # which of the instruction's sets
    raw: dict[str, Any] = Field(default_factory=dict)  # every model text the row was parsed from

    _check_text = field_validator("system", "prompt", "output")(_not_blank)
    _check_set = field_validator("preference_set")(check_preference_set)

    @model_validator(mode="after")
    def _siblings(self) -> "SystemMessageRow":
        # Released rows carry no instruction id: siblings are the rows that share a prompt.
        if not self.instruction_id:
            self.instruction_id = content_id("instr-", self.prompt)
        return self


class Rubric(Record):
    criteria: str
    score_descriptions: dict[str, str]

    _check = field_validator("criteria")(_not_blank)

    @field_validator("score_descriptions")
    @classmethod
    def _five_levels(cls, value: dict[str, str]) -> dict[str, str]:
        missing = [key for key in SCORE_KEYS if not str(value.get(key, "")).strip()]
        extra = sorted(set(value) - set(SCORE_KEYS))
        if missing or extra:
            raise ValueError(f"needs descriptions of scores 1-5; missing or empty: {missing}, unexpected: {extra}")
        return {key: value[key] for key in SCORE_KEYS}


class BenchItem(Record):
    """A Multifaceted Bench item: an unseen preference set and system message, a reference answer, 4 rubrics."""

    id: str = ""
    source: str
    preference_set: list[Preference]
    system: str
    prompt: str
    reference_answer: str
    rubrics: list[Rubric] = Field(min_length=4, max_length=4)

    _check_text = field_validator("source", "system", "prompt", "reference_answer")(_not_blank)
    _check_set = field_validator("preference_set")(check_preference_set)

    @model_validator(mode="after")
    def _stable_id(self) -> "BenchItem":
        if not self.id:
            self.id = content_id("mf-", self.prompt, self.system)
        return self
