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


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit() -> str | None:
    return (_git("rev-parse", "HEAD") or "").strip() or None


def git_dirty() -> bool | None:
    """Whether the code differs from the commit (changed or untracked files): the commit alone would not
    reproduce the run. None outside a git checkout."""
    status = _git("status", "--porcelain")
    return None if status is None else bool(status.strip())


def hub_revision(model_id: str) -> str | None:
    """The commit of a hub model as cached locally (what transformers loads offline); None for a local folder
    or a model not in the cache."""
    if Path(model_id).exists() or model_id.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # noqa: BLE001 - provenance is best effort, never a reason to stop a run
        return None
    if not isinstance(cached, str):
        return None
    parts = Path(cached).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None


def _with_revisions(models: dict) -> dict:
    described = {}
    for role, description in models.items():
        if isinstance(description, dict) and isinstance(description.get("path"), str):
            revision = hub_revision(description["path"])
            if revision:
                description = {**description, "revision": revision}
        described[role] = description
    return described


def file_hash(path) -> str:
    """Short sha256 of a file's bytes: which exact input a stored result was computed from."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def provenance(settings: dict, models: dict | None = None, prompts: list[str] = ()) -> dict:
    """Settings, model descriptions (with the hub revision of hub models), prompt hashes, package versions,
    git commit and whether the tree was dirty, and date.

    Credentials in URLs (`--base-url http://user:pass@host`) are redacted: the file is shared with results."""
    return {
        "settings": redact_data(settings),
        "models": redact_data(_with_revisions(models or {})),
        "prompts": {name: prompt_hash(name) for name in prompts},
        "packages": package_versions(),
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
