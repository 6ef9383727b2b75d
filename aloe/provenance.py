"""What every output records about how it was made."""

from __future__ import annotations

import datetime as _dt
import subprocess
from importlib import metadata
from pathlib import Path

from aloe.prompts import prompt_hash

PACKAGES = ("aloe-kit", "torch", "transformers", "trl", "peft", "accelerate", "datasets",
            "sentence-transformers", "openai", "anthropic", "cohere")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def file_hash(path) -> str:
    """Short sha256 of a file's bytes: which exact input a stored result was computed from."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def provenance(settings: dict, models: dict | None = None, prompts: list[str] = ()) -> dict:
    """Settings, model descriptions, prompt hashes, package versions, git commit and date."""
    return {
        "settings": settings,
        "models": models or {},
        "prompts": {name: prompt_hash(name) for name in prompts},
        "packages": package_versions(),
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
