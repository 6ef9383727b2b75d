"""Prompt templates kept as prose files, one per role, with named `{fields}`.

Shared prompts (the judges') sit beside this module; a method's prompts sit in its package's
`prompts/` folder (aloe/interaction/prompts/, ...). A prompt is found by its name alone, so names
are unique across folders, and a prompt's name and hash do not change when its file moves.

A template is rendered with exactly its named fields: a missing or unexpected field is an error,
so a prompt and the code that fills it cannot drift apart silently.
"""

from __future__ import annotations

import hashlib
import string
from functools import lru_cache
from pathlib import Path

PROMPT_DIR = Path(__file__).parent


@lru_cache(maxsize=None)
def _files() -> dict[str, Path]:
    # Found by globbing files, not by importing the method packages: the core never imports a method.
    files: dict[str, Path] = {}
    for path in sorted([*PROMPT_DIR.glob("*.txt"), *PROMPT_DIR.parent.glob("*/prompts/*.txt")]):
        if path.stem in files:
            raise RuntimeError(f"two prompts named {path.stem!r}: {files[path.stem]} and {path}; rename one")
        files[path.stem] = path
    return files


@lru_cache(maxsize=None)
def template(name: str) -> str:
    path = _files().get(name)
    if path is None:
        known = ", ".join(available())
        raise KeyError(f"no prompt named {name!r}; known prompts: {known}")
    return path.read_text(encoding="utf-8").strip() + "\n"


def available() -> list[str]:
    return sorted(_files())


def fields(name: str) -> set[str]:
    """The named fields a template expects."""
    return {field for _, field, _, _ in string.Formatter().parse(template(name)) if field}


def render(name: str, **values: object) -> str:
    expected = fields(name)
    missing, extra = expected - values.keys(), values.keys() - expected
    if missing or extra:
        raise ValueError(f"prompt {name!r}: missing fields {sorted(missing)}, unexpected fields {sorted(extra)}")
    return template(name).format(**values).strip()


def prompt_hash(name: str) -> str:
    """Short sha256 of a template file, recorded in provenance so results name the exact prompt."""
    return hashlib.sha256(template(name).encode()).hexdigest()[:16]
