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
