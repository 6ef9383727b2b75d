"""The ALOE alignment judge: how well is one reply tailored to this user, as an integer from 1 to 5?

The judge is data: the prompt `alignment_judge.txt` plus `parse_score`, whose verdict format is
machine-checkable (`[[score: 4]]`) and may sit anywhere in prose. An output that holds no verdict,
a verdict outside 1-5, a non-integer or two different scores is unparsed with a reason; the caller
asks once more with `alignment_judge_reminder.txt` and otherwise stores None with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aloe.judges import Verdict
from aloe.messages import Message
from aloe.prompts import render

PROMPT = "alignment_judge"
REMINDER = "alignment_judge_reminder"
PROMPTS = (PROMPT, REMINDER)
SCORE_RANGE = (1, 5)

# A bracketed verdict on one line; what is inside is checked separately so malformed ones get a reason.
_BRACKETS = re.compile(r"\[\[([^\[\]\n]{0,40})\]\]")
_INSIDE = re.compile(r"^\s*(?:score\s*[:=]?\s*)?([+-]?\d+(?:\.\d+)?)\s*(?:/\s*5\s*)?$", re.IGNORECASE)
# Without brackets, a first line that holds nothing but a score ("4", "Score: 4", "4/5.") is still an
# unambiguous answer, which small judges give more often than the bracketed form.
_BARE_LINE = re.compile(r"^\W*(?:score\s*[:=]?\s*)?([+-]?\d+(?:\.\d+)?)\s*(?:/\s*5)?\W*$", re.IGNORECASE)


def parse_score(text: str) -> Verdict[int]:
    """The integer score of `[[score: N]]` (also `[[N]]`, `[[Score: N/5]]`) anywhere in the text.

    Repeating the same verdict is fine; any other case is unparsed with a reason a person can read.
    Only when no bracketed verdict exists is a first line holding just a score ("4", "Score: 4") read.
    """
    low, high = SCORE_RANGE
    inside = [match.group(1) for match in _BRACKETS.finditer(text)]
    numbers = [match.group(1) for match in (_INSIDE.match(part) for part in inside) if match]
    if not inside:
        first_line = next((line for line in text.splitlines() if line.strip()), "")
        bare = _BARE_LINE.match(first_line)
        numbers = [bare.group(1)] if bare else []
    if not numbers:
        if inside:
            return Verdict(None, raw=text, reason=f"verdict [[{inside[0].strip()}]] holds no number")
        return Verdict(None, raw=text, reason="no [[score: N]] verdict in the judge's output")
    values = sorted({float(number) for number in numbers})
    if len(values) > 1:
        shown = " and ".join(_format(value) for value in values)
        return Verdict(None, raw=text, reason=f"conflicting scores {shown} in the judge's output")
    value = values[0]
    if not value.is_integer():
        return Verdict(None, raw=text, reason=f"score {_format(value)} is not an integer")
    if not low <= value <= high:
        return Verdict(None, raw=text, reason=f"score {_format(value)} is outside {low}-{high}")
    return Verdict(int(value), raw=text)


def _format(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def judge_messages(profile: str, personality: str, user_message: str, reply: str) -> list[Message]:
    """The judge's prompt: the true persona, the user's latest message and the reply to rate."""
    prompt = render(PROMPT, profile=profile, personality=personality, user_message=user_message, reply=reply)
    return [{"role": "user", "content": prompt}]


def reminder_messages(first: list[Message], verdict: Verdict[int]) -> list[Message]:
    """The retry: the first exchange, then a stricter reminder that names what was wrong."""
    return [*first, {"role": "assistant", "content": verdict.raw},
            {"role": "user", "content": render(REMINDER, reason=verdict.reason)}]


@dataclass
class ScoreJudgement:
    """A turn's score with every ask that produced it (the raw texts are kept for re-scoring)."""

    attempts: list[Verdict[int]] = field(default_factory=list)

    @property
    def score(self) -> int | None:
        return self.attempts[-1].value if self.attempts else None

    @property
    def reason(self) -> str | None:
        if not self.attempts:
            return "not judged"
        last = self.attempts[-1]
        if last.parsed:
            return None
        return f"{last.reason} (after {len(self.attempts)} asks)"

    def as_dict(self) -> dict:
        return {"score": self.score, "reason": self.reason,
                "attempts": [{"raw": v.raw, "score": v.value, "reason": v.reason} for v in self.attempts]}
