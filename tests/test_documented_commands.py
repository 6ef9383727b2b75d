"""Documented persona commands parse with the script's own parser and can reach their target in one run."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

import pytest

from aloe.interaction.personas import KINDS, load_pool
from stage_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "persona_generation/generate_personas.py"


def documented_commands(script: str) -> list[tuple[str, list[str], bool]]:
    """(where, argv, after a merge in the same block) for every `python <script> ...` in README.md and docs/."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
            merged = False
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if "merge_pools.py" in line:
                    merged = True
                if script in words:
                    argv = words[words.index(script) + 1:]
                    argv = argv[:argv.index("&")] if "&" in argv else argv
                    found.append((f"{doc.name}: {' '.join(words)[:90]}", [w.replace("$i", "0") for w in argv], merged))
    return found


COMMANDS = documented_commands(SCRIPT)


def test_the_docs_document_persona_commands():
    assert len(COMMANDS) >= 6


@pytest.mark.parametrize("where, argv, after_merge", COMMANDS, ids=[where for where, _, _ in COMMANDS])
def test_a_documented_persona_command_can_reach_its_target_in_one_run(where, argv, after_merge):
    args = load_script(SCRIPT).build_parser().parse_args(argv)
    if after_merge:
        return  # tops up a merged pool: it starts near the target
    seeds = len(load_pool(ROOT / KINDS[args.kind].default_seeds))
    target = args.target
    if args.shard:
        target = seeds + math.ceil((args.target - seeds) / args.shard[1])
    most = seeds + args.requests_per_round * args.max_rounds * args.per_request  # every persona asked for accepted
    assert most >= target, (f"{where}: at most {most} personas in one run (--requests-per-round x --max-rounds x "
                            f"--per-request + {seeds} seeds) for --target {target}")
