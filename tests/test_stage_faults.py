"""Every generating stage against a served model that misbehaves: nothing lost, nothing doubled.

One parametrized test drives each stage that calls a model through the fault-injecting OpenAI stub
(`conftest.FaultPlan`: 429, 500, resets, timeouts, empty, malformed and choice-less answers, 15% each):

* with a retry budget above the faults' longest streak, the stage finishes in ONE run, exit 0, with
  exactly the ids a run without faults writes, each once, and nothing left unanswered;
* with faults that outlast the retries, the run goes on past them: no traceback, no duplicate, every
  request that failed is recorded (a failures file, or a verdict left null with its reason), and the
  next run, once the faults have passed, finishes exactly those.

Re-runs of a finished run whose judge never gives a verdict ask again and rewrite the records in
place: the file neither gains records nor grows run after run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from aloe.models import ModelOptions
from conftest import FaultPlan
from persona_stub import persona_reply, write_seeds
from stage_scripts import ROOT, run_script

DATA = ROOT / "datasets"
WORDS = "cyclist baker nurse violinist gardener welder librarian sailor".split()
HOBBIES = "rowing pottery chess fencing origami karaoke sudoku kayaking".split()


@dataclass(frozen=True)
class QuickRetries(ModelOptions):
    backoff_initial_s: float = 0.01  # the CLI has no flag for it; a test need not wait out real backoff
    # FaultPlan.max_in_a_row is 3, so the fourth attempt succeeds; two more spare a slow answer on a busy machine.
    max_retries: int = 6


@dataclass(frozen=True)
class ShortRetries(QuickRetries):
    max_retries: int = 3  # = the plan's longest streak: about a third of requests fail all their attempts


def stage_reply(body: dict) -> str:
    """A reply every stage's parser accepts: the verdict format the prompt asks for, else a short persona-like
    text (a user message, a reply, an extractor's labels, a persona, a preference field, a system message)."""
    prompt = body["messages"][-1]["content"]
    if "[[score" in prompt:
        return "[[score: 4]]"
    if "[RESULT]" in prompt:
        return "Clear and correct. [RESULT] 4"
    if "[[A]]" in prompt:
        return "[[A]]"
    # Distinct prompts get distinct texts, so no two requests of a run are the same (the stub bounds a
    # fault streak per request body).
    digest = hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()
    word = WORDS[int(digest, 16) % len(WORDS)]
    return (f"The user is a {word} who values clear and short answers with example {digest[:8]}.\n"
            f"Profile: a {word} living by the sea.\nPersonalities: calm and curious.")


def weak_judge_reply(body: dict) -> str:
    """Like `stage_reply`, but the judges never give a readable verdict."""
    prompt = body["messages"][-1]["content"]
    if "[[score" in prompt or "[[A]]" in prompt or "[RESULT]" in prompt:
        return "I think both are fine."
    return stage_reply(body)


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def inputs(folder: Path) -> dict[str, Path]:
    """The small input files the stages read (written once per test)."""
    pairs = [json.loads(line) for line in (DATA / "preference_pairs" / "test.jsonl").read_text().splitlines()[:3]]
    with_personas = [{**pair, "chosen_persona": f"The user is a {WORDS[n]} who wants the first answer.",
                      "rejected_persona": f"The user is a {WORDS[n + 1]} who wants the second answer."}
                     for n, pair in enumerate(pairs)]
    responses = [{"id": f"q{n}", "prompt": f"How do I start {hobby}?", "condition": f"The user is a {WORDS[n]}.",
                  "response": f"Start {hobby} slowly."} for n, hobby in enumerate(HOBBIES)]
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "seeds": write_seeds(folder / "seeds.jsonl"),
        "pairs": write_jsonl(folder / "pairs.jsonl", with_personas),
        "prompts": write_jsonl(folder / "prompts.jsonl", [{k: r[k] for k in ("id", "prompt", "condition")}
                                                         for r in responses]),
        "a": write_jsonl(folder / "a.jsonl", responses),
        "b": write_jsonl(folder / "b.jsonl", [{**r, "response": r["response"] + " Then join a club."}
                                              for r in responses]),
    }


@dataclass(frozen=True)
class Stage:
    script: str
    output: str  # the main output, relative to the run folder
    checked: tuple[str, ...]  # the files whose ids must be complete and unique
    argv: tuple[str, ...]  # with {input} placeholders
    retries_too: bool = True  # also run the faults-outlast-retries case
    partial_results: bool = True  # a run that met lasting failures writes the rest (else: nothing)
    # Each fault's rate when faults outlast the retries: lower for stages of many requests per item, so
    # that some items fail and others finish in one run.
    lasting_rate: float = 0.15

    def command(self, files: dict[str, Path], folder: Path, base_url: str) -> list:
        argv = [part.format(**files) for part in self.argv]
        return [self.script, *argv, "--base-url", base_url, "--output", folder / self.output, "--timeout", "0.5"]


STUB = "openai:stub"
STAGES = {
    "generate_personas": Stage(
        "persona_generation/generate_personas.py", "profiles.jsonl", ("profiles.jsonl",),
        ("--kind", "profile", "--model", STUB, "--seeds", "{seeds}", "--target", "12", "--max-rounds", "4",
         "--examples-per-prompt", "2", "--per-request", "3", "--requests-per-round", "4", "--threshold", "0.95",
         "--min-words", "5"),
        retries_too=False),  # a failed request costs candidates, not items: test_persona_resilience.py
    "generate_conversations": Stage(
        "data_generation/generate_conversations.py", "conversations.jsonl", ("conversations.jsonl",),
        ("--model", STUB, "--profiles", str(DATA / "seed_profiles.jsonl"),
         "--personalities", str(DATA / "seed_personalities.jsonl"), "--num-conversations", "6", "--turns", "2"),
        lasting_rate=0.06),
    "infer_personas": Stage(
        "data_generation/infer_personas.py", "personas.jsonl", ("personas.jsonl",),
        ("--model", STUB, "--pairs", str(DATA / "preference_pairs" / "test.jsonl"), "--limit", "4", "--shots", "1")),
    "generate_system_messages": Stage(
        "data_generation/generate_system_messages.py", "rows.jsonl", ("rows.jsonl",),
        ("--model", STUB, "--instructions", str(DATA / "instructions" / "instructions.jsonl"), "--limit", "2",
         "--sets", "2"),
        lasting_rate=0.04),
    "eval_aloe": Stage(
        "evaluation/eval_aloe.py", "result.json", ("result.records.jsonl",),
        ("--model", STUB, "--user-model", STUB, "--judge-model", STUB, "--limit", "6", "--turns", "2",
         "--bootstrap", "10"),
        lasting_rate=0.08),
    "persona_accuracy": Stage(
        "evaluation/persona_accuracy.py", "accuracy.json", ("accuracy.judgements.jsonl",),
        ("--judge-model", STUB, "--pairs", "{pairs}", "--preferences", "--bootstrap", "10")),
    "generate_responses": Stage(
        "evaluation/generate_responses.py", "responses.jsonl", ("responses.jsonl",),
        ("--model", STUB, "--prompts", "{prompts}", "--condition-field", "condition")),
    "win_rate": Stage(
        "evaluation/win_rate.py", "win_rate.json", ("win_rate.judgements.jsonl",),
        ("{a}", "{b}", "--judge-model", STUB, "--bootstrap", "10")),
    "eval_multifaceted": Stage(
        "evaluation/eval_multifaceted.py", "bench.json", ("bench.records.jsonl",),
        ("--model", STUB, "--judge-model", STUB, "--limit", "3", "--runs", "1", "--max-new-tokens", "32",
         "--bootstrap", "10"),
        partial_results=False),
}
# evaluation/best_of_n.py generates through the same response generator as generate_responses.py (and
# scores with a local reward model), so the generator's case covers its model calls.


def ids(path: Path) -> list[str]:
    """Each record's key: its id, with the criterion for judgement files (one record per criterion and item)."""
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [f"{record.get('criterion', '')}/{record['id']}" for record in records]


def unanswered(value) -> int:
    """Judge verdicts left null, personas left missing, anywhere in a record."""
    if isinstance(value, list):
        return sum(unanswered(item) for item in value)
    if not isinstance(value, dict):
        return 0
    count = sum(value.get(key, "") is None for key in ("verdict", "chosen_persona", "rejected_persona"))
    count += "attempts" in value and value.get("score", 0) is None
    return count + sum(unanswered(item) for item in value.values())


def state(stage: Stage, folder: Path) -> tuple[dict[str, list[str]], set[str], int]:
    """(ids per checked file, the ids in the failures file, judge verdicts or personas left null)."""
    found = {name: ids(folder / name) for name in stage.checked}
    failed = set(ids(folder / (Path(stage.output).stem + ".failures.jsonl")))
    nulls = 0
    for name in stage.checked:
        path = folder / name
        if path.exists():
            nulls += sum(unanswered(json.loads(line)) for line in path.read_text().splitlines())
    return found, failed, nulls


def same_ids(found: dict[str, list[str]], expected: dict[str, list[str]]) -> bool:
    return {key: sorted(value) for key, value in found.items()} == {key: sorted(value) for key, value in expected.items()}


def assert_unique(found: dict[str, list[str]]) -> None:
    for name, keys in found.items():
        doubled = [key for key, count in Counter(keys).items() if count > 1]
        assert not doubled, f"{name}: ids written twice: {doubled}"


@pytest.fixture
def files(tmp_path):
    return inputs(tmp_path / "inputs")


@pytest.mark.parametrize("name", list(STAGES))
def test_every_fault_at_15_percent_each_loses_nothing(name, openai_stub, files, tmp_path, monkeypatch, capsys):
    stage = STAGES[name]
    reply = persona_reply if name == "generate_personas" else stage_reply
    monkeypatch.setattr("aloe.cli.ModelOptions", QuickRetries)

    clean = openai_stub(reply=reply)
    with_password = clean.base_url.replace("http://", "http://alice:s3cr3t-pw@")  # never written to any file
    assert run_script(*stage.command(files, tmp_path / "clean", with_password)) == 0, capsys.readouterr().err
    for path in (tmp_path / "clean").iterdir():
        assert b"s3cr3t-pw" not in path.read_bytes(), path.name
    expected, failed, nulls = state(stage, tmp_path / "clean")
    assert not failed and nulls == 0 and all(expected.values())
    assert_unique(expected)

    # 1. Retries outlast the faults: one run, exit 0, the same ids, nothing failed or unanswered.
    faulty = openai_stub(reply=reply, faults=FaultPlan.each(0.15, seed=7), hang_s=1.0)
    capsys.readouterr()
    assert run_script(*stage.command(files, tmp_path / "faulty", faulty.base_url)) == 0, capsys.readouterr().err
    found, failed, nulls = state(stage, tmp_path / "faulty")
    assert same_ids(found, expected)
    assert_unique(found)
    assert not failed and nulls == 0
    assert len({str(outcome) for outcome in faulty.outcomes}) >= 3  # faults of several kinds were met

    if not stage.retries_too:
        return
    # 2. Faults outlast the retries: the run goes on past them and records what failed ...
    monkeypatch.setattr("aloe.cli.ModelOptions", ShortRetries)
    broken = openai_stub(reply=reply, faults=FaultPlan.each(stage.lasting_rate, seed=7, max_in_a_row=3), hang_s=1.0)
    capsys.readouterr()
    folder = tmp_path / "broken"
    code = run_script(*stage.command(files, folder, broken.base_url))
    err = capsys.readouterr().err
    assert code in (0, 1) and "Traceback" not in err
    if code == 1:
        assert err.splitlines()[-1].startswith("error: ")
    found, failed, nulls = state(stage, folder)
    assert_unique(found)
    main = stage.checked[0]
    if stage.partial_results:
        # Every item is written (a verdict it lacks left null) or listed as failed, never both; a failed
        # request cost its own item, not the run's others.
        assert not set(found[main]) & failed
        assert set(found[main]) | failed == set(expected[main])
        assert failed or nulls, "no request failed"
        assert found[main], "a failure stopped the whole run"
    else:  # a result that is all or nothing: a failed response stops it with one line, nothing written
        assert (code == 1 and not found[main]) or (code == 0 and nulls)
    # ... and once the faults have passed, the next run finishes exactly those.
    broken.faults = None
    assert run_script(*stage.command(files, folder, broken.base_url)) == 0, capsys.readouterr().err
    found, failed, nulls = state(stage, folder)
    assert same_ids(found, expected)
    assert not failed and nulls == 0


@pytest.mark.parametrize("name", ["generate_conversations", "eval_aloe", "persona_accuracy", "win_rate"])
def test_re_running_a_finished_run_with_a_weak_judge_rewrites_its_records_in_place(
        name, openai_stub, files, tmp_path, monkeypatch, capsys):
    stage = STAGES[name]
    monkeypatch.setattr("aloe.cli.ModelOptions", QuickRetries)
    server = openai_stub(reply=weak_judge_reply)
    command = stage.command(files, tmp_path, server.base_url)
    sizes, keys = [], []
    for _ in range(4):
        assert run_script(*command) in (0, 1), capsys.readouterr().err
        found, _, nulls = state(stage, tmp_path)
        assert nulls > 0  # the judge never gave a verdict: asked again on every run
        assert_unique(found)
        keys.append(found)
        sizes.append(sum((tmp_path / name).stat().st_size for name in stage.checked))
    assert all(found == keys[0] for found in keys)  # the same records, in the same order
    assert sizes[3] <= sizes[1], f"the records grow run after run: {sizes}"


def test_the_eval_aloe_result_shows_its_base_url_without_the_password(openai_stub, tmp_path, monkeypatch):
    monkeypatch.setattr("aloe.cli.ModelOptions", QuickRetries)
    server = openai_stub(reply=stage_reply)
    secret_url = server.base_url.replace("http://", "http://alice:s3cr3t-pw@")
    stage = STAGES["eval_aloe"]
    assert run_script(*stage.command({}, tmp_path, secret_url)) == 0
    for path in tmp_path.iterdir():
        if path.suffix in (".json", ".jsonl"):
            assert "s3cr3t-pw" not in path.read_text(), path.name
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["settings"]["base_url"] == server.base_url.replace("http://", "http://***@")


def test_conversation_provenance_describes_the_finished_run(openai_stub, tmp_path, monkeypatch):
    monkeypatch.setattr("aloe.cli.ModelOptions", ShortRetries)
    server = openai_stub(reply=stage_reply, faults=FaultPlan({"500": 0.5}, seed=3, max_in_a_row=3))
    stage = STAGES["generate_conversations"]
    code = run_script(*stage.command({}, tmp_path, server.base_url))
    provenance = json.loads((tmp_path / "conversations.provenance.json").read_text())
    run = provenance["run"]
    failed = len((tmp_path / "conversations.failures.jsonl").read_text().splitlines()) if code else 0
    assert run["written"] == len(ids(tmp_path / "conversations.jsonl")) and run["failed"] == failed
    assert run["finished"] is True


@pytest.mark.parametrize("name, desc", [
    ("generate_conversations", "conversations"),
    ("eval_aloe", "conversations"),
    ("infer_personas", "personas"),
    ("generate_system_messages", "instructions"),
    ("generate_responses", "responses"),
    ("win_rate", "judging"),
    ("persona_accuracy", "judging"),
    ("eval_multifaceted", "judging"),
])
def test_long_stages_show_progress_and_keep_the_summary_last(name, desc, openai_stub, files, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.setenv("ALOE_PROGRESS_INTERVAL", "0")
    server = openai_stub(reply=stage_reply)
    assert run_script(*STAGES[name].command(files, tmp_path, server.base_url)) == 0
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if re.match(rf"{desc}: \d+/\d+", line)]
    assert progress, captured.err
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", progress[-1])  # elapsed<left
    assert captured.out.strip().splitlines()[-1]  # the one-line summary is printed last, on stdout
