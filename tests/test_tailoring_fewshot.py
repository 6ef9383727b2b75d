"""Few-shot mode for untrained base models, and the raw-text prompting it runs on."""

import json
from pathlib import Path

import pytest

from aloe.errors import ModelCallError, ModelSpecError, RecordError
from aloe.models import ModelOptions, check_spec
from aloe.responses import attach_prefix
from aloe.tailoring.generation import FewShot, persona_requests
from aloe.tailoring.pairs import PreferencePair, read_pairs
from tests.stage_scripts import run_script

DATA = Path(__file__).resolve().parents[1] / "datasets" / "preference_pairs"


def pair(id, prompt, domain="safety_qa", **extra):
    return PreferencePair(id=id, prompt=prompt, chosen=f"chosen answer {id}", rejected=f"rejected answer {id}",
                          domain=domain, **extra)


POOL = [pair(f"t{i}", f"training question {i}?", chosen_persona=f"The user is reader {i} and prefers detail.")
        for i in range(6)]
ITEM = pair("item", "How do I stay safe?", chosen_persona="The user is careful and prefers caution.")


def text_of(request) -> str:
    (message,) = request.messages
    assert message["role"] == "user"
    return message["content"]


def test_exemplars_are_fixed_seeded_and_never_the_item_or_its_prompt():
    pool = [*POOL, pair("item", "How do I stay safe?", chosen_persona="The user is SELF."),
            pair("dup", "how do I   stay SAFE?", chosen_persona="The user is DUP.")]
    few_shot = FewShot(pool, "train.jsonl", shots=3, seed=0)
    other = pair("item2", "Is bleach with vinegar safe?", chosen_persona="The user is wary.")
    first, second = persona_requests("test.jsonl", [ITEM, other], "gold-chosen", "system", "general", few_shot=few_shot)
    text = text_of(first)
    assert "SELF" not in text and "DUP" not in text and "chosen answer item" not in text
    assert first.extra["few_shot_ids"] == second.extra["few_shot_ids"]  # the same exemplars for every item
    assert len(first.extra["few_shot_ids"]) == 3 and text.count("Prompt: ") == 4
    blocks = text.split("\n\n")
    exemplar = next(p for p in POOL if p.id == first.extra["few_shot_ids"][0])
    assert blocks[0] == f"Prompt: {exemplar.prompt}\nPersona: {exemplar.chosen_persona}\nResponse: {exemplar.chosen}"
    assert blocks[-1] == f"Prompt: {ITEM.prompt}\nPersona: {ITEM.chosen_persona}\nResponse:"
    assert first.condition == ITEM.chosen_persona and first.messages == (first.messages[0],)
    again, = persona_requests("test.jsonl", [ITEM], "gold-chosen", "system", "general", few_shot=few_shot)
    assert again == first
    seeds = {tuple(persona_requests("test.jsonl", [ITEM], "gold-chosen", "system", "general",
                                    few_shot=FewShot(pool, "train.jsonl", 3, seed))[0].extra["few_shot_ids"])
             for seed in range(5)}
    assert len(seeds) > 1  # the seed, not the file order, picks them


def test_persona_placement_per_condition():
    few_shot = FewShot(POOL, "train.jsonl", shots=2)
    after, = persona_requests("test.jsonl", [ITEM], "gold-chosen", "after-prompt", "general", few_shot=few_shot)
    text = text_of(after)
    assert "Persona:" not in text and text.count("I am reader") == 2
    assert text.endswith(f"Prompt: {ITEM.prompt}\n\nI am careful and prefer caution.\nResponse:")
    for persona_type, placement in (("none", "system"), ("gold-chosen", "none")):
        plain, = persona_requests("test.jsonl", [ITEM], persona_type, placement, "general", few_shot=few_shot)
        text = text_of(plain)
        assert "Persona:" not in text and "I am" not in text and text.endswith(f"Prompt: {ITEM.prompt}\nResponse:")
    # Without personas the exemplars need none either.
    bare = [pair(f"b{i}", f"bare question {i}?") for i in range(2)]
    plain, = persona_requests("test.jsonl", [ITEM], "none", "system", "general", few_shot=FewShot(bare, "b.jsonl", 2))
    assert plain.extra["few_shot_ids"] == ["b0", "b1"] or plain.extra["few_shot_ids"] == ["b1", "b0"]
    with pytest.raises(RecordError, match=r"test.jsonl: record 1: domain: b.jsonl has 0 pairs of domain 'safety_qa' "
                                          "with a chosen persona"):
        persona_requests("test.jsonl", [ITEM], "gold-chosen", "system", "general", few_shot=FewShot(bare, "b.jsonl", 2))


def test_mnemonic_items_end_in_the_forced_prefix_and_keep_it():
    exemplars = [pair(f"m{i}", f'Mnemonic for "word{i}".', domain="mnemonics", chosen_persona="The user is visual.")
                 for i in range(2)]
    item = pair("m", 'Give me a keyword mnemonic for the word "abate".', domain="mnemonics",
                chosen_persona="The user is visual.")
    request, = persona_requests("t.jsonl", [item], "gold-chosen", "system", "general",
                                few_shot=FewShot(exemplars, "f.jsonl", 2))
    assert text_of(request).endswith("Response: Abate sounds like") and request.prefix_in_prompt
    assert attach_prefix("'a bait': ...", request.prefix, True) == ("Abate sounds like 'a bait': ...", False)
    assert attach_prefix("Abate sounds like a bait", request.prefix, True) == ("Abate sounds like a bait", False)
    assert attach_prefix("'a bait'", request.prefix) == ("Abate sounds like 'a bait'", True)


def test_raw_text_mode_encodes_the_plain_text(tiny_model_dir):
    from aloe.models.local import LocalChatModel

    model = LocalChatModel("tiny", str(tiny_model_dir), raw_text=True)
    text = "Prompt: Why?\nResponse:"
    assert model.encode([{"role": "user", "content": text}], 8) == model.tokenizer(text)["input_ids"]
    with pytest.raises(ModelCallError, match=r"messages \[system, user\]"):
        model.encode([{"role": "system", "content": "s"}, {"role": "user", "content": text}], 8)
    chat = LocalChatModel("tiny", str(tiny_model_dir), model=model.model, tokenizer=model.tokenizer)
    assert chat.encode([{"role": "user", "content": text}], 8) != model.encode([{"role": "user", "content": text}], 8)
    assert chat.cache_identity() + "/raw" == model.cache_identity() and model.describe()["raw_text"]
    with pytest.raises(ModelSpecError, match="raw-text prompting needs a local model"):
        check_spec("openai:gpt-4o-mini", ModelOptions(raw_text=True))


def test_few_shot_script_on_a_tiny_model(tmp_path, tiny_chatty_model_dir, one_torch_thread):
    pairs = tmp_path / "test.jsonl"
    pairs.write_text("".join(json.dumps({**p.model_dump(exclude_none=True), "chosen_persona": f"The user is kind {i}."}) + "\n"
                             for i, p in enumerate(read_pairs(DATA / "test.jsonl")[:4])))
    out = tmp_path / "fewshot.jsonl"
    assert run_script("evaluation/generate_responses.py", "--model", tiny_chatty_model_dir, "--raw-text",
                      "--pairs", pairs, "--persona", "gold-chosen", "--few-shot", "2",
                      "--few-shot-pairs", DATA / "fewshot.jsonl", "--max-new-tokens", "6", "--output", out) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4 and all(len(r["few_shot_ids"]) == 2 for r in records)
    assert all(r["few_shot_ids"][0].split("-")[0] in r["domain"] for r in records)  # from the item's own domain
    mnemonic = next(r for r in records if r["domain"] == "mnemonics")
    assert mnemonic["response"].startswith("Obdurate sounds like ")
    assert "prefix_reattached" not in mnemonic["flags"]
    run = json.loads((tmp_path / "fewshot.provenance.json").read_text())
    assert {"fewshot_persona_response", "fewshot_response"} <= set(run["prompts"])
    assert run["models"]["model"]["raw_text"] is True
    assert run_script("evaluation/generate_responses.py", "--model", tiny_chatty_model_dir, "--pairs", pairs,
                      "--few-shot", "2", "--output", tmp_path / "x.jsonl") == 1


def test_persona_inference_takes_raw_text_too(tmp_path, tiny_chatty_model_dir, one_torch_thread):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text((DATA / "test.jsonl").read_text().splitlines(keepends=True)[0])
    out = tmp_path / "personas.jsonl"
    assert run_script("data_generation/infer_personas.py", "--pairs", pairs, "--output", out, "--model",
                      tiny_chatty_model_dir, "--raw-text", "--shots", "1", "--max-new-tokens", "4",
                      "--max-attempts", "1") == 0
    assert read_pairs(out)[0].chosen_persona_raw is not None
    assert json.loads((tmp_path / "personas.provenance.json").read_text())["models"]["model"]["raw_text"] is True
