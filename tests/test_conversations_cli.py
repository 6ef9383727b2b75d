"""The data_generation scripts end to end: generate, resume, fail and retry, shard and merge, stats, bad input."""

import functools
import json
from pathlib import Path

import pytest

import aloe.cli
from aloe.interaction.personas import load_pool, pair_personas
from aloe.errors import ModelCallError
from aloe.jsonl import read_records
from aloe.models import BACKENDS, ModelOptions
from aloe.models.local import LocalChatModel
from aloe.prompts import render
from aloe.records import Conversation
from aloe.runs import RunFiles
from stage_scripts import load_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")



generate, merge, stats = (load_script(f"data_generation/{name}.py")
                           for name in ("generate_conversations", "merge", "dataset_stats"))


@pytest.fixture
def pools(tmp_path):
    profiles = tmp_path / "profiles.jsonl"
    # Both pool formats in one file: the seed repository's bare strings and Persona records.
    profiles.write_text(
        json.dumps("I live in Lisbon with my cat Miso. I work night shifts as a nurse. I bake sourdough.") + "\n"
        + json.dumps({"id": "prof-ohio", "text": "I am a retired chemistry teacher in Ohio. I grow tomatoes."}) + "\n"
        + json.dumps("I study architecture in Seoul. I skateboard to class.") + "\n"
    )
    personalities = tmp_path / "personalities.jsonl"
    personalities.write_text(json.dumps("Warm and chatty, tells little stories.") + "\n"
                             + json.dumps("Dry humour, short sentences, sceptical.") + "\n")
    return profiles, personalities


@pytest.fixture
def base_args(pools, tiny_chatty_model_dir):
    profiles, personalities = pools
    return ["--model", f"hf:{tiny_chatty_model_dir}", "--profiles", str(profiles), "--personalities",
            str(personalities), "--max-new-tokens", "6", "--turns", "2"]


def lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def error_line(err: str) -> str:
    """The one error line a script printed (model-loading progress bars may share stderr)."""
    errors = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def assert_valid_tree(record: Conversation, turns: int):
    assert len(record.conversations) == turns
    for k, turn in enumerate(record.conversations):
        history = record.history_before(k)
        roles = [m["role"] for m in history]
        assert roles == ["user", "assistant"] * k + ["user"]
        assert [m["content"] for m in history[::2]] == [t.user for t in record.conversations[:k + 1]]
        assert turn.chosen in ("preferred", "rejected") and turn.user.strip()
        assert [o.shown for o in turn.judge.orders] == [["hinted", "plain"], ["plain", "hinted"]]


def test_end_to_end_with_a_tiny_model_then_stats(tmp_path, base_args, pools):
    output = tmp_path / "run" / "conversations.jsonl"
    assert generate.main([*base_args, "--num-conversations", "3", "--output", str(output)]) == 0
    records = read_records(output, Conversation)
    expected = pair_personas(load_pool(pools[0]), load_pool(pools[1]), 3, seed=0)
    assert [r.id for r in records] == [p.id for p in expected]
    for record, pair in zip(records, expected):
        assert_valid_tree(record, 2)
        assert (record.profile, record.personality) == (pair.profile.text, pair.personality.text)
        assert record.meta["profile_id"] == pair.profile.id and record.meta["seed"] == 0
        assert set(record.meta["models"]) == {"user", "extractor", "assistant", "judge"}
        assert "preference_judge" in record.meta["prompts"] and record.meta["continue"] == "random"
        assert all("extractor_output" in turn.model_extra for turn in record.conversations)
    provenance = json.loads((tmp_path / "run" / "conversations.provenance.json").read_text())
    assert provenance["settings"]["turns"] == 2 and "chat_template_sha256" in provenance["models"]["judge"]
    assert not (tmp_path / "run" / "conversations.failures.jsonl").exists()

    assert stats.main([str(output)]) == 0
    summary = json.loads((tmp_path / "run" / "conversations.stats.json").read_text())
    assert summary["conversations"] == 3 and summary["turns"] == 6
    # A random model never writes [[A]]: every ask is an unparsed verdict, counted, resolved as hinted.
    assert summary["judge_parse_failures"] == {"asks": 12, "unparsed": 12}
    assert summary["judge_outcomes"] == {"agree": 0, "tie": 0, "unparsed": 6}
    assert summary["hinted_preferred_rate"] == 1.0 and summary["judge_order_agreement"] is None
    assert [row["turn"] for row in summary["per_turn"]] == [1, 2]
    assert (tmp_path / "run" / "conversations.stats.png").stat().st_size > 1000


def test_the_papers_judge_prompt_is_selectable_and_recorded(tmp_path, base_args):
    output = tmp_path / "conversations.jsonl"
    assert generate.main([*base_args, "--num-conversations", "1", "--turns", "1", "--judge-prompt", "paper",
                          "--output", str(output)]) == 0
    [record] = read_records(output, Conversation)
    assert record.meta["judge_prompt"] == "paper"
    assert "preference_judge_paper" in record.meta["prompts"] and "preference_judge" not in record.meta["prompts"]
    provenance = json.loads((tmp_path / "conversations.provenance.json").read_text())
    assert provenance["prompts"]["preference_judge_paper"] == record.meta["prompts"]["preference_judge_paper"]
    assert provenance["settings"]["judge_prompt"] == "paper"


def conversation_tree(record: dict) -> tuple:
    """What a conversation is, apart from its judge verdicts: the id and every turn's messages."""
    return record["id"], [(t["user"], t["assistant"][t["chosen"]], sorted(t["assistant"].values()))
                          for t in record["conversations"]]


def test_resume_after_interruption_loses_nothing_and_duplicates_nothing(tmp_path, base_args, capsys):
    output = tmp_path / "conversations.jsonl"
    assert generate.main([*base_args, "--num-conversations", "2", "--output", str(output)]) == 0
    first = output.read_text()
    # A run killed mid-write leaves half a line; asking for more conversations resumes after the finished ones.
    with output.open("a") as handle:
        handle.write('{"id": "conv-half", "profile": "I li')
    capsys.readouterr()
    assert generate.main([*base_args, "--num-conversations", "4", "--output", str(output)]) == 0
    assert "wrote 2 conversations" in capsys.readouterr().out
    # The two finished conversations are kept as they were (only their unparsed verdicts were asked again).
    assert [conversation_tree(r) for r in lines(output)[:2]] == [conversation_tree(json.loads(line))
                                                                 for line in first.splitlines()]
    ids = [record["id"] for record in lines(output)]
    assert len(ids) == 4 == len(set(ids)) and "conv-half" not in ids
    assert generate.main([*base_args, "--num-conversations", "4", "--output", str(output)]) == 0
    assert "wrote 0 conversations" in capsys.readouterr().out and len(lines(output)) == 4
    assert generate.main([*base_args, "--num-conversations", "1", "--output", str(output), "--overwrite"]) == 0
    assert [r["id"] for r in lines(output)] == ids[:1]


class FlakyLocalModel(LocalChatModel):
    """The tiny model behind a `flaky:<path>` spec; its judge calls fail for good once, on the 4th."""

    judge_calls = 0
    fail_on_judge_call = 4
    prompts: list = []

    @classmethod
    def from_spec(cls, spec, resolved, options):
        return cls(spec, resolved.target, batch_size=options.batch_size)

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        FlakyLocalModel.prompts.extend(list(c) for c in conversations)
        if "[Reply A]" in conversations[0][-1]["content"]:
            FlakyLocalModel.judge_calls += 1
            if FlakyLocalModel.judge_calls == FlakyLocalModel.fail_on_judge_call:
                raise ModelCallError(f"{self.spec}: simulated outage")
        return super().generate(conversations, params, sample_indices, on_reply)


def test_a_failed_mid_turn_call_is_retried_on_the_next_run_without_shifting_roles(
        tmp_path, pools, tiny_chatty_model_dir, monkeypatch, capsys):
    monkeypatch.setitem(BACKENDS, "flaky", f"{__name__}:FlakyLocalModel")
    monkeypatch.setattr(FlakyLocalModel, "judge_calls", 0)
    monkeypatch.setattr(FlakyLocalModel, "prompts", [])
    output = tmp_path / "conversations.jsonl"
    argv = ["--model", f"flaky:{tiny_chatty_model_dir}", "--profiles", str(pools[0]), "--personalities",
            str(pools[1]), "--max-new-tokens", "6", "--turns", "2", "--num-conversations", "2",
            "--group-size", "1", "--max-attempts", "1", "--output", str(output)]
    # Judge calls: conversation 1 turns 1-2, conversation 2 turn 1, then turn 2 fails.
    assert generate.main(argv) == 1
    err = error_line(capsys.readouterr().err)
    assert "simulated outage" in err and "re-run" in err
    [finished] = read_records(output, Conversation)  # the finished conversation was kept
    [failure] = lines(tmp_path / "conversations.failures.jsonl")
    assert failure["turn"] == 2 and "simulated outage" in failure["reason"] and failure["id"] != finished.id

    # What the assistant saw at turn 2 of the failed conversation, before the failure.
    assistant_system = render("assistant_plain").splitlines()[0]
    failed_turn_prompts = [p for p in FlakyLocalModel.prompts if p[0]["role"] == "system"
                           and p[0]["content"].startswith(assistant_system) and len(p) == 4]
    FlakyLocalModel.prompts.clear()
    assert generate.main(argv) == 0
    records = read_records(output, Conversation)
    assert [r.id for r in records] == [finished.id, failure["id"]]
    assert not (tmp_path / "conversations.failures.jsonl").exists()
    for record in records:
        assert_valid_tree(record, 2)
    # The re-run rebuilt the same chat from committed turns, so every call up to the failed one came from
    # the response cache: only judge asks reached the model: first the 4 verdicts the random model left
    # unparsed in the finished conversation (asked again as a new sample), then the two of the failed turn.
    assert len(FlakyLocalModel.prompts) == 6 and all("[Reply A]" in p[-1]["content"] for p in FlakyLocalModel.prompts)
    assert [turn.judge.rejudged for turn in records[0].conversations] == [1, 1]
    # Before the failure the assistant saw exactly the committed chat: one message per role per turn.
    # (turn 2 of both conversations: the hinted and the plain prompt of each)
    assert [p[1:] for p in failed_turn_prompts] == [r.history_before(1) for r in records for _ in range(2)]


def test_shards_split_the_pairs_and_merge_joins_them(tmp_path, base_args, pools, capsys):
    output = tmp_path / "big" / "conversations.jsonl"
    for shard in ("0/2", "1/2"):
        assert generate.main([*base_args, "--turns", "1", "--num-conversations", "3", "--shard", shard,
                              "--output", str(output)]) == 0
    shard_files = [path for _, path in RunFiles(output).shard_files()]
    assert [p.name for p in shard_files] == ["conversations.shard-0-of-2.jsonl", "conversations.shard-1-of-2.jsonl"]
    assert [len(lines(p)) for p in shard_files] == [2, 1]
    assert merge.main(["--output", str(output)]) == 0
    expected = pair_personas(load_pool(pools[0]), load_pool(pools[1]), 3, seed=0)
    assert sorted(r["id"] for r in lines(output)) == sorted(p.id for p in expected)
    again = tmp_path / "again.jsonl"
    capsys.readouterr()
    assert merge.main(["--output", str(again), str(output), str(shard_files[0])]) == 0
    assert "2 duplicates dropped" in capsys.readouterr().out and len(lines(again)) == 3


def test_merge_rejects_records_without_ids(tmp_path, capsys):
    path = tmp_path / "original.jsonl"
    path.write_text(json.dumps({"profile": "p", "personality": "q", "conversations": [
        {"user": "hi", "assistant": {"preferred": "hey", "rejected": "yo"}}]}) + "\n")
    assert merge.main(["--output", str(tmp_path / "out.jsonl"), str(path)]) == 1
    assert "original.jsonl:1: id: missing" in capsys.readouterr().err
    assert merge.main(["--output", str(tmp_path / "nothing.jsonl")]) == 1


def test_stats_on_original_aloe_records(tmp_path):
    path = tmp_path / "original.jsonl"
    turn = {"user": "hi there", "assistant": {"preferred": "hey you", "rejected": "yo"},
            "inferred_profile": "None", "inferred_personality": "Warm"}
    path.write_text(json.dumps({"profile": "p", "personality": "q", "conversations": [turn, turn]}) + "\n")
    assert stats.main([str(path), "--output", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["turns"] == 2 and summary["judged_turns"] == 0 and summary["hinted_preferred_rate"] is None
    assert summary["per_turn"][0]["extractor_profile_none_rate"] == 1.0
    assert summary["per_turn"][0]["extractor_personality_none_rate"] == 0.0
    assert summary["reply_words"]["preferred_mean"] == 2 and (tmp_path / "s.png").exists()


@pytest.mark.parametrize("problem, message", [
    ("malformed", ":2: record: not valid JSON"),  # a good line first: the line number is right
    ("no-text", ":1: text: Field required"),
    ("too-many", "distinct pairs"),
])
def test_bad_persona_input_is_one_line_and_a_nonzero_exit(tmp_path, base_args, pools, problem, message, capsys):
    profiles = tmp_path / "bad.jsonl"
    count = "2"
    if problem == "malformed":
        profiles.write_text(json.dumps("I keep bees.") + "\n{not json\n")
    elif problem == "no-text":
        profiles.write_text(json.dumps({"id": "x"}) + "\n")
    elif problem == "too-many":
        profiles, count = pools[0], "7"
    argv = [*base_args, "--num-conversations", count, "--output", str(tmp_path / "out.jsonl")]
    argv[argv.index("--profiles") + 1] = str(profiles)
    assert generate.main(argv) == 1
    assert message in error_line(capsys.readouterr().err)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--continue", "sideways", "--continue: invalid choice"),
    ("--on-tie", "first", "--on-tie: invalid choice"),
])
def test_bad_flags_are_one_line_and_a_nonzero_exit(base_args, flag, value, message, capsys):
    assert generate.main([*base_args, flag, value]) == 1
    assert message in error_line(capsys.readouterr().err)


def test_an_unreachable_api_is_one_line_and_keeps_the_failures(tmp_path, pools, monkeypatch, capsys):
    monkeypatch.setattr(aloe.cli, "ModelOptions", functools.partial(ModelOptions, max_retries=1))
    output = tmp_path / "conversations.jsonl"
    argv = ["--model", "openai:some-model", "--base-url", "http://127.0.0.1:9/v1", "--profiles", str(pools[0]),
            "--personalities", str(pools[1]), "--num-conversations", "2", "--turns", "1", "--output", str(output)]
    assert generate.main(argv) == 1
    err = error_line(capsys.readouterr().err)
    assert "openai:some-model" in err and "reachable" in err
    assert [f["turn"] for f in lines(tmp_path / "conversations.failures.jsonl")] == [1, 1]
    assert output.read_text() == ""


def test_end_to_end_through_the_openai_path(tmp_path, pools, openai_server):
    output = tmp_path / "conversations.jsonl"
    argv = ["--model", openai_server.spec, "--base-url", openai_server.base_url, "--profiles", str(pools[0]),
            "--personalities", str(pools[1]), "--num-conversations", "2", "--turns", "2", "--max-new-tokens", "6",
            "--temperature", "0", "--concurrency", "4", "--output", str(output)]
    assert generate.main(argv) == 0
    records = read_records(output, Conversation)
    assert len(records) == 2
    for record in records:
        assert_valid_tree(record, 2)
        assert record.meta["models"]["assistant"] == openai_server.spec


@pytest.mark.slow
def test_end_to_end_with_the_embedded_model(tmp_path, pools):
    output = tmp_path / "conversations.jsonl"
    argv = ["--model", "embedded", "--profiles", str(pools[0]), "--personalities", str(pools[1]),
            "--num-conversations", "1", "--turns", "1", "--max-new-tokens", "24", "--output", str(output)]
    assert generate.main(argv) == 0
    [record] = read_records(output, Conversation)
    assert_valid_tree(record, 1)
    assert record.conversations[0].assistant.preferred != record.conversations[0].assistant.rejected


def test_scripts_have_help():
    for module in (generate, merge, stats):
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--help"])
        assert exit_info.value.code == 0
