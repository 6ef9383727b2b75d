"""The OpenAI backend end to end against a real `transformers serve` (the `openai_server` fixture)."""

from __future__ import annotations

import pytest

from aloe.cache import CachedChatModel, ResponseCache
from aloe.errors import ModelCallError
from aloe.models import ModelOptions, SamplingParams, load_model

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=6)
BATCH = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "tell me about tea " * 5}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "and c?"}],
    [{"role": "user", "content": "one more question about bees"}],
]


@pytest.fixture(scope="module")
def served(openai_server):
    return load_model(openai_server.spec, ModelOptions(base_url=openai_server.base_url, concurrency=4))


def test_batch_with_concurrency_matches_the_local_backend(served, openai_server):
    seen = []
    replies = served.generate(BATCH, GREEDY, on_reply=lambda position, reply: seen.append(position))
    assert sorted(seen) == [0, 1, 2, 3]
    # The server ran the same checkpoint with the same chat template: greedy replies and token
    # counts match the local backend's (in the checkpoint's fp32, as the server runs it), in input order.
    local = load_model(openai_server.model, ModelOptions(dtype="fp32")).generate(BATCH, GREEDY)
    assert [r.text for r in replies] == [r.text for r in local]
    assert [r.prompt_tokens for r in replies] == [r.prompt_tokens for r in local]
    assert len({r.prompt_tokens for r in replies}) == len(BATCH)
    assert all(r.text and r.completion_tokens == 6 and r.finish_reason == "length" for r in replies)
    assert all(r.model.startswith(openai_server.model) and r.latency_s > 0 for r in replies)


def test_cached_second_run_makes_no_request(served, tmp_path, monkeypatch):
    model = CachedChatModel(served, ResponseCache(tmp_path / "responses.sqlite"))
    first = model.generate(BATCH[:2], GREEDY)
    monkeypatch.setattr(served, "client", None)  # any request now would fail
    second = model.generate(BATCH[:2], GREEDY)
    assert [r.text for r in second] == [r.text for r in first] and all(r.cached for r in second)


def test_unknown_model_name_fails_at_once(openai_server):
    model = load_model("openai:not-the-served-model", ModelOptions(base_url=openai_server.base_url))
    with pytest.raises(ModelCallError, match=r"^openai:not-the-served-model: request failed with HTTP 4\d\d"):
        model.chat(BATCH[0], GREEDY)
