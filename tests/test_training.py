"""Training: examples from the conversation tree, settings layering, bad input, and tiny real trainings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import stage_scripts

from aloe.records import Conversation
from aloe.training import (
    TrainingError, build_parser, build_trainer, check_output_dir, default_output, dpo_examples, fit_left,
    mix_examples, parse_args, prepare, sft_examples,
)

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    return stage_scripts.load_script(f"training/{name}.py")


def turn(user, preferred, rejected, chosen=None):
    record = {"user": user, "assistant": {"preferred": preferred, "rejected": rejected}}
    if chosen:
        record["chosen"] = chosen
    return record


# Turn 1 continued with its rejected reply: later prompts must carry "R1", never "P1".
CONVERSATION = {
    "id": "conv-1", "profile": "Lives in Oslo, keeps bees.", "personality": "Dry humour.",
    "conversations": [
        turn("U1", "P1", "R1", chosen="rejected"),
        turn("U2", "P2", "R2", chosen="preferred"),
        turn("U3", "P3", "R3", chosen="preferred"),
    ],
}


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------

def test_sft_examples_follow_the_continuing_branch():
    conversation = Conversation.model_validate(CONVERSATION)
    assert sft_examples([conversation], "preferred") == [
        {"prompt": [user("U1")], "completion": [assistant("P1")]},
        {"prompt": [user("U1"), assistant("R1"), user("U2")], "completion": [assistant("P2")]},
        {"prompt": [user("U1"), assistant("R1"), user("U2"), assistant("P2"), user("U3")],
         "completion": [assistant("P3")]},
    ]
    rejected = sft_examples([conversation], "rejected")
    assert [example["completion"] for example in rejected] == [[assistant("R1")], [assistant("R2")], [assistant("R3")]]
    # The control condition learns other replies but sees the same, true history.
    assert [example["prompt"] for example in rejected] == [example["prompt"] for example in
                                                          sft_examples([conversation], "preferred")]


def test_original_aloe_files_without_chosen_continue_with_preferred():
    original = {"profile": "p", "personality": "q",
                "conversations": [turn("U1", "P1", "R1"), turn("U2", "P2", "R2")]}
    examples = sft_examples([Conversation.model_validate(original)], "preferred")
    assert examples[1]["prompt"] == [user("U1"), assistant("P1"), user("U2")]


def test_dpo_examples_pair_preferred_with_rejected_on_the_true_history():
    conversation = Conversation.model_validate(CONVERSATION)
    assert dpo_examples([conversation]) == [
        {"prompt": [user("U1")], "chosen": [assistant("P1")], "rejected": [assistant("R1")]},
        {"prompt": [user("U1"), assistant("R1"), user("U2")], "chosen": [assistant("P2")],
         "rejected": [assistant("R2")]},
        {"prompt": [user("U1"), assistant("R1"), user("U2"), assistant("P2"), user("U3")],
         "chosen": [assistant("P3")], "rejected": [assistant("R3")]},
    ]


def word_count(messages):
    return sum(len(message["content"].split()) for message in messages)


def test_fit_left_drops_whole_oldest_messages_and_keeps_roles_alternating():
    example = {"prompt": [user("a b c"), assistant("d e"), user("f g"), assistant("h"), user("i j")],
               "chosen": [assistant("k l m")], "rejected": [assistant("n")]}
    # 13 words in all; the longest completion (3 words) counts against the limit.
    kept, truncated, dropped = fit_left([example], word_count, 9, ("chosen", "rejected"))
    assert (truncated, dropped) == (1, 0)
    assert kept[0]["prompt"] == [user("f g"), assistant("h"), user("i j")]
    assert kept[0]["chosen"] == example["chosen"]
    kept, truncated, dropped = fit_left([example], word_count, 13, ("chosen", "rejected"))
    assert kept == [example] and (truncated, dropped) == (0, 0)
    # Even the last user message and the reply do not fit: the example goes, it is not cut mid-message.
    kept, truncated, dropped = fit_left([example], word_count, 4, ("chosen", "rejected"))
    assert kept == [] and dropped == 1


def test_fit_left_keeps_a_system_message():
    example = {"prompt": [{"role": "system", "content": "S"}, user("old " * 50), assistant("x"), user("new")],
               "completion": [assistant("reply")]}
    kept, truncated, _ = fit_left([example], word_count, 5, ("completion",))
    assert truncated == 1
    assert kept[0]["prompt"] == [{"role": "system", "content": "S"}, user("new")]


def test_mix_examples_sample_chat_files(tmp_path):
    mix = write_jsonl(tmp_path / "mix.jsonl", [
        {"messages": [user(f"q{i}"), assistant(f"a{i}")]} for i in range(10)])
    examples = mix_examples([str(mix)], 0.5, 8, seed=0)
    assert len(examples) == 4
    assert all(example["completion"][0]["role"] == "assistant" for example in examples)
    assert examples == mix_examples([str(mix)], 0.5, 8, seed=0)
    assert len(mix_examples([str(mix)], 5.0, 8, seed=0)) == 10  # capped at what the files hold


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

def test_settings_layer_defaults_then_yaml_then_flags(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr: 3.0e-5\nbatch_size: 6\nconversations: c.jsonl\nlora-target: [q_proj, v_proj]\nfull: true\n")
    args = parse_args(build_parser("dpo"), ["--config", str(recipe), "--batch-size", "2"])
    assert args.lr == 3e-5  # YAML over default
    assert args.batch_size == 2  # flag over YAML
    assert args.beta == 0.1  # default
    assert args.lora_target == ["q_proj", "v_proj"] and args.full is True


@pytest.mark.parametrize("content, problem", [
    ("learning_rate: 1.0e-5\n", "unknown key"),
    ("batch_size: many\n", "batch_size"),
    ("batch_size: 2.5\n", "batch_size: invalid positive_int value '2.5'"),  # not quietly 2
    ("epochs: true\n", "epochs: invalid"),
    ("beta: {a: 1}\n", "beta: expected one value, got a dict"),
    ("full: maybe\n", "expected true or false"),
    ("- a list\n", "expected a mapping"),
])
def test_bad_recipe_is_one_line_and_exit_1(tmp_path, capsys, content, problem):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(content)
    assert load_script("dpo").main(["--config", str(recipe), "--conversations", "c.jsonl"]) == 1
    err = capsys.readouterr().err.strip()
    assert problem in err and len(err.splitlines()) == 1


RECIPES = sorted((ROOT / "training" / "recipes").glob("*.yaml"))
CONFIGS = sorted((ROOT / "training" / "configs").glob("*.yaml"))


def test_every_paper_recipe_is_shipped():
    names = {path.stem for path in RECIPES}
    assert names == {f"{model}_{method}" for model in ("llama3", "mistral", "qwen2", "olmo")
                     for method in ("sft_preferred", "sft_rejected", "dpo")}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_shipped_recipe_loads_with_paper_settings(recipe):
    model, method = recipe.stem.split("_", 1)
    args = parse_args(build_parser(method.split("_")[0]), ["--config", str(recipe)])
    assert args.model == model and args.full and args.dtype == "bf16"
    assert args.lr == 1e-5 and args.epochs == 1 and args.global_batch_size == 48
    if method == "dpo":
        assert args.beta == 0.9
    else:
        assert args.data == method.split("_")[1] and args.packing
        assert args.max_length == (4096 if model == "olmo" else 8192)
    assert default_output(method.split("_")[0], args.model, getattr(args, "data", None)).name == recipe.stem


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.stem)
def test_shipped_accelerate_config_loads(config):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(config))
    assert loaded.num_processes == 8 and loaded.mixed_precision == "bf16"
    assert loaded.distributed_type.value in {"MULTI_GPU", "FSDP", "DEEPSPEED"}


def test_global_batch_size_sets_grad_accum(tmp_path, monkeypatch):
    from aloe.training import grad_accum_steps

    args = parse_args(build_parser("sft"), ["--conversations", "c", "--data", "preferred",
                                            "--batch-size", "2", "--global-batch-size", "48"])
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert grad_accum_steps(args) == 3
    monkeypatch.setenv("WORLD_SIZE", "5")
    with pytest.raises(TrainingError, match="not a multiple"):
        grad_accum_steps(args)


def test_default_output_names_are_evaluation_model_names(monkeypatch, tmp_path):
    monkeypatch.setenv("ALOE_MODEL_OUTPUT", str(tmp_path))
    assert default_output("sft", "llama3", "preferred") == tmp_path / "llama3_sft_preferred"
    assert default_output("dpo", "embedded") == tmp_path / "embedded_dpo"
    assert default_output("dpo", "model_output/llama3_sft_preferred") == tmp_path / "llama3_sft_preferred_dpo"


# ---------------------------------------------------------------------------------------------
# Bad input: one line, non-zero exit, nothing trained
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def conversations_file(tmp_path):
    return write_jsonl(tmp_path / "conversations.jsonl", [CONVERSATION, {**CONVERSATION, "id": "conv-2"}])


def run_fails(script, argv, capsys) -> str:
    assert load_script(script).main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_missing_rejected_reply_names_file_and_line(tmp_path, tiny_model_dir, capsys):
    broken = json.loads(json.dumps(CONVERSATION))
    del broken["conversations"][1]["assistant"]["rejected"]
    path = write_jsonl(tmp_path / "bad.jsonl", [CONVERSATION, broken])
    err = run_fails("dpo", ["--model", str(tiny_model_dir), "--conversations", str(path),
                            "--output", str(tmp_path / "out")], capsys)
    assert f"{path}:2: conversations.1.assistant.rejected" in err
    assert not (tmp_path / "out").exists()


def test_unknown_data_branch_is_an_argparse_error(conversations_file, capsys):
    assert load_script("sft").main(["--data", "chosen", "--conversations", str(conversations_file)]) == 1
    assert "invalid choice: 'chosen'" in capsys.readouterr().err


def test_model_without_chat_template(tmp_path, tiny_model_dir, conversations_file, capsys):
    plain = tmp_path / "base-model"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    err = run_fails("sft", ["--model", str(plain), "--data", "preferred", "--conversations",
                            str(conversations_file), "--output", str(tmp_path / "out")], capsys)
    assert "no chat template" in err


def test_api_model_cannot_be_trained(tmp_path, conversations_file, capsys):
    err = run_fails("dpo", ["--model", "openai:gpt-4o-mini", "--conversations", str(conversations_file),
                            "--output", str(tmp_path / "out")], capsys)
    assert "needs local weights" in err


def test_output_dir_holding_another_model_is_refused(tmp_path, tiny_model_dir, conversations_file, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "training_summary.json").write_text(json.dumps(
        {"base_model": "llama3", "method": "dpo", "data": None, "status": "finished"}))
    err = run_fails("dpo", ["--model", str(tiny_model_dir), "--conversations", str(conversations_file),
                            "--output", str(out)], capsys)
    assert "--overwrite" in err and "llama3" in err
    (out / "training_summary.json").unlink()
    (out / "config.json").write_text("{}")  # some other model, no summary at all
    err = run_fails("dpo", ["--model", str(tiny_model_dir), "--conversations", str(conversations_file),
                            "--output", str(out)], capsys)
    assert "--overwrite" in err


def test_overwrite_clears_only_run_artefacts(tmp_path):
    out = tmp_path / "out"
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    marker = {"base_model": "m", "method": "sft", "data": "preferred"}
    assert check_output_dir(out, marker, overwrite=True, model_path=None) == "new"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_output_dir_cannot_be_the_input_model(tiny_model_dir, conversations_file, capsys):
    err = run_fails("dpo", ["--model", str(tiny_model_dir), "--conversations", str(conversations_file),
                            "--output", str(tiny_model_dir)], capsys)
    assert "is the model being trained from" in err


# ---------------------------------------------------------------------------------------------
# Label masking: loss on the completion only
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("packing", [False, True], ids=["unpacked", "packed"])
def test_sft_labels_cover_only_the_replies(tmp_path, tiny_model_dir, conversations_file, packing):
    flags = ["--model", str(tiny_model_dir), "--data", "preferred", "--conversations", str(conversations_file),
             "--output", str(tmp_path / "out"), "--packing" if packing else "--no-packing"]
    prep = prepare("sft", parse_args(build_parser("sft"), flags))
    trainer, _, _ = build_trainer(prep)
    tokenizer = prep.tokenizer
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer.data_collator(rows)
    labels, input_ids = batch["labels"], batch["input_ids"]
    learned = tokenizer.decode(input_ids[labels != -100])
    ignored = tokenizer.decode(input_ids[labels == -100])
    for reply in ("P1", "P2", "P3"):
        assert learned.count(reply) == 2  # once per conversation: each reply is learned exactly once
    for prompt_text in ("U1", "U2", "U3", "R1", "SmolLM", "system", "user"):
        assert prompt_text not in learned
    assert "U1" in ignored and "SmolLM" in ignored  # user and (template) system tokens are present, unlearned
    assert learned.count("<|im_end|>") == 6  # the model learns to stop after each reply
    assert bool(trainer.args.packing) == packing


# ---------------------------------------------------------------------------------------------
# Real training on a tiny model
# ---------------------------------------------------------------------------------------------

def weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def assert_reloads_and_generates(output: Path, base: Path, monkeypatch):
    from aloe.models import SamplingParams, load_model

    before, after = weights(base), weights(output)
    changed = [name for name in before if not before[name].equal(after[name])]
    assert changed, "training changed no parameter"
    monkeypatch.setenv("ALOE_MODEL_OUTPUT", str(output.parent))
    for spec in (str(output), output.name):  # a path, and a name under model_output/
        model = load_model(spec)
        reply = model.generate([[user("hello")]], SamplingParams(max_new_tokens=4, temperature=0))[0]
        assert reply.completion_tokens >= 1
        assert model.tokenizer.chat_template  # the chat template travelled with the checkpoint


def test_sft_trains_resumes_saves_and_reloads(tmp_path, tiny_model_dir, conversations_file, monkeypatch, capsys):
    out = tmp_path / "model_output" / "tiny_sft_preferred"
    flags = ["--model", str(tiny_model_dir), "--data", "preferred", "--conversations", str(conversations_file),
             "--output", str(out), "--batch-size", "2", "--warmup", "0", "--lr", "1e-3", "--save-steps", "1"]
    sft = load_script("sft")
    # An interrupted run: one step done, its checkpoint kept.
    assert sft.main(flags + ["--max-steps", "1", "--keep-checkpoints"]) == 0
    assert (out / "checkpoint-1").is_dir()
    assert sft.main(flags + ["--max-steps", "2", "--resume-from-checkpoint"]) == 0
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 2
    assert [point["step"] for point in summary["loss_curve"]] == [1, 2]  # step 1 came from the checkpoint
    assert summary["data_counts"] == {"conversations": 2, "turns": 6, "mix_examples": 0, "examples": 6,
                                      "truncated_left": 0, "dropped_too_long": 0}
    assert summary["tokens_per_second"] > 0 and summary["saved"] == "merged"
    assert {"torch", "transformers", "trl", "peft"} <= set(summary["provenance"]["packages"])
    assert not list(out.glob("checkpoint-*"))
    assert "2 steps" in capsys.readouterr().out
    assert_reloads_and_generates(out, tiny_model_dir, monkeypatch)
    # A re-run of a finished training does nothing.
    assert sft.main(flags + ["--max-steps", "2"]) == 0
    assert json.loads((out / "training_summary.json").read_text())["wall_time_s"] == summary["wall_time_s"]


def test_dpo_trains_saves_and_reloads(tmp_path, tiny_model_dir, conversations_file, monkeypatch):
    out = tmp_path / "model_output" / "tiny_dpo"
    flags = ["--model", str(tiny_model_dir), "--conversations", str(conversations_file), "--output", str(out),
             "--batch-size", "2", "--warmup", "0", "--lr", "1e-3", "--max-steps", "2"]
    assert load_script("dpo").main(flags) == 0
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["method"] == "dpo" and summary["steps"] == 2
    assert summary["data_counts"]["examples"] == 6
    assert summary["provenance"]["settings"]["trainer"]["beta"] == 0.1
    assert_reloads_and_generates(out, tiny_model_dir, monkeypatch)


def test_no_merge_saves_an_adapter_that_loads_as_a_model(tmp_path, tiny_model_dir, conversations_file, monkeypatch):
    out = tmp_path / "model_output" / "tiny_dpo_adapter"
    flags = ["--model", str(tiny_model_dir), "--conversations", str(conversations_file), "--output", str(out),
             "--batch-size", "2", "--warmup", "0", "--lr", "1e-3", "--max-steps", "1", "--no-merge"]
    assert load_script("dpo").main(flags) == 0
    assert json.loads((out / "training_summary.json").read_text())["saved"] == "adapter"
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == Path(tiny_model_dir)  # the base it must be applied to
    from aloe.models import SamplingParams, load_model

    model = load_model(str(out))  # transformers applies the adapter to its base (peft is installed)
    assert type(model.model).__name__ == "LlamaForCausalLM" and hasattr(model.model, "peft_config")
    reply = model.generate([[user("hello")]], SamplingParams(max_new_tokens=4, temperature=0))[0]
    assert reply.completion_tokens >= 1 and model.tokenizer.chat_template


def test_mix_file_must_end_with_a_reply(tmp_path, tiny_model_dir, conversations_file, capsys):
    mix = write_jsonl(tmp_path / "mix.jsonl", [{"messages": [user("q"), assistant("a")]},
                                               {"messages": [user("q"), assistant("a"), user("again?")]}])
    err = run_fails("sft", ["--model", str(tiny_model_dir), "--data", "preferred", "--conversations",
                            str(conversations_file), "--mix", str(mix), "--output", str(tmp_path / "out")], capsys)
    assert f"{mix}:2: messages" in err and "assistant's reply" in err


def test_mixed_examples_join_the_training_set(tmp_path, tiny_model_dir, conversations_file):
    mix = write_jsonl(tmp_path / "mix.jsonl", [{"messages": [user(f"q{i}"), assistant(f"a{i}")]} for i in range(9)])
    args = parse_args(build_parser("sft"), ["--model", str(tiny_model_dir), "--data", "preferred", "--conversations",
                                            str(conversations_file), "--mix", str(mix), "--mix-ratio", "0.5",
                                            "--output", str(tmp_path / "out")])
    prep = prepare("sft", args)
    assert prep.counts["turns"] == 6 and prep.counts["mix_examples"] == 3 and prep.counts["examples"] == 9
    assert sum(example["completion"][0]["content"].startswith("a") for example in prep.examples) == 3


def test_best_checkpoint_is_the_saved_model(tmp_path, tiny_model_dir, conversations_file, capsys):
    """--best-checkpoint: held-out loss at every checkpoint, the lowest one saved and recorded; off: as before."""
    out = tmp_path / "best"
    # Full fine-tuning at a learning rate this high overshoots after two steps, so the best is not the last.
    flags = ["--model", str(tiny_model_dir), "--data", "preferred", "--conversations", str(conversations_file),
             "--batch-size", "2", "--warmup", "0", "--max-steps", "4", "--save-steps", "1", "--eval-fraction", "0.34",
             "--scheduler", "constant", "--full", "--lr", "0.5"]
    sft = load_script("sft")
    assert sft.main(flags + ["--output", str(out), "--best-checkpoint", "--keep-checkpoints"]) == 0
    summary = json.loads((out / "training_summary.json").read_text())
    best = summary["best_checkpoint"]
    losses = {point["step"]: point["eval_loss"] for point in best["evaluations"]}
    assert sorted(losses) == [1, 2, 3, 4] and best["eval_loss"] == min(losses.values())
    assert losses[best["step"]] == best["eval_loss"] and best["checkpoint"] == f"checkpoint-{best['step']}"
    assert best["step"] < summary["steps"]
    # The saved model is the best checkpoint's weights, and scores its held-out loss.
    saved, kept = weights(out), weights(out / best["checkpoint"])
    assert saved.keys() == kept.keys() and all(saved[name].equal(kept[name]) for name in saved)
    assert summary["eval"]["metrics"]["eval_loss"] == pytest.approx(best["eval_loss"], rel=1e-5)
    assert f"best checkpoint step {best['step']}" in capsys.readouterr().out

    plain = tmp_path / "plain"  # without the flag: the last step's model, as before
    assert sft.main(flags + ["--output", str(plain)]) == 0
    summary = json.loads((plain / "training_summary.json").read_text())
    assert summary["best_checkpoint"] is None
    assert summary["eval"]["metrics"]["eval_loss"] == pytest.approx(losses[4], rel=1e-4)
    assert "load_best_model_at_end" not in summary["provenance"]["settings"]["trainer"]
    capsys.readouterr()
    assert run_fails("sft", ["--model", str(tiny_model_dir), "--data", "preferred", "--conversations",
                             str(conversations_file), "--best-checkpoint"], capsys).startswith("error: --best-checkpoint")
