import random

import pytest

from aloe.judges.preference import (
    ORDERS, PreferenceItem, PreferenceJudge, combine, judge_messages, judged_order, parse_preference,
)
from aloe.records import JudgedOrder, TurnJudgement


@pytest.mark.parametrize("text, expected", [
    ("Reply A fits her dry humour better.\n[[A]]", "A"),
    ("[[B]]", "B"),
    ("verdict: [[ b ]]", "B"),
    ("I pick [[A]]. Final answer: [[A]]", "A"),  # a repeated verdict is still one verdict
])
def test_parse_preference_reads_the_verdict(text, expected):
    verdict = parse_preference(text)
    assert verdict.value == expected and verdict.reason is None and verdict.raw == text


@pytest.mark.parametrize("text, reason", [
    ("Reply A is better.", "no [[A]] or [[B]]"),
    ("", "no [[A]] or [[B]]"),
    ("A", "no [[A]] or [[B]]"),
    ("[A] seems good", "no [[A]] or [[B]]"),
    ("[[C]]", "no [[A]] or [[B]]"),
    ("[[A]] at first, but on reflection [[B]]", "both"),
])
def test_parse_preference_junk_is_unparsed_with_a_reason(text, reason):
    verdict = parse_preference(text)
    assert verdict.value is None and reason in verdict.reason and verdict.raw == text


def order(shown, verdict):
    return JudgedOrder(shown=list(shown), raw=f"... [[{verdict}]]" if verdict else "junk", verdict=verdict,
                       reason=None if verdict else "no verdict")


def test_both_orders_agreeing_give_the_label():
    # hinted shown first and picked as A; then plain shown first and hinted picked as B.
    judgement = combine([order(ORDERS[0], "A"), order(ORDERS[1], "B")], "skip", random.Random(0))
    assert (judgement.outcome, judgement.winner, judgement.resolved_by, judgement.hinted) == \
        ("agree", "hinted", "agreement", "preferred")
    judgement = combine([order(ORDERS[0], "B"), order(ORDERS[1], "A")], "hinted", random.Random(0))
    assert (judgement.outcome, judgement.winner, judgement.hinted) == ("agree", "plain", "rejected")


def test_order_disagreement_is_a_tie_resolved_by_the_rule():
    position_biased = [order(ORDERS[0], "A"), order(ORDERS[1], "A")]  # always picks whatever is shown first
    judgement = combine(position_biased, "hinted", random.Random(0))
    assert (judgement.outcome, judgement.winner, judgement.resolved_by) == ("tie", "hinted", "on-tie:hinted")
    assert combine(position_biased, "skip", random.Random(0)) is None
    winners = {combine(position_biased, "random", random.Random(seed)).winner for seed in range(20)}
    assert winners == {"hinted", "plain"}
    assert combine(position_biased, "random", random.Random(3)).winner == \
        combine(position_biased, "random", random.Random(3)).winner


def test_a_missing_verdict_is_unparsed_never_a_label():
    judgement = combine([order(ORDERS[0], "B"), order(ORDERS[1], None)], "hinted", random.Random(0))
    assert judgement.outcome == "unparsed" and judgement.winner == "hinted"
    assert combine([order(ORDERS[0], None), order(ORDERS[1], None)], "skip", random.Random(0)) is None
    with pytest.raises(ValueError):
        combine([order(ORDERS[0], "A"), order(ORDERS[1], "B")], "first", random.Random(0))


def test_the_judge_sees_both_orders_with_the_replies_swapped():
    item = PreferenceItem(profile="I keep bees in Vermont.", personality="Terse and wry.",
                          history=({"role": "user", "content": "hey"}, {"role": "assistant", "content": "hi!"}),
                          user_message="my bees swarmed today", hinted="HINTED-REPLY", plain="PLAIN-REPLY")
    first, second = (judge_messages(item, shown)[0]["content"] for shown in ORDERS)
    assert first.index("HINTED-REPLY") < first.index("PLAIN-REPLY")
    assert second.index("PLAIN-REPLY") < second.index("HINTED-REPLY")
    for prompt in (first, second):
        assert "I keep bees in Vermont." in prompt and "Terse and wry." in prompt
        assert "User: hey\nChatbot: hi!" in prompt and "my bees swarmed today" in prompt and "[[A]]" in prompt
    asks = PreferenceJudge().asks([item, item])
    assert [(position, shown) for position, shown, _ in asks] == \
        [(0, ORDERS[0]), (1, ORDERS[0]), (0, ORDERS[1]), (1, ORDERS[1])]


def test_judgement_round_trips_with_raw_text_and_order():
    verdicts = [judged_order(ORDERS[0], parse_preference("x [[A]]")), judged_order(ORDERS[1], parse_preference("?"))]
    judgement = combine(verdicts, "hinted", random.Random(0))
    again = TurnJudgement.model_validate_json(judgement.model_dump_json())
    assert again == judgement
    assert [o.raw for o in again.orders] == ["x [[A]]", "?"]
    assert again.orders[1].shown == ["plain", "hinted"] and again.orders[1].reason


def test_the_papers_judge_sees_the_persona_and_the_two_replies_only():
    from aloe.judges.preference import JUDGE_PROMPTS

    item = PreferenceItem(profile="I keep bees in Vermont.", personality="Terse and wry.",
                          history=({"role": "user", "content": "hey"}, {"role": "assistant", "content": "hi!"}),
                          user_message="my bees swarmed today", hinted="HINTED-REPLY", plain="PLAIN-REPLY")
    asks = PreferenceJudge(JUDGE_PROMPTS["paper"]).asks([item])
    first, second = (messages[0]["content"] for _, _, messages in asks)
    assert first.index("HINTED-REPLY") < first.index("PLAIN-REPLY") and second.index("PLAIN-REPLY") < second.index("HINTED-REPLY")
    for prompt in (first, second):
        assert "I keep bees in Vermont." in prompt and "Terse and wry." in prompt
        assert "hi!" not in prompt and "my bees swarmed today" not in prompt  # no transcript, no user message
        assert "[[A]]" in prompt and "not analyse" in prompt
    assert parse_preference("[[B]]").value == "B"  # one parser for both prompts
