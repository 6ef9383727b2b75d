"""The training table beyond ALOE's SFT/DPO: data-format adapters, undecided turns, ORPO, reward models, recipes."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
from stage_scripts import ROOT, load_script, run_script
from test_training import assistant, user, write_jsonl

from aloe.errors import TrainingError
from aloe.training import METHODS, build_parser, build_trainer, parse_args, prepare
from aloe.training.formats import FORMATS, detect_format, read_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MISTRAL_TEMPLATE = ROOT / "training" / "chat_templates" / "mistral_inst.jinja"


def system(text):
    return {"role": "system", "content": text}


def options(**flags) -> argparse.Namespace:
    return argparse.Namespace(**{"data": None, "include_undecided": False, **flags})


PAIRS = [{"id": f"p{i}", "prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad {i}.",
          "domain": "qa", **({"system": "You are terse."} if i % 2 else {})} for i in range(6)]
SYSTEM_ROWS = [{"main_source": "test", "preference_set": [], "system": f"You are a poet number {i}.",
                "prompt": f"Describe rain {i}.", "output": f"Rain, soft rain {i}."} for i in range(4)]


# ---------------------------------------------------------------------------------------------
# Adapters: records -> trl rows
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("record, name", [
    ({"profile": "p", "personality": "q", "conversations": []}, "aloe"),
    (SYSTEM_ROWS[0], "system_messages"),
    (PAIRS[0], "pairs"),
    ({"prompt": [user("q")], "chosen": [assistant("a")], "rejected": [assistant("b")]}, "trl"),
    ({"chosen": [user("q"), assistant("a")], "rejected": [user("q"), assistant("b")]}, "trl"),
])
def test_format_is_detected_from_the_first_record(tmp_path, record, name):
    assert detect_format(write_jsonl(tmp_path / "data.jsonl", [record])).name == name


def test_unknown_format_names_the_keys(tmp_path):
    with pytest.raises(TrainingError, match="cannot tell the data format.*keys: text"):
        detect_format(write_jsonl(tmp_path / "data.jsonl", [{"text": "hello"}]))


def test_pairs_give_prompt_with_optional_system_then_chosen(tmp_path):
    path = str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:2]))
    name, sft = read_rows([path], "completion", options())
    assert name == "pairs" and sft.counts == {"pairs": 2}
    assert sft.rows == [
        {"prompt": [user("Question 0?")], "completion": [assistant("Good answer 0.")]},
        {"prompt": [system("You are terse."), user("Question 1?")], "completion": [assistant("Good answer 1.")]},
    ]
    _, control = read_rows([path], "completion", options(data="rejected"))
    assert [row["completion"] for row in control.rows] == [[assistant("Bad 0.")], [assistant("Bad 1.")]]
    _, dpo = read_rows([path], "preference", options())
    assert dpo.rows[1] == {"prompt": [system("You are terse."), user("Question 1?")],
                           "chosen": [assistant("Good answer 1.")], "rejected": [assistant("Bad 1.")]}


def test_pairs_without_ids_get_stable_ones(tmp_path):
    from aloe.records import PreferencePair

    bare = {key: PAIRS[0][key] for key in ("prompt", "chosen", "rejected")}
    assert PreferencePair(**bare).id == PreferencePair(**bare).id != PreferencePair(**{**bare, "chosen": "x"}).id


def test_system_message_rows_are_sft_rows_only(tmp_path):
    path = str(write_jsonl(tmp_path / "rows.jsonl", SYSTEM_ROWS[:1]))
    _, rows = read_rows([path], "completion", options())
    assert rows.rows == [{"prompt": [system("You are a poet number 0."), user("Describe rain 0.")],
                          "completion": [assistant("Rain, soft rain 0.")]}]
    with pytest.raises(TrainingError, match="hold no preference pairs"):
        read_rows([path], "preference", options())


def test_trl_rows_pass_through_and_an_implicit_prompt_is_made_explicit(tmp_path):
    # Strings are detected as pairs (chat); plain text for base models is asked for by name.
    strings = write_jsonl(tmp_path / "strings.jsonl", [{"prompt": "Q:", "chosen": " yes", "rejected": " no"}])
    assert detect_format(strings).name == "pairs"
    _, rows = read_rows([str(strings)], "preference", options(), format_name="trl")
    assert rows.rows == [{"prompt": "Q:", "chosen": " yes", "rejected": " no"}]
    _, rows = read_rows([str(strings)], "completion", options(), format_name="trl")
    assert rows.rows == [{"prompt": "Q:", "completion": " yes"}]
    implicit = write_jsonl(tmp_path / "implicit.jsonl", [
        {"chosen": [user("q"), assistant("a"), user("q2"), assistant("good")],
         "rejected": [user("q"), assistant("a"), user("q2"), assistant("bad")]}])
    _, rows = read_rows([str(implicit)], "preference", options())
    assert rows.rows == [{"prompt": [user("q"), assistant("a"), user("q2")], "chosen": [assistant("good")],
                          "rejected": [assistant("bad")]}]


def test_trl_rows_of_mixed_shapes_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": "Q", "chosen": [assistant("a")], "rejected": "b"}])
    with pytest.raises(Exception, match="all be strings or all be message lists"):
        read_rows([str(path)], "preference", options())


def test_format_flag_overrides_detection(tmp_path):
    # A pairs file read as trl rows: plain strings, no chat template, no system message.
    path = str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:1]))
    name, rows = read_rows([path], "preference", options(), format_name="trl")
    assert name == "trl" and rows.rows == [{"prompt": "Question 0?", "chosen": "Good answer 0.", "rejected": "Bad 0."}]


def test_every_format_is_listed_once_with_a_builder():
    assert set(FORMATS) == {"aloe", "system_messages", "pairs", "trl"}
    assert all(entry.completion or entry.preference for entry in FORMATS.values())
    assert set(METHODS) == {"sft", "dpo", "orpo", "reward"}


# ---------------------------------------------------------------------------------------------
# Undecided ALOE turns
# ---------------------------------------------------------------------------------------------

def judged_turn(k, outcome):
    orders = [{"shown": ["hinted", "plain"], "raw": "[[A]]", "verdict": "A"},
              {"shown": ["plain", "hinted"], "raw": "[[B]]" if outcome == "agree" else "[[A]]",
               "verdict": "B" if outcome == "agree" else "A"}]
    judge = {"orders": orders, "outcome": outcome, "winner": "hinted",
             "resolved_by": "agreement" if outcome == "agree" else "on-tie:hinted", "hinted": "preferred"}
    return {"user": f"U{k}", "assistant": {"preferred": f"P{k}", "rejected": f"R{k}"}, "chosen": "preferred",
            "judge": judge}


@pytest.fixture
def judged_conversations(tmp_path):
    turns = [judged_turn(0, "agree"), judged_turn(1, "tie"), judged_turn(2, "unparsed"), judged_turn(3, "agree"),
             {"user": "U4", "assistant": {"preferred": "P4", "rejected": "R4"}}]  # no judgement recorded
    return write_jsonl(tmp_path / "judged.jsonl", [{"id": "c", "profile": "p", "personality": "q",
                                                    "conversations": turns}])


@pytest.mark.parametrize("include, kept", [(False, 3), (True, 5)])
def test_undecided_turns_are_left_out_unless_asked(judged_conversations, tmp_path, tiny_model_dir, include, kept):
    flags = ["--model", str(tiny_model_dir), "--train-data", str(judged_conversations),
             "--output", str(tmp_path / "out")] + (["--include-undecided"] if include else [])
    prep = prepare("dpo", parse_args(build_parser("dpo"), flags))
    assert prep.data["turns"] == {"decided": 2, "undecided": 2, "unjudged": 1, "kept": kept}
    assert prep.data["include_undecided"] is include
    assert prep.counts["turns"] == 5 and prep.counts["examples"] == kept
    chosen = [row["chosen"][0]["content"] for row in prep.examples]
    assert chosen == (["P0", "P1", "P2", "P3", "P4"] if include else ["P0", "P3", "P4"])
    digest = hashlib.sha256(judged_conversations.read_bytes()).hexdigest()
    assert prep.data["files"] == [{"path": str(judged_conversations), "sha256": digest}]


# ---------------------------------------------------------------------------------------------
# The system message is where the model sees it at inference
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("template", [None, MISTRAL_TEMPLATE], ids=["system-role", "no-system-role"])
def test_system_message_tokens_match_inference(tmp_path, tiny_model_dir, template):
    from aloe.models.local import LocalChatModel, has_system_role

    rows = write_jsonl(tmp_path / "rows.jsonl", SYSTEM_ROWS[:1])
    flags = ["--model", str(tiny_model_dir), "--train-data", str(rows), "--output", str(tmp_path / "out"),
             "--no-packing"] + (["--chat-template", str(template)] if template else [])
    prep = prepare("sft", parse_args(build_parser("sft"), flags))
    assert has_system_role(prep.tokenizer) is (template is None)
    trainer, _, _ = build_trainer(prep)
    row = trainer.train_dataset[0]
    learned_mask = [label != -100 for label in row["labels"]]
    first_learned = learned_mask.index(True)
    training_prompt = row["input_ids"][:first_learned]
    inference = LocalChatModel("tiny", str(tiny_model_dir), tokenizer=prep.tokenizer, model=trainer.model)
    messages = [system(SYSTEM_ROWS[0]["system"]), user(SYSTEM_ROWS[0]["prompt"])]
    assert training_prompt == inference.encode(messages, max_new_tokens=8)
    text = prep.tokenizer.decode(training_prompt)
    assert "poet number 0" in text and "Describe rain 0." in text
    if template:  # inlined into the first user turn, as the paper did for Mistral
        assert "[INST] You are a poet number 0.\nDescribe rain 0. [/INST]" in text
    learned = prep.tokenizer.decode([t for t, m in zip(row["input_ids"], learned_mask) if m])
    assert learned.startswith("Rain, soft rain 0.") and "poet" not in learned


# ---------------------------------------------------------------------------------------------
# ORPO and the reward model train on a tiny model
# ---------------------------------------------------------------------------------------------

def changed_parameters(base: Path, output: Path) -> list[str]:
    from safetensors.torch import load_file

    before, after = load_file(str(base / "model.safetensors")), load_file(str(output / "model.safetensors"))
    return [name for name in before if name in after and not before[name].equal(after[name])]


@pytest.fixture
def pairs_file(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", PAIRS)


def test_orpo_trains_saves_and_reloads(tmp_path, tiny_model_dir, pairs_file, monkeypatch):
    out = tmp_path / "model_output" / "tiny_orpo"
    flags = ["--model", tiny_model_dir, "--train-data", pairs_file, "--output", out, "--batch-size", "2",
             "--warmup", "0", "--lr", "1e-3", "--max-steps", "2"]
    assert run_script("training/orpo.py", *flags) == 0
    summary = json.loads((out / "training_summary.json").read_text())
    # A launcher that always asks to resume (scripts/train_paper.sh) leaves a finished model alone.
    assert run_script("training/orpo.py", *flags, "--resume-from-checkpoint") == 0
    assert json.loads((out / "training_summary.json").read_text())["wall_time_s"] == summary["wall_time_s"]
    assert summary["method"] == "orpo" and summary["steps"] == 2 and summary["data_counts"]["pairs"] == 6
    assert summary["provenance"]["settings"]["trainer"]["beta"] == 0.1  # lambda, trl's name for it
    assert summary["training_data"]["files"][0]["sha256"] == hashlib.sha256(pairs_file.read_bytes()).hexdigest()
    assert changed_parameters(tiny_model_dir, out), "training changed no parameter"
    from aloe.models import SamplingParams, load_model

    reply = load_model(str(out)).generate([[user("hello")]], SamplingParams(max_new_tokens=3, temperature=0))[0]
    assert reply.completion_tokens >= 1


def test_reward_model_trains_and_reports_held_out_accuracy(tmp_path, tiny_model_dir, pairs_file, capsys):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    held_out = write_jsonl(tmp_path / "test.jsonl", [{**pair, "id": f"t{i}"} for i, pair in enumerate(PAIRS[:3])])
    out = tmp_path / "tiny_reward"
    assert run_script("training/reward_model.py", "--model", tiny_model_dir, "--train-data", pairs_file,
                      "--eval-data", held_out, "--output", out, "--batch-size", "2", "--warmup", "0",
                      "--lr", "1e-3", "--max-steps", "2") == 0
    summary = json.loads((out / "training_summary.json").read_text())
    pairwise = summary["eval"]["pairwise"]
    assert pairwise["pairs"] == 3 and 0 <= pairwise["accuracy"] <= 1 and summary["eval"]["files"] == [str(held_out)]
    assert "held-out pair accuracy" in capsys.readouterr().out
    assert changed_parameters(tiny_model_dir, out), "training changed no base parameter"
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    ids = tokenizer.apply_chat_template([user("Question 0?"), assistant("Good answer 0.")], return_tensors="pt",
                                        return_dict=True)
    with torch.no_grad():
        assert model(**ids).logits.shape == (1, 1)


def test_reward_model_held_out_fraction(tmp_path, tiny_model_dir, pairs_file):
    flags = ["--model", str(tiny_model_dir), "--train-data", str(pairs_file), "--output", str(tmp_path / "out"),
             "--eval-fraction", "0.34"]
    prep = prepare("reward", parse_args(build_parser("reward"), flags))
    assert (len(prep.examples), len(prep.eval_examples)) == (4, 2)
    prompts = {str(row["prompt"]) for row in prep.examples}
    assert not prompts & {str(row["prompt"]) for row in prep.eval_examples}


# ---------------------------------------------------------------------------------------------
# Bad flags: one line, exit 1
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("script, flags, problem", [
    ("reward_model", ["--eval-fraction", "1"], "--eval-fraction"),
    ("orpo", ["--lambda", "0"], "--lambda"),
    ("dpo", ["--beta", "nan"], "--beta"),
    ("sft", ["--format", "csv"], "--format"),
    ("orpo", [], "--train-data is required"),
    ("reward_model", ["--eval-fraction", "0.1", "--eval-data", "x.jsonl"], "give one"),
])
def test_bad_training_flag_is_one_line_and_exit_1(capsys, script, flags, problem):
    argv = flags if problem == "--train-data is required" else ["--train-data", "d.jsonl", *flags]
    assert load_script(f"training/{script}.py").main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert problem in err and len(err.splitlines()) == 1, err


def test_system_message_rows_cannot_train_dpo(tmp_path, tiny_model_dir, capsys):
    rows = write_jsonl(tmp_path / "rows.jsonl", SYSTEM_ROWS)
    assert run_script("training/dpo.py", "--model", tiny_model_dir, "--train-data", rows,
                      "--output", tmp_path / "out") == 1
    err = capsys.readouterr().err.strip()
    assert "hold no preference pairs" in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# Recipes: every shipped one loads; any stage can take one
# ---------------------------------------------------------------------------------------------

RECIPES = sorted((ROOT / "training" / "recipes").rglob("*.yaml"))


def recipe_method(path: Path) -> str:
    return next(part for part in path.stem.split("_") if part in METHODS)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: str(path.relative_to(ROOT / "training" / "recipes")))
def test_every_shipped_recipe_loads(recipe):
    args = parse_args(build_parser(recipe_method(recipe)), ["--config", str(recipe)])
    assert args.dtype == "bf16" and args.train_data
    assert args.full or recipe.parent.name == "tailoring"  # the persona-tailoring paper trained LoRA
    if recipe.parent.name == "tailoring":  # and kept the checkpoint with the best validation loss
        assert args.best_checkpoint and args.eval_fraction
    if args.chat_template:
        assert (ROOT / args.chat_template).is_file()
    if recipe.parent.name == "recipes":  # ALOE: the paper names no schedule; transformers' default
        assert (args.scheduler, args.warmup) == ("linear", 0)


def test_system_message_recipes_hold_the_paper_settings():
    folder = ROOT / "training" / "recipes" / "system_messages"

    def load(name):
        return parse_args(build_parser(name.split("_")[-1]), ["--config", str(folder / f"mistral_v02_{name}.yaml")])

    sft, dpo, orpo, reward = load("sft"), load("dpo"), load("orpo"), load("reward")
    assert (sft.epochs, sft.lr, sft.scheduler, sft.warmup, sft.global_batch_size) == (4, 5e-6, "cosine", 10, 32)
    assert sft.format == "system_messages" and sft.packing
    assert (dpo.epochs, dpo.lr, dpo.beta, dpo.max_length, dpo.global_batch_size) == (2, 5e-7, 0.1, 2048, 16)
    assert dpo.model == sft.output  # from the SFT model
    assert (orpo.epochs, orpo.lr, orpo.orpo_lambda, orpo.max_length) == (2, 5e-6, 0.1, 4096)
    assert orpo.model == sft.model == "hf:mistral-community/Mistral-7B-v0.2"  # from the base model
    assert (reward.epochs, reward.lr, reward.global_batch_size) == (1, 9e-6, 128)


def test_any_stage_parser_takes_a_recipe(tmp_path):
    from aloe.cli import ArgumentParser, RecipeError, add_recipe_arg

    parser = ArgumentParser(prog="x")
    add_recipe_arg(parser)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--output-file", "--output", dest="output_file", default="a")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("turns: 3\noutput: b\n")  # a flag's other name works as a key
    args = parser.parse_args(["--config", str(recipe), "--turns", "5"])
    assert (args.turns, args.output_file) == (5, "b")
    recipe.write_text("turn: 3\n")
    with pytest.raises(RecipeError, match="turn: unknown key"):
        parser.parse_args(["--config", str(recipe)])


def test_reward_model_trains_on_from_a_reward_model(tmp_path, tiny_model_dir, pairs_file):
    """A second reward stage (the paper's epoch on a helpfulness mix) starts from a sequence classifier."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    start = tmp_path / "tiny_seqcls"
    config = AutoConfig.from_pretrained(tiny_model_dir, num_labels=1)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(start)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(start)
    out = tmp_path / "tiny_reward_2"
    assert run_script("training/reward_model.py", "--model", start, "--train-data", pairs_file, "--output", out,
                      "--batch-size", "2", "--warmup", "0", "--lr", "1e-2", "--max-steps", "1", "--full") == 0
    assert "score.weight" in changed_parameters(start, out)
