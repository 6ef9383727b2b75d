"""Progress on stderr: a bar on a terminal, sparse plain lines in a log, the summary last."""

from __future__ import annotations

import io
import re

from aloe.progress import Progress
from persona_stub import grow, persona_reply, write_seeds


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_plain_lines_at_most_every_interval(monkeypatch):
    stream = io.StringIO()
    with Progress(24, "profiles", "personas", initial=6, stream=stream) as progress:
        for _ in range(3):
            progress.update(6)
    assert stream.getvalue() == ""  # a fast loop in a log: not a line (the default interval is 30 s)
    monkeypatch.setenv("ALOE_PROGRESS_INTERVAL", "0")
    with Progress(24, "profiles", "personas", initial=6, stream=stream) as progress:
        progress.update(6)
        progress.update(12)
    lines = stream.getvalue().splitlines()
    assert [line.split(" [")[0] for line in lines] == ["profiles: 12/24 personas", "profiles: 24/24 personas"]
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, .*personas/s\]$", lines[0])  # elapsed<left, rate
    assert "\r" not in stream.getvalue()


def test_a_terminal_gets_a_bar_that_clears_itself_and_off_means_off(monkeypatch):
    stream = Terminal()
    with Progress(10, "turns", "turns", stream=stream) as progress:
        progress.update(4)
        progress.note("turn 4 done")
    shown = stream.getvalue()
    assert "turns:" in shown and "4/10" in shown and "turn 4 done\n" in shown
    assert shown.rstrip(" ").endswith("\r")  # cleared: what is printed next is the last line
    monkeypatch.setenv("ALOE_PROGRESS", "off")
    quiet = Terminal()
    with Progress(10, "turns", "turns", stream=quiet) as progress:
        progress.update(10)
    assert quiet.getvalue() == ""


def test_persona_growth_shows_progress_and_keeps_the_summary_last(openai_stub, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALOE_PROGRESS_INTERVAL", "0")
    server = openai_stub(reply=persona_reply)
    assert grow(server, write_seeds(tmp_path / "seeds.jsonl"), tmp_path / "profiles.jsonl", "--target", "12",
                "--requests-per-round", "1") == 0
    captured = capsys.readouterr()
    assert [line.split(" [")[0] for line in captured.err.splitlines() if line.startswith("profiles:")] == [
        "profiles: 9/12 personas", "profiles: 12/12 personas"]
    assert captured.out.count("\n") == 1 and "target reached" in captured.out
