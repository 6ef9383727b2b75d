"""API concurrency vs sequential calls, through the real OpenAIChatModel against a local stub.

    python benchmarks/bench_api_concurrency.py        # 64 requests, 200 ms each, concurrency 16 vs 1

The stub is a threaded standard-library HTTP server on 127.0.0.1 that answers every OpenAI chat
completion after a fixed delay, standing in for a provider's latency. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def start_stub(delay_s: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real providers do: no new connection per request
        disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed-ACK stall)

        def do_POST(self):  # noqa: N802 - the stdlib's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(delay_s)
            reply = {
                "id": "stub", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "ok: " + body["messages"][-1]["content"]}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            }
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # Room for every concurrent connection: the default backlog of 5 would make the OS drop some.
    server.request_queue_size = 128
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--delay-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)

    from aloe.models import ModelOptions, SamplingParams, load_model

    server = start_stub(args.delay_ms / 1000)
    base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    batch = [[{"role": "user", "content": f"request {index}"}] for index in range(args.requests)]
    params = SamplingParams(max_new_tokens=16)
    rows = []
    try:
        for concurrency in (1, args.concurrency):
            model = load_model("openai:stub-model", ModelOptions(base_url=base_url, concurrency=concurrency))
            model.generate(batch[:concurrency], params)  # warm-up: open the connections the run reuses
            started = time.perf_counter()
            replies = model.generate(batch, params)
            seconds = time.perf_counter() - started
            assert [reply.text for reply in replies] == [f"ok: request {index}" for index in range(args.requests)]
            rows.append((concurrency, seconds))
    finally:
        server.shutdown()

    print(f"{args.requests} requests, stub latency {args.delay_ms:.0f} ms, OpenAIChatModel via openai SDK")
    print()
    print("| concurrency | wall s | requests/s |")
    print("|---|---|---|")
    for concurrency, seconds in rows:
        print(f"| {concurrency} | {seconds:.2f} | {args.requests / seconds:.1f} |")
    print()
    print(f"speed-up (concurrency {args.concurrency} vs 1): **{rows[0][1] / rows[1][1]:.1f}x** "
          f"(ideal {min(args.concurrency, args.requests)}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
