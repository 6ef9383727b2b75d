import json

import pytest

from aloe.errors import RecordError
from aloe.models.base import ChatModel, Reply
from aloe.models import SamplingParams
from aloe.responses import (
    ResponseRequest, attach_prefix, condition_messages, degenerate_flags, generate_responses, prompt_requests,
    read_responses, repeats_ngram,
)
from tests.stage_scripts import run_script


class EchoModel(ChatModel):
    """Replies with the last user message, or a scripted text; counts calls per batch."""

    spec = "echo"

    def __init__(self, script=None):
        self.script = script or {}
        self.batches = []

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        self.batches.append(len(conversations))
        replies = []
        for conv in conversations:
            text, finish = self.script.get(conv[-1]["content"], (f"echo: {conv[-1]['content']}", "stop"))
            replies.append(Reply(text=text, finish_reason=finish))
        return replies


def test_repeated_8grams_and_truncation_are_flagged():
    loop = "one two three four five six seven eight " * 2
    assert repeats_ngram(loop) and not repeats_ngram("one two three four five six seven eight nine")
    assert degenerate_flags(loop, "length") == ["truncated", "repeated_ngram"]
    assert degenerate_flags("   ", "stop") == ["empty"]
    assert degenerate_flags("fine", "stop") == []


def test_prefix_is_reattached_only_when_missing():
    assert attach_prefix("Obfuscate sounds like 'fog'", "Obfuscate sounds like") == ("Obfuscate sounds like 'fog'", False)
    assert attach_prefix("'fog' ...", "Obfuscate sounds like") == ("Obfuscate sounds like 'fog' ...", True)


def test_condition_placements():
    assert condition_messages("Q?", "I am a nurse.", "system") == (
        {"role": "system", "content": "I am a nurse."}, {"role": "user", "content": "Q?"})
    (after,) = condition_messages("Q?", "I am a nurse.", "after-prompt")
    assert after["role"] == "user" and after["content"].startswith("Q?") and after["content"].endswith("I am a nurse.")
    assert condition_messages("Q?", "I am a nurse.", "none") == ({"role": "user", "content": "Q?"},)


def test_generator_batches_flags_and_never_drops():
    model = EchoModel({"loop": ("a b c d e f g h a b c d e f g h", "length")})
    requests = [ResponseRequest(id=str(i), prompt=p, condition=None, messages=({"role": "user", "content": p},))
                for i, p in enumerate(["hi", "loop", "x"])]
    out = []
    assert generate_responses(model, requests, SamplingParams(), out.append, group_size=2) == 3
    assert model.batches == [2, 1]
    assert [r.id for r in out] == ["0", "1", "2"]
    assert out[1].flags == ["truncated", "repeated_ngram"] and out[1].finish_reason == "length"


def test_authors_generation_files_read_in_both_layouts(tmp_path):
    items = [{"response": " Sure, here is how.<|end_of_text|>", "prompt": "How?"},
             {"response": " cut at the limit", "prompt": "Why?"}]
    for name, text in (("pretty.json", json.dumps(items, indent=4)), ("flat.json", json.dumps(items))):
        path = tmp_path / name
        path.write_text(text)
        records = read_responses(path)
        assert [r.id for r in records] == ["item-0", "item-1"]
        assert records[0].response == "Sure, here is how." and records[0].finish_reason == "stop"
        assert records[1].response == "cut at the limit" and records[1].finish_reason == "unknown"


@pytest.mark.parametrize("content, field", [
    ('[{"prompt": "p"}]', "response"),
    ('[{"prompt": " ", "response": "r"}]', "prompt"),
    ('{"id": "1", "prompt": "p", "response": "r"}\n{"id": "1", "prompt": "q", "response": "r"}\n', "id"),
])
def test_bad_response_files_name_the_field(tmp_path, content, field):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(RecordError, match=f"{path}.*{field}"):
        read_responses(path)


def test_prompt_file_needs_its_condition(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"id": "a", "prompt": "p", "system": "Be brief."}\n{"id": "b", "prompt": "q"}\n')
    with pytest.raises(RecordError, match="record 2: system"):
        prompt_requests(path, "system", "system")
    assert len(prompt_requests(path, None, "system")) == 2


def test_generate_responses_script_resumes(tmp_path, tiny_model_dir, one_torch_thread, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Say {i}.", "system": "Be brief."}) + "\n"
                               for i in range(3)))
    out = tmp_path / "out.jsonl"
    argv = ["--model", tiny_model_dir, "--prompts", prompts, "--condition-field", "system", "--output", out,
            "--max-new-tokens", "4", "--limit", "2"]
    assert run_script("evaluation/generate_responses.py", *argv) == 0
    records = read_responses(out)
    assert [r.id for r in records] == ["p0", "p1"] and records[0].condition == "Be brief."
    assert all(r.finish_reason == "length" and "truncated" in r.flags for r in records)
    capsys.readouterr()
    assert run_script("evaluation/generate_responses.py", *argv[:-2]) == 0
    assert "1 responses generated (2 already in" in capsys.readouterr().out
    assert len(read_responses(out)) == 3
