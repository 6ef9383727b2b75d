"""Persona-tailored training: the pairs adapter's --persona rows, and the raw template's tokens."""

from __future__ import annotations

import argparse

import pytest
from stage_scripts import ROOT
from test_training import assistant, user, write_jsonl

from aloe.errors import TrainingError
from aloe.training import build_parser, build_trainer, parse_args, prepare
from aloe.training.formats import read_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RAW_TEMPLATE = ROOT / "training" / "chat_templates" / "persona_raw.jinja"
PAIRS = [{"id": f"p{i}", "prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad {i}.",
          "chosen_persona": f"The user is careful {i}.", "rejected_persona": f"The user is hasty {i}."} for i in range(4)]


def system(text):
    return {"role": "system", "content": text}


def options(**flags):
    return argparse.Namespace(**{"data": None, "include_undecided": False, "persona": "none", "half": None, **flags})


def test_dpo_rows_for_every_persona_value(tmp_path):
    path = str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:1]))

    def rows(persona):
        return read_rows([path], "preference", options(persona=persona))[1].rows

    assert rows("none") == [{"prompt": [user("Question 0?")], "chosen": [assistant("Good answer 0.")],
                             "rejected": [assistant("Bad 0.")]}]
    chosen = {"prompt": [system("The user is careful 0."), user("Question 0?")],
              "chosen": [assistant("Good answer 0.")], "rejected": [assistant("Bad 0.")]}
    rejected = {"prompt": [system("The user is hasty 0."), user("Question 0?")],  # swapped: that user prefers it
                "chosen": [assistant("Bad 0.")], "rejected": [assistant("Good answer 0.")]}
    assert rows("chosen") == [chosen]
    assert rows("rejected") == [rejected]
    assert rows("all") == [chosen, rejected]
    sft = read_rows([path], "completion", options(persona="rejected"))[1].rows
    assert sft == [{"prompt": rejected["prompt"], "completion": [assistant("Bad 0.")]}]


def test_halves_are_disjoint_and_missing_personas_named(tmp_path):
    path = str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:3]))
    first = read_rows([path], "completion", options(persona="chosen", half="first"))[1]
    second = read_rows([path], "preference", options(persona="chosen", half="second"))[1]
    assert len(first.rows) == 2 and len(second.rows) == 1 and first.report["pairs_in_half"] == 2
    bare = str(write_jsonl(tmp_path / "bare.jsonl", [{k: PAIRS[0][k] for k in ("id", "prompt", "chosen", "rejected")}]))
    with pytest.raises(TrainingError, match="pair p0: chosen_persona: missing"):
        read_rows([bare], "preference", options(persona="chosen"))
    failed = str(write_jsonl(tmp_path / "failed.jsonl", [{**PAIRS[0], "chosen_persona": None,
                                                          "chosen_persona_reason": "empty reply after 3 attempts"}]))
    rows = read_rows([failed], "preference", options(persona="all"))[1]
    assert len(rows.rows) == 1 and rows.report["persona_missing"] == 1


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_raw_template_masks_the_prompt_ends_with_eos_and_matches_inference(tmp_path, tiny_model_dir, method):
    from aloe.models.local import LocalChatModel

    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:1])
    flags = ["--model", str(tiny_model_dir), "--train-data", str(data), "--output", str(tmp_path / "out"),
             "--chat-template", str(RAW_TEMPLATE), "--persona", "chosen"] + (["--no-packing"] if method == "sft" else [])
    prep = prepare(method, parse_args(build_parser(method), flags))
    trainer, _, _ = build_trainer(prep)
    tokenizer = prep.tokenizer
    row = trainer.train_dataset[0]
    inference = LocalChatModel("tiny", str(tiny_model_dir), tokenizer=tokenizer, model=trainer.model)
    expected_prompt = inference.encode([system("The user is careful 0."), user("Question 0?")], max_new_tokens=8)
    assert tokenizer.decode(expected_prompt).endswith("Prompt: Question 0?\nPersona: The user is careful 0.\nResponse:")
    if method == "sft":
        learned = [label != -100 for label in row["labels"]]
        start = learned.index(True)
        assert row["input_ids"][:start] == expected_prompt and not any(learned[:start])
        completion = row["input_ids"][start:]
    else:
        assert row["prompt_ids"] == expected_prompt  # trl's DPO keeps the prompt apart: no loss on it
        completion = row["chosen_ids"]
        assert tokenizer.decode(row["rejected_ids"]) == " Bad 0." + tokenizer.eos_token
    assert completion[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(completion) == " Good answer 0." + tokenizer.eos_token
