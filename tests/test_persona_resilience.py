"""Persona growth against a served model that misbehaves: injected faults lose nothing, a barren round is
not replayed on resume."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from aloe.models import ModelOptions
from conftest import FAULTS, FaultPlan
from persona_stub import grow, persona_reply, write_seeds
from stage_scripts import run_script

@dataclass(frozen=True)
class QuickRetries(ModelOptions):
    backoff_initial_s: float = 0.01  # the CLI has no flag for it; a test need not wait out real backoff


@pytest.fixture
def seeds(tmp_path):
    return write_seeds(tmp_path / "seeds.jsonl")


def test_every_fault_at_15_percent_each_finishes_in_one_run_with_nothing_lost(openai_stub, seeds, tmp_path,
                                                                               monkeypatch, capsys):
    monkeypatch.setattr("aloe.cli.ModelOptions", QuickRetries)
    clean = openai_stub(reply=persona_reply)
    assert grow(clean, seeds, tmp_path / "clean" / "profiles.jsonl", "--target", "24", "--max-rounds", "4") == 0
    faulty = openai_stub(reply=persona_reply, faults=FaultPlan.each(0.15, seed=3), hang_s=1.0)
    output = tmp_path / "faulty" / "profiles.jsonl"
    assert grow(faulty, seeds, output, "--target", "24", "--max-rounds", "4", "--timeout", "0.4") == 0
    assert "target reached" in capsys.readouterr().out
    # The same pool, record for record, as the run that met no fault.
    assert output.read_text() == (tmp_path / "clean" / "profiles.jsonl").read_text()
    rounds = json.loads(output.with_name("profiles.rounds.json").read_text())["rounds"]
    assert all(entry["failed_requests"] == 0 for entry in rounds)
    assert {str(outcome) for outcome in faulty.outcomes} == {*FAULTS, "200"}


def test_a_request_that_keeps_failing_costs_its_candidates_not_the_run(openai_stub, seeds, tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.setattr("aloe.cli.ModelOptions", QuickRetries)
    server = openai_stub(["malformed"] * 6, reply=persona_reply)  # the round's first request, every attempt
    output = tmp_path / "profiles.jsonl"
    assert grow(server, seeds, output, "--target", "30", "--max-rounds", "1", "--concurrency", "1") == 0
    (entry,) = json.loads(output.with_name("profiles.rounds.json").read_text())["rounds"]
    assert entry["failed_requests"] == 1 and entry["accepted"] == 9


def test_a_round_that_accepted_nothing_is_not_replayed_on_resume(openai_stub, seeds, tmp_path):
    barren = {"on": True}
    server = openai_stub(reply=lambda body: "Sorry, I cannot help." if barren["on"] else persona_reply(body))
    output = tmp_path / "profiles.jsonl"
    assert grow(server, seeds, output, "--target", "30", "--max-rounds", "1") == 0
    barren["on"] = False
    assert grow(server, seeds, output, "--target", "30", "--max-rounds", "1") == 0
    first, second = json.loads(output.with_name("profiles.rounds.json").read_text())["rounds"]
    assert (first["round"], first["accepted"]) == (1, 0)
    # New questions, not the first round's prompts answered again from the cache.
    assert second["round"] == 2 and second["cached_replies"] == 0 and second["accepted"] > 0


def test_a_malformed_key_is_reported_before_the_embedder_loads(seeds, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789\n")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setattr("aloe.sentence_embeddings.load_embedder", lambda spec: pytest.fail("the embedder was loaded first"))
    assert run_script("persona_generation/generate_personas.py", "--kind", "profile", "--model", "openai:gpt-4o",
                      "--seeds", seeds, "--output", tmp_path / "profiles.jsonl", "--target", "30") == 1
    assert capsys.readouterr().err.startswith("error: OPENAI_API_KEY ends with a line break")
