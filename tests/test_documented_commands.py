"""The documented workflows run as written: every command parses with its script's own parser, and every
file a command reads is shipped, a marked placeholder (`my_*`), or written by an earlier documented step.

Each workflow's code blocks run through bash with `python`, `accelerate` and the scripts' `$PYTHON`
replaced by a recorder, so loops, variables and `bash scripts/*.sh` expand exactly as a user's shell
would expand them; nothing is generated or trained.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import math
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import aloe.cli
from aloe.errors import AloeError
from aloe.interaction.personas import KINDS, load_pool
from aloe.models import ALIASES, BACKENDS, short_name
from aloe.runs import RunFiles
from aloe.training import default_output
from stage_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("persona_generation", "data_generation", "training", "evaluation")

# Documented workflows: doc files whose code blocks run in this order, as one session.
WORKFLOWS = {
    "README": ["README.md"],
    "ALOE stage by stage": ["docs/persona_generation.md", "docs/data_generation.md", "docs/training.md",
                            "docs/evaluation.md"],
    "tailoring": ["docs/tailoring.md"],
    "system messages": ["docs/system_messages.md"],
    "steerable": ["docs/steerable.md"],
}

# The flags (dests) whose values each script reads as files or folders; model specs are handled apart.
TRAINING_READS = ["config", "train_data", "eval_data", "mix", "chat_template"]
READS = {
    "persona_generation/generate_personas.py": ["seeds"],
    "persona_generation/pool_stats.py": ["files"],
    "persona_generation/merge_pools.py": ["inputs"],
    "data_generation/generate_conversations.py": ["profiles", "personalities"],
    "data_generation/dataset_stats.py": ["input"],
    "data_generation/merge.py": ["inputs"],
    "data_generation/infer_personas.py": ["pairs", "fewshot"],
    "data_generation/generate_system_messages.py": ["instructions"],
    "data_generation/build_system_message_pairs.py": ["rows"],
    "data_generation/synthetic_preferences.py": ["source", "conversations"],
    "training/sft.py": TRAINING_READS,
    "training/dpo.py": TRAINING_READS,
    "training/orpo.py": TRAINING_READS,
    "training/reward_model.py": TRAINING_READS,
    "training/steerable_reward.py": ["data"],
    "training/np_dpo.py": ["data"],
    "evaluation/eval_aloe.py": ["profiles", "personalities"],
    "evaluation/report.py": ["results"],
    "evaluation/persona_accuracy.py": ["pairs", "report"],
    "evaluation/generate_responses.py": ["prompts", "pairs", "train_pairs"],
    "evaluation/win_rate.py": ["files", "report"],
    "evaluation/eval_multifaceted.py": ["bench", "responses"],
    "evaluation/best_of_n.py": ["prompts"],
    "evaluation/eval_steerable.py": ["checkpoints", "data"],
}
NOT_A_MODEL_SPEC = {"training/steerable_reward.py"}  # its --model names an architecture (btl, np-btl, ...)
TRAINERS = {"training/sft.py": "sft", "training/dpo.py": "dpo", "training/orpo.py": "orpo",
            "training/reward_model.py": "reward"}  # script: its method's name


def default_write(script: str, args: argparse.Namespace) -> str | None:
    """Where a script writes when --output is not given (the scripts' own defaults)."""
    if script in TRAINERS:
        return str(default_output(TRAINERS[script], args.model, getattr(args, "data", None)))
    defaults = {
        "persona_generation/generate_personas.py": lambda: f"runs/personas/{KINDS[args.kind].plural}.jsonl",
        "data_generation/dataset_stats.py": lambda: str(Path(args.input).with_name(f"{Path(args.input).stem}.stats.json")),
        "evaluation/eval_aloe.py": lambda: f"results/aloe/{short_name(args.model)}.json",
        "evaluation/generate_responses.py":
            lambda: f"runs/responses/{short_name(args.model)}{f'.{args.persona}' if args.pairs else ''}.jsonl",
        "evaluation/persona_accuracy.py": lambda: f"results/tailoring/{Path(args.pairs).stem}.accuracy.json",
        "evaluation/win_rate.py": lambda: f"results/win_rate/{Path(args.files[0]).stem}_vs_{Path(args.files[1]).stem}.json",
        "evaluation/eval_multifaceted.py":
            lambda: f"results/multifaceted/{args.name or (Path(args.responses).stem if args.responses else short_name(args.model))}.json",
    }
    return defaults[script]() if script in defaults else None


# ------------------------------------------------------------------ recording the documented commands

SHIM = """#!/usr/bin/env bash
# Records a documented python call instead of running it; `python -c` snippets (names of outputs) run.
if [ "$1" = -c ]; then exec "$ALOE_REAL_PYTHON" "$@"; fi
origin=$(tr '\\0' '\\n' < /proc/$PPID/cmdline 2>/dev/null | sed -n 2p | grep -x 'scripts/[a-z_]*\\.sh')
line="$ALOE_DOC${origin:+ -> $origin}"$'\\x1f'"${ALOE_MODEL_OUTPUT:-model_output}"
for arg in "$@"; do line+=$'\\x1f'"$arg"; done
printf '%s\\n' "$line" >> "$ALOE_RECORD"
"""

PRELUDE = """
set -f  # a documented glob stays as written: it is matched against earlier outputs
python() { "$PYTHON" "$@"; }
accelerate() { shift; "$PYTHON" -m accelerate.commands.launch "$@"; }  # accelerate launch ...
vllm() { :; }
source() { :; }
bash() { case "$1" in scripts/setup.sh|scripts/test.sh) ;; *) command bash "$@" ;; esac; }  # no installs
export -f bash
"""


@dataclass
class Command:
    where: str  # doc file, and the shell script that ran it
    model_output: str  # ALOE_MODEL_OUTPUT when it ran
    script: str
    argv: list[str]
    partial: bool  # the doc elides flags with `...`
    text: str = field(init=False)

    def __post_init__(self):
        self.text = f"{self.where}: {self.script} {' '.join(self.argv)}"[:200]


def command_blocks(doc: Path) -> list[str]:
    blocks = re.findall(r"```[a-z]*\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    shell = re.compile(r"^\s*(\w+=\S*\s+)*(python|bash|accelerate)\s", re.M)
    return [block for block in blocks if shell.search(block)]


def record(docs: list[str], tmp: Path) -> list[Command]:
    """Run every command block of these docs, in order, with the recorder; the python calls they made."""
    shim = tmp / "venv" / "bin" / "python"
    shim.parent.mkdir(parents=True)
    shim.write_text(SHIM)
    shim.chmod(0o755)
    log = tmp / "record.txt"
    env = {key: value for key, value in os.environ.items() if not key.startswith("ALOE_")}
    env.update(PYTHON=str(shim), ALOE_VENV=str(tmp / "venv"), ALOE_REAL_PYTHON=sys.executable, ALOE_RECORD=str(log),
               PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    for doc in docs:
        for block in command_blocks(ROOT / doc):
            done = subprocess.run(["bash", "-c", PRELUDE + block], cwd=ROOT, env={**env, "ALOE_DOC": doc},
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{doc}: a code block failed under bash:\n{block}\n{done.stderr[-2000:]}"
    commands = []
    for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
        where, model_output, *words = line.split("\x1f")
        scripts = [i for i, word in enumerate(words) if word.endswith(".py") and word.split("/")[0] in STAGES]
        assert scripts, f"{where}: a python call runs no stage script: {' '.join(words)}"
        argv = words[scripts[0] + 1:]
        commands.append(Command(where, model_output, words[scripts[0]], [w for w in argv if w != "..."],
                                "..." in argv))
    return commands


# ------------------------------------------------------------------ parsing with the scripts' own parsers

class Parsed(BaseException):
    """Raised from inside a script's main once its parser has read the command line: nothing else runs."""

    def __init__(self, args, parser):
        super().__init__()
        self.namespace, self.parser = args, parser


@contextlib.contextmanager
def model_output_dir(path: str):
    old = os.environ.get("ALOE_MODEL_OUTPUT")
    os.environ["ALOE_MODEL_OUTPUT"] = path
    try:
        yield
    finally:
        os.environ.pop("ALOE_MODEL_OUTPUT") if old is None else os.environ.__setitem__("ALOE_MODEL_OUTPUT", old)


def parse(command: Command, monkeypatch) -> tuple[argparse.Namespace | None, argparse.ArgumentParser]:
    """The script's parse of a documented command, and its parser (no parse for a partial command: its flags
    are only checked)."""
    assert (ROOT / command.script).is_file(), f"{command.text}: no such script"
    real = aloe.cli.ArgumentParser.parse_args

    def capture(parser, args=None, namespace=None):
        if command.partial:
            raise Parsed(None, parser)
        raise Parsed(real(parser, args, namespace), parser)

    monkeypatch.setattr(aloe.cli.ArgumentParser, "parse_args", capture)
    try:
        load_script(command.script).main.__wrapped__(command.argv)
    except Parsed as parsed:
        if command.partial:
            known = parsed.parser._option_string_actions
            unknown = [word.split("=")[0] for word in command.argv
                       if word.startswith("--") and word.split("=")[0] not in known]
            assert not unknown, f"{command.text}: unknown flags {unknown}"
        return parsed.namespace, parsed.parser
    except AloeError as exc:
        pytest.fail(f"{command.text}: {exc}")
    finally:
        monkeypatch.setattr(aloe.cli.ArgumentParser, "parse_args", real)
    pytest.fail(f"{command.text}: the script never parsed its command line")


# ------------------------------------------------------------------ what each command reads and writes

def values(args: argparse.Namespace, dest: str) -> list[str]:
    value = getattr(args, dest, None)
    return [str(v) for v in (value if isinstance(value, list) else [value]) if v not in (None, "", "hub")]


def model_reads(command: Command, args: argparse.Namespace) -> list[list[str]]:
    """For each local model a command names: the paths it may be at (a path, or a name under model_output/)."""
    if command.script in NOT_A_MODEL_SPEC:
        return []
    found = []
    for dest, spec in vars(args).items():
        if not (dest == "model" or dest.endswith("_model")) or not isinstance(spec, str):
            continue
        prefix, sep, _ = spec.partition(":")
        if spec == "embedded" or spec in ALIASES or (sep and prefix in BACKENDS):
            continue
        found.append([spec, str(Path(command.model_output) / spec)])
    return found


def reads_and_writes(command: Command, args: argparse.Namespace) -> tuple[list[list[str]], list[str]]:
    """(reads, each a list of paths any one of which will do; writes) of one parsed command."""
    reads = [[path] for dest in READS[command.script] for path in values(args, dest)
             if not path.startswith("hf:")]
    reads += model_reads(command, args)
    if getattr(args, "report", None):
        return reads, []  # prints a finished result's table
    output = getattr(args, "output", None)
    with model_output_dir(command.model_output):
        output = output or default_write(command.script, args)
    joins = command.script == "data_generation/merge.py" and not args.inputs
    if joins or command.script == "evaluation/eval_aloe.py" and args.merge:
        files = RunFiles(output)
        reads.append([str(files.folder / f"{files.base}.shard-*-of-*{files.suffix}")])
    writes = []
    if output:
        writes.append(str(RunFiles(output, getattr(args, "shard", None)).main))
    writes += values(args, "plot")
    return reads, writes


def norm(path: str) -> str:
    return os.path.normpath(path)


def satisfied(read: str, written: list[str]) -> bool:
    """A shipped file, a `my_*` placeholder, or an earlier output (the file, a folder above it, or a glob's match)."""
    read = norm(read)
    if Path(read).name.startswith("my_"):
        return True
    ignored = read.split(os.sep)[0] in ("runs", "results", "model_output")
    if not ignored and (ROOT / read).exists():
        return True
    return any(read == path or read.startswith(path + os.sep) or fnmatch.fnmatch(path, read) for path in written)


RECORDED: dict[str, list[Command]] = {}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict[str, list[Command]]:
    if not RECORDED:
        for name, docs in WORKFLOWS.items():
            RECORDED[name] = record(docs, tmp_path_factory.mktemp(name.replace(" ", "_")))
    return RECORDED


def test_every_stage_script_has_its_inputs_listed():
    scripts = {str(path.relative_to(ROOT)) for stage in STAGES for path in (ROOT / stage).glob("*.py")}
    assert scripts == set(READS)


@pytest.mark.parametrize("workflow", list(WORKFLOWS))
def test_a_documented_workflow_runs_as_written(workflow, recorded, monkeypatch):
    commands = recorded[workflow]
    assert commands, f"{workflow}: no documented commands found"
    written: list[str] = []
    problems = []
    for command in commands:
        args, _ = parse(command, monkeypatch)
        if args is None:
            continue
        reads, writes = reads_and_writes(command, args)
        for alternatives in reads:
            if not any(satisfied(path, written) for path in alternatives):
                problems.append(f"{command.text}\n    reads {alternatives[0]}, which no earlier step writes")
        written += [norm(path) for path in writes]
    assert not problems, f"{workflow}:\n" + "\n".join(problems)


def test_scripts_that_promise_resuming_resume_their_trainings(recorded, monkeypatch):
    """A script whose header says its stages resume passes --resume-from-checkpoint to every training."""
    trainings = [command for commands in recorded.values() for command in commands
                 if command.script in TRAINERS and "scripts/" in command.where]
    assert trainings
    for command in trainings:
        shell = ROOT / re.search(r"scripts/\w+\.sh", command.where).group()
        if "resume" in shell.read_text(encoding="utf-8"):
            assert parse(command, monkeypatch)[0].resume_from_checkpoint, f"{command.text}: restarts from step 0"


def test_the_project_cites_no_document_outside_itself():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    files = [ROOT / name for name in tracked if name.endswith((".py", ".md", ".sh", ".yaml", ".txt", ".toml"))]
    files = files or [*ROOT.glob("**/*.py"), *ROOT.glob("**/*.md")]
    outside = re.compile(r"DESIGN\.md|REFERENCE\.md|\bDESIGN\b|shared/")
    me = Path(__file__).resolve()
    cited = [f"{path.relative_to(ROOT)}:{n}" for path in files if path.resolve() != me and path.is_file()
             for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if outside.search(line)]
    assert not cited, f"cites documents users do not have: {cited}"


def test_every_stage_script_takes_output(monkeypatch):
    """The README's claim."""
    for script in READS:
        _, parser = parse(Command("README", "model_output", script, [], partial=True), monkeypatch)
        assert "--output" in parser._option_string_actions, script


# ------------------------------------------------------------------ persona commands reach their target

def persona_commands(recorded) -> list[tuple[Command, bool]]:
    found = []
    for commands in recorded.values():
        merged = set()
        for command in commands:
            if command.script == "persona_generation/merge_pools.py":
                merged.add(command.where)
            if command.script == "persona_generation/generate_personas.py" and "scripts/" not in command.where:
                found.append((command, command.where in merged))
    return found


def test_a_documented_persona_command_can_reach_its_target_in_one_run(recorded, monkeypatch):
    commands = persona_commands(recorded)
    assert len(commands) >= 6
    for command, after_merge in commands:
        if after_merge:
            continue  # tops up a merged pool: it starts near the target
        args, _ = parse(command, monkeypatch)
        seeds = len(load_pool(ROOT / KINDS[args.kind].default_seeds))
        target = args.target
        if args.shard:
            target = seeds + math.ceil((args.target - seeds) / args.shard[1])
        most = seeds + args.requests_per_round * args.max_rounds * args.per_request  # every one asked for kept
        assert most >= target, (f"{command.text}: at most {most} personas in one run (--requests-per-round x "
                                f"--max-rounds x --per-request + {seeds} seeds) for --target {target}")
