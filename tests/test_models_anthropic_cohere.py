"""Anthropic and Cohere adapters through their real SDKs, answered at the SDK's HTTP transport."""

from __future__ import annotations

import json

import httpx
import httpx2
import pytest

from aloe.errors import ModelCallError
from aloe.models import SamplingParams
from aloe.models.api import AnthropicChatModel, CohereChatModel

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi, I keep bees."},
    {"role": "assistant", "content": "Nice! How many hives?"},
    {"role": "user", "content": "Three. Any winter tips?"},
]
PARAMS = SamplingParams(temperature=0.3, top_p=1.0, max_new_tokens=42, seed=5, stop=("\nUser:",))


class Transport:
    """Answers each request with the next (status, JSON) of a script and records what was sent."""

    def __init__(self, script, http=httpx):
        self.script = list(script)
        self.http = http  # anthropic >= 2 runs on httpx2, cohere on httpx
        self.requests = []

    def __call__(self, request):
        self.requests.append(request)
        status, body = self.script.pop(0)
        return self.http.Response(status, json=body)

    def client(self):
        return self.http.Client(transport=self.http.MockTransport(self))

    def body(self, index: int = -1) -> dict:
        return json.loads(self.requests[index].content)


ANTHROPIC_OK = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test-1",
    "content": [{"type": "text", "text": " Insulate the hives. "}, {"type": "text", "text": "Leave honey."}],
    "stop_reason": "max_tokens", "stop_sequence": None,
    "usage": {"input_tokens": 31, "output_tokens": 42},
}
ANTHROPIC_429 = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}

COHERE_OK = {
    "id": "c1", "finish_reason": "COMPLETE",
    "message": {"role": "assistant", "content": [{"type": "text", "text": "Wrap them up warm."}]},
    "usage": {"billed_units": {"input_tokens": 20, "output_tokens": 6},
              "tokens": {"input_tokens": 28, "output_tokens": 6}},
}


def anthropic_model(transport, **kwargs):
    return AnthropicChatModel("anthropic:claude-test", "claude-test", api_key="sk-ant-secret",
                              http_client=transport.client(), backoff_initial_s=0.01, **kwargs)


def cohere_model(transport, **kwargs):
    return CohereChatModel("cohere:command-test", "command-test", api_key="co-secret",
                           http_client=transport.client(), backoff_initial_s=0.01, **kwargs)


def test_anthropic_request_shape_and_reply():
    transport = Transport([(200, ANTHROPIC_OK)], httpx2)
    reply = anthropic_model(transport).chat(CONVERSATION, PARAMS)

    request = transport.requests[0]
    assert request.url.path == "/v1/messages"
    assert "sk-ant-secret" in request.headers.get("authorization", request.headers.get("x-api-key", ""))
    body = transport.body()
    assert body["model"] == "claude-test"
    assert body["system"] == "You are terse."  # the system message moves to Anthropic's own field
    assert body["messages"] == CONVERSATION[1:]
    assert body["max_tokens"] == 42
    assert body["stop_sequences"] == ["\nUser:"]
    assert not {"temperature", "top_p", "seed"} & set(body)  # the Messages API of anthropic >= 2 has none

    assert reply.text == "Insulate the hives. Leave honey."
    assert reply.finish_reason == "length"
    assert (reply.prompt_tokens, reply.completion_tokens) == (31, 42)
    assert reply.model == "claude-test-1"
    assert reply.latency_s > 0


def test_anthropic_without_system_message_sends_no_system_field():
    transport = Transport([(200, {**ANTHROPIC_OK, "stop_reason": "end_turn"})], httpx2)
    reply = anthropic_model(transport).chat(CONVERSATION[1:], PARAMS.replace(stop=()))
    body = transport.body()
    assert "system" not in body and "stop_sequences" not in body
    assert body["messages"] == CONVERSATION[1:]
    assert reply.finish_reason == "stop"


def test_anthropic_retries_429_then_succeeds():
    transport = Transport([(429, ANTHROPIC_429), (529, ANTHROPIC_429), (200, ANTHROPIC_OK)], httpx2)
    reply = anthropic_model(transport).chat(CONVERSATION, PARAMS)
    assert len(transport.requests) == 3
    assert reply.text.startswith("Insulate")


def test_anthropic_bad_key_fails_at_once_without_leaking_it():
    transport = Transport([(401, {"type": "error", "error": {"type": "authentication_error", "message": "bad"}})], httpx2)
    with pytest.raises(ModelCallError) as info:
        anthropic_model(transport).chat(CONVERSATION, PARAMS)
    assert len(transport.requests) == 1
    message = str(info.value)
    assert "anthropic:claude-test" in message and "ANTHROPIC_API_KEY" in message and "401" in message
    assert "sk-ant-secret" not in message


def test_cohere_request_shape_and_reply():
    transport = Transport([(200, COHERE_OK)])
    reply = cohere_model(transport).chat(CONVERSATION, PARAMS)

    request = transport.requests[0]
    assert request.url.path == "/v2/chat"
    assert request.headers["authorization"] == "Bearer co-secret"
    body = transport.body()
    assert body["model"] == "command-test"
    assert body["messages"] == CONVERSATION  # Cohere v2 takes the system role in the message list
    assert body["max_tokens"] == 42
    assert body["temperature"] == 0.3
    assert body["p"] == 1.0
    assert body["seed"] == 5
    assert body["stop_sequences"] == ["\nUser:"]
    assert body.get("stream") in (None, False)

    assert reply.text == "Wrap them up warm."
    assert reply.finish_reason == "stop"
    assert (reply.prompt_tokens, reply.completion_tokens) == (28, 6)
    assert reply.model == "command-test"


def test_cohere_max_tokens_finish_reason():
    transport = Transport([(200, {**COHERE_OK, "finish_reason": "MAX_TOKENS"})])
    assert cohere_model(transport).chat(CONVERSATION, PARAMS).finish_reason == "length"


def test_cohere_retries_429_then_succeeds():
    transport = Transport([(429, {"message": "too many"}), (503, {"message": "busy"}), (200, COHERE_OK)])
    reply = cohere_model(transport).chat(CONVERSATION, PARAMS)
    assert len(transport.requests) == 3  # the SDK's own retries are off: these are ours
    assert reply.text == "Wrap them up warm."


def test_cohere_gives_up_after_max_retries():
    transport = Transport([(500, {"message": "down"})] * 2)
    with pytest.raises(ModelCallError, match=r"cohere:command-test: gave up after 2 attempts \(HTTP 500\)"):
        cohere_model(transport, max_retries=2).chat(CONVERSATION, PARAMS)
    assert len(transport.requests) == 2


def test_cohere_bad_request_fails_at_once():
    transport = Transport([(400, {"message": "invalid temperature"})])
    with pytest.raises(ModelCallError, match="HTTP 400"):
        cohere_model(transport).chat(CONVERSATION, PARAMS)
    assert len(transport.requests) == 1


def test_batch_runs_concurrently_in_input_order():
    answers = {f"question {i}": f"answer {i}" for i in range(6)}

    def handler(request):
        question = json.loads(request.content)["messages"][-1]["content"]
        return httpx.Response(200, json={**COHERE_OK, "message": {
            "role": "assistant", "content": [{"type": "text", "text": answers[question]}]}})

    model = CohereChatModel("cohere:command-test", "command-test", api_key="k", concurrency=3,
                            http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    seen = []
    replies = model.generate([[{"role": "user", "content": q}] for q in answers], PARAMS,
                             on_reply=lambda position, reply: seen.append(position))
    assert [reply.text for reply in replies] == list(answers.values())
    assert sorted(seen) == list(range(6))
