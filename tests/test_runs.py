"""Run files: one place names a run's files and shards, one lock keeps one writer, duplicate ids are refused."""

import json
from pathlib import Path

import pytest

from aloe.errors import AloeError, RecordError
from aloe.jsonl import read_records
from aloe.records import Persona
from aloe.runs import RunFiles
from stage_scripts import run_script


def test_files_of_a_run_and_of_its_shards(tmp_path):
    run = RunFiles(tmp_path / "conversations.jsonl")
    assert run.main == tmp_path / "conversations.jsonl"
    assert run.failures.name == "conversations.failures.jsonl" and run.provenance.name == "conversations.provenance.json"
    assert run.rounds.name == "conversations.rounds.json" and run.cache() == tmp_path / "responses.sqlite"
    shard = RunFiles(tmp_path / "conversations.jsonl", (1, 4))
    assert shard.main.name == "conversations.shard-1-of-4.jsonl"
    assert shard.failures.name == "conversations.shard-1-of-4.failures.jsonl"
    assert shard.cache().name == "conversations.shard-1-of-4.responses.sqlite" and shard.cache("x.sqlite").name == "x.sqlite"
    result = RunFiles(tmp_path / "tiny.json", (0, 2), ".json")
    assert (result.main.name, result.beside("records.jsonl").name) == ("tiny.shard-0-of-2.json", "tiny.shard-0-of-2.records.jsonl")


def test_shard_files_are_found_and_a_split_must_be_complete(tmp_path):
    run = RunFiles(tmp_path / "tiny.json", suffix=".json")
    with pytest.raises(AloeError, match="no shard results"):
        run.complete_shards()
    for index in (0, 2):
        RunFiles(tmp_path / "tiny.json", (index, 3), ".json").main.write_text("{}")
    (tmp_path / "tiny.shard-0-of-3.records.jsonl").write_text("")  # a side file, not a shard
    assert [key for key, _ in run.shard_files()] == [(0, 3), (2, 3)]
    with pytest.raises(AloeError, match="shards 1 of 3 have no finished result"):
        run.complete_shards()


def test_a_second_writer_of_the_same_output_stops_with_one_line_naming_the_holder(tmp_path, capsys):
    output = tmp_path / "conversations.jsonl"
    for name, text in (("p", "I live in Lisbon and work night shifts."), ("q", "Cheerful and curious.")):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(text) + "\n")
    with RunFiles(output).lock():
        status = run_script("data_generation/generate_conversations.py", "--profiles", tmp_path / "p.jsonl",
                            "--personalities", tmp_path / "q.jsonl", "--num-conversations", "1", "--output", output)
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: {output} is being written by another run (pid ")
        with pytest.raises(AloeError, match=r"being written by another run \(pid \d+ on .+ since "):
            with RunFiles(output).lock():
                pass
    assert status == 1 and not output.exists()
    with RunFiles(output).lock():  # released: the next run goes ahead
        pass
    assert not list(tmp_path.glob("*.lock*"))


def test_a_reader_refuses_a_duplicate_id_with_one_line(tmp_path):
    path = tmp_path / "pool.jsonl"
    record = json.dumps({"id": "a", "text": "I keep bees."})
    path.write_text(f"{record}\n{json.dumps({'id': 'b', 'text': 'x'})}\n{record}\n")
    assert len(read_records(path, Persona)) == 3
    with pytest.raises(RecordError, match=r"pool.jsonl: id: 'a' appears twice \(records 1 and 3\)"):
        read_records(path, Persona, unique_ids=True)


def test_open_takes_the_lock_before_overwrite_clears_the_run_files(tmp_path):
    run = RunFiles(tmp_path / "rows.jsonl")
    for path in (run.main, run.failures, run.provenance, run.beside("records.jsonl"), run.cache()):
        path.write_text("old")
    with run.lock():
        with pytest.raises(AloeError, match="being written by another run"):
            with run.open(overwrite=True):
                pass
    assert run.main.read_text() == "old"  # the holder's file is untouched
    with run.open(overwrite=True, also=("records.jsonl",)):
        assert not any(path.exists() for path in (run.main, run.failures, run.provenance, run.beside("records.jsonl")))
    assert run.cache().read_text() == "old"  # the response cache only replays answers: kept
    run.main.write_text("kept")
    with run.open():  # resuming clears nothing
        assert run.main.read_text() == "kept"


PAIR = {"id": "p1", "prompt": "Why?", "chosen": "Because.", "rejected": "No.", "domain": "safety_qa",
        "chosen_persona": "The user is curious.", "rejected_persona": "The user is busy."}
RESPONSE = {"id": "p1", "prompt": "Why?", "response": "Because.", "condition": "The user is curious."}


def overwrite_commands(tmp_path):
    """Every stage with --overwrite, with inputs good enough to reach its lock, and its main output."""
    pairs, responses = tmp_path / "pairs.jsonl", tmp_path / "responses.jsonl"
    pairs.write_text(json.dumps(PAIR) + "\n")
    responses.write_text(json.dumps(RESPONSE) + "\n")
    for name, text in (("p", "I live in Lisbon and work night shifts."), ("q", "Cheerful and curious.")):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(text) + "\n")
    out = tmp_path / "out"
    return {
        "generate_system_messages": ("data_generation/generate_system_messages.py", "--output", out / "rows.jsonl"),
        "generate_conversations": ("data_generation/generate_conversations.py", "--profiles", tmp_path / "p.jsonl",
                                   "--personalities", tmp_path / "q.jsonl", "--num-conversations", "1",
                                   "--output", out / "conversations.jsonl"),
        "infer_personas": ("data_generation/infer_personas.py", "--pairs", pairs, "--output", out / "p.jsonl"),
        "eval_aloe": ("evaluation/eval_aloe.py", "--model", "embedded", "--output", out / "aloe.json"),
        "generate_responses": ("evaluation/generate_responses.py", "--pairs", pairs, "--persona", "gold-chosen",
                               "--output", out / "r.jsonl"),
        "persona_accuracy": ("evaluation/persona_accuracy.py", "--pairs", pairs, "--output", out / "a.json"),
        "win_rate": ("evaluation/win_rate.py", responses, responses, "--output", out / "w.json"),
        "generate_personas": ("persona_generation/generate_personas.py", "--kind", "profile", "--target", "999",
                              "--model", "embedded", "--output", out / "profiles.jsonl"),
    }


@pytest.mark.parametrize("script", ["generate_system_messages", "generate_conversations", "infer_personas",
                                    "eval_aloe", "generate_responses", "persona_accuracy", "win_rate",
                                    "generate_personas"])
def test_overwrite_never_wipes_the_output_of_a_running_stage(tmp_path, capsys, script):
    path, *argv = overwrite_commands(tmp_path)[script]
    output = Path(argv[argv.index("--output") + 1])
    output.parent.mkdir()
    output.write_text("written by the running process\n")
    with RunFiles(output).lock():
        assert run_script(path, *argv, "--overwrite") == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {output} is being written by another run (pid ")
    assert output.read_text() == "written by the running process\n"
