"""API backends: OpenAI (and any OpenAI-compatible server), Anthropic, Cohere.

A batch runs with bounded concurrency. Transient failures (429, 408/409, 5xx, timeouts, connection
errors, and 200 answers whose body is not a usable completion) are retried with exponential backoff,
chosen by status code and exception type, never by message text; the SDKs' own retries are switched
off so this is the one retry policy. A request that still fails after its retries fails alone: the
rest of the batch goes on and the batch ends in `IncompleteBatch`, which a stage may catch to count
that item as failed. Other client errors (400/401/403/404) stop the batch at once with a message
naming the spec and the fix.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import httpx
import tenacity
from dotenv import load_dotenv

from aloe.errors import IncompleteBatch, ModelCallError, ModelSpecError
from aloe.logs import redact
from aloe.models.base import ChatModel, Reply, SamplingParams
from aloe.messages import Message, validate_messages

load_dotenv(override=False)

RETRYABLE_STATUS = {408, 409, 429}
FIXES = {
    401: "check the API key",
    403: "the key lacks access to this model",
    404: "check the model name (and --base-url for a compatible server)",
    400: "the request was rejected; check the sampling options for this model",
}


class MalformedResponse(Exception):
    """A 200 answer that is no usable completion (empty or broken JSON, no choices): a server or proxy
    hiccup, retried like a 5xx."""


class _GaveUp(ModelCallError):
    """A transient failure that outlasted the retries: it fails its own request, not the batch."""


def _key_problem(key: str) -> str | None:
    """What is wrong with a key's text, never the key itself (it must not reach a log)."""
    if key != key.rstrip("\r\n"):
        return "ends with a line break (a key file read with its newline?)"
    if key != key.strip():
        return "has leading or trailing whitespace"
    if any(char.isspace() for char in key):
        return "contains whitespace"
    position = next((i for i, char in enumerate(key) if not char.isascii() or not char.isprintable()), None)
    if position is not None:
        return f"contains a non-ASCII or control character at position {position + 1} (a pasted quote or dash?)"
    return None


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


class APIChatModel(ChatModel):
    """Shared machinery; subclasses say how to build a client and make one call."""

    key_env: str = ""
    connection_errors: tuple[type[BaseException], ...] = (httpx.TimeoutException, httpx.TransportError)

    def __init__(self, spec: str, model_name: str, *, concurrency: int = 8, max_retries: int = 6,
                 timeout_s: float = 120.0, base_url: str | None = None, api_key: str | None = None,
                 http_client=None, backoff_initial_s: float = 1.0):
        """`http_client` replaces the SDK's own HTTP client (a proxy, or a test transport): an
        `httpx.Client` for openai and cohere, an `httpx2.Client` for anthropic >= 2."""
        self.spec = spec
        self.model_name = model_name
        self.concurrency = max(1, concurrency)
        self.max_retries = max(1, max_retries)
        self.timeout_s = timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.base_url = base_url
        self.reported_models: set[str] = set()  # the snapshots the API says answered (gpt-4o -> gpt-4o-2024-08-06)
        self.client = self._make_client(self._api_key(api_key), base_url, timeout_s, http_client)

    @classmethod
    def from_spec(cls, spec, resolved, options):
        return cls(spec, resolved.target, concurrency=options.concurrency, max_retries=options.max_retries,
                   timeout_s=options.timeout_s, base_url=options.base_url,
                   backoff_initial_s=options.backoff_initial_s)

    def _api_key(self, given: str | None) -> str:
        return self.key_for(self.spec, given, self.base_url)

    @classmethod
    def key_for(cls, spec: str, given: str | None = None, base_url: str | None = None) -> str:
        """The API key, checked: a malformed one fails here in one line naming its variable, not
        later as a network error retried for half a minute (a stray newline) or a raw encoding error."""
        key = given or os.environ.get(cls.key_env)
        if not key:
            raise ModelSpecError(f"{spec} needs {cls.key_env}: set it in the environment or in .env")
        source = cls.key_env if not given else "the API key"
        problem = _key_problem(key)
        if problem:
            raise ModelSpecError(f"{source} {problem} (for {spec}): fix the value in the environment or .env")
        return key

    @classmethod
    def check_spec(cls, spec, resolved, options) -> None:
        """What can be checked before loading anything: the key."""
        cls.key_for(spec, base_url=options.base_url)

    def _make_client(self, api_key, base_url, timeout_s, http_client):
        raise NotImplementedError

    def _complete(self, messages: Sequence[Message], params: SamplingParams) -> Reply:
        raise NotImplementedError

    def describe(self):
        description = {"spec": self.spec, "model": self.model_name, "base_url": self.base_url and redact(self.base_url)}
        if self.reported_models:
            description["reported_models"] = sorted(self.reported_models)
        return description

    def cache_identity(self):
        # The same model name on another server (vLLM, a local test server) gives other replies.
        return f"{self.spec}@{self.base_url or ''}"

    def _is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, (*self.connection_errors, MalformedResponse)):
            return True
        status = _status_of(exc)
        return status is not None and (status in RETRYABLE_STATUS or status >= 500)

    def _call(self, messages: Sequence[Message], params: SamplingParams) -> Reply:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(self._is_transient),
            # Jitter scales with the first wait, so many threads hitting one limit spread out.
            wait=tenacity.wait_exponential_jitter(initial=self.backoff_initial_s, max=60,
                                                  jitter=self.backoff_initial_s),
            stop=tenacity.stop_after_attempt(self.max_retries),
            reraise=True,
        )
        start = time.perf_counter()
        try:
            reply = retrying(self._complete, messages, params)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one actionable error
            raise self._explain(exc) from exc
        reply.latency_s = time.perf_counter() - start
        if reply.model:
            self.reported_models.add(reply.model)
        return reply

    def _explain(self, exc: Exception) -> ModelCallError:
        status = _status_of(exc)
        if isinstance(exc, MalformedResponse):
            return _GaveUp(f"{self.spec}: gave up after {self.max_retries} attempts ({exc}); "
                           "the server or a proxy in front of it answers with broken responses")
        if self._is_transient(exc):
            what = f"HTTP {status}" if status else type(exc).__name__
            return _GaveUp(f"{self.spec}: gave up after {self.max_retries} attempts ({what}); is the server reachable?")
        if status is not None:
            fix = FIXES.get(status, "see the provider's error")
            if status == 401:
                fix = f"check {self.key_env}"
            return ModelCallError(f"{self.spec}: request failed with HTTP {status}: {fix}")
        return ModelCallError(f"{self.spec}: {type(exc).__name__}: {redact(str(exc))}")

    def generate(self, conversations, params, sample_indices=None, on_reply: Callable[[int, Reply], None] | None = None):
        for conversation in conversations:
            validate_messages(conversation)
        replies: list[Reply | None] = [None] * len(conversations)
        indices = list(sample_indices) if sample_indices is not None else [0] * len(conversations)
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        error: BaseException | None = None  # a lasting failure: stops the batch
        failures: dict[int, str] = {}  # requests that gave up after their retries
        gave_up_in_a_row = 0
        try:
            futures = {
                pool.submit(self._call, conv, _seeded(params, index)): position
                for position, (conv, index) in enumerate(zip(conversations, indices))
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    position = futures[future]
                    exc = future.exception()
                    if isinstance(exc, _GaveUp):
                        failures[position] = str(exc)
                        gave_up_in_a_row += 1
                        # As many give-ups in a row as calls in flight (3 at least): the service is down,
                        # not flaky, so stop rather than wait out every request's retries.
                        if gave_up_in_a_row >= max(3, self.concurrency):
                            error = error or exc
                        continue
                    if exc is not None:
                        error = error or exc
                        continue
                    gave_up_in_a_row = 0
                    replies[position] = future.result()
                    if on_reply is not None:
                        on_reply(position, replies[position])
                if error is not None:
                    # Start nothing more, but still hand over the replies of calls already in flight,
                    # so a cache keeps what was paid for. (A cancelled future never counts as done
                    # for `wait`, so it leaves the pending set here.)
                    pending = {future for future in pending if not future.cancel()}
        finally:
            # On Ctrl-C, wait only for the calls in flight, not for the whole queue.
            pool.shutdown(wait=True, cancel_futures=True)
        if error is not None:
            raise error
        if len(failures) == len(conversations) >= 3:
            # Nothing came back from three or more: not the bad luck of one item. (One or two requests,
            # a re-ask or a reminder, are items like any other: they fail alone.)
            raise _GaveUp(failures[0])
        if failures:
            first = failures[min(failures)]
            raise IncompleteBatch(f"{len(failures)} of {len(conversations)} requests failed ({first}); the others "
                                  "finished and are kept", replies, failures)
        return replies  # type: ignore[return-value]


def _seeded(params: SamplingParams, sample_index: int) -> SamplingParams:
    """Repeated samples of one prompt get distinct seeds, so they differ where the API honours seeds."""
    if params.seed is None or sample_index == 0:
        return params
    return params.replace(seed=params.seed + sample_index)


def _split_system(messages: Sequence[Message]) -> tuple[str | None, list[Message]]:
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], list(messages[1:])
    return None, list(messages)


class OpenAIChatModel(APIChatModel):
    key_env = "OPENAI_API_KEY"

    @classmethod
    def from_spec(cls, spec, resolved, options):
        base_url = options.base_url or os.environ.get("OPENAI_BASE_URL")
        return cls(spec, resolved.target, concurrency=options.concurrency, max_retries=options.max_retries,
                   timeout_s=options.timeout_s, base_url=base_url, backoff_initial_s=options.backoff_initial_s)

    @classmethod
    def key_for(cls, spec, given=None, base_url=None):
        # A self-hosted compatible server (vLLM, SGLang, transformers serve) needs no real key.
        if (base_url or os.environ.get("OPENAI_BASE_URL")) and not (given or os.environ.get(cls.key_env)):
            return "EMPTY"
        return super().key_for(spec, given, base_url)

    def _make_client(self, api_key, base_url, timeout_s, http_client):
        import openai

        self.connection_errors = (*APIChatModel.connection_errors, openai.APIConnectionError)
        return openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0,
                             http_client=http_client)

    def _complete(self, messages, params):
        request = dict(model=self.model_name, messages=list(messages), temperature=params.temperature,
                       top_p=params.top_p, max_tokens=params.max_new_tokens)
        if params.seed is not None:
            request["seed"] = params.seed
        if params.stop:
            request["stop"] = list(params.stop)
        try:
            response = self.client.chat.completions.create(**request)
        except json.JSONDecodeError as exc:
            raise MalformedResponse(f"a 200 response that is not JSON: {exc.msg}") from exc
        if not response.choices or response.choices[0].message is None:
            raise MalformedResponse("a 200 response without choices")
        choice = response.choices[0]
        usage = response.usage
        return Reply(
            text=(choice.message.content or "").strip(),
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            model=response.model or self.model_name,
        )


class AnthropicChatModel(APIChatModel):
    key_env = "ANTHROPIC_API_KEY"

    def _make_client(self, api_key, base_url, timeout_s, http_client):
        import anthropic

        self.connection_errors = (*APIChatModel.connection_errors, anthropic.APIConnectionError)
        return anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0,
                                   http_client=http_client)

    def _complete(self, messages, params):
        system, rest = _split_system(messages)
        # The Messages API of anthropic >= 2 takes no temperature, top_p or seed: the model samples as
        # it is tuned to, so only the length and stop options apply (docs/models.md says so).
        request = dict(model=self.model_name, messages=rest, max_tokens=params.max_new_tokens)
        if system is not None:
            request["system"] = system
        if params.stop:
            request["stop_sequences"] = list(params.stop)
        try:
            response = self.client.messages.create(**request)
        except json.JSONDecodeError as exc:
            raise MalformedResponse(f"a 200 response that is not JSON: {exc.msg}") from exc
        if response.content is None or response.usage is None:
            raise MalformedResponse("a 200 response without content")
        text = "".join(block.text for block in response.content if getattr(block, "type", "") == "text")
        return Reply(
            text=text.strip(),
            finish_reason="length" if response.stop_reason == "max_tokens" else "stop",
            prompt_tokens=response.usage.input_tokens,
            completion_tokens=response.usage.output_tokens,
            model=response.model,
        )


class CohereChatModel(APIChatModel):
    key_env = "COHERE_API_KEY"

    def _make_client(self, api_key, base_url, timeout_s, http_client):
        import cohere

        kwargs = dict(api_key=api_key, timeout=timeout_s, httpx_client=http_client)
        if base_url:
            kwargs["base_url"] = base_url
        return cohere.ClientV2(**kwargs)

    def _complete(self, messages, params):
        request = dict(model=self.model_name, messages=list(messages), temperature=params.temperature,
                       p=params.top_p, max_tokens=params.max_new_tokens,
                       request_options={"max_retries": 0})
        if params.seed is not None:
            request["seed"] = params.seed
        if params.stop:
            request["stop_sequences"] = list(params.stop)
        try:
            response = self.client.chat(**request)
        except json.JSONDecodeError as exc:
            raise MalformedResponse(f"a 200 response that is not JSON: {exc.msg}") from exc
        if getattr(response, "message", None) is None:
            raise MalformedResponse("a 200 response without a message")
        text = "".join(getattr(part, "text", "") for part in (response.message.content or []))
        tokens = getattr(response.usage, "tokens", None)
        return Reply(
            text=text.strip(),
            finish_reason="length" if str(response.finish_reason).upper() == "MAX_TOKENS" else "stop",
            prompt_tokens=int(getattr(tokens, "input_tokens", 0) or 0),
            completion_tokens=int(getattr(tokens, "output_tokens", 0) or 0),
            model=self.model_name,
        )
