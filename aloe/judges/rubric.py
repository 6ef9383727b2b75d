"""The rubric judge: absolute grading of one response against one rubric, as an integer from 1 to 5.

The judge is data: the prompt `rubric_judge.txt` (instruction, response, a reference answer shown as
a score-5 example, the rubric's criteria and its five score descriptions; optionally the system
message through `rubric_judge_system.txt`) plus `parse_rubric_score`, whose verdict format is
`[RESULT] N`. Only that format counts: the last verdict in the text wins (a judge that revises itself
ends with its final grade), it must be an integer in 1-5, and numbers in the feedback are never read.
An unparsed verdict is None with a reason; the caller asks once more with `rubric_judge_reminder.txt`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aloe.judges import Verdict
from aloe.messages import Message
from aloe.prompts import render

PROMPT = "rubric_judge"
SYSTEM_SECTION = "rubric_judge_system"
REMINDER = "rubric_judge_reminder"
PROMPTS = (PROMPT, SYSTEM_SECTION, REMINDER)
SCORE_RANGE = (1, 5)

# "[RESULT] 4", "[RESULT]: 4", "[RESULT] (4)", "[RESULT] 4/5", "**[RESULT]** 4"; the value is checked afterwards.
_VERDICT = re.compile(r"\[\s*RESULT\s*\]\**\s*[:=]?\s*\(?\s*([+-]?\d+(?:\.\d+)?)?", re.IGNORECASE)


def parse_rubric_score(text: str) -> Verdict[int]:
    """The integer N of the last `[RESULT] N` in the text; anything else is unparsed with a reason."""
    low, high = SCORE_RANGE
    verdicts = list(_VERDICT.finditer(text))
    if not verdicts:
        return Verdict(None, raw=text, reason="no [RESULT] N verdict in the judge's output")
    number = verdicts[-1].group(1)
    if number is None:
        return Verdict(None, raw=text, reason="the last [RESULT] holds no number")
    value = float(number)
    shown = number.lstrip("+")
    if not value.is_integer():
        return Verdict(None, raw=text, reason=f"score {shown} is not an integer")
    if not low <= value <= high:
        return Verdict(None, raw=text, reason=f"score {shown} is outside {low}-{high}")
    return Verdict(int(value), raw=text)


def judge_messages(instruction: str, response: str, reference_answer: str, criteria: str,
                   score_descriptions: Mapping[str, str], system: str | None = None) -> list[Message]:
    """The judge's prompt for one rubric; `system` is shown only when given (the judge-sees-system setting)."""
    section = f"\n{render(SYSTEM_SECTION, system=system)}\n" if system is not None else ""
    prompt = render(PROMPT, system_section=section, instruction=instruction, response=response,
                    reference_answer=reference_answer, criteria=criteria,
                    **{f"score{level}": score_descriptions[str(level)] for level in range(1, 6)})
    return [{"role": "user", "content": prompt}]


def reminder_messages(first: list[Message], verdict: Verdict[int]) -> list[Message]:
    """The one retry: the first exchange, then a reminder that names what was wrong."""
    return [*first, {"role": "assistant", "content": verdict.raw},
            {"role": "user", "content": render(REMINDER, reason=verdict.reason)}]
