"""The pairwise preference judge: which of two replies would this user prefer?

The judge is data: a prompt plus `parse_preference`, whose verdict format is machine-checkable
(`[[A]]` or `[[B]]`). Two prompts share that parser (`JUDGE_PROMPTS`): `transcript` (ours,
`preference_judge.txt`: the persona, the conversation so far, the user's message, the two replies, a
short reason, then the verdict) and `paper` (`preference_judge_paper.txt`: the layout of the ALOE
paper's judge, the persona and the two replies only, the verdict without analysis). Each is asked in
both orders, so a position bias shows up as disagreement (a tie) instead of as a label. Raw outputs and
the order shown are always kept.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from aloe.judges import Verdict, agreement
from aloe.messages import Message, format_transcript
from aloe.prompts import fields, render
from aloe.records import Branch, JudgedOrder, PairedReplies, ReplySource, TurnJudgement

JUDGE_PROMPTS = {"transcript": "preference_judge", "paper": "preference_judge_paper"}  # --judge-prompt
PROMPT = JUDGE_PROMPTS["transcript"]
ON_TIE_RULES = ("hinted", "skip", "random")
# Each item is asked twice: hinted shown as A, then plain shown as A.
ORDERS: tuple[tuple[ReplySource, ReplySource], ...] = (("hinted", "plain"), ("plain", "hinted"))

_VERDICT = re.compile(r"\[\[\s*([AB])\s*\]\]", re.IGNORECASE)


def parse_preference(text: str) -> Verdict[str]:
    """`[[A]]` or `[[B]]` anywhere in the text (repeats allowed); anything else is unparsed with a reason."""
    letters = {letter.upper() for letter in _VERDICT.findall(text)}
    if len(letters) == 1:
        return Verdict(letters.pop(), raw=text)
    if not letters:
        return Verdict(None, raw=text, reason="no [[A]] or [[B]] verdict in the judge's output")
    return Verdict(None, raw=text, reason="both [[A]] and [[B]] in the judge's output")


@dataclass(frozen=True)
class PreferenceItem:
    """What the judge sees for one turn: the true persona, the chat before it, and the two replies."""

    profile: str
    personality: str
    history: tuple[Message, ...]  # the continuing branch before this turn's user message
    user_message: str
    hinted: str
    plain: str


def judge_messages(item: PreferenceItem, shown: Sequence[ReplySource], prompt: str = PROMPT) -> list[Message]:
    """The ask of one order; `prompt` takes the fields it names (the paper's layout shows no transcript)."""
    replies = {"hinted": item.hinted, "plain": item.plain}
    values = {
        "profile": item.profile,
        "personality": item.personality,
        "transcript": format_transcript(item.history) or "(nothing yet: this is the first message)",
        "user_message": item.user_message,
        "reply_a": replies[shown[0]],
        "reply_b": replies[shown[1]],
    }
    return [{"role": "user", "content": render(prompt, **{name: values[name] for name in fields(prompt)})}]


def judged_order(shown: Sequence[ReplySource], verdict: Verdict[str]) -> JudgedOrder:
    return JudgedOrder(shown=list(shown), raw=verdict.raw, verdict=verdict.value, reason=verdict.reason)


def picked(order: JudgedOrder) -> ReplySource | None:
    """The reply an order's verdict points at, or None when it gave no verdict."""
    if order.verdict is None:
        return None
    return order.shown[0] if order.verdict == "A" else order.shown[1]


def branch_of(source: ReplySource, winner: ReplySource) -> Branch:
    """The one mapping from the judged replies (hinted, plain) to the stored branches: the winner is `preferred`."""
    return "preferred" if source == winner else "rejected"


def paired_replies(winner: ReplySource, hinted: str, plain: str) -> PairedReplies:
    """The turn's two replies stored under their branch names."""
    return PairedReplies(**{branch_of("hinted", winner): hinted, branch_of("plain", winner): plain})


def combine(orders: Sequence[JudgedOrder], on_tie: str, rng: random.Random) -> TurnJudgement | None:
    """One turn's judgement from both orders; None when `on_tie` is "skip" and the orders did not agree.

    Agreement gives the label. A disagreement (tie) or a missing verdict is resolved by `on_tie`:
    "hinted" prefers the hinted reply, "random" draws from `rng`, "skip" returns None.
    """
    if on_tie not in ON_TIE_RULES:
        raise ValueError(f"on_tie must be one of {ON_TIE_RULES}, got {on_tie!r}")
    outcome, winner = agreement([picked(order) for order in orders])
    if outcome == "agree":
        resolved_by = "agreement"
    elif on_tie == "skip":
        return None
    else:
        winner = "hinted" if on_tie == "hinted" else rng.choice(["hinted", "plain"])
        resolved_by = f"on-tie:{on_tie}"
    return TurnJudgement(
        orders=list(orders), outcome=outcome, winner=winner, resolved_by=resolved_by,
        hinted=branch_of("hinted", winner),
    )


class PreferenceJudge:
    """Builds the judge prompts for a batch (both orders of every item, 2N prompts) and parses replies.

    Calling the model is the caller's job, so one lockstep batch can hold every item's two asks.
    """

    orders = ORDERS

    def __init__(self, prompt: str = PROMPT):
        self.prompt = prompt

    def asks(self, items: Sequence[PreferenceItem]) -> list[tuple[int, tuple[ReplySource, ReplySource], list[Message]]]:
        """(item position, order shown, messages) for every order of every item, orders outermost."""
        return [(position, shown, judge_messages(item, shown, self.prompt))
                for shown in self.orders for position, item in enumerate(items)]

    @staticmethod
    def parse(text: str) -> Verdict[str]:
        return parse_preference(text)
