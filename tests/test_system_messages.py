"""System-message generalization: records, generation steps, sibling pairs, the rubric judge and metrics,
best-of-N and the benchmark, with scripted models and tiny random ones."""

import json
import re

import pytest

from aloe.errors import AloeError
from aloe.judges.rubric import judge_messages, parse_rubric_score, reminder_messages
from aloe.metrics import rubric_metrics
from aloe.models.base import ChatModel, Reply, SamplingParams
from aloe.prompts import available, fields, render
from aloe.responses import ResponseRequest
from aloe.system_messages.best_of_n import best_of_n
from aloe.system_messages.data import BENCH, INSTRUCTIONS, read_bench, read_instructions
from aloe.system_messages.generation import (
    PROMPTS, GenerationSettings, SystemMessageGenerator, parse_description, parse_phrase, parse_subdimension,
    parse_system_message,
)
from aloe.system_messages.pairs import sibling_pairs
from aloe.system_messages.records import DIMENSIONS, BenchItem, Instruction, SystemMessageRow
from tests.stage_scripts import run_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ScriptedModel(ChatModel):
    """Answers each generation step by recognising its prompt; records the sample indices asked for."""

    spec = "scripted"

    def __init__(self, bad_first: int = 0):
        self.bad_first = bad_first  # the first N answers of each field are unusable (tests re-sampling)
        self.indices = []

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        indices = list(sample_indices or [0] * len(conversations))
        self.indices.append(indices)
        return [Reply(text=self.answer(conv, index)) for conv, index in zip(conversations, indices)]

    def answer(self, conv, index):
        text = conv[-1]["content"]
        if index < self.bad_first:
            return ""
        if "Pick one aspect" in text:
            # The same first answer for every set: the siblings must re-sample or take a later candidate.
            return "Aspect: clarity" if index == 0 else f"Aspect: aspect {index}"
        if "State what exactly they want" in text:
            return "Preference: short answers."
        if "describe this person's preference" in text:
            return "They want answers that get to the point quickly. Extra words tire them.\nIgnored line"
        if "Write a system message" in text:
            return "System message: You are a concise assistant who answers briefly, assumes little and stays safe."
        return f"gold answer under: {conv[0]['content'][:20]}"


def preference(dimension, tag=""):
    return {"dimension": dimension, "subdimension": "x" + tag, "preference": "p" + tag, "description": "d" + tag}


def row(instruction, index, output):
    return SystemMessageRow(id=f"{instruction}-s{index}", preference_set=[preference(d) for d in DIMENSIONS],
                            system=f"system {instruction} {index}", prompt=f"prompt {instruction}", output=output,
                            instruction_id=instruction, set_index=index)


# ---------------------------------------------------------------- prompts and records


def test_every_prompt_file_renders():
    names = [*PROMPTS, "rubric_judge", "rubric_judge_system", "rubric_judge_reminder", "pairwise_system_message"]
    assert set(names) <= set(available())
    for name in names:
        text = render(name, **{field: f"<{field}>" for field in fields(name)})
        assert all(f"<{field}>" in text for field in fields(name))


def test_a_preference_set_always_has_the_four_dimensions():
    item = json.loads(BENCH.read_text().splitlines()[0])
    assert [p.dimension for p in BenchItem.model_validate(item).preference_set] == list(DIMENSIONS)
    item["preference_set"] = item["preference_set"][:3]
    with pytest.raises(ValueError, match="one preference for each of"):
        BenchItem.model_validate(item)
    item["preference_set"] = [preference("style")] * 4
    with pytest.raises(ValueError, match="one preference for each of"):
        BenchItem.model_validate(item)


def test_shipped_data_is_large_enough_and_valid():
    instructions = read_instructions(INSTRUCTIONS)
    assert len(instructions) >= 60 and len({i.source for i in instructions}) >= 5
    items = read_bench(BENCH)
    assert len(items) >= 30 and all(len(item.rubrics) == 4 for item in items)
    assert len({item.id for item in items}) == len(items)


def test_released_rows_without_ids_get_stable_ids_and_siblings():
    released = {"main_source": "Nectar", "preference_set": [preference(d) for d in DIMENSIONS],
                "system": "You are ...", "prompt": "Why?", "output": "Because."}
    first, again = SystemMessageRow.model_validate(released), SystemMessageRow.model_validate(released)
    assert first.id == again.id and first.instruction_id == again.instruction_id


# ---------------------------------------------------------------- generation


def test_lenient_parsers():
    assert parse_phrase('1. **Preference:** "short answers".\nmore', 20) == ("short answers", None)
    assert parse_phrase("\n\n", 5)[0] is None
    assert parse_subdimension("One aspect that matters here is clarity.", ["clarity"])[0][0] == "clarity"
    assert parse_subdimension("Aspect: Formal tone", [])[0] == ["Formal tone"]
    assert parse_subdimension("Aspect: Aspect: Format", [])[0][0] == "Format"
    assert parse_description("Description: One. Two words here. Three is here. Four is dropped.")[0] == \
        "One. Two words here. Three is here."
    assert parse_system_message("You are kind and you answer with care for every single user, always")[0].endswith(".")
    assert parse_system_message("too short")[0] is None


def test_generation_fills_every_step_with_distinct_sibling_subdimensions():
    model = ScriptedModel()
    generator = SystemMessageGenerator(model, SamplingParams(), GenerationSettings(sets=3))
    states = generator.states([Instruction(id="i1", prompt="Explain tides."), Instruction(id="i2", prompt="Cook rice.")])
    generator.run(states)
    assert all(state.failure is None for state in states)
    rows = [state.row() for state in states]
    for instruction in ("i1", "i2"):
        siblings = [r for r in rows if r.instruction_id == instruction]
        for d in range(4):
            assert len({r.preference_set[d].subdimension for r in siblings}) == 3
    assert rows[0].system.startswith("You are") and rows[0].output.startswith("gold answer under: You are")
    assert rows[0].raw["subdimension:style"]  # raw texts are kept
    # one batch per step (and per re-sample of the subdimension step): never one call per item
    assert len(model.indices) <= 3 + 4 and len(model.indices[0]) == 2 * 3 * 4


def test_a_row_that_keeps_failing_is_reported_and_retried_with_fresh_samples(tmp_path, capsys):
    from aloe.system_messages import generation

    model = ScriptedModel(bad_first=5)
    strict = GenerationSettings(sets=2, max_attempts=2, subdimension_fallback=False)
    generator = SystemMessageGenerator(model, SamplingParams(), strict)
    states = generator.states([Instruction(id="i1", prompt="Explain tides.")])
    generator.run(states)
    assert all(state.failure and state.failed_step == "subdimension" for state in states)
    # With the fallback the subdimensions are example aspects, and the row fails at the next unusable step.
    lenient = SystemMessageGenerator(model, SamplingParams(), GenerationSettings(sets=2, max_attempts=2))
    states = lenient.states([Instruction(id="i1", prompt="Explain tides.")])
    lenient.run(states)
    assert [s.fields["subdimension:style"] for s in states] == ["conciseness", "clarity"]
    assert all(state.failed_step == "preference" and "fallback" in state.raw for state in states)
    retry = SystemMessageGenerator(model, SamplingParams(), strict, first_sample=6)
    states = retry.states([Instruction(id="i1", prompt="Explain tides.")])
    retry.run(states)
    assert all(state.failure is None for state in states) and min(model.indices[-1]) >= 6
    assert generation.STEPS[0] == "subdimension"


def test_the_stage_engine_writes_rows_records_failures_and_retries_them_with_fresh_samples(tmp_path):
    from aloe.runs import RunFiles
    from aloe.system_messages.generation import generate_rows

    run = RunFiles(tmp_path / "rows.jsonl")
    instructions = [Instruction(id="i1", prompt="Explain tides."), Instruction(id="i2", prompt="Cook rice.")]
    strict = GenerationSettings(sets=2, max_attempts=2, subdimension_fallback=False, group_size=1)
    model = ScriptedModel(bad_first=2)  # samples 0 and 1 are unusable: every row fails this run
    report = generate_rows(run, instructions, strict, SamplingParams(), lambda: model, lambda m: {"model": m.spec})
    assert (report.rows, report.written, report.failed) == (4, 0, 4) and run.main.read_text() == ""
    failures = [json.loads(line) for line in run.failures.read_text().splitlines()]
    assert [f["id"] for f in failures] == ["i1-s0", "i1-s1", "i2-s0", "i2-s1"]  # one group per instruction
    assert {f["step"] for f in failures} == {"subdimension"} and all(f["raw"] and f["next_sample"] == 2 for f in failures)
    assert json.loads(run.provenance.read_text()) == {"model": "scripted"}

    report = generate_rows(run, instructions, strict, SamplingParams(), lambda: model, lambda m: {})
    assert (report.written, report.failed) == (4, 0) and not run.failures.exists()
    assert min(min(indices) for indices in model.indices[-6:]) >= 2  # the retry drew samples it had not drawn

    def no_model():
        raise AssertionError("nothing is left to generate: no model is loaded")

    report = generate_rows(run, instructions, strict, SamplingParams(), no_model, lambda m: {})
    assert (report.already, report.written) == (4, 0) and len(run.main.read_text().splitlines()) == 4


def test_a_model_call_that_fails_for_good_keeps_earlier_groups_and_lists_the_group_in_flight(tmp_path):
    from aloe.runs import RunFiles
    from aloe.system_messages.generation import generate_rows

    class DiesOnCook(ScriptedModel):
        def generate(self, conversations, params, sample_indices=None, on_reply=None):
            if any("Cook rice." in message["content"] for conv in conversations for message in conv):
                raise AloeError("the API is unreachable")
            return super().generate(conversations, params, sample_indices, on_reply)

    run = RunFiles(tmp_path / "rows.jsonl")
    instructions = [Instruction(id="i1", prompt="Explain tides."), Instruction(id="i2", prompt="Cook rice.")]
    with pytest.raises(AloeError, match=r"unreachable \(2 finished rows are saved in .*rows.jsonl; re-run"):
        generate_rows(run, instructions, GenerationSettings(sets=2, group_size=1), SamplingParams(),
                      DiesOnCook, lambda m: {})
    assert [json.loads(line)["id"] for line in run.main.read_text().splitlines()] == ["i1-s0", "i1-s1"]
    failures = [json.loads(line) for line in run.failures.read_text().splitlines()]
    assert [(f["id"], f["step"]) for f in failures] == [("i2-s0", "subdimension"), ("i2-s1", "subdimension")]


def test_overwrite_waits_for_the_lock_and_never_wipes_a_running_output(tmp_path, capsys):
    from aloe.runs import RunFiles

    output = tmp_path / "rows.jsonl"
    output.write_text('{"id": "i1-s0"}\n')  # what the running process has written so far
    with RunFiles(output).lock():
        assert run_script("data_generation/generate_system_messages.py", "--model", "embedded", "--output", output,
                          "--overwrite") == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {output} is being written by another run (pid ")
    assert output.read_text() == '{"id": "i1-s0"}\n'


def test_generate_script_runs_every_step_through_an_api_and_resumes(tmp_path, openai_stub, capsys):
    server = openai_stub()
    instructions = tmp_path / "instructions.txt"
    instructions.write_text("Explain tides.\nCook rice.\n")
    output = tmp_path / "rows.jsonl"
    args = ["--instructions", instructions, "--model", "openai:stub", "--base-url", server.base_url,
            "--output", output, "--sets", "2"]
    assert run_script("data_generation/generate_system_messages.py", *args) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["preference_set"]) == 4 and r["output"] for r in rows)
    assert set(rows[0]) >= {"main_source", "preference_set", "system", "prompt", "output", "id", "raw"}
    calls = len(server.requests)
    assert run_script("data_generation/generate_system_messages.py", *args) == 0
    assert len(server.requests) == calls  # everything was already written
    # The echo server answers every sibling with the same text: no pair carries a signal, and nothing is written.
    capsys.readouterr()
    pairs = tmp_path / "pairs.jsonl"
    assert run_script("data_generation/build_system_message_pairs.py", "--rows", output, "--output", pairs) == 1
    assert "4 share their sibling's answer" in capsys.readouterr().err and not pairs.exists()


def test_an_instruction_file_with_an_empty_line_is_one_error_line(tmp_path, capsys):
    instructions = tmp_path / "instructions.txt"
    instructions.write_text("Explain tides.\n\nCook rice.\n")
    assert run_script("data_generation/generate_system_messages.py", "--instructions", instructions,
                      "--output", tmp_path / "rows.jsonl") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "instructions.txt:2: prompt: empty line" in err


# ---------------------------------------------------------------- pairs


def test_sibling_pairs_never_pair_a_system_message_with_its_own_answer():
    rows = [row("a", 0, "A0"), row("a", 1, "A1"), row("a", 2, "A2"), row("b", 0, "B0"), row("c", 0, "C0"),
            row("c", 1, "C0")]
    pairs, stats = sibling_pairs(rows)
    assert stats.pairs == 3 and stats.without_sibling == 1 and stats.same_answer == 2
    by_id = {r.id: r for r in rows}
    for pair in pairs:
        own = by_id[pair["chosen_row"]]
        assert pair["chosen_row"] != pair["rejected_row"]
        assert pair["prompt"][0] == {"role": "system", "content": own.system}
        assert pair["chosen"][0]["content"] == own.output != pair["rejected"][0]["content"]
        assert by_id[pair["rejected_row"]].instruction_id == own.instruction_id


def test_system_message_sits_where_the_model_sees_it_at_inference(embedded_checkpoint):
    """Training renders prompt + completion with the chat template; inference renders the prompt with a
    generation prompt. The inference ids must be a prefix of the training ids, system message included."""
    from transformers import AutoTokenizer

    from aloe.models.local import LocalChatModel

    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint)
    pair, _ = sibling_pairs([row("a", 0, "A0"), row("a", 1, "A1")])
    prompt, chosen = pair[0]["prompt"], pair[0]["chosen"]
    training = tokenizer.apply_chat_template(prompt + chosen, tokenize=True, return_dict=False)
    model = LocalChatModel.__new__(LocalChatModel)  # only the prompt encoding is needed, not the weights
    model.tokenizer, model.context_length, model.spec = tokenizer, 2048, "embedded"
    inference = model.encode(prompt, max_new_tokens=16)
    assert training[:len(inference)] == inference
    assert tokenizer.encode(prompt[0]["content"], add_special_tokens=False)[0] in inference


# ---------------------------------------------------------------- the rubric judge


@pytest.mark.parametrize("text, score, reason", [
    ("Feedback: good. [RESULT] 4", 4, None),
    ("Scored 2 of 5 criteria; 10 points. [RESULT] 3", 3, None),  # numbers in the feedback are not the score
    ("First [RESULT] 2, on reflection [RESULT]: 5", 5, None),  # the last verdict wins
    ("Feedback. **[RESULT]** (4)", 4, None),
    ("Feedback: 4 out of 5.", None, "no [RESULT] N verdict"),
    ("[RESULT] 6", None, "outside 1-5"),
    ("[RESULT] 0", None, "outside 1-5"),
    ("[RESULT] 3.5", None, "not an integer"),
    ("[RESULT] 4 ... end with a line [RESULT] N", None, "holds no number"),
])
def test_rubric_score_parsing(text, score, reason):
    verdict = parse_rubric_score(text)
    assert verdict.value == score and verdict.raw == text
    assert (reason is None and verdict.reason is None) or reason in verdict.reason


def test_rubric_prompt_shows_the_system_message_only_when_asked():
    descriptions = {str(k): f"level {k}" for k in range(1, 6)}
    hidden = judge_messages("Q", "R", "REF", "Is it short?", descriptions)[0]["content"]
    shown = judge_messages("Q", "R", "REF", "Is it short?", descriptions, system="You are brief.")[0]["content"]
    assert "You are brief." in shown and "You are brief." not in hidden and "level 5" in hidden
    retry = reminder_messages([{"role": "user", "content": hidden}], parse_rubric_score("no verdict"))
    assert [m["role"] for m in retry] == ["user", "assistant", "user"] and "[RESULT]" in retry[-1]["content"]


def test_four_rubric_and_multi_run_arithmetic():
    scores = [
        [[5, 4, 3, 4], [4, 4, 4, 4]],  # item 1: run means 4.0, 4.0 -> 4.0
        [[1, 2, None, 3], [2, 2, 2, 2]],  # item 2: run means 2.0 (unparsed left out), 2.0 -> 2.0
        [[5, 5, 5, 5], [3, 3, 3, 3]],  # item 3: run means 5.0, 3.0 -> 4.0
    ]
    m = rubric_metrics(scores, ["x", "x", "y"], samples=200, seed=0)
    assert m["item_scores"] == [4.0, 2.0, 4.0]
    assert m["score"] == pytest.approx(10 / 3)  # (4 + 2 + 4) / 3
    assert m["run_scores"] == pytest.approx([11 / 3, 3.0])
    assert m["run_mean"] == pytest.approx(10 / 3) and m["run_std"] == pytest.approx((11 / 3 - 3) / 2 ** 0.5)  # sample sd of two runs
    assert m["by_source"]["x"]["score"] == 3.0 and m["by_source"]["y"]["score"] == 4.0
    assert m["parsed"] == 23 and m["unparsed"] == 1
    low, high = m["score_ci"]
    assert 2.0 <= low <= m["score"] <= high <= 4.0


def test_judge_that_never_scores_is_counted_and_asked_once_more():
    from aloe.system_messages.benchmark import judge_responses

    class NoScore(ScriptedModel):
        def answer(self, conv, index):
            return "It is fine, 4 of 5 points."

    items = read_bench(BENCH)[:2]
    judge = NoScore()
    judged = judge_responses(judge, items, ["a", "b"], SamplingParams(temperature=0), runs=2)
    assert [len(batch) for batch in judge.indices] == [16, 16]  # one batch, then one batch of reminders
    first = judged[0][1][0]
    assert first.score is None and "after 2 asks" in first.reason and len(first.attempts) == 2


# ---------------------------------------------------------------- best-of-N


class FakeReward:
    def score(self, chats):
        return [float(len(chat[-1]["content"])) for chat in chats]  # longer is better


def test_best_of_n_keeps_the_highest_reward_and_stores_all():
    class Varied(ScriptedModel):
        def answer(self, conv, index):
            return "x" * [3, 9, 1, 9][index]

    requests = [ResponseRequest(id=f"p{i}", prompt="Q", condition="S",
                                messages=({"role": "system", "content": "S"}, {"role": "user", "content": f"Q{i}"}))
                for i in range(2)]
    model = Varied()
    best = best_of_n(model, FakeReward(), requests, 4, SamplingParams())
    assert len(model.indices) == 1 and model.indices[0] == [0, 1, 2, 3] * 2  # all samples in one batch
    assert [b.best_index for b in best] == [1, 1]  # the first of the equal best
    assert [s["reward"] for s in best[0].samples] == [3.0, 9.0, 1.0, 9.0] and best[0].reward == 9.0


@pytest.fixture(scope="module")
def tiny_reward_dir(tmp_path_factory, embedded_checkpoint):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id, initializer_range=0.2)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-reward")
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_reward_scores_batched_equal_one_at_a_time(tiny_reward_dir):
    from aloe.system_messages.best_of_n import RewardModel

    chats = [[{"role": "system", "content": "S"}, {"role": "user", "content": "Q" * (i + 1)},
              {"role": "assistant", "content": "answer " * (3 * i + 1)}] for i in range(5)]
    batched = RewardModel(tiny_reward_dir, batch_size=5, dtype="fp32").score(chats)
    single = RewardModel(tiny_reward_dir, batch_size=1, dtype="fp32")
    assert batched == pytest.approx([single.score([chat])[0] for chat in chats], abs=1e-4)
    assert len(set(round(value, 5) for value in batched)) > 1


def test_best_of_n_script_and_a_path_that_is_not_a_reward_model(tmp_path, tiny_reward_dir, tiny_model_dir, capsys):
    output = tmp_path / "best.jsonl"
    assert run_script("evaluation/best_of_n.py", "--model", tiny_model_dir, "--reward-model", tiny_reward_dir,
                      "--n", 2, "--limit", 2, "--max-new-tokens", 4, "--output", output, "--dtype", "fp32") == 0
    best = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(best) == 2 and all(len(b["samples"]) == 2 and b["condition"] for b in best)
    capsys.readouterr()
    assert run_script("evaluation/best_of_n.py", "--model", tiny_model_dir, "--reward-model", tiny_model_dir,
                      "--output", output) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a reward model" in err


# ---------------------------------------------------------------- the benchmark


def test_eval_multifaceted_end_to_end_on_a_tiny_model(tmp_path, tiny_chatty_model_dir, capsys):
    output = tmp_path / "result.json"
    assert run_script("evaluation/eval_multifaceted.py", "--model", tiny_chatty_model_dir,
                      "--judge-model", tiny_chatty_model_dir, "--limit", 2, "--runs", 2, "--max-new-tokens", 6,
                      "--judge-max-new-tokens", 6, "--judge-sees-system", "--bootstrap", 50,
                      "--output", output, "--dtype", "fp32") == 0
    result = json.loads(output.read_text())
    m = result["metrics"]
    assert result["judge_sees_system"] is True and m["items"] == 2 and m["runs"] == 2
    assert m["parsed"] + m["unparsed"] == 2 * 2 * 4  # a gibberish judge: unparsed verdicts are counted, not numbers
    assert output.with_suffix(".png").exists() and len(output.with_suffix(".records.jsonl").read_text().splitlines()) == 2
    assert "| model |" in capsys.readouterr().out
    from aloe.responses import read_responses

    assert read_responses(output.with_suffix(".records.jsonl"))[0].condition == read_bench(BENCH)[0].system
    assert run_script("evaluation/report.py", output, output, "--output", tmp_path / "report.md") == 0


def multifaceted_result(tmp_path, name="m"):
    from aloe.system_messages.results import MultifacetedResult

    return MultifacetedResult(
        name=name, model="x", models={"model": "x", "judge": "j"}, judge_sees_system=False, judge_temperature=0.0,
        runs=1, bench="b.jsonl", settings={}, records=str(tmp_path / f"{name}.records.jsonl"),
        plot=str(tmp_path / f"{name}.png"), metrics=rubric_metrics([[[4, 5, None, 3]], [[2, 2, 2, 2]]], ["a", "b"], 20))


def test_multifaceted_results_have_one_schema_read_by_the_report(tmp_path, capsys):
    from aloe.system_messages.results import read_result, write_result

    path = tmp_path / "m.json"
    write_result(path, multifaceted_result(tmp_path))
    assert read_result(path).metrics.by_source["b"].score == 2.0 and read_result(path).benchmark == "multifaceted"
    assert run_script("evaluation/report.py", path, path, "--output", tmp_path / "report.md") == 0
    assert "| a | b | parse rate |" in capsys.readouterr().out
    data = json.loads(path.read_text())
    cases = {
        "cut.json": path.read_text()[:200],  # a file cut short
        "incomplete.json": json.dumps({**data, "metrics": {k: v for k, v in data["metrics"].items() if k != "score"}}),
        "untagged.json": json.dumps({k: v for k, v in data.items() if k != "benchmark"}),
    }
    expected = {"cut.json": "not valid JSON", "incomplete.json": "multifaceted.metrics.score: Field required",
                "untagged.json": "not an ALOE result nor a Multifaceted one"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        assert run_script("evaluation/report.py", tmp_path / name, "--output", tmp_path / "report.md") == 1
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: {tmp_path / name}: ") and expected[name] in line
    with pytest.raises(AloeError, match=r"incomplete.json: metrics.score: Field required \(not a Multifaceted result"):
        read_result(tmp_path / "incomplete.json")


@pytest.mark.parametrize("change, field", [
    (lambda item: item["rubrics"].pop(), "rubrics"),
    (lambda item: item["rubrics"][2]["score_descriptions"].pop("3"), "rubrics.2.score_descriptions"),
])
def test_bad_bench_items_are_one_line_naming_file_record_and_field(tmp_path, capsys, change, field):
    item = json.loads(BENCH.read_text().splitlines()[0])
    change(item)
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps(item) + "\n")
    assert run_script("evaluation/eval_multifaceted.py", "--bench", bench, "--output", tmp_path / "r.json") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(rf"bench.jsonl:1: {re.escape(field)}", err)


def test_training_reads_the_rows_and_the_pairs_with_the_system_message(tmp_path):
    import argparse

    from aloe.jsonl import rewrite_jsonl
    from aloe.training.formats import read_rows

    rows = [row("a", 0, "A0"), row("a", 1, "A1")]
    rewrite_jsonl(tmp_path / "rows.jsonl", rows)
    rewrite_jsonl(tmp_path / "pairs.jsonl", sibling_pairs(rows)[0])
    name, sft = read_rows([str(tmp_path / "rows.jsonl")], "completion", argparse.Namespace())
    assert name == "system_messages" and sft.rows[0]["prompt"][0] == {"role": "system", "content": rows[0].system}
    name, preference = read_rows([str(tmp_path / "pairs.jsonl")], "preference", argparse.Namespace())
    first = preference.rows[0]
    assert first["prompt"][0]["role"] == "system" and first["chosen"][0]["content"] == "A0"
    assert first["rejected"][0]["content"] == "A1"


def test_the_released_benchmark_offline_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_script("evaluation/eval_multifaceted.py", "--bench", "hf:kaist-ai/Multifaceted-Bench",
                      "--output", tmp_path / "r.json") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "hf:kaist-ai/Multifaceted-Bench: cannot load" in err
