"""The Multifaceted benchmark: responses under unseen system messages, graded by rubrics.

For every item the model under test answers the prompt with the item's system message in the system
role (the generic response generator). The rubric judge then grades each response against each of the
item's four rubrics, one call per rubric, every item and rubric of a run in one batch; `runs` judge
runs use sample indices 0..runs-1 (they differ only when the judge samples). A verdict that does not
parse is asked once more with a reminder, as one smaller batch, and otherwise stays None with its
reason. Whether the judge sees the system message is a setting recorded in the result.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from aloe.judges import JudgeAttempt, JudgedScore, rubric
from aloe.lockstep import generate_some
from aloe.metrics import rubric_metrics
from aloe.models.base import ChatModel, SamplingParams
from aloe.progress import Progress
from aloe.records import Record
from aloe.responses import ResponseRequest, condition_messages
from aloe.system_messages.records import BenchItem

PROMPTS = rubric.PROMPTS


RubricJudgement = JudgedScore  # one rubric's grade in one judge run
class BenchRecord(Record):
    """One item's response and its grades: judgements[run][rubric]. A response record too (the condition is
    the system message), so win_rate.py compares two models' records files directly."""

    id: str
    source: str
    prompt: str
    condition: str  # the item's system message
    response: str
    finish_reason: str = "stop"
    flags: list[str] = Field(default_factory=list)
    judgements: list[list[RubricJudgement]]

    def scores(self) -> list[list[int | None]]:
        return [[judgement.score for judgement in run] for run in self.judgements]


def response_requests(items: Sequence[BenchItem]) -> list[ResponseRequest]:
    """Each item's prompt with its system message in the system role."""
    return [ResponseRequest(id=item.id, prompt=item.prompt, condition=item.system,
                            messages=condition_messages(item.prompt, item.system, "system")) for item in items]


def judge_responses(judge: ChatModel, items: Sequence[BenchItem], responses: Sequence[str], params: SamplingParams,
                    runs: int = 1, sees_system: bool = False) -> list[list[list[RubricJudgement]]]:
    """judgements[item][run][rubric]: one batch of every (run, item, rubric), then one batch of reminders.

    A request that failed after its retries leaves its grade None with the reason (counted unparsed)."""
    asks = [(i, run, k, rubric.judge_messages(item.prompt, responses[i], item.reference_answer, r.criteria,
                                               r.score_descriptions, item.system if sees_system else None))
            for run in range(runs) for i, item in enumerate(items) for k, r in enumerate(item.rubrics)]
    results = [[[RubricJudgement() for _ in item.rubrics] for _ in range(runs)] for item in items]
    with Progress(len(asks), "judging", "asks", enabled=bool(asks)) as progress:
        replies, failures = generate_some(judge, [messages for *_, messages in asks], params,
                                          [run for _, run, _, _ in asks], progress)
    retry = []
    for position, (ask, reply) in enumerate(zip(asks, replies)):
        if reply is None:
            i, run, k, _ = ask
            results[i][run][k].reason = failures[position]
            continue
        verdict = rubric.parse_rubric_score(reply.text)
        _add(results, ask, verdict)
        if not verdict.parsed:
            retry.append((ask, rubric.reminder_messages(ask[3], verdict)))
    replies, failures = generate_some(judge, [messages for _, messages in retry], params, [ask[1] for ask, _ in retry])
    for (ask, _), reply in zip(retry, replies):
        if reply is not None:  # else the first ask's unparsed verdict stands
            _add(results, ask, rubric.parse_rubric_score(reply.text))
    return results


def _add(results, ask, verdict) -> None:
    i, run, k, _ = ask
    judgement = results[i][run][k]
    judgement.attempts.append(JudgeAttempt(raw=verdict.raw, score=verdict.value, reason=verdict.reason))
    judgement.score = verdict.value
    judgement.reason = None if verdict.parsed else f"{verdict.reason} (after {len(judgement.attempts)} asks)"


def metrics(records: Sequence[BenchRecord], samples: int = 1000, seed: int = 0) -> dict:
    return rubric_metrics([record.scores() for record in records], [record.source for record in records],
                          samples, seed)
