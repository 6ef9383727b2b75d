"""Retry policy of the API backends, through the real openai SDK against a local stdlib server."""

from __future__ import annotations

import socket
import time

import pytest

from aloe.errors import ModelCallError
from aloe.models import ModelOptions, SamplingParams, load_model

HELLO = [{"role": "user", "content": "hello"}]
FAST = ModelOptions(backoff_initial_s=0.01, max_retries=4)
SECRET = "sk-test-0123456789abcdef"


def test_429_then_500_then_200_is_retried_to_success(openai_stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server = openai_stub([429, 500])
    model = load_model("openai:stub-model", ModelOptions(base_url=server.base_url, backoff_initial_s=0.01))
    started = time.perf_counter()
    reply = model.chat(HELLO, SamplingParams(max_new_tokens=5))
    assert time.perf_counter() - started < 5  # the small backoff is honoured (the default waits ~1 s, 2 s)
    assert len(server.requests) == 3
    assert all(request["messages"] == HELLO for request in server.requests)
    assert server.headers[0]["authorization"] == f"Bearer {SECRET}"
    assert reply.text == "echo: hello"
    assert (reply.prompt_tokens, reply.completion_tokens, reply.finish_reason) == (7, 3, "stop")


def test_401_fails_at_once_naming_spec_and_key_variable(openai_stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server = openai_stub([401, 401, 401])
    model = load_model("openai:stub-model", ModelOptions(base_url=server.base_url, backoff_initial_s=0.01))
    with pytest.raises(ModelCallError) as info:
        model.chat(HELLO)
    assert len(server.requests) == 1
    message = str(info.value)
    assert message == "openai:stub-model: request failed with HTTP 401: check OPENAI_API_KEY"
    assert SECRET not in message and SECRET not in repr(info.value.__cause__ or "")


@pytest.mark.parametrize("status, fix", [
    (400, "the request was rejected"),
    (403, "the key lacks access"),
    (404, "check the model name"),
])
def test_other_client_errors_fail_at_once_with_a_fix(openai_stub, status, fix):
    server = openai_stub([status])
    model = load_model("openai:stub-model", ModelOptions(base_url=server.base_url, backoff_initial_s=0.01))
    with pytest.raises(ModelCallError, match=f"HTTP {status}: {fix}"):
        model.chat(HELLO)
    assert len(server.requests) == 1


def test_persistent_5xx_gives_up_after_max_retries(openai_stub):
    server = openai_stub([503] * 10)
    model = load_model("openai:stub-model", ModelOptions(base_url=server.base_url, backoff_initial_s=0.01,
                                                         max_retries=3))
    with pytest.raises(ModelCallError, match=r"gave up after 3 attempts \(HTTP 503\)"):
        model.chat(HELLO)
    assert len(server.requests) == 3


def test_timeouts_are_retried(openai_stub):
    server = openai_stub(delay_s=1.0)
    model = load_model("openai:stub-model", ModelOptions(base_url=server.base_url, backoff_initial_s=0.01,
                                                         max_retries=2, timeout_s=0.2))
    with pytest.raises(ModelCallError, match="gave up after 2 attempts"):
        model.chat(HELLO)
    time.sleep(1.0)  # let the stub finish recording the abandoned requests
    assert len(server.requests) == 2


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = load_model("openai:stub-model", ModelOptions(base_url=f"http://127.0.0.1:{port}/v1",
                                                         backoff_initial_s=0.01, max_retries=2))
    with pytest.raises(ModelCallError, match="gave up after 2 attempts .*is the server reachable"):
        model.chat(HELLO)


def test_a_failure_in_a_batch_raises_after_keeping_finished_replies(openai_stub):
    server = openai_stub([200, 401])
    model = load_model("openai:stub-model", ModelOptions(base_url=server.base_url, concurrency=1,
                                                         backoff_initial_s=0.01))
    finished = {}
    batch = [[{"role": "user", "content": f"q{i}"}] for i in range(4)]
    with pytest.raises(ModelCallError, match="HTTP 401"):
        model.generate(batch, SamplingParams(), on_reply=lambda position, reply: finished.update({position: reply}))
    assert finished[0].text == "echo: q0" and 1 not in finished
    # Every call that succeeded was handed over, even those still in flight when the failure came.
    assert sorted(finished) == [i for i, request in enumerate(server.requests) if i != 1]


def test_sampling_options_reach_the_server(openai_stub):
    server = openai_stub()
    model = load_model("openai:stub-model", ModelOptions(base_url=server.base_url))
    params = SamplingParams(temperature=0.4, top_p=0.8, max_new_tokens=17, seed=3, stop=("###",))
    model.generate([HELLO, HELLO], params, sample_indices=[0, 2])
    sent = sorted(server.requests, key=lambda request: request["seed"])
    assert [request["seed"] for request in sent] == [3, 5]  # repeated samples get distinct seeds
    assert all(request["model"] == "stub-model" and request["temperature"] == 0.4 and request["top_p"] == 0.8
               and request["max_tokens"] == 17 and request["stop"] == ["###"] for request in sent)


@pytest.mark.parametrize("fault", ["empty", "malformed", "no-choices"])
def test_a_200_without_a_usable_completion_is_retried(openai_stub, fault):
    server = openai_stub([fault, fault])
    model = load_model("openai:stub-model", ModelOptions(base_url=server.base_url, backoff_initial_s=0.01))
    assert model.chat(HELLO).text == "echo: hello"
    assert server.outcomes == [fault, fault, 200]


def test_a_request_that_outlasts_its_retries_fails_alone_and_the_batch_goes_on(openai_stub, tmp_path):
    from aloe.cache import CachedChatModel, ResponseCache
    from aloe.errors import IncompleteBatch

    server = openai_stub([200, "no-choices", "malformed"])  # the batch's first request fails twice
    model = load_model("openai:stub-model", ModelOptions(base_url=server.base_url, concurrency=1,
                                                         backoff_initial_s=0.01, max_retries=2))
    cached = CachedChatModel(model, ResponseCache(tmp_path / "responses.sqlite"))
    batch = [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    cached.generate(batch[2:], SamplingParams())  # one reply already in the cache
    with pytest.raises(IncompleteBatch) as info:
        cached.generate(batch, SamplingParams())
    assert list(info.value.failures) == [0]
    assert "gave up after 2 attempts (a 200 response that is not JSON" in info.value.failures[0]
    assert str(info.value).startswith("1 of 2 requests failed (openai:stub-model: gave up after 2 attempts")
    assert info.value.replies[0] is None
    assert [reply.text for reply in info.value.replies[1:]] == ["echo: q1", "echo: q2"]
    assert cached.generate(batch, SamplingParams())[0].text == "echo: q0"  # a re-run asks it again


def test_every_fault_at_15_percent_each_loses_nothing(openai_stub):
    from conftest import FAULTS, FaultPlan

    server = openai_stub(faults=FaultPlan.each(0.15, seed=1), hang_s=1.0)
    model = load_model("openai:stub-model", ModelOptions(base_url=server.base_url, concurrency=8, timeout_s=0.4,
                                                         backoff_initial_s=0.01, max_retries=4))
    batch = [[{"role": "user", "content": f"q{i}"}] for i in range(24)]
    replies = model.generate(batch, SamplingParams())
    assert [reply.text for reply in replies] == [f"echo: q{i}" for i in range(24)]
    assert {str(outcome) for outcome in server.outcomes} == {*FAULTS, "200"}  # every fault was met
