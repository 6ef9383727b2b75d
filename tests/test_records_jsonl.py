"""Record schemas and JSONL I/O: validation messages, interrupted writes, resume by id, merging shards."""

from __future__ import annotations

import json

import pytest

from aloe.errors import RecordError
from aloe.jsonl import JsonlWriter, existing_ids, iter_records, merge_jsonl, read_records, write_json
from aloe.records import Conversation, Persona

ORIGINAL_ALOE_RECORD = {  # the seed dataset's shape: no id, no chosen, no meta
    "profile": "Lives in Oslo; keeps bees.",
    "personality": "Dry humour; brief.",
    "conversations": [
        {"user": "Hi", "assistant": {"preferred": "Hey, how are the bees?", "rejected": "Hello."}},
        {"user": "Cold.", "assistant": {"preferred": "Wrap the hives?", "rejected": "OK."}},
    ],
}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_malformed_json_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", ['{"id": "a", "text": "x"}', '{"id": "b", "text": '])
    with pytest.raises(RecordError, match=rf"^{path}:2: record: not valid JSON \("):
        read_records(path, Persona)


@pytest.mark.parametrize("line, problem", [
    ('{"id": "a"}', "3: text: Field required"),
    ('{"id": "a", "text": ""}', "3: text: String should have at least 1 character"),
    ('{"id": "a", "text": "x", "source": "scraped"}', "3: source: Input should be 'seed' or 'generated'"),
    ('[1, 2]', "3: record: expected a JSON object, got list"),
])
def test_invalid_persona_names_file_line_and_field(tmp_path, line, problem):
    path = write_lines(tmp_path / "p.jsonl", ['{"id": "a", "text": "x"}', "", line])
    with pytest.raises(RecordError) as info:
        read_records(path, Persona)
    assert str(info.value).startswith(f"{path}:{problem}")


def test_invalid_conversation_field_path(tmp_path):
    record = json.loads(json.dumps(ORIGINAL_ALOE_RECORD))
    del record["conversations"][1]["assistant"]["rejected"]
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(record)])
    with pytest.raises(RecordError, match=rf"^{path}:1: conversations\.1\.assistant\.rejected: Field required"):
        read_records(path, Conversation)
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({**ORIGINAL_ALOE_RECORD, "profile": "  "})])
    with pytest.raises(RecordError, match=rf"^{path}:1: profile: Value error, must not be empty"):
        read_records(path, Conversation)


def test_bare_json_strings_are_personas(tmp_path):
    path = write_lines(tmp_path / "seed.jsonl", ['"Likes hiking."', '{"id": "g1", "text": "Plays chess.",'
                                                 ' "source": "generated", "round": 2, "max_similarity": 0.41}'])
    personas = read_records(path, Persona, from_string=Persona.from_bare_string)
    assert [persona.text for persona in personas] == ["Likes hiking.", "Plays chess."]
    assert personas[0].source == "seed" and personas[0].id.startswith("p-")
    assert personas[0].id == Persona.from_bare_string("Likes hiking.").id  # stable across runs
    assert personas[1].round == 2 and personas[1].max_similarity == 0.41
    with pytest.raises(RecordError, match=r":1: record: expected a JSON object, got str"):
        read_records(path, Persona)  # only where the reader accepts the seed format


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(RecordError, match=r"nope\.jsonl: file not found"):
        read_records(tmp_path / "nope.jsonl", Persona)
    empty = write_lines(tmp_path / "empty.jsonl", [])
    with pytest.raises(RecordError, match=r"empty\.jsonl: no records"):
        read_records(empty, Persona)
    assert read_records(empty, Persona, allow_empty=True) == []


def test_half_written_last_line_is_skipped_then_dropped(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n{"id": "c", "te', encoding="utf-8")
    assert [p.id for p in iter_records(path, Persona)] == ["a", "b"]
    assert existing_ids(path) == {"a", "b"}
    with JsonlWriter(path) as writer:  # the resumed run
        writer.write(Persona(id="c", text="z"))
    assert path.read_text().splitlines()[-1] == '{"id": "c", "text": "z", "source": "seed", "round": 0, "max_similarity": null}'
    assert [p.id for p in read_records(path, Persona)] == ["a", "b", "c"]


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "hand-written.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}', encoding="utf-8")
    assert [p.id for p in read_records(path, Persona)] == ["a", "b"]


def test_writer_drops_a_long_partial_line_only(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text('{"id": "a"}\n' + '{"id": "b", "text": "' + "x" * 200_000, encoding="utf-8")
    JsonlWriter(path).close()
    assert path.read_text() == '{"id": "a"}\n'
    path.write_text('{"id": "partial', encoding="utf-8")  # nothing finished at all
    JsonlWriter(path).close()
    assert path.read_text() == ""


def test_writer_flushes_each_record_and_overwrite_starts_over(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    writer = JsonlWriter(path)
    writer.write({"id": "a", "n": 1})
    assert existing_ids(path) == {"a"}  # visible before close: a killed run keeps it
    writer.close()
    with JsonlWriter(path, overwrite=True) as writer:
        writer.write_all([{"id": "b"}, {"id": "c"}])
    assert existing_ids(path) == {"b", "c"}


def test_existing_ids(tmp_path):
    assert existing_ids(tmp_path / "absent.jsonl") == set()
    path = write_lines(tmp_path / "ids.jsonl", ['{"id": "a"}', '"bare string"', '{"no_id": 1}', '{"id": "b"}'])
    assert existing_ids(path) == {"a", "b"}
    bad = write_lines(tmp_path / "bad.jsonl", ['{"id": "a"}', "{oops"])
    with pytest.raises(RecordError, match=rf"^{bad}:2: record: not valid JSON"):
        existing_ids(bad)


def test_merge_jsonl_keeps_first_of_each_id(tmp_path):
    one = write_lines(tmp_path / "shard0.jsonl", ['{"id": "a", "v": 1}', '{"id": "b", "v": 1}'])
    two = tmp_path / "shard1.jsonl"
    two.write_text('{"id": "b", "v": 2}\n{"id": "c", "v": 2}\n{"id": "d", "v"', encoding="utf-8")
    out = tmp_path / "merged.jsonl"
    assert merge_jsonl([one, two], out) == (3, 1)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"id": "a", "v": 1}, {"id": "b", "v": 1}, {"id": "c", "v": 2}]
    assert merge_jsonl([one, two], out) == (3, 1)  # re-running replaces, never appends


def test_merge_jsonl_errors(tmp_path):
    one = write_lines(tmp_path / "shard0.jsonl", ['{"id": "a"}'])
    with pytest.raises(RecordError, match="cannot also be an input"):
        merge_jsonl([one], one)
    assert one.read_text() == '{"id": "a"}\n'
    with pytest.raises(RecordError, match=r"missing\.jsonl: file not found"):
        merge_jsonl([one, tmp_path / "missing.jsonl"], tmp_path / "out.jsonl")
    no_id = write_lines(tmp_path / "no_id.jsonl", ['{"name": "a"}'])
    with pytest.raises(RecordError, match=rf"^{no_id}:1: id: missing"):
        merge_jsonl([no_id], tmp_path / "out.jsonl")


def test_a_failed_merge_keeps_the_earlier_merged_file(tmp_path):
    one = write_lines(tmp_path / "shard0.jsonl", ['{"id": "a"}'])
    out = tmp_path / "merged.jsonl"
    merge_jsonl([one], out)
    bad = write_lines(tmp_path / "shard1.jsonl", ['{"id": "b"}', "{oops", '{"id": "c"}'])
    with pytest.raises(RecordError, match=rf"^{bad}:2"):
        merge_jsonl([one, bad], out)
    assert out.read_text() == '{"id": "a"}\n' and sorted(p.name for p in tmp_path.iterdir()) == [
        "merged.jsonl", "shard0.jsonl", "shard1.jsonl"]


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "results" / "m.json"
    write_json(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"b": 1, "a": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_original_aloe_records_get_stable_ids_and_continue_with_preferred(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(ORIGINAL_ALOE_RECORD)] * 2)
    first, second = read_records(path, Conversation)
    assert first.id == second.id and first.id.startswith("conv-")
    assert first.history_before(1) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hey, how are the bees?"},
        {"role": "user", "content": "Cold."},
    ]
    record = json.loads(json.dumps(ORIGINAL_ALOE_RECORD))
    record["conversations"][0]["chosen"] = "rejected"
    record["extra_key"] = "kept"
    conversation = Conversation.model_validate(record)
    assert conversation.history_before(1)[1]["content"] == "Hello."
    assert conversation.model_dump()["extra_key"] == "kept"  # newer keys pass through older code


def test_two_json_strings_on_one_line_are_two_personas_with_a_warning(tmp_path, caplog):
    # The original authors' profile.jsonl holds two bare strings on its line 6; their reader splits them.
    path = write_lines(tmp_path / "profile.jsonl", ['"Likes hiking."', '"Keeps bees." "Plays chess."',
                                                    '{"id": "g1", "text": "Sails."}{"id": "g2", "text": "Knits."}'])
    with caplog.at_level("WARNING"):
        personas = read_records(path, Persona, from_string=Persona.from_bare_string)
    assert [persona.text for persona in personas] == ["Likes hiking.", "Keeps bees.", "Plays chess.", "Sails.", "Knits."]
    assert [record.message for record in caplog.records] == [
        f"{path}:2: 2 JSON values on one line; reading each as a record",
        f"{path}:3: 2 JSON values on one line; reading each as a record",
    ]
    assert existing_ids(path) == {"g1", "g2"}
    bad = write_lines(tmp_path / "bad.jsonl", ['"a"', '"b" oops'])
    with pytest.raises(RecordError, match=rf"^{bad}:2: record: not valid JSON"):
        read_records(bad, Persona, Persona.from_bare_string)


def test_reader_and_writer_agree_on_a_complete_last_line_without_newline(tmp_path):
    path = tmp_path / "hand-written.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}', encoding="utf-8")
    assert existing_ids(path) == {"a", "b"}
    with JsonlWriter(path) as writer:  # a resumed run appends after the complete last record
        writer.write(Persona(id="c", text="z"))
    assert [p.id for p in read_records(path, Persona)] == ["a", "b", "c"]
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 3
