"""Few-shot steerable alignment through its stage scripts: data kinds, training, evaluation, NP-DPO, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from aloe.steerable.data import read_meta, read_split
from aloe.steerable.sources import SAMPLE_FILE
from stage_scripts import run_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = "data_generation/synthetic_preferences.py"
TRAIN = "training/steerable_reward.py"
EVAL = "evaluation/eval_steerable.py"
NP_DPO = "training/np_dpo.py"
ALOE_SAMPLE = SAMPLE_FILE.with_name("aloe_conversations_sample.jsonl")
TINY = ["--hidden", "16", "--heads", "2", "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "8",
        "--val-tasks", "16", "--no-progress"]


@pytest.fixture(scope="module")
def scalar_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("scalar") / "data"
    assert run_script(DATA, "--kind", "scalar", "--pairs", "2000", "--output", path) == 0
    return path


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory):
    """UltraFeedback-style users from the shipped sample, embedded with the embedded sentence embedder."""
    path = tmp_path_factory.mktemp("feedback") / "data"
    assert run_script(DATA, "--kind", "ultrafeedback", "--output", path) == 0
    return path


def assert_one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], err[0]


def test_scalar_data_train_and_evaluate_end_to_end(scalar_dir, tmp_path, capsys):
    for kind in ("btl", "dpl", "np-btl"):
        assert run_script(TRAIN, "--data", scalar_dir, "--model", kind, "--output", tmp_path / kind, *TINY) == 0
    assert run_script(TRAIN, "--data", scalar_dir, "--model", "np-btl", "--latent", "--output", tmp_path / "latent", *TINY) == 0
    summary = json.loads((tmp_path / "latent" / "summary.json").read_text())
    assert summary["model"] == "np-btl-latent" and [p["step"] for p in summary["curve"]] == [0, 3]
    out = tmp_path / "results" / "scalar.json"
    code = run_script(EVAL, *(tmp_path / k for k in ("btl", "dpl", "np-btl", "latent")), "--k", "0", "1", "3",
                      "--tasks", "32", "--output", out)
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["models"]) == {"btl", "dpl", "np-btl", "latent"}
    for entry in result["models"].values():
        assert set(entry["accuracy"]) == {"0", "1", "3"}
        assert set(entry["accuracy"]["1"]) == {"mean", "sem", "n_tasks"} and entry["accuracy"]["1"]["n_tasks"] == 32
        assert set(entry["accuracy_per_user"]["1"]) <= {"user-0", "user-1"}
        assert set(entry["accuracy_original_metric"]) == {"0", "1", "3"}
        assert all(math.isfinite(v) for v in entry["nll"].values())
    assert 0.7 < result["user_agnostic_ceiling"] < 0.8 and result["oracle"] == 1.0
    assert out.with_suffix(".png").stat().st_size > 0
    table = out.with_suffix(".md").read_text()
    assert "| np-btl |" in table and "k=3" in table
    assert "| np-btl |" in capsys.readouterr().out


def test_seed_groups_average_over_seeds(scalar_dir, tmp_path, capsys):
    for seed in (0, 1):
        run_script(TRAIN, "--data", scalar_dir, "--model", "btl", "--seed", seed, "--output", tmp_path / f"btl-{seed}", *TINY)
    out = tmp_path / "r.json"
    capsys.readouterr()
    assert run_script(EVAL, tmp_path / "btl-0", tmp_path / "btl-1", "--k", "0", "--tasks", "16", "--output", out) == 0
    group = json.loads(out.read_text())["seed_groups"]["btl"]
    assert group["members"] == ["btl-0", "btl-1"] and group["accuracy"]["0"]["seeds"] == 2
    # The printed table shows the group; the Markdown file keeps every seed's row too.
    printed, table = capsys.readouterr().out, out.with_suffix(".md").read_text()
    assert "| **btl** (2 seeds" in printed and "| btl-0 |" not in printed
    assert "| **btl** (2 seeds" in table and "| btl-0 |" in table and "| btl-1 |" in table


def test_feedback_users_are_split_by_prompt_with_conflicts_kept(feedback_dir):
    prompts = {name: {row[0] for row in read_split(feedback_dir, name).texts} for name in ("train", "val", "test")}
    assert not prompts["train"] & prompts["test"] and not prompts["train"] & prompts["val"]
    meta = read_meta(feedback_dir)
    assert meta["users"] == sorted(["helpfulness", "honesty", "truthfulness", "instruction_following"])
    assert meta["dim"] == 384 and meta["embedder"] == "embedded"
    assert meta["agreement_rate"] < 1  # the attributes disagree on some pairs, and those pairs are kept


def test_feedback_hh_subset_keeps_only_pairs_where_helpfulness_and_honesty_disagree(tmp_path):
    assert run_script(DATA, "--kind", "ultrafeedback", "--subset", "hh", "--output", tmp_path) == 0
    split = read_split(tmp_path, "train")
    choices: dict[int, dict[str, int]] = {}
    for user, pair, choice in zip(split.user, split.pair, split.choice):
        choices.setdefault(int(pair), {})[split.users[user]] = int(choice)
    assert choices and all(c["helpfulness"] != c["honesty"] for c in choices.values())


def test_text_users_have_opposite_tastes(tmp_path):
    assert run_script(DATA, "--kind", "text", "--attributes", "length", "--output", tmp_path) == 0
    split = read_split(tmp_path, "test")
    by_pair: dict[int, set[int]] = {}
    for pair, choice in zip(split.pair, split.choice):
        by_pair.setdefault(int(pair), set()).add(int(choice))
    assert split.users == ["length-less", "length-more"] and all(len(c) == 2 for c in by_pair.values())


def test_aloe_personas_become_users_and_short_ones_are_skipped(tmp_path, capsys):
    conversations = tmp_path / "conversations.jsonl"
    extra = {"profile": "A new person.", "personality": "Says little.",
             "conversations": [{"user": "Hi?", "assistant": {"preferred": "Hello.", "rejected": "Go away."}}]}
    conversations.write_text(ALOE_SAMPLE.read_text() + json.dumps(extra) + "\n")
    assert run_script(DATA, "--kind", "aloe", "--conversations", conversations, "--output", tmp_path / "d") == 0
    meta = read_meta(tmp_path / "d")
    assert len(meta["users"]) == 8 and meta["skipped_users"] == 1
    assert "1 users skipped" in capsys.readouterr().out


@pytest.mark.parametrize("conditioning", ["film", "text"])
def test_np_dpo_runs_a_step_with_a_finite_loss(feedback_dir, tiny_model_dir, tmp_path, conditioning):
    out = tmp_path / conditioning
    code = run_script(NP_DPO, "--data", feedback_dir, "--model", tiny_model_dir, "--conditioning", conditioning,
                      "--steps", "1", "--k-max", "2", "--eval-k", "0", "2", "--eval-tasks", "2", "--max-length", "128",
                      "--output", out, "--no-progress")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert math.isfinite(summary["losses"][0]) and set(summary["implicit_reward_accuracy"]) == {"0", "2"}
    assert (out / "adapter" / "adapter_config.json").is_file()
    if conditioning == "film":
        saved = torch.load(out / "model.pt", weights_only=True)
        assert saved["config"]["kind"] == "np-dpo" and set(saved["state_dict"]) == {"encoder", "film"}


def test_film_starts_at_the_base_policy_and_steers_once_trained():
    from aloe.steerable.policy import FiLM

    film = FiLM(z_dim=4, hidden=8, model_dim=6)
    hidden = torch.randn(2, 3, 6)
    film.set(torch.randn(2, 4))
    assert torch.equal(film.hook(None, None, (hidden,))[0], hidden)
    torch.nn.init.normal_(film.net[-1].weight)
    film.set(torch.randn(2, 4))
    assert not torch.equal(film.hook(None, None, (hidden,))[0], hidden)


# ---------------------------------------------------------------- bad input: one line, exit 1


def test_a_data_dir_without_a_split(scalar_dir, tmp_path, capsys):
    (tmp_path / "train.jsonl").write_text((scalar_dir / "train.jsonl").read_text())
    assert_one_line_error(capsys, run_script(TRAIN, "--data", tmp_path, "--output", tmp_path / "m", *TINY),
                          "no val split")


def test_a_checkpoint_of_another_kind(tmp_path, capsys):
    (tmp_path / "policy").mkdir()
    torch.save({"config": {"kind": "np-dpo"}, "state_dict": {}}, tmp_path / "policy" / "model.pt")
    assert_one_line_error(capsys, run_script(EVAL, tmp_path / "policy", "--data", tmp_path),
                          "np-dpo checkpoint, not a steerable reward model")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(capsys, run_script(EVAL, tmp_path / "empty"), "no model.pt")


def test_k_larger_than_the_targets_allow(scalar_dir, tmp_path, capsys):
    run_script(TRAIN, "--data", scalar_dir, "--model", "btl", "--output", tmp_path / "btl", *TINY)
    capsys.readouterr()
    assert_one_line_error(capsys, run_script(EVAL, tmp_path / "btl", "--k", "1", "5000", "--output", tmp_path / "r.json"),
                          "k=5000", "lower k")
    assert_one_line_error(capsys, run_script(TRAIN, "--data", scalar_dir, "--k-max", "5000", "--output", tmp_path / "x", *TINY),
                          "k=5000")


def test_an_aloe_file_where_no_user_has_enough_pairs(capsys, tmp_path):
    code = run_script(DATA, "--kind", "aloe", "--conversations", ALOE_SAMPLE, "--min-pairs", "100", "--output", tmp_path)
    assert_one_line_error(capsys, code, "no user has 100 or more choices")


@pytest.mark.parametrize("argv, needle", [
    (["--kind", "ultrafeedback", "--source", "hub"], "openbmb/UltraFeedback"),
    (["--kind", "aloe"], "--conversations"),
    (["--kind", "nope"], "invalid choice"),
    (["--kind", "text", "--attributes", "colour"], "unknown text attribute"),
])
def test_bad_data_requests(capsys, tmp_path, argv, needle):
    assert_one_line_error(capsys, run_script(DATA, *argv, "--output", tmp_path), needle)


def test_the_original_setup_validates_one_batch_every_500_tasks_and_keeps_the_best(scalar_dir, tmp_path):
    out = tmp_path / "original"
    tiny = [*TINY, "--steps-per-epoch", "130"]  # the later flag wins; 8 tasks a batch: a validation every 62 steps
    assert run_script(TRAIN, "--data", scalar_dir, "--model", "np-btl", "--original", "all", "--output", out, *tiny) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [point["step"] for point in summary["curve"]] == [0, 62, 124, 130]
    best = min(summary["curve"], key=lambda point: point["val_nll"])
    assert summary["best_step"] == best["step"] and summary["best_val_nll"] == best["val_nll"]
    assert summary["provenance"]["settings"]["original"] == ["overlap", "sampling", "network", "selection"]
    assert torch.load(out / "model.pt", weights_only=True)["config"]["original"] is True


def test_bad_training_requests(scalar_dir, tmp_path, capsys):
    assert_one_line_error(capsys, run_script(TRAIN, "--data", scalar_dir, "--model", "btl", "--latent",
                                             "--output", tmp_path, *TINY), "np-btl only")
    assert_one_line_error(capsys, run_script(TRAIN, "--data", scalar_dir, "--model", "btl", "--original", "network",
                                             "--output", tmp_path, *TINY), "--original network", "np-btl only")
    assert_one_line_error(capsys, run_script(NP_DPO, "--data", scalar_dir, "--output", tmp_path), "no option texts")
