"""What a run prints and records: no HTTP request logs, no credentials from URLs."""

from __future__ import annotations

import logging

import pytest

from aloe.logs import redact, redact_data
from persona_stub import grow, persona_reply, write_seeds


@pytest.mark.parametrize("text, redacted", [
    ("http://user:s3cret@host:8000/v1", "http://***@host:8000/v1"),
    ("error at https://tok3n@api.example.com/v1/chat", "error at https://***@api.example.com/v1/chat"),
    ("https://host/v1?api_key=s3cret&x=1", "https://host/v1?api_key=***&x=1"),
    ("https://host/v1?x=1&token=s3cret", "https://host/v1?x=1&token=***"),
    ("http://127.0.0.1:8000/v1 and a@b.c", "http://127.0.0.1:8000/v1 and a@b.c"),
])
def test_redact_takes_credentials_out_of_urls(text, redacted):
    assert redact(text) == redacted
    assert redact_data({"a": [text, 1, None], "b": {"c": (text,)}}) == {"a": [redacted, 1, None], "b": {"c": [redacted]}}


def test_a_stage_logs_no_requests_and_writes_no_password(openai_stub, tmp_path, caplog, capsys):
    server = openai_stub(reply=persona_reply)
    base_url = server.base_url.replace("http://", "http://alice:s3cret@")
    output = tmp_path / "profiles.jsonl"
    with caplog.at_level(logging.DEBUG):
        assert grow(server, write_seeds(tmp_path / "seeds.jsonl"), output, "--target", "8",
                    "--requests-per-round", "1", "--base-url", base_url) == 0
    assert len(server.requests) == 1
    requests_logged = [r for r in caplog.records if r.name.startswith(("httpx", "httpcore", "openai"))
                       and r.levelno < logging.WARNING]
    assert requests_logged == []
    captured = capsys.readouterr()
    written = "".join(path.read_text(errors="replace") for path in tmp_path.iterdir() if path.suffix == ".json")
    assert "alice:s3cret" in base_url and "s3cret" not in caplog.text + captured.out + captured.err + written
    recorded = output.with_name("profiles.provenance.json").read_text()
    assert "http://***@127.0.0.1" in recorded
    assert '"reported_models": [\n        "stub-2024-07-18"' in recorded  # written again after the rounds
