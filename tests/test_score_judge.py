"""The 1-5 alignment judge: its verdict parser, its prompts and its one stricter retry."""

import pytest

from aloe.interaction.evaluation import AloeEvaluation, RoleModels, RoleParams
from aloe.interaction.conversations import PersonaPair
from aloe.judges.score import judge_messages, parse_score, reminder_messages
from aloe.models.base import ChatModel, Reply, SamplingParams
from aloe.records import Persona


@pytest.mark.parametrize("text, score", [
    ("[[score: 4]]", 4),
    ("[[Score: 5]]\nThe reply matches the user's playful tone.", 5),
    ("The reply is generic and ignores her Antarctic job. [[score:1]]", 1),
    ("[[SCORE = 2]]", 2),
    ("[[3]]", 3),
    ("[[score: 4/5]]", 4),
    ("[[score: 4]] ... on reflection I stand by it: [[score: 4]]", 4),  # the same verdict twice
    ("Rating on a 1-5 scale, where 5 is best.\n\n**Verdict:** [[score: 3]]", 3),  # digits in prose are not verdicts
    ("4", 4),  # no brackets: a first line holding only a score
    ("Score: 2\nThe reply ignores her job.", 2),
    ("**5/5.**", 5),
    ("\n3\n\nThe user's personality is theatrical.", 3),
])
def test_valid_verdicts_parse(text, score):
    verdict = parse_score(text)
    assert verdict.value == score and verdict.reason is None and verdict.raw == text


@pytest.mark.parametrize("text, reason", [
    ("[[score: 7]]", "score 7 is outside 1-5"),
    ("[[score: 0]]", "score 0 is outside 1-5"),
    ("[[score: -2]]", "outside 1-5"),
    ("[[score: 3.5]]", "score 3.5 is not an integer"),
    ("[[score: 2]] or maybe [[score: 4]]", "conflicting scores 2 and 4"),
    ("I would give this reply a 4 out of 5.", "no [[score: N]] verdict"),
    ("I'd say 4. It fits her tone.", "no [[score: N]] verdict"),  # a number in prose is not a verdict
    ("The user has 3 kids.\n[[score: none]]", "holds no number"),  # brackets present: no bare-line fallback
    ("7\nA great reply.", "score 7 is outside 1-5"),
    ("[[score: N]]", "verdict [[score: N]] holds no number"),  # the format echoed back
    ("[[A]]", "holds no number"),
    ("", "no [[score: N]] verdict"),
])
def test_unparseable_verdicts_give_none_with_a_reason(text, reason):
    verdict = parse_score(text)
    assert verdict.value is None
    assert reason in verdict.reason
    assert verdict.raw == text


def test_judge_prompt_shows_the_true_persona_message_and_reply_and_the_reminder_names_the_problem():
    messages = judge_messages("Runs a bakery in Lyon.", "Blunt and funny.", "Long day at the ovens!", "Rest up, chef.")
    assert len(messages) == 1 and messages[0]["role"] == "user"
    for part in ("Runs a bakery in Lyon.", "Blunt and funny.", "Long day at the ovens!", "Rest up, chef.", "[[score: N]]"):
        assert part in messages[0]["content"]
    retry = reminder_messages(messages, parse_score("[[score: 9]]"))
    assert [m["role"] for m in retry] == ["user", "assistant", "user"]
    assert retry[1]["content"] == "[[score: 9]]"
    assert "score 9 is outside 1-5" in retry[2]["content"]


class ScriptedJudge(ChatModel):
    """Answers the first ask with `first` and a reminder (a 3-message chat) with `retry`; logs every batch."""

    def __init__(self, first: str, retry: str):
        self.spec = "scripted:judge"
        self.first, self.retry = first, retry
        self.batches = []

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        self.batches.append([list(c) for c in conversations])
        return [Reply(text=self.retry if len(c) == 3 else self.first) for c in conversations]


def _judge_with(model: ChatModel):
    params = RoleParams(*(SamplingParams(temperature=0.0),) * 3)
    return AloeEvaluation(RoleModels(model=model, user=model, judge=model), params, turns=1, run_hash="h")


def _items(n):
    pair = PersonaPair("conv-1", Persona(id="p", text="Keeps bees."), Persona(id="q", text="Shy."))
    return [(pair, f"message {i}", f"reply {i}") for i in range(n)]


def test_an_unparsed_verdict_is_retried_once_as_one_batch_with_the_reminder():
    judge = ScriptedJudge(first="It is a decent reply, maybe a four.", retry="[[score: 4]]")
    scores = _judge_with(judge).judge(_items(3))
    assert [s.score for s in scores] == [4, 4, 4]
    assert [s.reason for s in scores] == [None] * 3
    assert [len(batch) for batch in judge.batches] == [3, 3]  # one batch of first asks, one of reminders
    first, second = scores[0].attempts
    assert first.score is None and "no [[score: N]] verdict" in first.reason
    assert first.raw == "It is a decent reply, maybe a four."
    assert second.raw == "[[score: 4]]"


def test_a_judge_that_never_parses_gives_null_with_the_reason_and_raw_texts_kept():
    judge = ScriptedJudge(first="[[score: 8]]", retry="[[score: 2]] [[score: 3]]")
    (score,) = _judge_with(judge).judge(_items(1))
    assert score.score is None
    assert score.reason == "conflicting scores 2 and 3 in the judge's output (after 2 asks)"
    assert [a.raw for a in score.attempts] == ["[[score: 8]]", "[[score: 2]] [[score: 3]]"]
    assert len(judge.batches) == 2  # exactly one retry, never a third ask


def test_parsed_verdicts_are_not_asked_again():
    judge = ScriptedJudge(first="[[score: 5]]", retry="[[score: 1]]")
    scores = _judge_with(judge).judge(_items(4))
    assert [s.score for s in scores] == [5] * 4
    assert len(judge.batches) == 1
