"""The pairwise judge: which of two responses to the same prompt is better by one criterion?

A criterion is a prompt file named `pairwise_<criterion>.txt` (quality and personalization beside the
shared prompts; a method adds one by adding a file to its prompts/ folder). A template may use any of the fields
`{prompt}`, `{condition}`, `{response_a}`, `{response_b}` (a method's own pairwise prompt may use
other fields: it names them in its items' context); the verdict format is `[[A]]`/`[[B]]`
(`parse_preference`), and a first line holding only the letter is read too, which small judges
write more often than the brackets.

Every item is asked in both orders. The same side picked twice is a win for that side, different
sides a tie, and an order without a verdict leaves the item unparsed (counted, and asked again on
the next run as a new sample). Identical responses are a tie without a call. Raw texts are kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from aloe.errors import AloeError
from aloe.judges import Verdict, agreement
from aloe.judges.preference import parse_preference
from aloe.lockstep import REQUEST_FAILED, generate_some
from aloe.messages import Message
from aloe.models.base import ChatModel, SamplingParams
from aloe.progress import Progress
from aloe.prompts import available, fields, render
from aloe.records import Record

PREFIX = "pairwise_"
Side = Literal["a", "b"]
ORDERS: tuple[tuple[Side, Side], ...] = (("a", "b"), ("b", "a"))
Outcome = Literal["a", "b", "tie", "unparsed"]

_NAMED = re.compile(r"\b(?:response|reply|answer|description|option)\s+\(?([AB])\b\)?", re.IGNORECASE)
_BARE = re.compile(r"^\W*(?:(?:response|reply|answer|verdict)\s*:?\s*)?\(?([AB])\)?\W*$", re.IGNORECASE)


def criteria() -> list[str]:
    """The criteria that have a prompt file (`pairwise_<criterion>.txt`, shared or in a method's prompts/)."""
    return sorted(name.removeprefix(PREFIX) for name in available() if name.startswith(PREFIX))


def criterion_prompt(criterion: str) -> str:
    if criterion not in criteria():
        raise AloeError(f"unknown criterion {criterion!r}: known criteria are {', '.join(criteria())} "
                        f"(each is a prompt file {PREFIX}<criterion>.txt in aloe/prompts/ or a method's prompts/)")
    return PREFIX + criterion


def needs_condition(criterion: str) -> bool:
    return "condition" in fields(criterion_prompt(criterion))


def parse_choice(text: str) -> Verdict[str]:
    """`[[A]]`/`[[B]]` anywhere. Without brackets: a first line holding only the letter ("B", "Response A"),
    else the one letter the text names as "response X" / "description X" (both named: unparsed)."""
    verdict = parse_preference(text)
    if verdict.parsed or "[[" in text:
        return verdict
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    bare = _BARE.match(first_line)
    if bare:
        return Verdict(bare.group(1).upper(), raw=text)
    named = {letter.upper() for letter in _NAMED.findall(text)}
    if len(named) == 1:
        return Verdict(named.pop(), raw=text)
    return verdict


@dataclass(frozen=True)
class PairwiseItem:
    """Two things to compare (`a`, `b`: responses, or personas for a method's judge) and the other
    fields the prompt shows (`prompt`, `condition`, ...)."""

    id: str
    a: str
    b: str
    context: Mapping[str, str | None] = field(default_factory=dict)


class PairwiseOrder(Record):
    """One ask: which response was shown first, what the judge wrote, and the letter it chose."""

    shown: list[Side] = Field(min_length=2, max_length=2)
    raw: str
    verdict: Literal["A", "B"] | None = None
    reason: str | None = None
    sample: int = 0

    @property
    def pick(self) -> Side | None:
        if self.verdict is None:
            return None
        return self.shown[0] if self.verdict == "A" else self.shown[1]


class PairwiseJudgement(Record):
    """One item judged by one criterion. `outcome` is the side that won both orders, a tie or unparsed."""

    id: str
    criterion: str
    outcome: Outcome
    identical: bool = False
    orders: list[PairwiseOrder] = Field(default_factory=list)


def outcome_of(orders: Sequence[PairwiseOrder]) -> Outcome:
    kind, side = agreement([order.pick for order in orders])
    return side if kind == "agree" else kind


class PairwiseJudge:
    """Asks one prompt about many items: both orders of every item in one batch.

    `criterion` names a shared criterion (`pairwise_<criterion>.txt`); a method's own pairwise judge
    passes `prompt` instead (e.g. "persona_accuracy") and `sides`, the template fields the
    two compared texts fill (default `response_a`, `response_b`).
    """

    def __init__(self, criterion: str | None = None, *, prompt: str | None = None,
                 sides: tuple[str, str] = ("response_a", "response_b")):
        self.criterion = criterion or prompt
        self.prompt = prompt or criterion_prompt(criterion)
        self.fields = fields(self.prompt)
        self.sides = sides

    def messages(self, item: PairwiseItem, shown: Sequence[Side]) -> list[Message]:
        texts = {"a": item.a, "b": item.b}
        values = {**item.context, self.sides[0]: texts[shown[0]], self.sides[1]: texts[shown[1]]}
        for name in sorted(self.fields):
            if not (values.get(name) or "").strip():
                raise AloeError(f"item {item.id}: {name}: empty, and the judge prompt {self.prompt!r} shows it")
        return [{"role": "user", "content": render(self.prompt, **{name: values[name] for name in self.fields})}]

    def judge(self, model: ChatModel, items: Sequence[PairwiseItem], params: SamplingParams,
              previous: Mapping[str, PairwiseJudgement] | None = None) -> list[PairwiseJudgement]:
        """A judgement per item, in order. A previous judgement is kept where every order has a verdict;
        its unparsed orders are asked again as the next sample (a new cache key), the rest are kept.
        A request that failed after its retries leaves its order unparsed with the reason; the next run
        asks the same sample again (nothing was answered, so nothing is cached)."""
        previous = previous or {}
        orders: dict[str, list[PairwiseOrder | None]] = {}
        asks = []
        for item in items:
            if item.a.strip() == item.b.strip():
                continue
            old = previous.get(item.id)
            kept = [order if order.verdict is not None else None for order in old.orders] if old else [None, None]
            orders[item.id] = kept
            for slot, shown in enumerate(ORDERS):
                if kept[slot] is None:
                    sample = _next_sample(old.orders[slot]) if old else 0
                    asks.append((item, slot, shown, sample))
        with Progress(len(asks), "judging", "asks", enabled=bool(asks)) as progress:
            replies, failures = generate_some(model, [self.messages(item, shown) for item, _, shown, _ in asks],
                                              params, [sample for *_, sample in asks], progress)
        for position, ((item, slot, shown, sample), reply) in enumerate(zip(asks, replies)):
            if reply is None:
                orders[item.id][slot] = PairwiseOrder(shown=list(shown), raw="", reason=failures[position],
                                                      sample=sample)
                continue
            verdict = parse_choice(reply.text)
            orders[item.id][slot] = PairwiseOrder(shown=list(shown), raw=verdict.raw, verdict=verdict.value,
                                                  reason=verdict.reason, sample=sample)
        results = []
        for item in items:
            if item.id not in orders:
                results.append(PairwiseJudgement(id=item.id, criterion=self.criterion, outcome="tie", identical=True))
                continue
            done = [order for order in orders[item.id] if order is not None]
            results.append(PairwiseJudgement(id=item.id, criterion=self.criterion, outcome=outcome_of(done),
                                             orders=done))
        return results


def _next_sample(order: PairwiseOrder) -> int:
    """The sample to ask an unparsed order as: the next one, or the same when its request failed."""
    failed = (order.reason or "").startswith(REQUEST_FAILED)
    return order.sample if failed else order.sample + 1


# ---------------------------------------------------------------- stored judgements


def read_judgements(path, identity: dict) -> dict[tuple[str, str], PairwiseJudgement]:
    """(criterion, id) -> judgement of an earlier run with the same `identity` (inputs, judge, prompts);
    judgements of anything else are not reused."""
    from pathlib import Path

    from aloe.jsonl import read_records

    if not Path(path).exists():
        return {}
    records = read_records(path, PairwiseJudgement, allow_empty=True)
    return {(record.criterion, record.id): record for record in records
            if getattr(record, "identity", None) == identity}


def write_judgements(path, judged: Mapping[str, Sequence[PairwiseJudgement]], identity: dict) -> None:
    """Every judgement with its raw texts and the run's identity, replacing the file atomically."""
    from aloe.jsonl import rewrite_jsonl

    rewrite_jsonl(path, [{**result.model_dump(mode="json"), "identity": identity}
                         for results in judged.values() for result in results])


# ---------------------------------------------------------------- two response files, compared


def matched_items(path_a, responses_a, path_b, responses_b) -> list[PairwiseItem]:
    """The items of two response files matched by id (in A's order); B's condition, else A's, is the condition.

    Files that hold different items (another length, an id in one only, another prompt under one id)
    are an error naming the file, record and field: comparing them would score unrelated responses.
    """
    by_id = {response.id: response for response in responses_b}
    if len(responses_a) != len(responses_b):
        raise AloeError(f"{path_a} holds {len(responses_a)} responses and {path_b} {len(responses_b)}: "
                        "compare files made for the same items")
    items = []
    for number, a in enumerate(responses_a, start=1):
        b = by_id.get(a.id)
        if b is None:
            raise AloeError(f"{path_a}: record {number}: id: {a.id!r} is not in {path_b}; "
                            "compare files made for the same items")
        if a.prompt.strip() != b.prompt.strip():
            raise AloeError(f"{path_b}: record {a.id}: prompt: differs from the prompt of the same id in {path_a}")
        items.append(PairwiseItem(id=a.id, a=a.response, b=b.response,
                                  context={"prompt": a.prompt, "condition": b.condition or a.condition}))
    return items


def win_rate_report(judgements: Mapping[str, Sequence[PairwiseJudgement]], samples: int = 1000,
                    seed: int = 0) -> dict:
    """Per criterion the win-rate metrics of B over A; dPQ when personalization and quality were both judged."""
    from aloe.metrics import delta_pq, win_rate_metrics

    report: dict = {"criteria": {}}
    for criterion, results in judgements.items():
        metrics = win_rate_metrics([result.outcome for result in results], samples, seed)
        metrics["identical"] = sum(result.identical for result in results)
        report["criteria"][criterion] = metrics
    if "personalization" in judgements and "quality" in judgements:
        report.update(delta_pq([r.outcome for r in judgements["personalization"]],
                               [r.outcome for r in judgements["quality"]], samples, seed))
    return report
