"""Judges are data: a prompt file plus a parser with a machine-checkable verdict format.

Every judgement keeps the judge's raw text beside the parsed value, so a better parser can
re-score old runs without new calls. A verdict that cannot be parsed is `value=None` with a
reason: counted in metrics and retried on the next run, never stored as a number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from collections.abc import Sequence
from typing import Generic, Literal, TypeVar

from pydantic import Field

from aloe.records import Record

V = TypeVar("V")
T = TypeVar("T")


@dataclass
class Verdict(Generic[V]):
    value: V | None
    raw: str
    reason: str | None = None  # why value is None

    @property
    def parsed(self) -> bool:
        return self.value is not None

    def as_dict(self) -> dict:
        return asdict(self)


def agreement(picks: Sequence[T | None]) -> tuple[Literal["agree", "tie", "unparsed"], T | None]:
    """Combine the picks of the orders a pairwise item was asked in: the one home of this rule.

    Every order picked the same side: ("agree", side). Orders disagree: ("tie", None). An order
    without a verdict: ("unparsed", None).
    """
    if any(pick is None for pick in picks):
        return "unparsed", None
    if len(set(picks)) == 1:
        return "agree", picks[0]
    return "tie", None


class JudgeAttempt(Record):
    """One ask of a 1-5 score judge as stored in results: its raw text and what was read from it."""

    raw: str
    score: int | None = Field(default=None, ge=1, le=5)
    reason: str | None = None


class JudgedScore(Record):
    """A 1-5 score with every ask that produced it (None with the reason when no ask gave a readable verdict)."""

    score: int | None = Field(default=None, ge=1, le=5)
    reason: str | None = None
    attempts: list[JudgeAttempt] = Field(default_factory=list)
