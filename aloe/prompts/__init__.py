"""Prompt templates kept as prose files beside this module, one per role, with named `{fields}`.

A template is rendered with exactly its named fields: a missing or unexpected field is an error,
so a prompt and the code that fills it cannot drift apart silently. A method's own prompts live in
its package's `prompts/` folder and are named `<method>/<name>` (e.g. `steerable/option`).
"""

from __future__ import annotations

import hashlib
import string
from functools import lru_cache
from pathlib import Path

PROMPT_DIR = Path(__file__).parent


def _path(name: str) -> Path:
    if "/" in name:
        package, stem = name.split("/", 1)
        return PROMPT_DIR.parent / package / "prompts" / f"{stem}.txt"
    return PROMPT_DIR / f"{name}.txt"


@lru_cache(maxsize=None)
def template(name: str) -> str:
    path = _path(name)
    if not path.is_file():
        known = ", ".join(available())
        raise KeyError(f"no prompt named {name!r}; known prompts: {known}")
    return path.read_text(encoding="utf-8").strip() + "\n"


def available() -> list[str]:
    shared = [path.stem for path in PROMPT_DIR.glob("*.txt")]
    methods = [f"{path.parent.parent.name}/{path.stem}" for path in PROMPT_DIR.parent.glob("*/prompts/*.txt")]
    return sorted(shared + methods)


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
