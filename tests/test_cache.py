"""The response cache over real backends: the stub server's request log counts what reached the model."""

from __future__ import annotations

import pytest

from aloe.cache import CachedChatModel, ResponseCache, cache_key
from aloe.errors import ModelCallError
from aloe.models import ModelOptions, ModelPool, SamplingParams, load_model

BATCH = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=8)


@pytest.fixture
def stub_model(openai_stub, tmp_path):
    """(server, cached model, cache) with the openai backend pointed at a scripted stub."""

    def make(script=None, cache_path=None):
        server = openai_stub(script)
        model = load_model("openai:stub-model", ModelOptions(base_url=server.base_url, concurrency=1,
                                                             backoff_initial_s=0.01))
        cache = ResponseCache(cache_path or tmp_path / "responses.sqlite")
        return server, CachedChatModel(model, cache), cache

    return make


def test_second_identical_batch_makes_no_call(stub_model):
    server, model, cache = stub_model()
    first = model.generate(BATCH, GREEDY)
    assert len(server.requests) == 3 and len(cache) == 3
    assert not any(reply.cached for reply in first)
    seen = []
    second = model.generate(BATCH, GREEDY, on_reply=lambda position, reply: seen.append(position))
    assert len(server.requests) == 3
    assert all(reply.cached for reply in second)
    assert [r.as_dict() for r in second] == [r.as_dict() for r in first]
    assert seen == []  # on_reply reports fresh replies only


def test_changed_params_or_messages_miss_the_cache(stub_model):
    server, model, _ = stub_model()
    model.generate(BATCH[:1], GREEDY)
    model.generate(BATCH[:1], GREEDY.replace(max_new_tokens=9))
    model.generate([[{"role": "system", "content": "be brief"}, *BATCH[0]]], GREEDY)
    model.generate(BATCH[:1], GREEDY)
    assert len(server.requests) == 3


def test_two_sample_indexes_make_two_calls(stub_model):
    server, model, cache = stub_model()
    sampled = SamplingParams(temperature=0.9, max_new_tokens=8, seed=11)
    model.generate([BATCH[0], BATCH[0]], sampled, sample_indices=[0, 1])
    assert len(server.requests) == 2 and len(cache) == 2
    assert sorted(request["seed"] for request in server.requests) == [11, 12]
    model.generate([BATCH[0]], sampled, sample_indices=[1])
    assert len(server.requests) == 2


def test_failures_are_not_cached_and_finished_replies_are(stub_model):
    server, model, cache = stub_model([200, 401])
    with pytest.raises(ModelCallError, match="HTTP 401"):
        model.generate(BATCH, GREEDY)
    assert len(cache) in (1, 2)  # the first reply was stored the moment it arrived (the third if in flight)
    # The third call may have been in flight when the second failed: either way its reply is kept,
    # and the resumed run asks only for what is missing, so the server sees each prompt succeed once.
    replies = model.generate(BATCH, GREEDY)
    assert len(server.requests) == 4
    assert replies[0].cached and not replies[1].cached
    assert [reply.text for reply in replies] == [f"echo: question {i}" for i in range(3)]


def test_cache_survives_reopening(stub_model, tmp_path):
    path = tmp_path / "run" / "responses.sqlite"
    server, model, cache = stub_model(cache_path=path)
    first = model.generate(BATCH, GREEDY)
    cache.close()
    cache2 = ResponseCache(path)
    model2 = CachedChatModel(model.model, cache2)
    server.requests.clear()
    again = model2.generate(BATCH, GREEDY)
    assert server.requests == []
    assert [r.text for r in again] == [r.text for r in first]
    assert len(cache2) == 3


def test_key_covers_spec_messages_params_and_sample():
    base = cache_key("openai:a", BATCH[0], GREEDY, 0)
    assert base == cache_key("openai:a", [dict(m) for m in BATCH[0]], SamplingParams(temperature=0.0, max_new_tokens=8), 0)
    variants = [
        cache_key("openai:b", BATCH[0], GREEDY, 0),
        cache_key("openai:a", BATCH[1], GREEDY, 0),
        cache_key("openai:a", BATCH[0], GREEDY.replace(seed=1), 0),
        cache_key("openai:a", BATCH[0], GREEDY.replace(stop=("x",)), 0),
        cache_key("openai:a", BATCH[0], GREEDY, 1),
    ]
    assert len({base, *variants}) == 6


def test_local_backend_through_pool_and_cache(tiny_chatty_model_dir, tmp_path):
    pool = ModelPool(ModelOptions(batch_size=2), cache=ResponseCache(tmp_path / "responses.sqlite"))
    spec = f"hf:{tiny_chatty_model_dir}"
    model = pool.get(spec)
    assert pool.get(spec) is model  # roles sharing a spec share one loaded model
    calls = []
    backend_generate = model.model.generate
    model.model.generate = lambda *args, **kwargs: calls.append(len(args[0])) or backend_generate(*args, **kwargs)
    first = model.generate(BATCH, GREEDY)
    second = model.generate(BATCH, GREEDY)
    assert calls == [3]
    assert [r.text for r in second] == [r.text for r in first] and all(r.cached for r in second)
    assert model.describe()["spec"] == spec


def test_retrained_checkpoint_under_the_same_name_misses_the_cache(tiny_chatty_model_dir, tmp_path):
    import shutil

    from aloe.models import load_model

    folder = tmp_path / "model_output" / "tiny_dpo"
    shutil.copytree(tiny_chatty_model_dir, folder)
    cache = ResponseCache(tmp_path / "responses.sqlite")
    before = CachedChatModel(load_model(str(folder)), cache)
    before.generate(BATCH, GREEDY)
    # The same weights written again (a copy, a re-save) are the same model: their replies are reused.
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes())
    assert CachedChatModel(load_model(str(folder)), cache).cache_identity() == before.cache_identity()
    # Training writes new weights into the same folder: replies from the old weights must not come back.
    retrain_in_place(folder)
    after = CachedChatModel(load_model(str(folder)), cache)
    assert after.cache_identity() != before.cache_identity()
    assert not any(reply.cached for reply in after.generate(BATCH, GREEDY))
    again = CachedChatModel(load_model(str(folder)), cache)
    assert all(reply.cached for reply in again.generate(BATCH, GREEDY))


def retrain_in_place(folder) -> None:
    """What a training run leaves in an output folder it had written before: other weights, same names."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)
    model.save_pretrained(folder)
