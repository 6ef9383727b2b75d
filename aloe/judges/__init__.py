"""Judges are data: a prompt file plus a parser with a machine-checkable verdict format.

Every judgement keeps the judge's raw text beside the parsed value, so a better parser can
re-score old runs without new calls. A verdict that cannot be parsed is `value=None` with a
reason: counted in metrics and retried on the next run, never stored as a number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


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
