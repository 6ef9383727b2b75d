"""Schemas of every file the stages hand each other (DESIGN section 3)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Branch = Literal["preferred", "rejected"]


class Record(BaseModel):
    """A JSONL record: unknown keys are kept, so newer files pass through older code."""

    model_config = ConfigDict(extra="allow")


class Persona(Record):
    """One profile or personality in a persona pool."""

    id: str
    text: str = Field(min_length=1)
    source: Literal["seed", "generated"] = "seed"
    round: int = 0
    max_similarity: float | None = None

    @classmethod
    def from_bare_string(cls, text: str) -> "Persona":
        """The seed repository's pools hold one bare JSON string per line; its id is a content hash."""
        return cls(id="p-" + hashlib.sha1(text.encode()).hexdigest()[:12], text=text, source="seed")


class PairedReplies(Record):
    preferred: str
    rejected: str


ReplySource = Literal["hinted", "plain"]


class JudgedOrder(Record):
    """One ask of the pairwise preference judge: which reply was shown as A and as B, and what it said."""

    shown: list[ReplySource] = Field(min_length=2, max_length=2)  # [reply shown as A, reply shown as B]
    raw: str
    verdict: Literal["A", "B"] | None = None
    reason: str | None = None  # why verdict is None


class TurnJudgement(Record):
    """The preference judge's verdicts for one turn, asked in both orders.

    `outcome` is "agree" when both orders picked the same reply, "tie" when they disagreed and
    "unparsed" when an order gave no verdict; `winner` is the reply that became `preferred`
    (by agreement, or by the run's --on-tie rule) and `hinted` the branch holding the hinted reply.
    """

    orders: list[JudgedOrder]
    outcome: Literal["agree", "tie", "unparsed"]
    winner: ReplySource
    resolved_by: str  # "agreement" or "on-tie:<rule>"
    hinted: Branch
    rejudged: int = 0  # later runs that asked again about an order left without a verdict


class Turn(Record):
    """One user message and the two assistant replies made for it.

    `chosen` names the reply the conversation continued with; files from the original
    ALOE code lack it (None), and readers then treat `preferred` as the continuing branch.
    """

    user: str
    assistant: PairedReplies
    chosen: Branch | None = None
    inferred_profile: str | None = None
    inferred_personality: str | None = None
    judge: TurnJudgement | None = None  # absent in files from the original ALOE code

    @property
    def decided(self) -> bool | None:
        """Whether both judge orders picked the same reply; None when the file records no judgement.

        A tie or a missing verdict was labelled by the run's --on-tie rule, not by the judge, so
        training leaves such turns out unless asked (`--include-undecided`).
        """
        return None if self.judge is None else self.judge.outcome == "agree"

    @property
    def verdict_missing(self) -> bool:
        """Whether an order of the judge gave no verdict (asked again on the next run)."""
        return self.judge is not None and self.judge.outcome == "unparsed"

    @property
    def continued_reply(self) -> str:
        return getattr(self.assistant, self.chosen or "preferred")


class Conversation(Record):
    """A tree-structured conversation: the continuing branch plus one sibling leaf per turn."""

    id: str = ""
    profile: str
    personality: str
    conversations: list[Turn] = Field(min_length=1)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("profile", "personality")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _stable_id(self) -> "Conversation":
        # Files from the original ALOE code carry no id: derive one from the content, so resume,
        # merge and de-duplication work on them and the same record always gets the same id.
        if not self.id:
            content = json.dumps([self.profile, self.personality, [turn.user for turn in self.conversations]])
            self.id = "conv-" + hashlib.sha1(content.encode()).hexdigest()[:12]
        return self

    def history_before(self, turn_index: int) -> list[dict[str, str]]:
        """Chat messages along the continuing branch up to and including turn `turn_index`'s user message."""
        messages: list[dict[str, str]] = []
        for turn in self.conversations[:turn_index]:
            messages.append({"role": "user", "content": turn.user})
            messages.append({"role": "assistant", "content": turn.continued_reply})
        messages.append({"role": "user", "content": self.conversations[turn_index].user})
        return messages


def content_id(prefix: str, *parts: Any) -> str:
    """A stable id from a record's content, for files whose records carry none."""
    return prefix + hashlib.sha1(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:12]


class ChatMessage(Record):
    role: Literal["system", "user", "assistant"]
    content: str


class PreferencePair(Record):
    """A preference pair: `chosen` over `rejected` as replies to `prompt` (optionally under a system message)."""

    id: str = ""
    prompt: str = Field(min_length=1)
    chosen: str
    rejected: str
    domain: str | None = None
    system: str | None = None

    @model_validator(mode="after")
    def _stable_id(self) -> "PreferencePair":
        if not self.id:
            self.id = content_id("pair-", self.prompt, self.chosen, self.rejected)
        return self


class SystemMessageRow(Record):
    """A Multifaceted-Collection row: the answer `output` to `prompt` under the system message `system`."""

    id: str = ""
    system: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    output: str = Field(min_length=1)
    main_source: str | None = None
    preference_set: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _stable_id(self) -> "SystemMessageRow":
        if not self.id:
            self.id = content_id("sysmsg-", self.system, self.prompt)
        return self
