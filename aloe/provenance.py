"""What every output records about how it was made."""

from __future__ import annotations

import datetime as _dt
import subprocess
from importlib import metadata
from pathlib import Path

from aloe.logs import redact_data
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


def provenance(settings: dict, models: dict | None = None, prompts: list[str] = ()) -> dict:
    """Settings, model descriptions, prompt hashes, package versions, git commit and date.

    Credentials in URLs (`--base-url http://user:pass@host`) are redacted: the file is shared with results."""
    return {
        "settings": redact_data(settings),
        "models": redact_data(models or {}),
        "prompts": {name: prompt_hash(name) for name in prompts},
        "packages": package_versions(),
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
