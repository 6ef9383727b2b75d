import json

import pytest

from aloe.judges import agreement
from aloe.judges.pairwise import (
    PairwiseItem, PairwiseJudge, criteria, matched_items, parse_choice, win_rate_report,
)
from aloe.metrics import accuracy_metrics, delta_pq, win_rate, win_rate_metrics
from aloe.models.base import ChatModel, Reply
from aloe.models import SamplingParams
from aloe.responses import Response
from aloe.errors import AloeError
from tests.stage_scripts import run_script


class ContentJudge(ChatModel):
    """Picks the shown response containing `good`; answers junk when neither does; records every ask."""

    spec = "content-judge"

    def __init__(self, good="GOOD"):
        self.good = good
        self.asks = []

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        replies = []
        for conv in conversations:
            text = conv[-1]["content"]
            self.asks.append(text)
            a = text.split("[Response A]")[1].split("[End of response A]")[0]
            b = text.split("[Response B]")[1].split("[End of response B]")[0]
            verdict = "[[A]]" if self.good in a else "[[B]]" if self.good in b else "no idea"
            replies.append(Reply(text=verdict))
        return replies


class FirstShownJudge(ChatModel):
    spec = "first"

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        return [Reply(text="A") for _ in conversations]


def items():
    return [PairwiseItem(str(i), a, b, {"prompt": f"p{i}", "condition": "The user is kind."})
            for i, (a, b) in enumerate([("meh", "GOOD one"), ("GOOD one", "meh"), ("same", "same"), ("meh", "bah")],
                                       start=1)]


def test_criteria_are_prompt_files():
    assert {"quality", "personalization"} <= set(criteria())


def test_agreement_rule():
    assert agreement(["b", "b"]) == ("agree", "b")
    assert agreement(["a", "b"]) == ("tie", None)
    assert agreement(["a", None]) == ("unparsed", None)


def test_both_orders_map_back_to_sides_and_identical_costs_no_call():
    judge = ContentJudge()
    results = PairwiseJudge("quality").judge(judge, items(), SamplingParams(temperature=0))
    assert [r.outcome for r in results] == ["b", "a", "tie", "unparsed"]
    assert results[2].identical and results[2].orders == []
    assert len(judge.asks) == 6  # 3 non-identical items x 2 orders
    assert [o.shown for o in results[0].orders] == [["a", "b"], ["b", "a"]]
    assert [o.verdict for o in results[0].orders] == ["B", "A"]  # GOOD shown second, then first


def test_position_bias_is_a_tie():
    results = PairwiseJudge("quality").judge(FirstShownJudge(), items()[:1], SamplingParams())
    assert results[0].outcome == "tie"


def test_rerun_asks_only_unparsed_orders_as_a_new_sample():
    first = PairwiseJudge("quality").judge(ContentJudge(), items(), SamplingParams())
    again = ContentJudge(good="bah")
    second = PairwiseJudge("quality").judge(again, items(), SamplingParams(), {r.id: r for r in first})
    assert len(again.asks) == 2 and second[3].outcome == "b"
    assert [o.sample for o in second[3].orders] == [1, 1] and second[0].outcome == "b"


def test_personalization_shows_the_condition():
    judge = ContentJudge()
    PairwiseJudge("personalization").judge(judge, items()[:1], SamplingParams())
    assert all("The user is kind." in ask for ask in judge.asks)


def test_parse_choice_is_lenient_but_not_loose():
    assert parse_choice("B").value == "B" and parse_choice("Response A.").value == "A"
    assert parse_choice("[[A]] then [[B]]").value is None
    assert parse_choice("A is better than B because").value is None


def test_win_rate_arithmetic_by_hand():
    outcomes = ["b", "b", "b", "a", "tie", "unparsed"]
    assert win_rate(outcomes) == 0.75
    m = win_rate_metrics(outcomes, samples=200)
    assert (m["a"], m["b"], m["tie"], m["unparsed"], m["items"]) == (1, 3, 1, 1, 6)
    assert m["parse_rate"] == pytest.approx(5 / 6)
    assert 0 <= m["win_rate_ci"][0] <= 0.75 <= m["win_rate_ci"][1] <= 1
    assert win_rate(["tie", "unparsed"]) is None
    d = delta_pq(["b", "b", "a", "tie"], ["a", "b", "b", "b"], samples=100)
    assert d["delta_pq"] == pytest.approx(2 / 3 + 3 / 4 - 1)
    acc = accuracy_metrics([True, True, False, None], samples=100)
    assert acc["accuracy"] == pytest.approx(2 / 3) and acc["accuracy_unparsed_wrong"] == 0.5 and acc["unparsed"] == 1


def test_report_has_delta_pq_only_with_both_criteria():
    results = PairwiseJudge("quality").judge(ContentJudge(), items(), SamplingParams())
    report = win_rate_report({"quality": results}, samples=10)
    assert "delta_pq" not in report and report["criteria"]["quality"]["identical"] == 1
    report = win_rate_report({"quality": results, "personalization": results}, samples=10)
    assert report["delta_pq"] == pytest.approx(0.0)


def response(id, prompt="p", text="r", condition=None):
    return Response(id=id, prompt=prompt, response=text, condition=condition)


def test_mismatched_files_are_errors():
    with pytest.raises(AloeError, match="1 responses and"):
        matched_items("A", [response("1")], "B", [response("1"), response("2")])
    with pytest.raises(AloeError, match="record 1: id: '1' is not in B"):
        matched_items("A", [response("1")], "B", [response("2")])
    with pytest.raises(AloeError, match="B: record 1: prompt"):
        matched_items("A", [response("1")], "B", [response("1", prompt="other")])
    (item,) = matched_items("A", [response("1", condition="c")], "B", [response("1", text="s")])
    assert item.context["condition"] == "c" and item.b == "s"


def write_responses(path, texts, condition="The user is curious."):
    path.write_text("".join(json.dumps({"id": str(i), "prompt": f"Question {i}?", "response": t,
                                        "condition": condition}) + "\n" for i, t in enumerate(texts)))


def test_win_rate_script_on_a_tiny_model(tmp_path, tiny_model_dir, one_torch_thread, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_responses(a, ["short", "same", "x"])
    write_responses(b, ["longer answer", "same", "y"])
    out = tmp_path / "wr.json"
    argv = [a, b, "--judge-model", tiny_model_dir, "--output", out, "--max-new-tokens", "4", "--bootstrap", "50"]
    assert run_script("evaluation/win_rate.py", *argv) == 0
    result = json.loads(out.read_text())
    assert set(result["criteria"]) == {"quality", "personalization"} and "delta_pq" in result
    assert result["criteria"]["quality"]["identical"] == 1
    judgements = [json.loads(line) for line in (tmp_path / "wr.judgements.jsonl").read_text().splitlines()]
    assert len(judgements) == 6 and all("raw" in o for j in judgements for o in j["orders"])
    capsys.readouterr()
    assert run_script("evaluation/win_rate.py", "--report", out) == 0
    assert "| wr | quality |" in capsys.readouterr().out


def test_win_rate_script_bad_inputs(tmp_path, capsys):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    write_responses(a, ["x", "y"])
    write_responses(b, ["x"])
    write_responses(c, ["x", "y"], condition=None)
    assert run_script("evaluation/win_rate.py", a, b, "--judge-model", "embedded") == 1
    assert "holds 2 responses" in capsys.readouterr().err
    assert run_script("evaluation/win_rate.py", c, c, "--output", tmp_path / "o.json") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "record 0: condition" in err
    assert run_script("evaluation/win_rate.py", a, a, "--criteria", "nonsense") == 1
    assert "unknown criterion" in capsys.readouterr().err
