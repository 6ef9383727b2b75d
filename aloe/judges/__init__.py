"""Judges are data: a prompt file plus a parser with a machine-checkable verdict format.

Every judgement keeps the judge's raw text beside the parsed value, so a better parser can
re-score old runs without new calls. A verdict that cannot be parsed is `value=None` with a
reason: counted in metrics and retried on the next run, never stored as a number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from collections.abc import Sequence
from typing import Generic, Literal, TypeVar

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
