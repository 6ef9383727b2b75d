import csv
import json
from pathlib import Path

import numpy as np
import pytest

from aloe.errors import AloeError, RecordError
from aloe.judges.pairwise import PairwiseJudgement, PairwiseOrder
from aloe.models.base import ChatModel, Reply
from aloe.prompts import render
from aloe.tailoring.accuracy import (
    accuracy_items, accuracy_report, order_correctness, persona_clause, preference_items, saliency,
)
from aloe.tailoring.generation import first_person, mnemonic_term, persona_requests, response_prefix
from aloe.tailoring.inference import (
    InferenceSettings, check_domains, exemplars_for, infer_personas, inference_messages, parse_persona, read_exemplars,
)
from aloe.tailoring.pairs import DOMAINS, PreferencePair, read_pairs
from aloe.tailoring.retrieval import medoid_personas, retrieve
from tests.stage_scripts import run_script

DATA = Path(__file__).resolve().parents[1] / "datasets" / "preference_pairs"


def pair(id="p1", prompt="Why is the sky blue?", chosen="Rayleigh scattering ...", rejected="It just is.", **extra):
    return PreferencePair(id=id, prompt=prompt, chosen=chosen, rejected=rejected, **extra)


# ---------------------------------------------------------------- shipped data


def test_shipped_data_has_four_domains_splits_and_fewshot():
    train, test, fewshot = (read_pairs(DATA / f"{name}.jsonl") for name in ("train", "test", "fewshot"))
    for domain in DOMAINS:
        assert sum(p.domain == domain for p in train + test) >= 40
        assert sum(p.domain == domain for p in fewshot) == 5
    assert not {p.id for p in train} & {p.id for p in test}
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert all(p.chosen_persona.startswith("The user is") and p.rejected_persona for p in fewshot)
    assert all(p.chosen != p.rejected for p in train + test)


# ---------------------------------------------------------------- readers


def test_readers_accept_jsonl_json_csv_parquet_and_author_columns(tmp_path):
    rows = [{"prompt": "Q1", "chosen": "c1", "rejected": "r1", "chosen_persona_gold": "The user is A.",
             "rejected_persona_gold": "The user is B.", "chosen_persona_retr": "The user is C.",
             "rejected_persona_retr": "The user is D."},
            {"prompt": "Q2", "chosen": "c2", "rejected": "r2", "chosen_persona_gold": "The user is E.",
             "rejected_persona_gold": "The user is F.", "chosen_persona_retr": "The user is G.",
             "rejected_persona_retr": "The user is H."}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "a.json").write_text(json.dumps(rows, indent=2))
    with (tmp_path / "a.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    import pandas as pd

    pd.DataFrame(rows).to_parquet(tmp_path / "a.parquet")
    read = [read_pairs(tmp_path / f"a.{suffix}", domain="safety_qa") for suffix in ("jsonl", "json", "csv", "parquet")]
    for pairs in read:
        assert [p.chosen_persona for p in pairs] == ["The user is A.", "The user is E."]
        assert pairs[1].rejected_persona_retr == "The user is H." and pairs[0].domain == "safety_qa"
        assert pairs[0].id.startswith("pair-00000-") and pairs[0].id != pairs[1].id
    assert {p.id for p in read[0]} == {p.id for p in read[3]}  # the same content gets the same id


@pytest.mark.parametrize("line, field", [
    ('{"id": "x", "prompt": "Q", "rejected": "r"}', "chosen: missing"),
    ('{"id": "x", "prompt": "  ", "chosen": "c", "rejected": "r"}', "prompt"),
    ('{"id": "x", "prompt": "Q", "chosen": "c", "rejected": "r"}\n{"id": "x", "prompt": "Q2", "chosen": "c", "rejected": "r"}', "id: 'x' appears twice"),
    ('["not", "an", "object"]', "record 1: record"),
])
def test_bad_pairs_name_file_record_and_field(tmp_path, line, field):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(RecordError, match=f"{path}.*{field}"):
        read_pairs(path)


def test_aloe_conversations_are_a_pair_source(tmp_path):
    conversation = {"profile": "p", "personality": "q", "conversations": [
        {"user": "hi", "assistant": {"preferred": "hello!", "rejected": "what"}, "chosen": "preferred"},
        {"user": "more", "assistant": {"preferred": "sure", "rejected": "no"}, "chosen": "rejected"}]}
    path = tmp_path / "conversations.jsonl"
    path.write_text(json.dumps(conversation) + "\n")
    first, second = read_pairs(path)
    assert (first.chosen, first.rejected, first.domain) == ("hello!", "what", "aloe")
    assert second.history == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"},
                              {"role": "user", "content": "more"}]
    assert "User: more" in second.prompt


# ---------------------------------------------------------------- inference


class RecordingModel(ChatModel):
    spec = "recording"

    def __init__(self, reply="The user is careful and prefers detail.\nPrompt: next"):
        self.asks, self.reply, self.params = [], reply, []

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        self.asks.extend(conv[-1]["content"] for conv in conversations)
        self.params.append(params)
        reply = self.reply
        return [Reply(text=reply(conv) if callable(reply) else reply) for conv in conversations]


def exemplars():
    return read_exemplars(DATA / "fewshot.jsonl")


def test_fewshot_prompt_renders_for_every_domain():
    shots = exemplars()
    assert set(shots) == set(DOMAINS)
    for domain in (*DOMAINS, "general"):
        (message,) = inference_messages(pair(), "chosen", exemplars_for(shots, domain), domain)
        text = message["content"]
        assert text.count("Persona:") == 6 and text.rstrip().endswith("Persona:")
        assert text.count("Chosen Response:") == 6
        assert render(f"persona_instruction_{domain}") in text
    assert len({p.domain for p in exemplars_for(shots, "general")}) == 4


def test_both_slots_are_filled_from_the_right_responses():
    model = RecordingModel()
    (result,) = infer_personas(model, [pair(chosen="CHOSEN-TEXT", rejected="REJECTED-TEXT", domain="safety_qa")],
                               exemplars())
    assert len(model.asks) == 2 and len(model.params) == 1  # both asks in one batch
    for ask, first, second in ((model.asks[0], "CHOSEN-TEXT", "REJECTED-TEXT"),
                               (model.asks[1], "REJECTED-TEXT", "CHOSEN-TEXT")):
        query = ask.rsplit("Prompt:", 1)[1]
        assert f"Chosen Response: {first}" in query and f"Rejected Response: {second}" in query
    assert result.chosen_persona == result.rejected_persona == "The user is careful and prefers detail."
    assert result.chosen_persona_raw.startswith("The user is careful")
    assert model.params[0].temperature == 0 and "Prompt:" in model.params[0].stop


def test_unusable_personas_are_resampled_then_kept_as_none_with_a_reason():
    model = RecordingModel(reply="")
    (result,) = infer_personas(model, [pair(domain="mnemonics")], exemplars(), settings=InferenceSettings(max_attempts=3))
    assert len(model.asks) == 6 and [p.temperature for p in model.params] == [0.0, 0.7, 0.7]
    assert result.chosen_persona is None and "after 2 attempts" in result.chosen_persona_reason


@pytest.mark.parametrize("text, persona", [
    ("The user is frugal and prefers tips.\nPrompt: x", "The user is frugal and prefers tips."),
    ("Persona: The user is calm.", "The user is calm."),
    ("  \n**Persona:** \"The user is calm.\"", "The user is calm."),
    ("", None), ("Prompt: another", None), ("Yes.", None),
])
def test_parse_persona(text, persona):
    assert parse_persona(text)[0] == persona


def test_unknown_domain_without_prompt_is_an_error():
    with pytest.raises(RecordError, match="record 1: domain: 'cooking' has no persona inference prompt"):
        check_domains("pairs.jsonl", [pair(domain="cooking")], exemplars(), "general", "fewshot.jsonl")
    check_domains("pairs.jsonl", [pair()], exemplars(), "general", "fewshot.jsonl")  # no domain: general


# ---------------------------------------------------------------- retrieval and generation


class WordEmbedder:
    """Bag-of-words embeddings over hashed buckets: prompts sharing words are similar."""

    def encode(self, texts):
        rows = np.full((len(texts), 64), 1e-3)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                rows[row, sum(map(ord, word)) % 64] += 1
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_retrieval_never_returns_the_item_itself_or_a_duplicate_prompt():
    pool = [pair("same", "how to bake bread", chosen_persona="The user is SELF."),
            pair("dup", "How to  bake bread", chosen_persona="The user is DUP."),
            pair("near", "how to bake sourdough bread", chosen_persona="The user is NEAR."),
            pair("far", "tax law in france", chosen_persona="The user is FAR.")]
    (found,) = retrieve([pair("same", "how to bake bread")], pool, "chosen", WordEmbedder())
    assert found.persona == "The user is NEAR." and found.source_id == "near"
    with pytest.raises(AloeError, match="no training pair has a rejected persona"):
        retrieve([pair()], pool, "rejected", WordEmbedder())
    assert medoid_personas(pool, WordEmbedder(), "general")["general"].startswith("The user is")


def test_first_person_and_mnemonic_prefix():
    assert first_person("The user is curious and prefers short answers.") == "I am curious and prefer short answers."
    item = pair(prompt='Give me a keyword mnemonic to remember the meaning of the word "abate".', domain="mnemonics")
    assert mnemonic_term(item) == "abate" and response_prefix(item, "general") == "Abate sounds like"
    assert response_prefix(pair(domain="safety_qa"), "general") == ""


def test_persona_requests_place_the_persona():
    items = [pair(chosen_persona="The user is kind and prefers warmth.", rejected_persona="The user is terse.")]
    (system,) = persona_requests("t.jsonl", items, "gold-chosen", "system", "general")
    assert system.messages[0] == {"role": "system", "content": "The user is kind and prefers warmth."}
    (after,) = persona_requests("t.jsonl", items, "gold-chosen", "after-prompt", "general")
    assert after.messages[-1]["content"].endswith("I am kind and prefer warmth.") and after.condition.startswith("The user")
    (none,) = persona_requests("t.jsonl", items, "none", "system", "general")
    assert none.condition is None and none.messages == ({"role": "user", "content": items[0].prompt},)
    with pytest.raises(RecordError, match="t.jsonl: record 1: chosen_persona: missing"):
        persona_requests("t.jsonl", [pair()], "gold-chosen", "system", "general")
    with pytest.raises(RecordError, match="chosen_persona_retr: missing; pass --train-pairs"):
        persona_requests("t.jsonl", [pair()], "retr-chosen", "system", "general")


# ---------------------------------------------------------------- accuracy and saliency


def judgement(id, picks, identical=False):
    orders = [PairwiseOrder(shown=list(shown), raw="", verdict=None if pick is None else
                            ("A" if shown[0] == pick else "B")) for shown, pick in zip((("a", "b"), ("b", "a")), picks)]
    return PairwiseJudgement(id=id, criterion="persona_accuracy", outcome="tie", identical=identical,
                             orders=[] if identical else orders)


def test_persona_accuracy_counts_each_order_against_the_explained_side():
    items = [pair("p1", domain="safety_qa", chosen_persona="The user is A.", rejected_persona="The user is B.")]
    assert [item.id for item in accuracy_items(items)] == ["p1/chosen", "p1/rejected"]
    assert order_correctness(judgement("p1/chosen", ["a", "b"]), "chosen") == [True, False]
    assert order_correctness(judgement("p1/rejected", ["b", None]), "rejected") == [True, None]
    report = accuracy_report(items, [judgement("p1/chosen", ["a", "a"]), judgement("p1/rejected", ["b", None])],
                             "general", samples=20)
    assert report["safety_qa"]["chosen"]["accuracy"] == 1.0
    rejected = report["all"]["rejected"]
    assert (rejected["correct"], rejected["unparsed"], rejected["accuracy"], rejected["accuracy_unparsed_wrong"]) == (1, 1, 1.0, 0.5)
    assert preference_items(items)[0].a == "The user is A."


def test_saliency_by_hand():
    assert persona_clause("The user is thrifty rather than lavish. More text.") == "The user is thrifty "
    table = saliency({"chosen": ["The user is thrifty.", "The user is thrifty and kind.", "The user is kind."],
                      "rejected": ["The user is kind.", "The user values studies."]}, min_count=2, top=5)
    assert table["chosen"][0] == {"word": "thrifty", "saliency": 1.0, "count": 2, "total": 2}
    assert {"word": "kind", "saliency": pytest.approx(2 / 3), "count": 2, "total": 3} in table["chosen"]
    assert table["rejected"] == [{"word": "kind", "saliency": pytest.approx(1 / 3), "count": 1, "total": 3}]


# ---------------------------------------------------------------- scripts on a tiny model


def test_infer_accuracy_and_generate_scripts_on_a_tiny_model(tmp_path, tiny_chatty_model_dir, one_torch_thread, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(line for line in (DATA / "test.jsonl").read_text().splitlines(keepends=True)[:4]))
    out = tmp_path / "personas.jsonl"
    common = ["--model", tiny_chatty_model_dir, "--max-new-tokens", "6"]
    assert run_script("data_generation/infer_personas.py", "--pairs", pairs, "--output", out, *common,
                      "--max-attempts", "1") == 0
    inferred = read_pairs(out)
    assert [p.id for p in inferred] == [p.id for p in read_pairs(pairs)]
    assert all(p.chosen_persona_raw is not None for p in inferred)
    capsys.readouterr()
    assert run_script("data_generation/infer_personas.py", "--pairs", pairs, "--output", out, *common,
                      "--max-attempts", "1") == 0
    assert "already done" in capsys.readouterr().out

    # Give every pair personas so the later stages have something to read, whatever the tiny model said.
    filled = tmp_path / "filled.jsonl"
    filled.write_text("".join(json.dumps({**p.model_dump(), "chosen_persona": f"The user is kind {i}.",
                                          "rejected_persona": f"The user is terse {i}."}) + "\n"
                              for i, p in enumerate(inferred)))
    result = tmp_path / "acc.json"
    assert run_script("evaluation/persona_accuracy.py", "--pairs", filled, "--output", result, *common,
                      "--preferences", "--saliency", "--min-count", "1", "--bootstrap", "10") == 0
    report = json.loads(result.read_text())
    assert report["accuracy"]["all"]["chosen"]["items"] == 8 and "all" in report["preferences"]

    responses = tmp_path / "responses.jsonl"
    assert run_script("evaluation/generate_responses.py", "--pairs", filled, "--persona", "gold-chosen",
                      "--output", responses, *common) == 0
    records = [json.loads(line) for line in responses.read_text().splitlines()]
    assert [r["condition"] for r in records] == [f"The user is kind {i}." for i in range(4)]
    assert all(r["persona_type"] == "gold-chosen" and "truncated" in r["flags"] for r in records)
    mnemonic = next(r for r in records if r["domain"] == "mnemonics")
    assert " sounds like" in mnemonic["response"].split(".")[0]


def test_gold_personas_before_inference_is_one_line_error(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert run_script("evaluation/generate_responses.py", "--pairs", DATA / "test.jsonl", "--persona", "gold-chosen",
                      "--output", out) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "test.jsonl: record 1: chosen_persona: missing" in err
    assert run_script("evaluation/persona_accuracy.py", "--pairs", DATA / "test.jsonl", "--output", tmp_path / "a.json") == 1
    assert "record 1: chosen_persona: missing (run data_generation/infer_personas.py" in capsys.readouterr().err
    bad = tmp_path / "cooking.jsonl"
    bad.write_text(json.dumps({"id": "c", "prompt": "Q", "chosen": "c", "rejected": "r", "domain": "cooking"}) + "\n")
    assert run_script("data_generation/infer_personas.py", "--pairs", bad, "--output", tmp_path / "o.jsonl") == 1
    assert "record 1: domain: 'cooking'" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.slow
def test_tailoring_script_end_to_end_on_a_tiny_model(tmp_path, tiny_chatty_model_dir):
    """scripts/tailoring.sh: infer -> accuracy -> SFT -> DPO (PT and baseline) -> responses -> win rate."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(root), "RUN": str(run),
           "MODEL": str(tiny_chatty_model_dir), "N_TRAIN": "4", "N_TEST": "2",
           "INFER_ARGS": "--max-new-tokens 12 --shots 1 --max-attempts 3", "JUDGE_ARGS": "--max-new-tokens 4",
           "GEN_ARGS": "--max-new-tokens 4", "TRAIN_ARGS": "--max-steps 1 --batch-size 2 --max-length 256",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(root / "scripts" / "tailoring.sh")], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| comparison | criterion |" in done.stdout and "| all | chosen |" in done.stdout
    result = json.loads((run / "win_rate.json").read_text())
    assert set(result["criteria"]) == {"quality", "personalization"} and "delta_pq" in result
    responses = [json.loads(line) for line in (run / "responses.pt_dpo.jsonl").read_text().splitlines()]
    assert len(responses) == 2 and all(r["persona_type"] == "retr-chosen" and r["condition"] for r in responses)
    fewshot = [json.loads(line) for line in (run / "responses.fewshot.jsonl").read_text().splitlines()]
    assert len(fewshot) == 2 and all(len(r["few_shot_ids"]) == 5 for r in fewshot)
    assert "win_rate.fewshot" in done.stdout and (run / "win_rate.fewshot.json").is_file()
    for name in ("pt_sft", "pt_dpo", "base_sft", "base_dpo"):
        summary = json.loads((run / "models" / name / "training_summary.json").read_text())
        assert summary["status"] == "finished"
    assert json.loads((run / "models" / "pt_dpo" / "training_summary.json").read_text())["training_data"]["persona"] == "chosen"
