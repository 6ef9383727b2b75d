"""The ALOE benchmark end to end: lockstep engine, no persona leak, resume, shards, settings guard, report.

The model under test is the real tiny llama (`tiny_model_dir`). The user simulator and judge are
scripted ChatModel backends registered in the real model registry, so runs are fast and every score
is known; one slow test runs the real embedded model in every role.
"""

import hashlib
import json
from pathlib import Path

import pytest

from aloe import models as model_registry
from aloe.interaction.evaluation import AloeEvaluation, EvalRecord
from aloe.interaction.personas import ordered_pairs
from aloe.lockstep import Roles
from aloe.models import load_model
from aloe.models.base import ChatModel, Reply, SamplingParams
from aloe.records import Persona

from aloe.interaction.results import run_identity
from stage_scripts import load_script

eval_aloe = load_script("evaluation/eval_aloe.py")
report = load_script("evaluation/report.py")

PROFILE_MARK = "Zorblatt"
PERSONALITY_MARK = "Quixotically"
INTERRUPT = {"after": None, "calls": 0}
FLAKY = {"mute": True, "sample_indices": []}  # the "flaky" judge gives no verdict while muted


def _user_turn(messages) -> str:
    # The simulator's own past messages are its `assistant` turns.
    done = sum(message["role"] == "assistant" for message in messages)
    return f"Turn {done + 1}: my sourdough starter finally bubbled today, how is your week?"


def _score_of(messages) -> str:
    digest = hashlib.sha256(messages[0]["content"].encode()).digest()
    return f"Fits well enough.\n[[score: {1 + digest[0] % 5}]]"


SCRIPTS = {
    "user": _user_turn,
    "judge": _score_of,
    "mute": lambda messages: "What a lovely reply!",  # never gives a verdict
    "flaky": lambda messages: "What a lovely reply!" if FLAKY["mute"] else _score_of(messages),
    # a simulator whose first message of every conversation runs into its token cap
    "rambling": lambda messages: Reply(text=_user_turn(messages), finish_reason="length" if _user_turn(
        messages).startswith("Turn 1:") else "stop"),
}


class ScriptedModel(ChatModel):
    """A deterministic backend for the simulator and judge roles, loaded through the registry."""

    def __init__(self, spec: str, script: str):
        self.spec = spec
        self.script = SCRIPTS[script]

    @classmethod
    def from_spec(cls, spec, resolved, options):
        return cls(spec, resolved.target)

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        INTERRUPT["calls"] += 1
        if self.spec == "scripted:flaky":
            FLAKY["sample_indices"].append(list(sample_indices) if sample_indices is not None else None)
        if INTERRUPT["after"] is not None and INTERRUPT["calls"] > INTERRUPT["after"]:
            raise KeyboardInterrupt
        replies = [_as_reply(self.script(list(c)), self.spec) for c in conversations]
        for position, reply in enumerate(replies):
            if on_reply:
                on_reply(position, reply)
        return replies


def _as_reply(output, spec: str) -> Reply:
    return Reply(text=output, model=spec) if isinstance(output, str) else output


class RecordingModel(ChatModel):
    """Wraps the model under test and keeps every batch of messages it was given."""

    def __init__(self, model: ChatModel):
        self.model, self.spec = model, model.spec
        self.batches, self.replies = [], []

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        self.batches.append([list(c) for c in conversations])
        replies = self.model.generate(conversations, params, sample_indices, on_reply)
        self.replies.append(replies)
        return replies


@pytest.fixture(autouse=True)
def scripted_backend(monkeypatch):
    monkeypatch.setitem(model_registry.BACKENDS, "scripted", f"{__name__}:ScriptedModel")
    monkeypatch.setitem(INTERRUPT, "after", None)
    monkeypatch.setitem(INTERRUPT, "calls", 0)
    monkeypatch.setitem(FLAKY, "mute", True)
    monkeypatch.setitem(FLAKY, "sample_indices", [])


@pytest.fixture
def personas(tmp_path):
    """3 profiles x 2 personalities carrying marker words that must never reach the model under test."""
    profiles = tmp_path / "profiles.jsonl"
    personalities = tmp_path / "personalities.jsonl"
    profiles.write_text("".join(json.dumps({"id": f"prof-{i}", "text": f"{PROFILE_MARK} number {i} keeps bees in Oslo."})
                                + "\n" for i in range(3)))
    personalities.write_text("".join(json.dumps({"id": f"pers-{i}", "text": f"{PERSONALITY_MARK} cheerful, type {i}."})
                                     + "\n" for i in range(2)))
    return profiles, personalities


def _args(tmp_path, personas, tiny, *extra, output="out/tiny.json"):
    profiles, personalities = personas
    return ["--model", f"hf:{tiny}", "--user-model", "scripted:user", "--judge-model", "scripted:judge",
            "--profiles", str(profiles), "--personalities", str(personalities), "--max-new-tokens", "8",
            "--bootstrap", "200", "--output", str(tmp_path / output), *extra]


def _records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_pair_order_covers_every_pair_once_and_prefixes_spread():
    profiles = [Persona(id=f"p{i}", text=f"profile {i}") for i in range(20)]
    personalities = [Persona(id=f"q{i}", text=f"personality {i}") for i in range(5)]
    pairs = ordered_pairs(profiles, personalities)
    keys = [(pair.profile.id, pair.personality.id) for pair in pairs]
    assert len(set(keys)) == 100
    assert len({pair.id for pair in pairs}) == 100
    first5 = keys[:5]
    assert len({p for p, _ in first5}) == 5 and len({q for _, q in first5}) == 5
    first20 = keys[:20]
    assert len({p for p, _ in first20}) == 20
    assert ordered_pairs(profiles, personalities) == pairs  # deterministic


def _engine(model, turns=3, user="scripted:user", judge="scripted:judge"):
    params = Roles(model=SamplingParams(temperature=0.0, max_new_tokens=6),
                        user=SamplingParams(max_new_tokens=16), judge=SamplingParams(temperature=0.0))
    return AloeEvaluation(Roles(model=model, user=load_model(user), judge=load_model(judge)), params, turns, "h")


def test_the_model_under_test_sees_only_the_conversation(tiny_model_dir, personas):
    profiles = [Persona(id=f"p{i}", text=f"{PROFILE_MARK} {i} keeps bees.") for i in range(3)]
    personalities = [Persona(id="q", text=f"{PERSONALITY_MARK} and shy.")]
    model = RecordingModel(load_model(f"hf:{tiny_model_dir}"))
    records: list[EvalRecord] = []
    _engine(model).run(ordered_pairs(profiles, personalities), records.append)

    assert len(model.batches) == 3  # lockstep: one call per turn, each holding every conversation
    assert all(len(batch) == 3 for batch in model.batches)
    for k, batch in enumerate(model.batches):
        for messages, record in zip(batch, records):
            assert [m["role"] for m in messages] == ["user", "assistant"] * k + ["user"]  # no system prompt
            for m in messages:
                assert PROFILE_MARK not in m["content"] and PERSONALITY_MARK not in m["content"]
                assert "keeps bees" not in m["content"]
            expected = []
            for turn in record.turns[:k]:
                expected += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.reply}]
            expected.append({"role": "user", "content": record.turns[k].user})
            assert messages == expected
    assert all(len(record.turns) == 3 and all(t.judge.score is not None for t in record.turns) for record in records)


def test_persona_system_message_tells_the_model_who_the_user_is(tiny_model_dir):
    profiles = [Persona(id="p", text=f"{PROFILE_MARK} keeps bees.")]
    personalities = [Persona(id="q", text=f"{PERSONALITY_MARK} and shy.")]
    model = RecordingModel(load_model(f"hf:{tiny_model_dir}"))
    engine = _engine(model, turns=2)
    engine.persona_system_message = True
    engine.run(ordered_pairs(profiles, personalities), lambda record: None)
    for k, batch in enumerate(model.batches):
        (messages,) = batch
        assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * k + ["user"]
        assert PROFILE_MARK in messages[0]["content"] and PERSONALITY_MARK in messages[0]["content"]
        assert all(PROFILE_MARK not in m["content"] for m in messages[1:])


def test_persona_system_message_is_part_of_the_run_identity(tiny_model_dir, personas, tmp_path, capsys):
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "1", "--turns", "1")) == 0
    before = json.loads((tmp_path / "out/tiny.json").read_text())
    assert "persona_system_message" not in before["identity"]  # older results keep their hash
    capsys.readouterr()
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "1", "--turns", "1",
                                "--persona-system-message")) == 1
    assert "holds a result of other settings" in _error_line(capsys)
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "1", "--turns", "1",
                                "--persona-system-message", "--output", str(tmp_path / "out/upper.json"))) == 0
    upper = json.loads((tmp_path / "out/upper.json").read_text())
    assert len(upper["identity"]["persona_system_message"]) == 16  # the prompt's hash


def test_long_histories_are_cut_from_the_left_to_fit_the_context(tiny_model_dir):
    local = load_model(f"hf:{tiny_model_dir}")
    local.context_length = 60  # a few turns of the scripted user overflow this
    model = RecordingModel(local)
    profiles = [Persona(id="p", text="Keeps bees.")]
    personalities = [Persona(id="q", text="Shy.")]
    records = []
    _engine(model, turns=4).run(ordered_pairs(profiles, personalities), records.append)
    assert len(records[0].turns) == 4
    prompt_tokens = [batch[0].prompt_tokens for batch in model.replies]
    assert max(prompt_tokens) <= 60 - 6
    assert len(model.batches[-1][0]) == 7  # the full history was offered; the backend cut it


def test_end_to_end_result_plot_records_and_report(tiny_model_dir, personas, tmp_path, capsys):
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "4", "--turns", "2")) == 0
    result = json.loads((tmp_path / "out/tiny.json").read_text())
    assert (tmp_path / "out/tiny.png").stat().st_size > 1000
    records = _records(tmp_path / "out/tiny.records.jsonl")
    assert len(records) == 4 and all(len(r["turns"]) == 2 for r in records)
    metrics = result["metrics"]
    assert metrics["conversations"] == 4 and metrics["turns"] == 2
    assert metrics["parsed"] == 8 and metrics["unparsed"] == 0
    by_turn = [[r["turns"][k]["judge"]["score"] for r in records] for k in range(2)]
    assert metrics["al"] == [pytest.approx(sum(s) / 4) for s in by_turn]
    assert result["models"] == {"model": f"hf:{tiny_model_dir}", "user": "scripted:user", "judge": "scripted:judge"}
    assert result["settings"]["turns"] == 2 and result["records"].endswith("tiny.records.jsonl")
    assert set(result["provenance"]["prompts"]) >= {"alignment_judge", "alignment_judge_reminder", "user_simulator"}
    assert "chat_template_sha256" in result["provenance"]["models"]["model"]
    assert "tiny: 4 conversations x 2 turns" in capsys.readouterr().out

    # a second model (here: the same weights at another temperature) and the comparison report
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "4", "--turns", "2",
                                "--temperature", "0", output="out/greedy.json")) == 0
    capsys.readouterr()
    report_path = tmp_path / "report/compare.md"
    assert report.main([str(tmp_path / "out/tiny.json"), str(tmp_path / "out/greedy.json"),
                        "--output", str(report_path)]) == 0
    table = report_path.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| model | conversations | turns | AL(1) | AL(K) | mean AL | IR | N-IR | R²")
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| tiny", "| greedy"]
    assert "100% (8/8)" in rows[1]
    assert report_path.with_suffix(".png").stat().st_size > 1000
    assert table in capsys.readouterr().out
    # the two runs sampled the model at different temperatures: said in the table, nothing else
    warning = next(line for line in table.splitlines() if line.startswith("Warning: the results differ"))
    assert "temperature (tiny: 0.7, greedy: 0.0)" in warning and "turns" not in warning


def test_report_warns_when_results_ran_other_protocols(tiny_model_dir, personas, tmp_path, capsys):
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "2", "--turns", "2")) == 0
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "2", "--turns", "1",
                                "--judge-max-new-tokens", "32", output="out/short.json")) == 0
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "2", "--turns", "2",
                                output="out/same.json")) == 0
    capsys.readouterr()
    assert report.main([str(tmp_path / "out/tiny.json"), str(tmp_path / "out/short.json"),
                        "--output", str(tmp_path / "r1.md")]) == 0
    warning = next(line for line in (tmp_path / "r1.md").read_text().splitlines() if line.startswith("Warning"))
    assert "turns (tiny: 2, short: 1)" in warning and "judge_max_new_tokens (tiny: 64, short: 32)" in warning
    assert report.main([str(tmp_path / "out/tiny.json"), str(tmp_path / "out/same.json"),
                        "--output", str(tmp_path / "r2.md")]) == 0
    assert "Warning" not in (tmp_path / "r2.md").read_text()


def test_a_judge_that_never_parses_finishes_the_run_and_reports_the_count(tiny_model_dir, personas, tmp_path, capsys):
    args = _args(tmp_path, personas, tiny_model_dir, "--limit", "2", "--turns", "2")
    args[args.index("scripted:judge")] = "scripted:mute"
    assert eval_aloe.main(args) == 1
    out = capsys.readouterr()
    assert "0 scores parsed, 4 unparsed" in out.out
    assert "no readable score (4 unparsed; first reason: no [[score: N]] verdict" in out.err
    result = json.loads((tmp_path / "out/tiny.json").read_text())
    assert result["metrics"]["parse_rate"] == 0.0 and result["metrics"]["al"] == [None, None]
    turn = _records(tmp_path / "out/tiny.records.jsonl")[0]["turns"][0]["judge"]
    assert turn["score"] is None and len(turn["attempts"]) == 2
    assert turn["attempts"][0]["raw"] == "What a lovely reply!"


def test_unparsed_scores_are_asked_again_on_the_next_run(tiny_model_dir, personas, tmp_path, capsys):
    args = _args(tmp_path, personas, tiny_model_dir, "--limit", "2", "--turns", "2")
    args[args.index("scripted:judge")] = "scripted:flaky"
    assert eval_aloe.main(args) == 1  # the judge gave nothing readable
    first = _records(tmp_path / "out/tiny.records.jsonl")
    assert FLAKY["sample_indices"] == [[0, 0], [0, 0], [0, 0], [0, 0]]  # per turn: the ask, then the reminder

    FLAKY["mute"], FLAKY["sample_indices"] = False, []
    capsys.readouterr()
    assert eval_aloe.main(args) == 0
    assert "4 scores parsed, 0 unparsed" in capsys.readouterr().out
    # One batch for the 4 unscored turns, as the third ask of each: a fresh sample, not a cache replay.
    assert FLAKY["sample_indices"] == [[2, 2, 2, 2]]
    second = _records(tmp_path / "out/tiny.records.jsonl")
    assert [r["id"] for r in second] == [r["id"] for r in first]  # rewritten in place, nothing duplicated
    for old, new in zip(first, second):
        assert [(t["user"], t["reply"]) for t in new["turns"]] == [(t["user"], t["reply"]) for t in old["turns"]]
        for turn in new["turns"]:
            judge = turn["judge"]
            assert judge["score"] in range(1, 6) and judge["reason"] is None
            # The new ask replaces the old ones (the record does not grow run after run) and says its sample.
            assert [a["sample"] for a in judge["attempts"]] == [2]
    result = json.loads((tmp_path / "out/tiny.json").read_text())
    assert result["metrics"]["parse_rate"] == 1.0

    FLAKY["sample_indices"] = []
    assert eval_aloe.main(args) == 0
    assert FLAKY["sample_indices"] == []  # nothing left to ask


def test_rejudge_rereads_stored_outputs_before_asking_again(tiny_model_dir):
    judge = RecordingModel(load_model("scripted:judge"))
    engine = _engine(load_model(f"hf:{tiny_model_dir}"), judge="scripted:judge")
    engine.models.judge = judge
    stored = {"score": None, "reason": "no verdict (after 1 asks)",
              "attempts": [{"raw": "Lovely.\n[[Score: 4/5]]", "score": None, "reason": "an older parser failed"}]}
    record = EvalRecord.model_validate({
        "id": "pair-1", "profile_id": "p", "personality_id": "q", "profile": "keeps bees", "personality": "terse",
        "settings_hash": "h", "turns": [{"turn": 1, "user": "hi", "reply": "hello", "judge": stored}]})
    assert engine.rejudge([record]) == [record]
    assert record.turns[0].judge.score == 4 and len(record.turns[0].judge.attempts) == 1
    assert judge.batches == []  # the current parser read the stored text: no new call


def test_resume_after_interruption_gives_the_uninterrupted_result(tiny_model_dir, personas, tmp_path, monkeypatch):
    extra = ("--limit", "3", "--turns", "2", "--group-size", "1")
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, *extra, output="full/tiny.json")) == 0

    # Each group makes 2 turns x (1 user + 1 judge) scripted calls; stop in the middle of the second group.
    monkeypatch.setitem(INTERRUPT, "calls", 0)
    monkeypatch.setitem(INTERRUPT, "after", 6)
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, *extra, output="cut/tiny.json")) == 130
    assert len(_records(tmp_path / "cut/tiny.records.jsonl")) == 1
    monkeypatch.setitem(INTERRUPT, "after", None)
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, *extra, output="cut/tiny.json")) == 0
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, *extra, output="cut/tiny.json")) == 0  # no-op

    full, resumed = _records(tmp_path / "full/tiny.records.jsonl"), _records(tmp_path / "cut/tiny.records.jsonl")
    assert resumed == full  # same conversations, same replies and scores, no duplicates
    metrics = [json.loads((tmp_path / d / "tiny.json").read_text())["metrics"] for d in ("full", "cut")]
    assert metrics[0] == metrics[1]


def test_a_larger_limit_extends_a_finished_run(tiny_model_dir, personas, tmp_path):
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "2", "--turns", "1")) == 0
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "5", "--turns", "1")) == 0
    assert len(_records(tmp_path / "out/tiny.records.jsonl")) == 5
    assert json.loads((tmp_path / "out/tiny.json").read_text())["metrics"]["conversations"] == 5


def test_a_result_of_other_settings_is_refused_unless_overwrite(tiny_model_dir, personas, tmp_path, capsys):
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "2", "--turns", "2")) == 0
    capsys.readouterr()
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "2", "--turns", "1")) == 1
    line = _error_line(capsys)
    assert "holds a result of other settings" in line and "turns 2 -> 1" in line and "--overwrite" in line
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "2", "--turns", "1",
                                "--overwrite")) == 0
    records = _records(tmp_path / "out/tiny.records.jsonl")
    assert len(records) == 2 and all(len(r["turns"]) == 1 for r in records)


def test_the_settings_hold_the_dtype_auto_means_on_this_machine(tiny_model_dir, personas, tmp_path, capsys):
    from aloe.models.local import inference_dtype_name

    here = inference_dtype_name("auto")
    same, other = ("bf16", "fp32") if here == "bfloat16" else ("fp32", "bf16")
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "1", "--turns", "1")) == 0
    assert json.loads((tmp_path / "out/tiny.json").read_text())["identity"]["dtype"] == here
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "1", "--turns", "1",
                                "--dtype", same)) == 0  # the same run, named explicitly: resumed
    capsys.readouterr()
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--limit", "1", "--turns", "1",
                                "--dtype", other)) == 1
    assert "dtype" in _error_line(capsys)
    api_only = eval_aloe.build_parser().parse_args(["--model", "openai:m", "--user-model", "anthropic:u",
                                                    "--judge-model", "cohere:j"])
    assert run_identity(api_only, "personas")["dtype"] is None  # the flag changes nothing there


def test_shards_merge_into_the_unsharded_result(tiny_model_dir, personas, tmp_path, capsys):
    extra = ("--limit", "5", "--turns", "2", "--group-size", "1")
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, *extra, output="whole/tiny.json")) == 0
    for shard in ("0/2", "1/2"):
        assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, *extra, "--shard", shard,
                                    output="split/tiny.json")) == 0
    assert len(_records(tmp_path / "split/tiny.shard-0-of-2.records.jsonl")) == 3
    capsys.readouterr()
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, *extra, "--merge", output="split/tiny.json")) == 0
    assert "merged 2 shards" in capsys.readouterr().out
    whole = {r["id"]: r for r in _records(tmp_path / "whole/tiny.records.jsonl")}
    merged = {r["id"]: r for r in _records(tmp_path / "split/tiny.records.jsonl")}
    assert merged == whole
    results = [json.loads((tmp_path / d / "tiny.json").read_text()) for d in ("whole", "split")]
    assert results[0]["metrics"]["al"] == results[1]["metrics"]["al"]
    assert results[0]["metrics"]["ir"] == results[1]["metrics"]["ir"]


def test_merge_without_every_shard_is_refused(tiny_model_dir, personas, tmp_path, capsys):
    extra = ("--limit", "2", "--turns", "1")
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, *extra, "--shard", "1/3")) == 0
    capsys.readouterr()
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, *extra, "--merge")) == 1
    assert "shards 0, 2 of 3 have no finished result" in _error_line(capsys)


@pytest.mark.parametrize("change, message", [
    ({"--model": "nosuchbackend:thing"}, "unknown model spec prefix 'nosuchbackend'"),
    ({"--judge-model": "./no/such/checkpoint"}, "model path not found"),
    ({"--dtype": "fp16"}, "argument --dtype: invalid choice: 'fp16'"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(tiny_model_dir, personas, tmp_path, capsys, change, message):
    args = _args(tmp_path, personas, tiny_model_dir, "--turns", "2")
    for flag, value in change.items():
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert eval_aloe.main(args) == 1
    assert message in _error_line(capsys)
    assert not (tmp_path / "out/tiny.records.jsonl").exists()


def test_a_malformed_persona_file_names_file_and_line(tiny_model_dir, personas, tmp_path, capsys):
    profiles, _ = personas
    profiles.write_text(profiles.read_text() + '{"id": "x", "text": ""}\n')
    assert eval_aloe.main(_args(tmp_path, personas, tiny_model_dir, "--turns", "1")) == 1
    assert f"{profiles}:4: text:" in _error_line(capsys)


def test_report_rejects_missing_and_foreign_files(tmp_path, capsys):
    assert report.main([str(tmp_path / "none.json")]) == 1
    assert "none.json: file not found" in _error_line(capsys)
    foreign = tmp_path / "other.json"
    foreign.write_text(json.dumps({"accuracy": 0.5}))
    assert report.main([str(foreign), "--output", str(tmp_path / "r.md")]) == 1
    assert "not an ALOE result" in _error_line(capsys)


@pytest.mark.slow
def test_embedded_model_in_every_role(tmp_path, capsys):
    """The shipped personas with the real embedded model as model, simulator and judge."""
    output = tmp_path / "aloe/embedded.json"
    code = eval_aloe.main(["--model", "embedded", "--limit", "2", "--turns", "2", "--max-new-tokens", "24",
                           "--user-max-new-tokens", "24", "--judge-max-new-tokens", "16", "--bootstrap", "100",
                           "--output", str(output)])
    result = json.loads(output.read_text())
    metrics = result["metrics"]
    # A 135M judge may fail the format; the run still finishes and counts what it could not read.
    assert code == (0 if metrics["parsed"] else 1)
    assert metrics["parsed"] + metrics["unparsed"] + metrics["missing"] == 4
    assert output.with_suffix(".png").is_file()
    assert result["models"] == {"model": "embedded", "user": "embedded", "judge": "embedded"}
    assert all(len(record["turns"]) >= 1 for record in _records(tmp_path / "aloe/embedded.records.jsonl"))


def test_caps_follow_the_papers_and_the_result_reports_truncation_per_turn(tiny_model_dir, personas, tmp_path, capsys):
    defaults = eval_aloe.build_parser().parse_args([])
    assert (defaults.max_new_tokens, defaults.user_max_new_tokens) == (300, 300)  # the paper's 300-token cap
    argv = _args(tmp_path, personas, tiny_model_dir, "--limit", "3", "--turns", "2")
    argv[argv.index("scripted:user")] = "scripted:rambling"
    assert eval_aloe.main(argv) == 0
    records = _records(tmp_path / "out/tiny.records.jsonl")
    assert [[turn["user_finish_reason"] for turn in r["turns"]] for r in records] == [["length", "stop"]] * 3
    result = json.loads((tmp_path / "out/tiny.json").read_text())
    cut = result["truncated"]
    replies = [turn["finish_reason"] for r in records for turn in r["turns"]]
    assert cut["model"] == pytest.approx(replies.count("length") / 6) and cut["user"] == pytest.approx(0.5)
    assert [(row["turn"], row["replies"], row["user"]) for row in cut["per_turn"]] == [(1, 3, 1.0), (2, 3, 0.0)]
    assert result["identity"]["max_new_tokens"] == 8 and result["identity"]["user_max_new_tokens"] == 300
    assert "user messages 50%" in capsys.readouterr().out
    assert report.main([str(tmp_path / "out/tiny.json"), "--output", str(tmp_path / "r.md")]) == 0
    assert "cut at cap (replies / user)" in (tmp_path / "r.md").read_text() and "/ 50%" in (tmp_path / "r.md").read_text()


def _authors_layout(folder: Path, profiles: int, personalities: int) -> tuple[Path, Path]:
    """Evaluation files laid out as the ALOE authors published theirs: one bare JSON string per line."""
    folder.mkdir(parents=True, exist_ok=True)
    profile_file, personality_file = folder / "profile_eval.jsonl", folder / "personality_eval.jsonl"
    profile_file.write_text("\n".join(json.dumps(f"He is {30 + i}, keeps bees and fixes bikes {i}.")
                                      for i in range(profiles)))  # their file ends without a newline
    personality_file.write_text("".join(json.dumps(f"She is cheerful and blunt, type {i}.") + "\n"
                                        for i in range(personalities)))
    return profile_file, personality_file


def test_the_authors_evaluation_files_give_the_papers_pairs(tmp_path):
    from aloe.interaction.evaluation import load_persona_set

    personas = load_persona_set(*_authors_layout(tmp_path, 20, 7))
    pairs = personas.pairs()
    assert len(pairs) == 100 and len({pair.id for pair in pairs}) == 100  # not 20 x 7 = 140
    used = {pair.personality.text for pair in pairs}
    assert used == {f"She is cheerful and blunt, type {i}." for i in range(5)}  # the first 5, as the paper read them
    assert personas.describe()["pairs"] == 100 and "first 5 of 7" in personas.name
    assert len(load_persona_set(*_authors_layout(tmp_path, 20, 7), personalities_used=7).pairs()) == 140


def test_a_result_names_and_hashes_its_persona_set(tiny_model_dir, tmp_path, capsys):
    authors = _authors_layout(tmp_path / "authors", 3, 7)
    assert eval_aloe.main(_args(tmp_path, authors, tiny_model_dir, "--turns", "1")) == 0
    result = json.loads((tmp_path / "out/tiny.json").read_text())
    assert result["metrics"]["conversations"] == 15
    persona_set = result["persona_set"]
    assert persona_set["hash"] == result["identity"]["personas"] and persona_set["pairs"] == 15
    assert persona_set["name"] == "profile_eval.jsonl x personality_eval.jsonl (first 5 of 7 personalities)"
    capsys.readouterr()
    assert report.main([str(tmp_path / "out/tiny.json"), "--output", str(tmp_path / "r.md")]) == 0
    assert "Persona set: profile_eval.jsonl x personality_eval.jsonl" in (tmp_path / "r.md").read_text()


def test_a_model_retrained_into_the_same_folder_never_gets_the_old_records(tiny_model_dir, personas, tmp_path, capsys):
    import shutil

    from test_cache import retrain_in_place

    folder = tmp_path / "model_output" / "tiny_dpo"
    shutil.copytree(tiny_model_dir, folder)
    argv = _args(tmp_path, personas, folder, "--limit", "2", "--turns", "1")
    assert eval_aloe.main(argv) == 0
    before = (tmp_path / "out/tiny.records.jsonl").read_text()
    fingerprint = json.loads((tmp_path / "out/tiny.json").read_text())["identity"]["model_weights"]
    shutil.copy(tmp_path / "out/tiny.json", tmp_path / "first.json")

    retrain_in_place(folder)
    capsys.readouterr()
    assert eval_aloe.main(argv) == 1  # refused with one line: the records are of the old weights
    line = _error_line(capsys)
    assert "model_weights" in line and "--overwrite" in line
    assert (tmp_path / "out/tiny.records.jsonl").read_text() == before
    assert eval_aloe.main([*argv, "--overwrite"]) == 0
    assert json.loads((tmp_path / "out/tiny.json").read_text())["identity"]["model_weights"] != fingerprint
    # Two models under test have other weights by nature: the report compares them without a warning.
    assert report.main([str(tmp_path / "first.json"), str(tmp_path / "out/tiny.json"),
                        "--output", str(tmp_path / "r.md")]) == 0
    assert "Warning" not in (tmp_path / "r.md").read_text()
