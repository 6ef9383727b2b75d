"""Persona-tailoring scripts against records with a field wrong: one line naming the problem, exit 1."""

from __future__ import annotations

import json

import pytest
from stage_scripts import run_script

GOOD = {"id": "p1", "prompt": "Why?", "chosen": "Because.", "rejected": "No.", "domain": "safety_qa",
        "chosen_persona": "The user is curious.", "rejected_persona": "The user is busy."}
RESPONSE = {"id": "p1", "prompt": "Why?", "response": "Because.", "condition": "The user is curious."}

# Files that are not records at all (missing, empty, binary, ...) are tests/test_bad_input.py's; these are records
# with a field wrong.
BAD_FILES = {
    "missing chosen": (json.dumps({k: v for k, v in GOOD.items() if k != "chosen"}) + "\n").encode(),
    "empty prompt": (json.dumps({**GOOD, "prompt": " "}) + "\n").encode(),
}


def bad_file(tmp_path, kind):
    path = tmp_path / f"input-{kind.replace(' ', '_')}.jsonl"
    path.write_bytes(BAD_FILES[kind])
    return path


def commands(path, tmp_path):
    out = tmp_path / "out"
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(RESPONSE) + "\n")
    return {
        "infer_personas": ("data_generation/infer_personas.py", "--pairs", path, "--output", out / "p.jsonl"),
        "persona_accuracy": ("evaluation/persona_accuracy.py", "--pairs", path, "--output", out / "a.json"),
        "generate_responses": ("evaluation/generate_responses.py", "--pairs", path, "--persona", "gold-chosen",
                               "--output", out / "r.jsonl"),
        "win_rate": ("evaluation/win_rate.py", good, path, "--output", out / "w.json"),
    }


@pytest.mark.parametrize("kind", list(BAD_FILES))
@pytest.mark.parametrize("script", ["infer_personas", "persona_accuracy", "generate_responses", "win_rate"])
def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys, script, kind):
    if script == "win_rate" and kind in ("missing chosen",):
        pytest.skip("a responses file has no chosen field")
    path = bad_file(tmp_path, kind)
    if script == "win_rate" and kind == "empty prompt":
        path.write_text(json.dumps({**RESPONSE, "prompt": " "}) + "\n")
    name, *argv = commands(path, tmp_path)[script]
    assert run_script(name, *argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_persona_type_and_bad_shard(capsys, tmp_path):
    assert run_script("evaluation/generate_responses.py", "--pairs", "x.jsonl", "--persona", "gold") == 1
    assert "invalid choice" in capsys.readouterr().err
    assert run_script("data_generation/infer_personas.py", "--pairs", "x.jsonl", "--output", tmp_path / "o.jsonl",
                      "--shard", "3/2") == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_a_failed_comparison_keeps_the_last_result(tmp_path, capsys):
    a, b, short = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "short.jsonl"
    for path, count in ((a, 2), (b, 2), (short, 1)):
        path.write_text("".join(json.dumps({**RESPONSE, "id": str(i)}) + "\n" for i in range(count)))
    out = tmp_path / "w.json"
    out.write_text('{"criteria": {}}\n')
    assert run_script("evaluation/win_rate.py", a, short, "--output", out) == 1
    assert out.read_text() == '{"criteria": {}}\n'
