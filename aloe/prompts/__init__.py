"""Prompt templates kept as prose files, one per role, with named `{fields}`.

Shared prompts sit beside this module (`preference_judge`); a method's prompts sit in its package's
`prompts/` folder and are named with the package first (`tailoring/persona_inference` is
`aloe/tailoring/prompts/persona_inference.txt`).

A template is rendered with exactly its named fields: a missing or unexpected field is an error,
so a prompt and the code that fills it cannot drift apart silently.
"""

from __future__ import annotations

import hashlib
import string
from functools import lru_cache
from pathlib import Path

PROMPT_DIR = Path(__file__).parent
PACKAGE_DIR = PROMPT_DIR.parent


def prompt_path(name: str) -> Path:
    package, _, stem = name.rpartition("/")
    return (PACKAGE_DIR / package / "prompts" if package else PROMPT_DIR) / f"{stem}.txt"


@lru_cache(maxsize=None)
def template(name: str) -> str:
    path = prompt_path(name)
    if not path.is_file():
        known = ", ".join(available())
        raise KeyError(f"no prompt named {name!r}; known prompts: {known}")
    return path.read_text(encoding="utf-8").strip() + "\n"


def available() -> list[str]:
    """Every prompt name: the shared ones, then each method package's as `<package>/<name>`."""
    shared = sorted(path.stem for path in PROMPT_DIR.glob("*.txt"))
    methods = sorted(f"{path.parent.parent.name}/{path.stem}" for path in PACKAGE_DIR.glob("*/prompts/*.txt"))
    return shared + methods


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
